//! The Prometheus metrics behind `/metrics` (SPEC §6): one explicit registry, no globals, so
//! every test and every gateway in a process has its own.
//!
//! The families are product interface; their names and labels are the contract's:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `sentinel_requests_total` | counter | `tool`, `backend`, `outcome` |
//! | `sentinel_request_duration_seconds` | histogram | `backend` |
//! | `sentinel_backend_up` | gauge (0 or 1) | `backend` |
//! | `sentinel_circuit_state` | gauge (0 closed, 1 half-open, 2 open) | `backend` |
//! | `sentinel_backend_restarts_total` | counter | `backend` |
//! | `sentinel_rate_limited_total` | counter | `tool` |
//! | `sentinel_audit_queue_depth` | gauge | — |
//! | `sentinel_audit_records_total` | counter | `result` (written, spooled, replayed, failed, dead_lettered) |
//! | `sentinel_audit_store_up` | gauge (0 or 1) | — |
//! | `sentinel_config_reloads_total` | counter | `result` (ok, error) |
//! | `sentinel_sessions` | gauge | `transport` (http, stdio) |
//! | `sentinel_config_restart_pending` | gauge (0 or 1) | `setting` (the keys read only at start) |
//! | `sentinel_audit_suppressed_total` | counter | `reason` (denied_auth_throttled) |
//! | `sentinel_credential_misses_total` | counter | `backend`, `reason` (not_set, unreadable, no_token, exchange_failed) |
//! | `sentinel_token_exchanges_total` | counter | `backend`, `result` (ok, error) |
//! | `sentinel_backend_instances` | gauge | `backend` (per-user instances running) |
//!
//! Every family is in the output from the start, with zero values, so that alert rules and
//! dashboards (and `increase()` over a first event) work on a fresh gateway. The crate leaves
//! out a family without series, so each is given its zero series when it is made: every value
//! of a fixed label set (`result`, `transport`); for `backend`, each configured backend (as it
//! is configured); for `tool`, each tool in the catalog (as it is listed, `outcome="ok"` for
//! `sentinel_requests_total`) and the one series every unknown name shares; the per-user
//! families, for each backend acting for each caller (`credentials`, `instances`), as it is
//! configured (a gateway without one has nothing to count there). A unit test checks
//! that every registered family appears in a fresh registry's output.
//!
//! Cardinality is bounded by construction: `backend` comes from the config, `outcome` is the
//! typed [`Outcome`], `transport` a `&'static str` from the front doors, and `tool` a catalog
//! name or [`UNKNOWN_TOOL`] (see [`tool_label`]). A label never carries client text that the
//! gateway has not already matched against its own catalog.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::Outcome;

/// The `Content-Type` to serve [`Metrics::render`] with: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `tool` label of every name the catalog does not know.
pub const UNKNOWN_TOOL: &str = "<unknown>";

/// Upper bounds of the duration buckets, in seconds: a cache-fast tool answers in under a
/// millisecond, a long-running one in minutes.
const DURATION_BUCKETS: [f64; 18] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The `tool` label for a requested tool name: the name itself when the catalog knows it
/// (`known`), [`UNKNOWN_TOOL`] otherwise. Every caller that labels by tool goes through this,
/// so a client inventing names cannot create series.
pub fn tool_label(known: bool, name: &str) -> &str {
    if known { name } else { UNKNOWN_TOOL }
}

/// A circuit breaker's state as `sentinel_circuit_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitGauge {
    /// 0: calls flow.
    Closed = 0,
    /// 1: one probe call is allowed through to test the backend.
    HalfOpen = 1,
    /// 2: calls are refused without reaching the backend.
    Open = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    tool: String,
    backend: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendReasonLabel {
    backend: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendResultLabel {
    backend: String,
    result: &'static str,
}

/// The `reason`s of `sentinel_credential_misses_total`, as `Refusal::NoCredential` names them.
pub const CREDENTIAL_MISS_REASONS: [&str; 4] = ["not_set", "unreadable", "no_token", "exchange_failed"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

/// The `reason` of `sentinel_audit_suppressed_total` for refusals without valid credentials
/// past a source's allowance (see `audit::throttle`).
pub const SUPPRESSED_DENIED_AUTH: &str = "denied_auth_throttled";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SettingLabel {
    setting: &'static str,
}

/// The `result` words of `sentinel_audit_records_total`, in [`Metrics::set_audit`]'s order.
const AUDIT_RESULTS: [&str; 5] = ["written", "spooled", "replayed", "failed", "dead_lettered"];

/// The gateway's metrics. Cheap to update from any task (`&self`, atomics and a read lock on the
/// label map); share it in an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<BackendLabel, Histogram, fn() -> Histogram>,
    backend_up: Family<BackendLabel, Gauge>,
    circuit_state: Family<BackendLabel, Gauge>,
    backend_restarts: Family<BackendLabel, Counter>,
    rate_limited: Family<ToolLabel, Counter>,
    audit_queue_depth: Gauge,
    audit_records: Family<ResultLabel, Counter>,
    /// The audit writer's totals as of the last scrape. Its counters are plain atomics it owns;
    /// ours must only ever go up, so each scrape adds what grew since the one before.
    audit_seen: [AtomicU64; 5],
    audit_store_up: Gauge,
    config_reloads: Family<ResultLabel, Counter>,
    sessions: Family<TransportLabel, Gauge>,
    /// 1 for each setting whose value in the reloaded file waits for a restart.
    restart_pending: Family<SettingLabel, Gauge>,
    /// Every registered family's name, as registered (counters without `_total`).
    families: Vec<&'static str>,
    audit_suppressed: Family<ReasonLabel, Counter>,
    /// Spans not exported (src/telemetry.rs), by reason; brought up to the exporter's own
    /// totals at each scrape, as the audit writer's are.
    spans_dropped: Family<ReasonLabel, Counter>,
    spans_dropped_seen: [AtomicU64; 2],
    /// `[cluster]`: whether Redis decided the last call's limit, and the calls it did not.
    redis_up: Gauge,
    redis_failures: Counter,
    redis_failures_seen: AtomicU64,
    /// Requests that came in by a `[[profile]]`, by profile and outcome (`/mcp` itself is not
    /// counted here: `sentinel_requests_total` has every request).
    profile_requests: Family<ProfileLabels, Counter>,
    /// Tool definitions served that differ from their pins, by backend (once per new definition).
    definition_changes: Family<BackendLabel, Counter>,
    /// Tools held out of lists and calls until approved (`[pinning] mode = "hold"`).
    tools_held: Gauge,
    /// Calls refused because the caller had no usable credential for a per-user backend.
    credential_misses: Family<BackendReasonLabel, Counter>,
    /// Token exchanges made (not cache hits), by result.
    token_exchanges: Family<BackendResultLabel, Counter>,
    /// Per-user instances (stdio children, HTTP sessions) running, by backend.
    backend_instances: Family<BackendLabel, Gauge>,
}

impl Metrics {
    /// Every family registered, empty.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            backend_up: Family::default(),
            circuit_state: Family::default(),
            backend_restarts: Family::default(),
            rate_limited: Family::default(),
            audit_queue_depth: Gauge::default(),
            audit_records: Family::default(),
            audit_seen: Default::default(),
            audit_store_up: Gauge::default(),
            config_reloads: Family::default(),
            sessions: Family::default(),
            restart_pending: Family::default(),
            families: Vec::new(),
            audit_suppressed: Family::default(),
            spans_dropped: Family::default(),
            spans_dropped_seen: Default::default(),
            redis_up: Gauge::default(),
            redis_failures: Counter::default(),
            redis_failures_seen: AtomicU64::new(0),
            profile_requests: Family::default(),
            definition_changes: Family::default(),
            tools_held: Gauge::default(),
            credential_misses: Family::default(),
            token_exchanges: Family::default(),
            backend_instances: Family::default(),
        };
        for reason in crate::telemetry::DROP_REASONS {
            let _ = m.spans_dropped.get_or_create(&ReasonLabel { reason });
        }
        let _ = m.audit_suppressed.get_or_create(&ReasonLabel { reason: SUPPRESSED_DENIED_AUTH });
        // Fixed label sets start at zero, so a dashboard sees the series before the first event.
        // The families labelled by tool start with the series every unknown name shares (a call
        // naming one is refused as invalid before routing, so with no backend).
        let _ = m.rate_limited.get_or_create(&ToolLabel { tool: UNKNOWN_TOOL.to_owned() });
        let unknown = RequestLabels {
            tool: UNKNOWN_TOOL.to_owned(),
            backend: String::new(),
            outcome: Outcome::InvalidArgs.as_str(),
        };
        let _ = m.requests.get_or_create(&unknown);
        for result in AUDIT_RESULTS {
            let _ = m.audit_records.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = m.config_reloads.get_or_create(&ResultLabel { result });
        }
        for transport in ["http", "stdio"] {
            let _ = m.sessions.get_or_create(&TransportLabel { transport });
        }
        for setting in crate::config::RESTART_ONLY {
            let _ = m.restart_pending.get_or_create(&SettingLabel { setting });
        }
        m.register()
    }

    /// Registers every family. Counter names leave out `_total`: the encoder appends it.
    fn register(mut self) -> Metrics {
        let requests = self.requests.clone();
        self.add("sentinel_requests", "Tool calls and refused requests by tool, backend and outcome", requests);
        let duration = self.request_duration.clone();
        self.add(
            "sentinel_request_duration_seconds",
            "Time from receipt to answer of calls routed to a backend",
            duration,
        );
        let up = self.backend_up.clone();
        self.add("sentinel_backend_up", "Whether the backend is up (1) or down (0)", up);
        let circuit = self.circuit_state.clone();
        self.add("sentinel_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", circuit);
        let restarts = self.backend_restarts.clone();
        self.add("sentinel_backend_restarts", "Restarts of a stdio backend's process", restarts);
        let rate_limited = self.rate_limited.clone();
        self.add("sentinel_rate_limited", "Calls refused by a rate limit", rate_limited);
        let queue = self.audit_queue_depth.clone();
        self.add("sentinel_audit_queue_depth", "Audit records waiting to be written", queue);
        let records = self.audit_records.clone();
        self.add("sentinel_audit_records", "Audit records by result: written, spooled, replayed or failed", records);
        let store_up = self.audit_store_up.clone();
        self.add(
            "sentinel_audit_store_up",
            "Whether the audit store is connected and taking records (1) or not (0)",
            store_up,
        );
        let reloads = self.config_reloads.clone();
        self.add("sentinel_config_reloads", "Config reloads by result: ok or error", reloads);
        let sessions = self.sessions.clone();
        self.add("sentinel_sessions", "Open MCP sessions by transport", sessions);
        let pending = self.restart_pending.clone();
        self.add(
            "sentinel_config_restart_pending",
            "Settings whose reloaded value waits for a restart (1), by setting",
            pending,
        );
        let suppressed = self.audit_suppressed.clone();
        self.add(
            "sentinel_audit_suppressed",
            "Audit records not written one by one, by reason (refusals without valid credentials past a source's allowance)",
            suppressed,
        );
        let dropped = self.spans_dropped.clone();
        self.add(
            "sentinel_telemetry_spans_dropped",
            "Trace spans not exported, by reason: the export queue was full, or the collector did not take them",
            dropped,
        );
        let redis_up = self.redis_up.clone();
        self.add(
            "sentinel_redis_up",
            "Whether the Redis of [cluster] decided the last call's rate limit (1) or not (0); 0 without [cluster]",
            redis_up,
        );
        let profiles = self.profile_requests.clone();
        self.add(
            "sentinel_profile_requests",
            "Requests that came in by a [[profile]], by profile and outcome",
            profiles,
        );
        let changes = self.definition_changes.clone();
        self.add(
            "sentinel_tool_definition_changes",
            "Tool definitions a backend served that differ from their pins, by backend",
            changes,
        );
        let held = self.tools_held.clone();
        self.add("sentinel_tools_held", "Tools held out of use until their changed definition is approved", held);
        let redis_failures = self.redis_failures.clone();
        self.add(
            "sentinel_redis_failures",
            "Calls whose rate limit the Redis of [cluster] did not decide in time (on_redis_failure decided them)",
            redis_failures,
        );
        let misses = self.credential_misses.clone();
        self.add(
            "sentinel_credential_misses",
            "Calls refused (-32018) because the caller had no usable credential for a per-user backend, by reason",
            misses,
        );
        let exchanges = self.token_exchanges.clone();
        self.add(
            "sentinel_token_exchanges",
            "Token exchanges (RFC 8693) made with the identity provider, not cache hits, by result",
            exchanges,
        );
        let instances = self.backend_instances.clone();
        self.add(
            "sentinel_backend_instances",
            "Per-user instances of a backend running (stdio children, or HTTP sessions acting for one user)",
            instances,
        );
        self
    }

    /// Registers one family and remembers its name (see `family_names`).
    fn add(&mut self, name: &'static str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.register(name, help, metric);
        self.families.push(name);
    }

    /// Every registered family's name, as registered (counters without `_total`).
    pub fn family_names(&self) -> &[&'static str] {
        &self.families
    }

    /// One finished request. `tool` must come from [`tool_label`]. `backend` is empty when the
    /// request was refused before routing; only routed requests are timed.
    pub fn request(&self, tool: &str, backend: &str, outcome: Outcome, seconds: f64) {
        let labels = RequestLabels { tool: tool.to_owned(), backend: backend.to_owned(), outcome: outcome.as_str() };
        self.requests.get_or_create(&labels).inc();
        if !backend.is_empty() {
            self.request_duration.get_or_create(&BackendLabel { backend: labels.backend }).observe(seconds);
        }
    }

    /// One request that came in by `profile`.
    pub fn profile_request(&self, profile: &str, outcome: Outcome) {
        self.profile_requests
            .get_or_create(&ProfileLabels { profile: profile.to_owned(), outcome: outcome.as_str() })
            .inc();
    }

    /// A backend served a tool definition that differs from its pin.
    pub fn definition_changed(&self, backend: &str) {
        self.definition_changes.get_or_create(&BackendLabel { backend: backend.to_owned() }).inc();
    }

    /// How many tools are held now.
    pub fn tools_held(&self, n: usize) {
        self.tools_held.set(n as i64);
    }

    /// A call refused by a rate limit. `tool` must come from [`tool_label`].
    pub fn rate_limited(&self, tool: &str) {
        self.rate_limited.get_or_create(&ToolLabel { tool: tool.to_owned() }).inc();
    }

    /// Sets `sentinel_backend_up` for `backend`.
    pub fn backend_up(&self, backend: &str, up: bool) {
        self.backend_up.get_or_create(&backend_label(backend)).set(i64::from(up));
    }

    /// Sets `sentinel_circuit_state` for `backend`.
    pub fn circuit_state(&self, backend: &str, state: CircuitGauge) {
        self.circuit_state.get_or_create(&backend_label(backend)).set(state as i64);
    }

    /// Creates a configured backend's restart and duration series at zero, so the families
    /// are scrapeable (and `rate()` works) before the first restart or call.
    pub fn backend_configured(&self, backend: &str) {
        let _ = self.backend_restarts.get_or_create(&backend_label(backend));
        let _ = self.request_duration.get_or_create(&backend_label(backend));
        let _ = self.definition_changes.get_or_create(&backend_label(backend));
    }

    /// Creates a `[[profile]]`'s series at zero (its requests answered, `outcome="ok"`).
    pub fn profile_configured(&self, profile: &str) {
        let _ = self.profile_requests.get_or_create(&ProfileLabels { profile: profile.to_owned(), outcome: "ok" });
    }

    /// Creates the series of a backend acting for each caller at zero: its misses by reason,
    /// its running instances and, with a token exchange, its exchanges.
    pub fn per_user_backend(&self, backend: &str, exchanges: bool) {
        for reason in CREDENTIAL_MISS_REASONS {
            let _ = self.credential_misses.get_or_create(&BackendReasonLabel { backend: backend.to_owned(), reason });
        }
        let _ = self.backend_instances.get_or_create(&backend_label(backend));
        if exchanges {
            for result in ["ok", "error"] {
                let _ = self.token_exchanges.get_or_create(&BackendResultLabel { backend: backend.to_owned(), result });
            }
        }
    }

    /// Counts a call refused for want of a credential. `reason` is one of
    /// [`CREDENTIAL_MISS_REASONS`].
    pub fn credential_miss(&self, backend: &str, reason: &'static str) {
        self.credential_misses.get_or_create(&BackendReasonLabel { backend: backend.to_owned(), reason }).inc();
    }

    /// The counters of `backend`'s exchanges, for the exchanger to count with directly (it
    /// runs refreshes in the background, where the gateway is not at hand).
    pub fn token_exchange_counters(&self, backend: &str) -> [Counter; 2] {
        ["ok", "error"].map(|result| {
            self.token_exchanges.get_or_create(&BackendResultLabel { backend: backend.to_owned(), result }).clone()
        })
    }

    /// Sets how many per-user instances of `backend` run.
    pub fn backend_instances(&self, backend: &str, n: usize) {
        self.backend_instances.get_or_create(&backend_label(backend)).set(n as i64);
    }

    /// Creates a listed tool's series at zero: its calls answered (`outcome="ok"`) and its
    /// rate-limit refusals. Other outcomes appear with their first event: a zero series per
    /// tool and outcome would multiply the series by ten for little.
    pub fn tool_listed(&self, tool: &str, backend: &str) {
        let labels =
            RequestLabels { tool: tool.to_owned(), backend: backend.to_owned(), outcome: Outcome::Ok.as_str() };
        let _ = self.requests.get_or_create(&labels);
        let _ = self.rate_limited.get_or_create(&ToolLabel { tool: labels.tool });
    }

    /// A backend a reload removed: its gauges go (a stale `up 0` would read as an outage);
    /// counters stay, as Prometheus expects of counters.
    pub fn backend_removed(&self, backend: &str) {
        self.backend_up.remove(&backend_label(backend));
        self.circuit_state.remove(&backend_label(backend));
        self.backend_instances.remove(&backend_label(backend));
    }

    /// Counts one restart of `backend`'s process.
    pub fn backend_restarted(&self, backend: &str) {
        self.backend_restarts.get_or_create(&backend_label(backend)).inc();
    }

    /// Counts one config reload, taken (`ok`) or refused.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// After a reload: which of the settings read only at start differ in the file from what
    /// is in force (`sentinel reload` reports them).
    pub fn restart_pending(&self, pending: &[&str]) {
        for setting in crate::config::RESTART_ONLY {
            self.restart_pending.get_or_create(&SettingLabel { setting }).set(i64::from(pending.contains(&setting)));
        }
    }

    /// One audit record not written (see [`SUPPRESSED_DENIED_AUTH`]).
    pub fn audit_suppressed(&self, reason: &'static str) {
        self.audit_suppressed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The number of open sessions on a transport (`"http"` or `"stdio"`).
    pub fn sessions(&self, transport: &'static str, open: i64) {
        self.sessions.get_or_create(&TransportLabel { transport }).set(open);
    }

    /// The audit writer's state, copied in just before a scrape: the writer keeps its own
    /// atomics, so the hot path does not touch the registry. The totals (written, spooled,
    /// replayed, failed, dead-lettered, in `AUDIT_RESULTS`' order) must be monotonic for the
    /// life of the process (never reset); a scrape that reads an older total than a concurrent
    /// one adds nothing rather than counting twice.
    pub fn set_audit(&self, queue_depth: u64, totals: [u64; 5], store_up: bool) {
        self.audit_queue_depth.set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.audit_store_up.set(i64::from(store_up));
        for ((result, seen), total) in AUDIT_RESULTS.into_iter().zip(&self.audit_seen).zip(totals) {
            let before = seen.fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.audit_records.get_or_create(&ResultLabel { result }).inc_by(total - before);
            }
        }
    }

    /// `[cluster]`'s Redis: up or not, and its failures since start (monotonic, like the audit
    /// writer's totals).
    pub fn set_redis(&self, up: bool, failures: u64) {
        self.redis_up.set(i64::from(up));
        let before = self.redis_failures_seen.fetch_max(failures, Ordering::Relaxed);
        if failures > before {
            self.redis_failures.inc_by(failures - before);
        }
    }

    /// The Prometheus text exposition of every family; serve it with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let totals = crate::telemetry::dropped();
        for ((reason, seen), total) in
            crate::telemetry::DROP_REASONS.into_iter().zip(&self.spans_dropped_seen).zip(totals)
        {
            let before = seen.fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.spans_dropped.get_or_create(&ReasonLabel { reason }).inc_by(total - before);
            }
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn backend_label(backend: &str) -> BackendLabel {
    BackendLabel { backend: backend.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample line that starts with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    const FAMILIES: [(&str, &str); 11] = [
        ("sentinel_requests_total", "counter"),
        ("sentinel_request_duration_seconds", "histogram"),
        ("sentinel_backend_up", "gauge"),
        ("sentinel_circuit_state", "gauge"),
        ("sentinel_backend_restarts_total", "counter"),
        ("sentinel_rate_limited_total", "counter"),
        ("sentinel_audit_queue_depth", "gauge"),
        ("sentinel_audit_records_total", "counter"),
        ("sentinel_audit_store_up", "gauge"),
        ("sentinel_config_reloads_total", "counter"),
        ("sentinel_sessions", "gauge"),
    ];

    fn described(text: &str, name: &str, kind: &str) -> bool {
        text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} {kind}\n"))
    }

    #[test]
    fn unlabelled_and_fixed_label_families_appear_before_any_event() {
        let text = Metrics::new().render();
        for name in ["sentinel_audit_queue_depth", "sentinel_audit_records_total", "sentinel_config_reloads_total"] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
        }
        assert_eq!(sample(&text, "sentinel_audit_records_total{result=\"spooled\"}"), Some(0.0));
        assert_eq!(sample(&text, "sentinel_config_reloads_total{result=\"error\"}"), Some(0.0));
        assert_eq!(sample(&text, "sentinel_sessions{transport=\"stdio\"}"), Some(0.0));
        assert_eq!(sample(&text, "sentinel_audit_queue_depth"), Some(0.0));
    }

    /// Every registered family, a contract one or one added later, is in a fresh registry's
    /// output with a zero series once a backend is configured: no family waits for its first
    /// event.
    #[test]
    fn every_registered_family_appears_before_any_event() {
        let m = Metrics::new();
        m.backend_configured("github");
        m.backend_up("github", true);
        m.circuit_state("github", CircuitGauge::Closed);
        m.profile_configured("research");
        // The per-user families have series once a backend acting for each caller is configured.
        m.per_user_backend("github", true);
        let text = m.render();
        assert!(m.family_names().len() >= FAMILIES.len());
        for name in m.family_names() {
            let present = [format!("# TYPE {name} "), format!("# TYPE {name}_total ")];
            assert!(present.iter().any(|p| text.contains(p.as_str())), "{name} missing from a fresh registry:\n{text}");
        }
        for (name, kind) in FAMILIES {
            assert!(described(&text, name, kind), "{name} ({kind}) missing:\n{text}");
        }
        assert_eq!(sample(&text, r#"sentinel_rate_limited_total{tool="<unknown>"}"#), Some(0.0));
        assert_eq!(sample(&text, r#"sentinel_request_duration_seconds_count{backend="github"}"#), Some(0.0));
    }

    #[test]
    fn a_listed_tool_starts_at_zero() {
        let m = Metrics::new();
        m.tool_listed("gh__search", "github");
        let text = m.render();
        assert_eq!(
            sample(&text, r#"sentinel_requests_total{tool="gh__search",backend="github",outcome="ok"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&text, r#"sentinel_rate_limited_total{tool="gh__search"}"#), Some(0.0));
        m.rate_limited("gh__search");
        assert_eq!(sample(&m.render(), r#"sentinel_rate_limited_total{tool="gh__search"}"#), Some(1.0));
    }

    #[test]
    fn every_family_is_described_once_it_has_a_series() {
        let m = Metrics::new();
        m.request("search", "github", Outcome::Ok, 0.003);
        m.rate_limited("search");
        m.backend_up("github", true);
        m.circuit_state("github", CircuitGauge::Closed);
        m.backend_restarted("github");
        let text = m.render();
        for (name, kind) in FAMILIES {
            assert!(described(&text, name, kind), "{name} ({kind}) missing:\n{text}");
        }
    }

    #[test]
    fn counters_and_gauges_move() {
        let m = Metrics::new();
        m.request("search", "github", Outcome::Ok, 0.01);
        m.request("search", "github", Outcome::Ok, 0.02);
        m.request("search", "github", Outcome::Timeout, 30.0);
        m.rate_limited("search");
        m.backend_up("github", true);
        m.backend_up("github", false);
        m.circuit_state("github", CircuitGauge::Open);
        m.backend_restarted("github");
        m.backend_restarted("github");
        m.config_reload(true);
        m.sessions("http", 3);
        let text = m.render();
        let ok = r#"sentinel_requests_total{tool="search",backend="github",outcome="ok"}"#;
        assert_eq!(sample(&text, ok), Some(2.0), "{text}");
        let timeout = r#"sentinel_requests_total{tool="search",backend="github",outcome="timeout"}"#;
        assert_eq!(sample(&text, timeout), Some(1.0));
        assert_eq!(sample(&text, r#"sentinel_rate_limited_total{tool="search"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"sentinel_backend_up{backend="github"}"#), Some(0.0));
        assert_eq!(sample(&text, r#"sentinel_circuit_state{backend="github"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"sentinel_backend_restarts_total{backend="github"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"sentinel_config_reloads_total{result="ok"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"sentinel_sessions{transport="http"}"#), Some(3.0));
    }

    #[test]
    fn histogram_has_every_bucket_and_only_routed_requests_are_timed() {
        let m = Metrics::new();
        m.request("search", "github", Outcome::Ok, 0.0007);
        m.request("search", "github", Outcome::Ok, 45.0);
        m.request(UNKNOWN_TOOL, "", Outcome::InvalidArgs, 0.0001);
        let text = m.render();
        let series = "sentinel_request_duration_seconds";
        for le in ["0.0005", "0.001", "0.0025", "1", "2.5", "60", "300", "+Inf"] {
            assert!(
                sample(&text, &format!("{series}_bucket{{backend=\"github\",le=\"{le}\"}}")).is_some(),
                "{le}:\n{text}"
            );
        }
        assert_eq!(sample(&text, &format!("{series}_bucket{{backend=\"github\",le=\"0.0005\"}}")), Some(0.0));
        assert_eq!(sample(&text, &format!("{series}_bucket{{backend=\"github\",le=\"0.001\"}}")), Some(1.0));
        assert_eq!(sample(&text, &format!("{series}_bucket{{backend=\"github\",le=\"30\"}}")), Some(1.0));
        assert_eq!(sample(&text, &format!("{series}_bucket{{backend=\"github\",le=\"60\"}}")), Some(2.0));
        assert_eq!(sample(&text, &format!("{series}_count{{backend=\"github\"}}")), Some(2.0));
        assert!(!text.contains(r#"backend="",le"#), "an unrouted request was timed:\n{text}");
        let refused = r#"sentinel_requests_total{tool="<unknown>",backend="",outcome="invalid_args"}"#;
        assert_eq!(sample(&text, refused), Some(1.0));
    }

    #[test]
    fn unknown_tools_share_one_series() {
        assert_eq!(tool_label(true, "search"), "search");
        assert_eq!(tool_label(false, "made-up-1"), UNKNOWN_TOOL);
        let m = Metrics::new();
        for name in ["a", "b", "c"] {
            m.rate_limited(tool_label(false, name));
        }
        let text = m.render();
        assert_eq!(sample(&text, r#"sentinel_rate_limited_total{tool="<unknown>"}"#), Some(3.0));
        assert_eq!(text.matches("sentinel_rate_limited_total{").count(), 1);
    }

    #[test]
    fn odd_label_values_are_escaped() {
        let m = Metrics::new();
        m.rate_limited("say \"hi\"\nnew_metric 1\\");
        let text = m.render();
        assert_eq!(
            sample(&text, r#"sentinel_rate_limited_total{tool="say \"hi\"\nnew_metric 1\\"}"#),
            Some(1.0),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("new_metric")), "a label broke the line:\n{text}");
    }

    #[test]
    fn audit_totals_become_counter_increments() {
        let m = Metrics::new();
        m.set_audit(7, [10, 2, 0, 1, 0], false);
        m.set_audit(3, [15, 2, 2, 1, 4], true);
        // An older total read by a slower concurrent scrape adds nothing.
        m.set_audit(3, [12, 2, 2, 1, 3], true);
        let text = m.render();
        assert_eq!(sample(&text, "sentinel_audit_queue_depth"), Some(3.0));
        assert_eq!(sample(&text, r#"sentinel_audit_records_total{result="written"}"#), Some(15.0));
        assert_eq!(sample(&text, r#"sentinel_audit_records_total{result="spooled"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"sentinel_audit_records_total{result="replayed"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"sentinel_audit_records_total{result="failed"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"sentinel_audit_records_total{result="dead_lettered"}"#), Some(4.0));
        assert_eq!(sample(&text, "sentinel_audit_store_up"), Some(1.0));
    }

    #[test]
    fn can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Metrics>();
    }

    #[test]
    fn content_type_is_prometheus_text() {
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
