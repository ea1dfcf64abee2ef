//! The audit hook: one record for every call and every refused request, written whether the
//! call was allowed or not (like pingora's logging phase). This build writes records to the
//! log under the `audit` target; durable stores come behind the same `AuditSink`.

use std::time::{Duration, SystemTime};

/// How a request ended, as the audit trail names it (the contract's outcome words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ToolError,
    DeniedAuth,
    DeniedRbac,
    Killed,
    RateLimited,
    InvalidArgs,
    BackendError,
    Timeout,
    Unavailable,
}

impl Outcome {
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
        }
    }
}

/// One audited request. Arguments are not recorded yet: they need redaction first.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// UUIDv7: also the request id sent to the backend in `_meta` and shown in logs.
    pub id: uuid::Uuid,
    pub ts: SystemTime,
    pub client: Option<String>,
    pub roles: Vec<String>,
    pub session: Option<String>,
    pub transport: &'static str,
    pub method: String,
    pub tool: Option<String>,
    pub backend: Option<String>,
    pub outcome: Outcome,
    pub error_code: Option<i64>,
    pub latency: Duration,
    pub response_bytes: usize,
}

impl AuditRecord {
    /// A record for a request just received; the pipeline fills in the rest as it goes.
    pub fn start(
        method: &str,
        transport: &'static str,
        client: Option<&str>,
        roles: &[String],
        session: Option<&str>,
    ) -> Self {
        AuditRecord {
            id: uuid::Uuid::now_v7(),
            ts: SystemTime::now(),
            client: client.map(str::to_string),
            roles: roles.to_vec(),
            session: session.map(str::to_string),
            transport,
            method: method.to_string(),
            tool: None,
            backend: None,
            outcome: Outcome::Ok,
            error_code: None,
            latency: Duration::ZERO,
            response_bytes: 0,
        }
    }
}

pub trait AuditSink: Send + Sync {
    fn record(&self, record: AuditRecord);
}

/// Writes each record as one structured log line (target `audit`).
pub struct LogSink;

impl AuditSink for LogSink {
    fn record(&self, r: AuditRecord) {
        tracing::info!(
            target: "audit",
            id = %r.id,
            client = r.client.as_deref().unwrap_or("-"),
            roles = %r.roles.join(","),
            session = r.session.as_deref().unwrap_or("-"),
            transport = r.transport,
            method = %r.method,
            tool = r.tool.as_deref().unwrap_or("-"),
            backend = r.backend.as_deref().unwrap_or("-"),
            outcome = r.outcome.as_str(),
            error_code = r.error_code.unwrap_or(0),
            latency_ms = r.latency.as_secs_f64() * 1000.0,
            response_bytes = r.response_bytes,
            "call"
        );
    }
}
