//! The audit trail: one record for every call and every refused request, written whether the
//! call was allowed or not (like pingora's logging phase), through an `AuditSink`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod dead_letter;
pub mod open;
pub mod query;
pub mod redact;
pub mod spool;
pub mod store;
pub mod throttle;
pub mod writer;

/// How a request ended, as the audit trail names it (the contract's outcome words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered with a result (a tool's own failure is `ToolError`).
    Ok,
    /// The tool ran and said it failed (`isError: true` in its result).
    ToolError,
    /// Refused: no valid token.
    DeniedAuth,
    /// Refused by the caller's roles.
    DeniedRbac,
    /// Refused: the kill switch has the tool or its backend off.
    Killed,
    /// Refused: the caller's rate limit for this name is spent.
    RateLimited,
    /// Refused as malformed: arguments that fail the `inputSchema`, bad params or headers, an
    /// unknown name, method or protocol version.
    InvalidArgs,
    /// The backend answered with a JSON-RPC error.
    BackendError,
    /// The backend did not answer within its timeout.
    Timeout,
    /// The backend could not be reached (down, crashed, circuit open), or the audit trail
    /// could not be written under `fail_closed`.
    Unavailable,
    /// The call ended without an answer because its client cancelled it or went away (the
    /// request dropped mid-call or mid-result, `notifications/cancelled`, stdin closed).
    Cancelled,
    /// Refused: the tool's definition changed and is held until approved (`[pinning]`).
    Held,
}

impl Outcome {
    /// Every outcome. `as_str`'s exhaustive match is the reminder to list a new one here.
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::ToolError,
        Outcome::DeniedAuth,
        Outcome::DeniedRbac,
        Outcome::Killed,
        Outcome::RateLimited,
        Outcome::InvalidArgs,
        Outcome::BackendError,
        Outcome::Timeout,
        Outcome::Unavailable,
        Outcome::Cancelled,
        Outcome::Held,
    ];

    /// The outcome for its word (`sentinel audit --outcome`), if it is one.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome's word in the store, the logs and `--outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::DeniedAuth => "denied_auth",
            Outcome::DeniedRbac => "denied_rbac",
            Outcome::Killed => "killed",
            Outcome::RateLimited => "rate_limited",
            Outcome::InvalidArgs => "invalid_args",
            Outcome::BackendError => "backend_error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::Cancelled => "cancelled",
            Outcome::Held => "held",
        }
    }
}

/// One audited request (SPEC §5). Serializable: the local spool keeps records as JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// UUIDv7: also the request id sent to the backend in `_meta` and shown in logs. Stores
    /// are idempotent by it, so a replayed record is never stored twice.
    pub id: uuid::Uuid,
    /// When the request arrived, milliseconds since the Unix epoch: the time in `id`. Stores
    /// find a time window through the id (`store::id_floor`), so the two must agree.
    pub ts_ms: i64,
    /// The token's `sub`; `None` without authentication (or when it was refused).
    pub client: Option<String>,
    /// The token's roles, as the RBAC check saw them.
    pub roles: Vec<String>,
    /// The `Mcp-Session-Id` of a session-based client (bounded).
    pub session: Option<String>,
    /// `http` or `stdio`.
    pub transport: String,
    /// The JSON-RPC method, or a label for one the gateway does not serve (bounded).
    pub method: String,
    /// The exposed tool or prompt name, or the resource URI.
    pub tool: Option<String>,
    /// The backend that served (or would have served) the call; `None` when refused before routing.
    pub backend: Option<String>,
    /// The call's arguments as JSON text, with secrets redacted (see `redact`).
    pub arguments: Option<String>,
    /// How the request ended.
    pub outcome: Outcome,
    /// The JSON-RPC error code of the answer, if it was an error.
    pub error_code: Option<i64>,
    /// Time from the request's arrival to its answer (or end of its streamed result).
    pub latency_ms: f64,
    /// Time the backend took, when the call reached one.
    pub backend_latency_ms: Option<f64>,
    /// Bytes of the result handed to the client (what had gone by, for one cut short).
    pub response_bytes: u64,
    /// The OpenTelemetry trace this request's spans belong to (32 hex digits), when
    /// `[telemetry]` is on: the way from this record to its trace. Absent from older spools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The replica that answered (`crate::replica`): kept in the record, not added by the
    /// store, because a spool left by one process may be stored by another. Absent from
    /// older spools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The `[[profile]]` the request came in by (`/mcp/<profile>`, `sentinel stdio
    /// --profile`); `None` at `/mcp`. Absent from older spools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The credential mode that served the call (`shared`, `per_user`, `token_exchange`;
    /// SPEC §7), once it was routed to a backend: which identity the backend saw, never the
    /// credential. Absent from older spools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_mode: Option<String>,
}

/// The longest client-chosen text a record (and its log line) keeps of each field: anyone who
/// can reach the gateway chooses these, without a token too, and must not be able to fill the
/// spool, the store or the log with them. Longer text is cut, with a marker saying how much.
pub const MAX_METHOD_BYTES: usize = 128;
/// Longest exposed tool, prompt or subject name kept.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest session id kept.
pub const MAX_SESSION_BYTES: usize = 128;
/// Longest resource URI kept (after its credentials are redacted).
pub const MAX_URI_BYTES: usize = 2048;

/// How a record names a method the gateway does not serve: a client can send any text there.
pub const UNKNOWN_METHOD: &str = "<unknown>";

/// The method as a record names it: one the gateway serves (see [`crate::method`]), or
/// [`UNKNOWN_METHOD`].
pub fn method_label(method: &str) -> &str {
    method.parse::<crate::method::Method>().map_or(UNKNOWN_METHOD, crate::method::Method::as_str)
}

/// `s` cut to at most `max` bytes (at a character boundary) with a marker saying how much was
/// left out; borrowed when it fits. The marker is short, so the result stays near `max`.
pub fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…[+{} bytes]", &s[..end], s.len() - end))
}

/// A durable home for audit records: SQLite or PostgreSQL. `insert` must be idempotent by
/// `id` (a record replayed after a crash is not stored twice).
pub trait AuditStore: Send + Sync + 'static {
    /// Stores a batch; a record already stored (same `id`) is skipped, not an error.
    fn insert<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Reaches the store (and brings its schema up to date) if that is not done yet; the
    /// writer calls it, with backoff, until it succeeds, and inserts nothing before.
    fn connect(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why a store did not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// The store refused the batch for what it holds, and would refuse it again (a constraint,
    /// a trigger, a value it cannot store): retrying cannot help. Otherwise (the store is down,
    /// busy, out of space, or the error is not known to be about the records) the same batch
    /// is retried until it is stored.
    pub permanent: bool,
    /// The store's error, without credentials.
    pub message: String,
}

impl StoreError {
    /// A failure that retrying the same batch may cure (store down, busy, ...).
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError { permanent: false, message: message.into() }
    }
}

impl AuditRecord {
    /// A record for a request just received; the pipeline fills in the rest as it goes.
    pub fn start(method: &str, transport: &str, client: Option<&str>, roles: &[String], session: Option<&str>) -> Self {
        // One clock reading for both: the time is taken from the id rather than read again, so
        // a clock stepped back in between cannot put `ts` after the id's time.
        let id = uuid::Uuid::now_v7();
        let ts_ms = id.get_timestamp().map_or(0, |t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        });
        AuditRecord {
            id,
            ts_ms,
            client: client.map(|c| bounded(c, MAX_NAME_BYTES).into_owned()),
            roles: roles.to_vec(),
            session: session.map(|s| bounded(s, MAX_SESSION_BYTES).into_owned()),
            transport: transport.to_string(),
            method: bounded(method_label(method), MAX_METHOD_BYTES).into_owned(),
            tool: None,
            backend: None,
            arguments: None,
            outcome: Outcome::Ok,
            error_code: None,
            latency_ms: 0.0,
            backend_latency_ms: None,
            response_bytes: 0,
            trace_id: None,
            replica: Some(crate::replica::id().to_string()),
            profile: None,
            credential_mode: None,
        }
    }

    /// Records what the call is about: a tool or prompt name, or a resource URI (its
    /// credentials redacted), bounded like every client-chosen field.
    pub fn set_target(&mut self, method: crate::method::Method, name: &str, redactor: &redact::Redactor) {
        use crate::method::Method;
        let uri = matches!(method, Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe)
            || (method == Method::Complete && name.contains(':'));
        self.tool = Some(if uri {
            bounded(&redactor.redact_text(name), MAX_URI_BYTES).into_owned()
        } else {
            bounded(name, MAX_NAME_BYTES).into_owned()
        });
    }

    /// Sets `latency_ms` from the time the request took.
    pub fn set_latency(&mut self, d: Duration) {
        self.latency_ms = d.as_secs_f64() * 1000.0;
    }
}

/// Why a record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit record could not be written: {0}")]
pub struct AuditUnavailable(pub String);

/// A boxed future: what `AuditStore`'s methods return, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the pipeline hands every record.
pub trait AuditSink: Send + Sync {
    /// Records one. Resolves once the record is durable (in the local spool or the store):
    /// the pipeline waits for it before answering, so a call whose answer reached a client is
    /// never lost, even to `kill -9`.
    fn record(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), AuditUnavailable>>;

    /// Whether records can be made durable right now; under `on_audit_failure = "fail_closed"`
    /// calls are refused (-32016) while this is false.
    fn writable(&self) -> bool {
        true
    }

    /// Writes out everything queued (shutdown).
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// `[audit] url = "none"`: nothing is kept (the pipeline's log line is all there is).
pub struct NoStore;

impl AuditSink for NoStore {
    fn record(&self, _: AuditRecord) -> BoxFuture<'_, Result<(), AuditUnavailable>> {
        Box::pin(async { Ok(()) })
    }
}

/// Writes each record as one structured log line (target `audit`).
pub struct LogSink;

impl AuditSink for LogSink {
    fn record(&self, r: AuditRecord) -> BoxFuture<'_, Result<(), AuditUnavailable>> {
        self.write(&r);
        Box::pin(async { Ok(()) })
    }
}

impl LogSink {
    /// The record as one log line (the gateway's access log; the store keeps the record).
    pub fn write(&self, r: &AuditRecord) {
        tracing::info!(
            target: "audit",
            id = %r.id,
            client = r.client.as_deref().unwrap_or("-"),
            roles = %r.roles.join(","),
            session = r.session.as_deref().unwrap_or("-"),
            transport = %r.transport,
            method = %r.method,
            tool = r.tool.as_deref().unwrap_or("-"),
            backend = r.backend.as_deref().unwrap_or("-"),
            outcome = r.outcome.as_str(),
            error_code = r.error_code.unwrap_or(0),
            latency_ms = r.latency_ms,
            response_bytes = r.response_bytes,
            // Only when tracing is on: the line is as it was without it.
            trace_id = r.trace_id.as_deref(),
            // Only for requests that came in by a profile.
            profile = r.profile.as_deref(),
            // Only for a routed call: which identity the backend saw (never the credential).
            credential = r.credential_mode.as_deref(),
            "call"
        );
    }
}
