//! One invocation: the settings, the database governance on audits to, the start-up figures,
//! every scenario in turn, then the summary. Any wrong answer makes the exit code non-zero.

use std::process::ExitCode;
use std::time::Duration;

use crate::args::{Args, Governance};
use crate::gateway_config::Governed;
use crate::load::Stop;
use crate::pg::PgDb;
use crate::process::Bins;
use crate::scenario::{self, Timing};
use crate::{report, startup};

pub fn main(args: Args) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("sentinel-bench: {e:#}");
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("sentinel-bench: {errors} wrong answers");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sentinel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; answers with the number of wrong answers.
async fn run(args: Args) -> anyhow::Result<u64> {
    let bins = Bins::find(args.bin_dir.as_deref())?;
    let (scenarios, timing, startup_runs, settle) = if args.smoke {
        let t =
            Timing { warm_up: Duration::from_millis(100), rounds: 1, stop: Stop::After(Duration::from_millis(300)) };
        (scenario::smoke(), t, 2, Duration::from_millis(200))
    } else {
        let stop = args.calls.map_or(Stop::After(args.round), Stop::Calls);
        let t = Timing { warm_up: Duration::from_millis(500), rounds: args.rounds, stop };
        (scenario::from_args(&args), t, args.startup_runs, Duration::from_secs(2))
    };
    println!(
        "sentinel-bench {}: {} scenarios, {} paired rounds of {} per side; {} cores; binaries in {}",
        env!("CARGO_PKG_VERSION"),
        scenarios.len(),
        timing.rounds,
        match timing.stop {
            Stop::After(d) => format!("{d:?}"),
            Stop::Calls(n) => format!("{n} calls"),
        },
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        bins.sentinel.parent().map_or(String::new(), |p| p.display().to_string())
    );

    let needs_pg =
        scenarios.iter().any(|s| matches!(s.governance, Governance::On | Governance::Traced | Governance::Cluster))
            || !args.no_startup;
    let db = if needs_pg { Some(PgDb::create(&args.pg).await?) } else { None };
    // The secret tokens are signed with; `no-audit` scenarios use it without the database.
    let mut governed = Governed::new(db.as_ref().map_or("none", |db| db.url.as_str()));
    let sink = if scenarios.iter().any(|s| s.governance == Governance::Traced) {
        Some(crate::otlp_sink::Sink::start().await?)
    } else {
        None
    };
    governed.otlp_url = sink.as_ref().map(|s| s.url.clone());
    governed.sample_ratio = args.trace_ratio;
    governed.redis_url = args.redis.clone();

    if !args.no_startup {
        startup::measure(&bins, startup_runs, settle, db.as_ref().map(|_| &governed)).await?;
    }
    let mut outcomes = Vec::new();
    for s in scenarios {
        outcomes.push(scenario::run(s, &bins, &governed, timing).await?);
    }
    println!("\n== summary (ratio = sentinel/direct throughput; added p50 = sentinel p50 - direct p50) ==");
    print!("{}", report::summary(&outcomes));
    if let Some(sink) = &sink {
        let (requests, bytes) = sink.received();
        println!(
            "traced scenarios (sample_ratio {}): {requests} OTLP exports received, {bytes} bytes",
            args.trace_ratio
        );
    }
    let errors: u64 = outcomes.iter().map(super::scenario::Outcome::errors).sum();
    println!("total wrong answers: {errors}");
    Ok(errors)
}
