//! Every way the gateway refuses or fails a request, each mapped in one table to its
//! JSON-RPC code, HTTP status and `data`.

use http::StatusCode;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::audit::Outcome;
use crate::jsonrpc::{self, code};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// No valid credentials. HTTP answers 401 with `WWW-Authenticate: Bearer`.
    #[error("Not authenticated: {message}")]
    Unauthenticated { reason: &'static str, message: String },
    #[error("Forbidden: your roles do not allow `{tool}`")]
    Forbidden { tool: String, roles: Vec<String> },
    #[error("`{tool}` is switched off by the operator")]
    Killed { tool: String, backend: String },
    #[error("Rate limited: {limit} for `{scope}`; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64, limit: String, scope: String },
    #[error("Invalid arguments for `{tool}`: {summary}")]
    InvalidArguments { tool: String, summary: String, violations: Vec<(String, String)> },
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    #[error("Unknown prompt: {0}")]
    UnknownPrompt(String),
    #[error("Resource not found: {0}")]
    UnknownResource(String),
    #[error("Invalid params: {0}")]
    InvalidParams(String),
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    #[error("Backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String, retry_after_ms: u64 },
    #[error("Backend `{backend}` did not answer within {timeout_ms} ms")]
    BackendTimeout { backend: String, timeout_ms: u64 },
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    #[error("Unsupported protocol version `{0}`")]
    UnsupportedVersion(String),
    #[error("{0}")]
    NotBridged(String),
    /// The audit trail cannot be written and the policy is fail-closed.
    #[error(
        "The audit trail cannot be written, and calls are refused until it can (on_audit_failure = \"fail_closed\")"
    )]
    AuditUnavailable,
    /// A stateless request without the `_meta` the 2026-07-28 revision requires.
    #[error("Invalid params: {0}")]
    MalformedModern(String),
}

impl From<crate::protocol::ParamsError> for Refusal {
    fn from(e: crate::protocol::ParamsError) -> Refusal {
        Refusal::InvalidParams(e.to_string())
    }
}

impl Refusal {
    /// The one table: JSON-RPC code, HTTP status, and data a program can act on.
    pub fn classify(&self) -> (i64, StatusCode, Option<Value>) {
        match self {
            Refusal::Unauthenticated { reason, .. } => {
                (code::UNAUTHENTICATED, StatusCode::UNAUTHORIZED, Some(json!({ "reason": reason })))
            }
            Refusal::Forbidden { tool, roles } => {
                (code::FORBIDDEN, StatusCode::OK, Some(json!({ "tool": tool, "roles": roles })))
            }
            Refusal::Killed { tool, backend } => {
                (code::KILLED, StatusCode::OK, Some(json!({ "tool": tool, "backend": backend })))
            }
            Refusal::RateLimited { retry_after_ms, limit, scope } => (
                code::RATE_LIMITED,
                StatusCode::OK,
                Some(json!({ "retry_after_ms": retry_after_ms, "limit": limit, "scope": scope })),
            ),
            Refusal::InvalidArguments { tool, violations, .. } => {
                let v: Vec<Value> = violations.iter().map(|(p, m)| json!({ "path": p, "message": m })).collect();
                (code::INVALID_PARAMS, StatusCode::OK, Some(json!({ "tool": tool, "violations": v })))
            }
            Refusal::UnknownTool(t) => (code::INVALID_PARAMS, StatusCode::OK, Some(json!({ "tool": t }))),
            Refusal::UnknownPrompt(p) => (code::INVALID_PARAMS, StatusCode::OK, Some(json!({ "prompt": p }))),
            Refusal::UnknownResource(u) => (code::INVALID_PARAMS, StatusCode::OK, Some(json!({ "uri": u }))),
            Refusal::InvalidParams(_) => (code::INVALID_PARAMS, StatusCode::OK, None),
            Refusal::InvalidRequest(_) => (code::INVALID_REQUEST, StatusCode::BAD_REQUEST, None),
            Refusal::MethodNotFound(m) => (code::METHOD_NOT_FOUND, StatusCode::OK, Some(json!({ "method": m }))),
            Refusal::BackendUnavailable { backend, retry_after_ms, .. } => (
                code::BACKEND_UNAVAILABLE,
                StatusCode::OK,
                Some(json!({ "backend": backend, "retry_after_ms": retry_after_ms })),
            ),
            Refusal::BackendTimeout { backend, timeout_ms } => {
                (code::BACKEND_TIMEOUT, StatusCode::OK, Some(json!({ "backend": backend, "timeout_ms": timeout_ms })))
            }
            Refusal::HeaderMismatch(_) => (code::HEADER_MISMATCH, StatusCode::BAD_REQUEST, None),
            Refusal::UnsupportedVersion(v) => (
                code::UNSUPPORTED_PROTOCOL_VERSION,
                StatusCode::BAD_REQUEST,
                Some(json!({ "supported": crate::protocol::SUPPORTED, "requested": v })),
            ),
            Refusal::NotBridged(_) => (code::INTERNAL_ERROR, StatusCode::OK, None),
            Refusal::AuditUnavailable => (code::AUDIT_UNAVAILABLE, StatusCode::OK, None),
            Refusal::MalformedModern(_) => (code::INVALID_PARAMS, StatusCode::BAD_REQUEST, None),
        }
    }

    /// How the audit trail names this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Unauthenticated { .. } => Outcome::DeniedAuth,
            Refusal::Forbidden { .. } => Outcome::DeniedRbac,
            Refusal::Killed { .. } => Outcome::Killed,
            Refusal::RateLimited { .. } => Outcome::RateLimited,
            Refusal::BackendUnavailable { .. } => Outcome::Unavailable,
            Refusal::BackendTimeout { .. } => Outcome::Timeout,
            Refusal::NotBridged(_) => Outcome::BackendError,
            Refusal::AuditUnavailable => Outcome::Unavailable,
            Refusal::InvalidArguments { .. }
            | Refusal::UnknownTool(_)
            | Refusal::UnknownPrompt(_)
            | Refusal::UnknownResource(_)
            | Refusal::InvalidParams(_)
            | Refusal::InvalidRequest(_)
            | Refusal::MethodNotFound(_)
            | Refusal::HeaderMismatch(_)
            | Refusal::UnsupportedVersion(_)
            | Refusal::MalformedModern(_) => Outcome::InvalidArgs,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().1
    }

    pub fn to_response(&self, id: Option<&RawValue>) -> String {
        let (c, _, data) = self.classify();
        jsonrpc::error(id, c, &self.to_string(), data.as_ref())
    }
}
