//! The gateway at rest: how long `sentinel serve` takes from spawn to `/ready` answering 200
//! with no backends, and how much memory it holds idle, with none and with seven backends.

use std::time::{Duration, Instant};

use crate::gateway_config::{self, BackendSpec, Governed};
use crate::process::Bins;
use crate::rss;
use crate::setup;

/// `settle`: how long an idle gateway is left alone before its memory is read (backends
/// started, first lists fetched, startup allocations settled).
pub async fn measure(bins: &Bins, runs: u32, settle: Duration, governed: Option<&Governed>) -> anyhow::Result<()> {
    println!("\n== start to ready, no backends ({runs} starts each) ==");
    println!("{:<16} {:>10} {:>10} {:>10} {:>14}", "governance", "min ms", "median ms", "max ms", "RSS at ready");
    let mut settings = vec![("off", None)];
    if let Some(g) = governed {
        settings.push(("on (PostgreSQL)", Some(g)));
    }
    for (name, g) in settings {
        let config = gateway_config::config(&[], g, true, false, false);
        let mut times = Vec::new();
        let mut rss_kb = 0;
        for _ in 0..runs.max(1) {
            let dir = tempfile::tempdir()?;
            let started = Instant::now();
            let gw = setup::serve(bins, dir.path(), &config, g).await?;
            times.push(started.elapsed());
            rss_kb = rss_kb.max(rss::read(gw.pid()).map_or(0, |m| m.rss_kb));
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<16} {:>10.1} {:>10.1} {:>10.1} {:>11.1} MB",
            name,
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            rss::mb(rss_kb)
        );
    }

    println!("\n== idle memory ==");
    println!("{:<44} {:>10} {:>10} {:>13}", "gateway", "RSS", "peak RSS", "private (anon)");
    let seven: Vec<String> = (1..=7).map(|i| format!("mock{i}")).collect();
    for (name, backends) in [("no backends", 0), ("7 stdio backends (mcp-mock)", 7)] {
        let specs: Vec<(&str, BackendSpec)> =
            seven.iter().take(backends).map(|n| (n.as_str(), BackendSpec::Stdio(&bins.mock))).collect();
        let dir = tempfile::tempdir()?;
        let gw =
            setup::serve(bins, dir.path(), &gateway_config::config(&specs, governed, true, false, false), governed)
                .await?;
        tokio::time::sleep(settle).await;
        let m = rss::read(gw.pid()).unwrap_or_default();
        let label = format!("{name}, governance {}", if governed.is_some() { "on" } else { "off" });
        println!(
            "{:<44} {:>7.1} MB {:>7.1} MB {:>10.1} MB",
            label,
            rss::mb(m.rss_kb),
            rss::mb(m.peak_kb),
            rss::mb(m.anon_kb)
        );
    }
    Ok(())
}
