//! One round of load: N concurrent clients, each sending its next call as soon as the last is
//! answered (a closed loop, as real clients waiting on their tools behave), for a time or a
//! number of calls. Every answer is checked; latencies go into an HDR histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http_client::HttpClients;
use crate::stdio_client::StdioClients;

/// A call that takes longer than this counts as an error rather than stalling the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Wrong answers kept for the report.
const SAMPLES: usize = 5;

/// What the clients talk to.
pub enum Target {
    Http(HttpClients),
    Stdio(StdioClients),
}

impl Target {
    async fn call(&self, client: usize, seq: u64) -> anyhow::Result<()> {
        match self {
            Target::Http(c) => c.call(client, seq).await,
            Target::Stdio(c) => c.call(client, seq).await,
        }
    }

    pub async fn wait_for_tool(&self, within: Duration) -> anyhow::Result<()> {
        match self {
            Target::Http(c) => c.wait_for_tool(within).await,
            Target::Stdio(c) => c.wait_for_tool(within).await,
        }
    }

    pub async fn close(&self) {
        if let Target::Stdio(c) = self {
            c.close().await;
        }
    }
}

#[derive(Clone, Copy)]
pub enum Stop {
    After(Duration),
    Calls(u64),
}

/// A round's answers (or several rounds', merged).
pub struct Tally {
    pub calls: u64,
    pub errors: u64,
    pub samples: Vec<String>,
    /// Microseconds, 1 µs to 10 min, 3 significant digits.
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
    /// CPU time the server side (the mock directly, or the gateway) used meanwhile.
    pub server_cpu: Duration,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            calls: 0,
            errors: 0,
            samples: Vec::new(),
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            elapsed: Duration::ZERO,
            server_cpu: Duration::ZERO,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.samples.extend(other.samples.iter().take(SAMPLES.saturating_sub(self.samples.len())).cloned());
        self.latency.add(&other.latency).expect("same bounds");
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
    }

    /// Server CPU time per answered call, in microseconds.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A percentile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

/// Runs one round. `seq` numbers calls across rounds so that no two calls look alike.
pub async fn round(target: &Arc<Target>, clients: usize, stop: Stop, seq: &Arc<AtomicU64>) -> Tally {
    let start = Instant::now();
    let remaining = Arc::new(AtomicU64::new(match stop {
        Stop::Calls(n) => n,
        Stop::After(_) => u64::MAX,
    }));
    let deadline = match stop {
        Stop::After(d) => Some(start + d),
        Stop::Calls(_) => None,
    };
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (target, remaining, seq) = (target.clone(), remaining.clone(), seq.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                        break;
                    }
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let answered = tokio::time::timeout(CALL_TIMEOUT, target.call(client, n)).await;
                    match answered {
                        Ok(Ok(())) => {
                            t.calls += 1;
                            let _ = t.latency.record((sent.elapsed().as_micros() as u64).max(1));
                        }
                        Ok(Err(e)) => t.fail(format!("{e:#}")),
                        Err(_) => t.fail(format!("no answer within {CALL_TIMEOUT:?}")),
                    }
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => total.merge(&t),
            Err(e) => total.fail(format!("a client task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.errors += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(why);
        }
    }
}
