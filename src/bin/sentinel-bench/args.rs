//! The command line: which scenarios to run (the cartesian product of the lists given), how
//! long each round lasts, and where PostgreSQL and the binaries are.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "sentinel-bench",
    about = "Paired benchmark: an MCP backend called directly vs through Sentinel, same run, alternating rounds"
)]
pub struct Args {
    /// Backends: `http` (mcp-mock over HTTP), `stdio` (mcp-mock as a child, through `sentinel
    /// stdio`), `stdio-http` (the same child, through `sentinel serve`'s HTTP front door).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["http", "stdio", "stdio-http"])]
    pub backend: Vec<BackendKind>,
    /// Governance through Sentinel: `off` (no auth, no audit, no validation), `on` (JWT, RBAC,
    /// rate limit, kill switch, schema validation, audit to PostgreSQL), `no-audit` (all of
    /// `on` but the audit store: what the audit trail costs, by difference), or `traced` (`on`
    /// with `[telemetry]` exporting every trace, sample_ratio 1.0, to a local OTLP sink: what
    /// tracing costs, by difference with `on`), or `cluster` (`on` with `[cluster]`: rate limits
    /// taken in Redis, one round trip per call: what sharing state across replicas costs).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["off", "on"])]
    pub governance: Vec<Governance>,
    /// The `sample_ratio` of `traced` scenarios: 1.0 (every trace exported, the measure)
    /// or lower, for what tracing costs at the ratio a busy deployment would run.
    #[arg(long, default_value_t = 1.0)]
    pub trace_ratio: f64,
    /// The Redis of `cluster` scenarios (keys under a prefix of the run's own).
    #[arg(long, env = "SENTINEL_TEST_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Concurrent clients, each sending its next call as soon as the last is answered.
    #[arg(long, value_delimiter = ',', default_values = ["1", "16", "64", "256"])]
    pub clients: Vec<usize>,
    /// Result size: `small` (a few bytes of text) or `1mb` (1,000,000 bytes of text).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["small", "1mb"])]
    pub payload: Vec<Payload>,
    /// Protocol generation the clients speak: `modern` (2026-07-28, stateless) or `legacy`
    /// (2025-11-25, one session per client).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["modern"])]
    pub generation: Vec<Generation>,
    /// Paired rounds per scenario (each round runs direct and Sentinel once, order alternating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Length of one round of one side.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub round: Duration,
    /// Instead of a length, a number of calls per round and side (shared by all clients).
    #[arg(long)]
    pub calls: Option<u64>,
    /// A few seconds in all: a tiny scenario set, short rounds; still checks every answer.
    #[arg(long)]
    pub smoke: bool,
    /// Skip the start-to-ready and idle-memory measurements.
    #[arg(long)]
    pub no_startup: bool,
    /// Gateway starts timed for start-to-ready.
    #[arg(long, default_value_t = 10)]
    pub startup_runs: u32,
    /// PostgreSQL maintenance database; the bench creates a database of its own there and
    /// drops it at the end.
    #[arg(long, env = "SENTINEL_TEST_PG", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg: String,
    /// Where `sentinel` and `mcp-mock` are (default: beside this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Http,
    Stdio,
    StdioHttp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Governance {
    Off,
    On,
    NoAudit,
    Traced,
    Cluster,
}

impl Governance {
    pub fn label(self) -> &'static str {
        match self {
            Governance::Off => "off",
            Governance::On => "on",
            Governance::NoAudit => "on, audit none",
            Governance::Traced => "on, traced",
            Governance::Cluster => "on, [cluster]",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Small,
    #[value(name = "1mb")]
    OneMb,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    Modern,
    Legacy,
}

/// Bounds on every input: a typo must not start 100,000 clients or a week-long round.
const MAX_CLIENTS: usize = 4096;
const MAX_ROUNDS: u32 = 100;
const MAX_ROUND: Duration = Duration::from_secs(600);
const MAX_CALLS: u64 = 100_000_000;
const MAX_STARTUP_RUNS: u32 = 1000;

impl Args {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.clients.iter().all(|&c| (1..=MAX_CLIENTS).contains(&c)), "--clients: each 1..={MAX_CLIENTS}");
        ensure!((1..=MAX_ROUNDS).contains(&self.rounds), "--rounds: 1..={MAX_ROUNDS}");
        ensure!(!self.round.is_zero() && self.round <= MAX_ROUND, "--round: more than 0, at most {MAX_ROUND:?}");
        ensure!(self.calls.is_none_or(|c| (1..=MAX_CALLS).contains(&c)), "--calls: 1..={MAX_CALLS}");
        ensure!((0.0..=1.0).contains(&self.trace_ratio), "--trace-ratio: 0.0..=1.0");
        ensure!(self.startup_runs <= MAX_STARTUP_RUNS, "--startup-runs: at most {MAX_STARTUP_RUNS}");
        ensure!(
            !(self.backend.is_empty()
                || self.governance.is_empty()
                || self.clients.is_empty()
                || self.payload.is_empty()
                || self.generation.is_empty()),
            "every scenario list needs at least one entry"
        );
        Ok(())
    }
}

impl BackendKind {
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Http => "http",
            BackendKind::Stdio => "stdio",
            BackendKind::StdioHttp => "stdio-http",
        }
    }
}

impl Payload {
    /// The `bytes` argument of the mock's `bench` tool; `None` asks for a short text.
    pub fn bytes(self) -> Option<usize> {
        match self {
            Payload::Small => None,
            Payload::OneMb => Some(1_000_000),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Payload::Small => "small",
            Payload::OneMb => "1mb",
        }
    }
}

impl Generation {
    pub fn label(self) -> &'static str {
        match self {
            Generation::Modern => "2026-07-28",
            Generation::Legacy => "2025-11-25",
        }
    }
}
