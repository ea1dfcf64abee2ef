//! The gateway's own log: written to stderr by a thread of its own, never by a call.
//!
//! stderr is a pipe that somebody may not read: a client that spawned `sentinel stdio` and
//! never drains its stderr, a supervisor that stalled. Written in place, a log line (every
//! call writes one: the access line; every backend stderr line is one) blocks the writing
//! thread once the pipe's buffer is full, and with it the calls on that thread. So lines go
//! through a bounded queue to a writer thread (`tracing-appender`'s non-blocking writer);
//! when the queue is full they are dropped and counted, and the count is logged once the
//! log flows again.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::config::TelemetryConfig;

/// Lines queued for stderr before further lines are dropped: ~1–2 MB of typical lines.
const QUEUED_LINES: usize = 4096;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber. Keep the guards until the process ends: dropping them
/// writes out what is still queued (log lines, and spans when `[telemetry]` is on).
///
/// The daemons (`serve`, `stdio`) log at `info` unless `SENTINEL_LOG` (an `EnvFilter`, e.g.
/// `warn` or `sentinel=debug`) says otherwise. The reports print their report and nothing else
/// unless `-v` asks for log lines too: a report that ends in a backend's shutdown warnings would
/// bury what it says.
///
/// With `telemetry`, a second layer exports the pipeline's spans (src/telemetry.rs); without
/// it there is no such layer at all, and the subscriber is the log alone.
///
/// With `replica` (a replica of a `[cluster]`), every line starts with `replica=<id>`, so that
/// the lines of several replicas gathered in one place still say which one wrote them.
pub fn init(daemon: bool, verbose: u8, telemetry: Option<&TelemetryConfig>, replica: Option<&'static str>) -> Guards {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let from_env = || EnvFilter::try_from_env("SENTINEL_LOG").ok();
    let filter = match (daemon, verbose) {
        (false, 0) => EnvFilter::new("off"),
        (_, 0 | 1) => from_env().unwrap_or_else(|| EnvFilter::new("info")),
        _ => EnvFilter::new("debug"),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("sentinel-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    // Colour codes only for a person at a terminal, never in a log file.
    let ansi = std::io::stderr().is_terminal();
    let exporting = match telemetry.map(crate::telemetry::layer) {
        None => None,
        Some(Ok(layer)) => Some(layer),
        Some(Err(e)) => {
            // Tracing is an aid, never a reason not to serve: said once, then the log alone.
            eprintln!("sentinel: [telemetry] is not in use: {e:#}");
            None
        }
    };
    let Some((spans, telemetry)) = exporting else {
        let format = Replica { id: replica, inner: tracing_subscriber::fmt::format() };
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_env_filter(filter)
            .event_format(format)
            .init();
        return Guards { _log: guard, _telemetry: None };
    };
    // The exported spans stay out of the log's lines (their fields would change its format).
    let filter =
        filter.add_directive(format!("{}=off", crate::telemetry::TARGET).parse().expect("a target directive parses"));
    let format = Replica { id: replica, inner: tracing_subscriber::fmt::format() };
    let log =
        tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi).event_format(format).with_filter(filter);
    tracing_subscriber::registry().with(log).with(spans).init();
    Guards { _log: guard, _telemetry: Some(telemetry) }
}

/// The log's line format, with the replica's id in front when there is one.
struct Replica<F> {
    id: Option<&'static str>,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Replica<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(id) = self.id {
            write!(writer, "replica={id} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// What must live until the process ends (see [`init`]).
pub struct Guards {
    _log: WorkerGuard,
    _telemetry: Option<crate::telemetry::Guard>,
}

/// Log lines dropped so far because stderr was not being read fast enough.
pub fn dropped_lines() -> usize {
    DROPPED.get().map_or(0, ErrorCounter::dropped_lines)
}

/// Says, every few seconds, how many lines were dropped since it last said so (the saying
/// is itself dropped while stderr stays blocked, and said later).
pub async fn report_dropped() {
    let mut told = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = dropped_lines();
        if now > told {
            tracing::warn!(
                dropped = now - told,
                total = now,
                "log lines dropped: stderr is not being read fast enough"
            );
            // Counted as told only once the line itself was queued.
            if dropped_lines() == now {
                told = now;
            }
        }
    }
}
