//! A scenario (backend, governance, clients, payload, generation) and its paired run: the
//! same load against the direct side and the Sentinel side in alternating rounds, so that the
//! noise of a shared machine falls on both alike and the ratio of one run means something.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::args::{Args, BackendKind, Generation, Governance, Payload};
use crate::gateway_config::Governed;
use crate::load::{self, Stop, Tally};
use crate::process::Bins;
use crate::report;
use crate::rss;
use crate::setup::Pair;

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub backend: BackendKind,
    pub governance: Governance,
    pub clients: usize,
    pub payload: Payload,
    pub generation: Generation,
}

impl Scenario {
    pub fn label(&self) -> String {
        format!(
            "{} backend, governance {}, {} clients, {} results, {}",
            self.backend.label(),
            self.governance.label(),
            self.clients,
            self.payload.label(),
            self.generation.label()
        )
    }
}

/// Every combination of the lists given, in a stable order.
pub fn from_args(a: &Args) -> Vec<Scenario> {
    let mut all = Vec::new();
    for &backend in &a.backend {
        for &generation in &a.generation {
            for &payload in &a.payload {
                for &governance in &a.governance {
                    for &clients in &a.clients {
                        all.push(Scenario { backend, governance, clients, payload, generation });
                    }
                }
            }
        }
    }
    all
}

/// `--smoke`: each backend kind, both generations, both governance settings and both payloads
/// appear at least once, with few clients; one traced scenario (spans exported), and one with
/// `[cluster]` (rate limits in the machine's Redis).
pub fn smoke() -> Vec<Scenario> {
    use BackendKind::*;
    use Generation::*;
    use Governance::*;
    use Payload::*;
    let s = |backend, governance, clients, payload, generation| Scenario {
        backend,
        governance,
        clients,
        payload,
        generation,
    };
    vec![
        s(Http, On, 4, Small, Modern),
        s(Http, Off, 4, Small, Legacy),
        s(Stdio, On, 4, Small, Legacy),
        s(StdioHttp, Off, 2, OneMb, Modern),
        s(Http, Traced, 4, Small, Modern),
        s(Http, Cluster, 4, Small, Modern),
    ]
}

/// How long each side runs.
#[derive(Clone, Copy)]
pub struct Timing {
    pub warm_up: Duration,
    pub rounds: u32,
    pub stop: Stop,
}

pub struct Outcome {
    pub scenario: Scenario,
    pub direct: Tally,
    pub sentinel: Tally,
    /// The gateway's peak resident memory (kB) over the whole scenario.
    pub gateway_peak_kb: Option<u64>,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.direct.errors + self.sentinel.errors
    }
}

pub async fn run(s: Scenario, bins: &Bins, governed: &Governed, t: Timing) -> anyhow::Result<Outcome> {
    println!("\n== {} ==", s.label());
    let pair = Pair::start(&s, bins, governed).await?;
    let seq = Arc::new(AtomicU64::new(0));
    let sides = [("direct", &pair.direct), ("sentinel", &pair.sentinel)];

    // Warm-up (connections, caches, the audit pool): not counted, but its answers are checked.
    let mut totals = [Tally::default(), Tally::default()];
    for (i, (_, target)) in sides.iter().enumerate() {
        let w = load::round(target, s.clients, Stop::After(t.warm_up), &seq).await;
        totals[i].errors += w.errors;
        totals[i].samples.extend(w.samples);
    }

    println!("{}", report::header());
    for r in 1..=t.rounds {
        // ABBA order: neither side always runs right after the other's load.
        let order: [usize; 2] = if r % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let (name, target) = sides[i];
            // CPU time of the process this side's clients talk to: the mock, or the gateway.
            let pid = if i == 0 { pair.direct_pid } else { pair.gateway_pid };
            let cpu_before = rss::cpu(pid);
            let mut tally = load::round(target, s.clients, t.stop, &seq).await;
            if let (Some(before), Some(after)) = (cpu_before, rss::cpu(pid)) {
                tally.server_cpu = after.saturating_sub(before);
            }
            let rss = (i == 1).then(|| rss::read(pair.gateway_pid)).flatten();
            println!("{}", report::row(name, &r.to_string(), &tally, rss.map(|m| m.peak_kb)));
            totals[i].merge(&tally);
        }
    }
    let gateway_peak_kb = rss::read(pair.gateway_pid).map(|m| m.peak_kb);
    pair.close().await;
    let [direct, sentinel] = totals;
    let outcome = Outcome { scenario: s, direct, sentinel, gateway_peak_kb };
    println!("{}", report::row("direct", "all", &outcome.direct, None));
    println!("{}", report::row("sentinel", "all", &outcome.sentinel, outcome.gateway_peak_kb));
    println!("{}", report::ratio_line(&outcome));
    for (name, t) in [("direct", &outcome.direct), ("sentinel", &outcome.sentinel)] {
        for sample in &t.samples {
            println!("  wrong answer ({name}): {sample}");
        }
    }
    Ok(outcome)
}
