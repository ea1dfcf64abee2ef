//! Every way the gateway refuses or fails a request, each mapped in one table to its
//! JSON-RPC code, HTTP status and `data`.

use http::StatusCode;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::audit::Outcome;
use crate::jsonrpc::{self, code};

/// Why a request was refused or failed: each variant one refusal, its text the JSON-RPC error
/// message and its fields the `data` a program acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// No valid credentials. HTTP answers 401 with `WWW-Authenticate: Bearer`.
    #[error("Not authenticated: {message}")]
    Unauthenticated {
        /// `AuthError::reason`'s stable word, sent as `data.reason`.
        reason: &'static str,
        /// Why the token was refused, for a human.
        message: String,
    },
    /// The caller's roles do not allow the name.
    #[error("Forbidden: your roles do not allow `{tool}`")]
    Forbidden {
        /// The exposed name asked for.
        tool: String,
        /// The caller's roles, sent back so the client can tell which identity was judged.
        roles: Vec<String>,
    },
    /// The kill switch has the name or its backend off.
    #[error("`{tool}` is switched off by the operator")]
    Killed {
        /// The exposed name asked for.
        tool: String,
        /// The backend that serves it.
        backend: String,
    },
    /// The tool's definition changed since it was pinned, and `[pinning] mode = "hold"` keeps
    /// it out of use until an operator approves it.
    #[error("`{tool}` changed its definition and is held until an operator approves it (sentinel pins approve)")]
    Held {
        /// The exposed name asked for.
        tool: String,
        /// The backend that serves it.
        backend: String,
    },
    /// The caller's quota for the name is spent.
    #[error("Rate limited: {limit} for `{scope}`; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When the next call would be allowed.
        retry_after_ms: u64,
        /// The quota, as configured (`"60/min"`).
        limit: String,
        /// The name or glob the quota counts.
        scope: String,
    },
    /// The arguments fail the tool's `inputSchema`.
    #[error("Invalid arguments for `{tool}`: {summary}")]
    InvalidArguments {
        /// The exposed tool name.
        tool: String,
        /// How many violations, in one line.
        summary: String,
        /// Each violation as (JSON pointer into the arguments, message).
        violations: Vec<(String, String)>,
    },
    /// No tool of that name in the catalog.
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    /// No prompt of that name in the catalog.
    #[error("Unknown prompt: {0}")]
    UnknownPrompt(String),
    /// No backend owns that resource URI.
    #[error("Resource not found: {0}")]
    UnknownResource(String),
    /// The params do not have the shape the method requires.
    #[error("Invalid params: {0}")]
    InvalidParams(String),
    /// Not a request the gateway can take (in this session state, or at all).
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    /// A method the gateway does not serve.
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    /// The backend cannot be reached now: down, crashed, or its circuit open.
    #[error("Backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend's name.
        backend: String,
        /// What went wrong, for a human.
        reason: String,
        /// When trying again may help (a circuit's remaining open time, else a second).
        retry_after_ms: u64,
    },
    /// The backend did not answer within its timeout.
    #[error("Backend `{backend}` did not answer within {timeout_ms} ms")]
    BackendTimeout {
        /// The backend's name.
        backend: String,
        /// Its configured timeout.
        timeout_ms: u64,
    },
    /// An `Mcp-*` header disagrees with the body it came with.
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    /// A protocol version the gateway does not speak.
    #[error("Unsupported protocol version `{0}`")]
    UnsupportedVersion(String),
    /// A stateless backend's request for input that could not be relayed to the client.
    #[error("{0}")]
    NotBridged(String),
    /// The audit trail cannot be written and the policy is fail-closed.
    #[error(
        "The audit trail cannot be written, and calls are refused until it can (on_audit_failure = \"fail_closed\")"
    )]
    AuditUnavailable,
    /// The backend acts for each caller, and this caller has no usable credential for it:
    /// none stored, none to exchange, or the exchange failed. Nothing was sent to the backend.
    #[error("No credential for backend `{backend}`: {message}")]
    NoCredential {
        /// The backend's name.
        backend: String,
        /// A stable word a program can act on: `not_set`, `unreadable`, `no_token`,
        /// `exchange_failed`.
        reason: &'static str,
        /// What happened and what to do, for a human (never a secret).
        message: String,
    },
    /// A stateless request without the `_meta` the 2026-07-28 revision requires.
    #[error("Invalid params: {0}")]
    MalformedStateless(String),
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
            Refusal::Held { tool, backend } => {
                (code::HELD, StatusCode::OK, Some(json!({ "tool": tool, "backend": backend })))
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
            Refusal::NoCredential { backend, reason, .. } => {
                (code::NO_CREDENTIAL, StatusCode::OK, Some(json!({ "backend": backend, "reason": reason })))
            }
            Refusal::MalformedStateless(_) => (code::INVALID_PARAMS, StatusCode::BAD_REQUEST, None),
        }
    }

    /// How the audit trail names this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Unauthenticated { .. } => Outcome::DeniedAuth,
            Refusal::Forbidden { .. } => Outcome::DeniedRbac,
            Refusal::Killed { .. } => Outcome::Killed,
            Refusal::Held { .. } => Outcome::Held,
            Refusal::RateLimited { .. } => Outcome::RateLimited,
            Refusal::BackendUnavailable { .. } => Outcome::Unavailable,
            Refusal::BackendTimeout { .. } => Outcome::Timeout,
            Refusal::NotBridged(_) => Outcome::BackendError,
            Refusal::AuditUnavailable => Outcome::Unavailable,
            // SPEC §5's outcomes are fixed: the backend is unusable for this caller. The code
            // (-32018) and the record's credential mode tell it from a backend that is down.
            Refusal::NoCredential { .. } => Outcome::Unavailable,
            Refusal::InvalidArguments { .. }
            | Refusal::UnknownTool(_)
            | Refusal::UnknownPrompt(_)
            | Refusal::UnknownResource(_)
            | Refusal::InvalidParams(_)
            | Refusal::InvalidRequest(_)
            | Refusal::MethodNotFound(_)
            | Refusal::HeaderMismatch(_)
            | Refusal::UnsupportedVersion(_)
            | Refusal::MalformedStateless(_) => Outcome::InvalidArgs,
        }
    }

    /// The HTTP status the HTTP front door answers this refusal with.
    pub fn status(&self) -> StatusCode {
        self.classify().1
    }

    /// The JSON-RPC error response to request `id`, as text.
    pub fn to_response(&self, id: Option<&RawValue>) -> String {
        let (c, _, data) = self.classify();
        jsonrpc::error(id, c, &self.to_string(), data.as_ref())
    }
}
