//! The printed figures: a row per round and side, totals, the Sentinel/direct ratio, and a
//! summary table of every scenario at the end.

use crate::load::Tally;
use crate::rss;
use crate::scenario::Outcome;

pub fn header() -> String {
    format!(
        "{:<9} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
        "side",
        "round",
        "calls",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "CPU µs/call",
        "peak RSS"
    )
}

pub fn row(side: &str, round: &str, t: &Tally, peak_kb: Option<u64>) -> String {
    format!(
        "{:<9} {:>5} {:>9} {:>8.0} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>7} {:>11.0} {:>10}",
        side,
        round,
        t.calls,
        t.throughput(),
        t.ms(0.50),
        t.ms(0.90),
        t.ms(0.99),
        t.max_ms(),
        t.errors,
        t.cpu_us_per_call(),
        peak_kb.map_or("-".to_string(), |kb| format!("{:.1} MB", rss::mb(kb)))
    )
}

pub fn ratio(o: &Outcome) -> f64 {
    o.sentinel.throughput() / o.direct.throughput().max(1e-9)
}

pub fn added_p50_ms(o: &Outcome) -> f64 {
    o.sentinel.ms(0.50) - o.direct.ms(0.50)
}

pub fn ratio_line(o: &Outcome) -> String {
    format!(
        "sentinel/direct: throughput {:.3}x, p50 {:+.3} ms, p99 {:+.3} ms",
        ratio(o),
        added_p50_ms(o),
        o.sentinel.ms(0.99) - o.direct.ms(0.99)
    )
}

/// One line per scenario, for the end of the run and for docs/performance.md.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| backend | gov | clients | result | generation | direct calls/s | sentinel calls/s | ratio | direct p50 ms | added p50 ms | mock CPU µs/call | gateway CPU µs/call | gateway peak RSS | errors |\n\
         | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for o in outcomes {
        let sc = &o.scenario;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.3} | {:+.3} | {:.0} | {:.0} | {} | {} |\n",
            sc.backend.label(),
            sc.governance.label(),
            sc.clients,
            sc.payload.label(),
            sc.generation.label(),
            o.direct.throughput(),
            o.sentinel.throughput(),
            ratio(o),
            o.direct.ms(0.50),
            added_p50_ms(o),
            o.direct.cpu_us_per_call(),
            o.sentinel.cpu_us_per_call(),
            o.gateway_peak_kb.map_or("-".to_string(), |kb| format!("{:.1} MB", rss::mb(kb))),
            o.errors()
        ));
    }
    s
}
