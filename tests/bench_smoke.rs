//! `sentinel-bench --smoke`: the benchmark harness runs end to end (both backends, both
//! generations, governance off and on with audit to PostgreSQL) and every answer it got was
//! right. Speed is never asserted here: the machine is shared and noisy, and the figures live
//! in docs/performance.md.

use std::process::Command;
use std::time::Instant;

#[test]
fn the_smoke_run_completes_with_every_answer_right() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel-bench"))
        .arg("--smoke")
        .env("SENTINEL_LOG", "warn")
        .output()
        .expect("run sentinel-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("total wrong answers: 0"), "{stdout}");

    // The summary: one row per smoke scenario, each with calls answered on both sides and no
    // errors (`calls/s` > 0 only says that the scenario ran, not how fast).
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| http ") || l.starts_with("| stdio"))
        .map(|l| l.split('|').map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    for row in &rows {
        let number = |i: usize| row[i].parse::<f64>().unwrap_or_else(|_| panic!("column {i} of {row:?}"));
        assert!(number(5) > 0.0 && number(6) > 0.0, "a side answered no call: {row:?}");
        assert_eq!(row.last(), Some(&"0"), "errors in {row:?}");
    }
    for needle in [
        "| http | on |",
        "| stdio | on |",
        "| http | on, traced |",
        "| http | on, [cluster] |",
        "2025-11-25",
        "2026-07-28",
        "| 1mb |",
        "start to ready",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    eprintln!("smoke run took {:?}", started.elapsed());
}
