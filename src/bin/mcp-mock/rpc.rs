//! JSON-RPC plumbing shared by both transports: incoming message shapes, the
//! frames a call emits, the final reply and the error codes the mock uses.
//!
//! Hand-written on `serde_json::Value` on purpose: the mock is an independent peer
//! of the gateway and must not share its (strict, typed) parser or its bugs.

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const LEGACY_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
pub const MODERN_VERSION: &str = "2026-07-28";

pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const PARSE_ERROR: i64 = -32700;
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// One incoming JSON-RPC message. `params` is kept raw as well so `echo` can hand
/// back the arguments byte for byte.
pub struct Incoming {
    pub id: Option<Value>,
    pub method: Option<String>,
    pub params: Value,
    pub raw_params: Option<Box<RawValue>>,
    /// Set when the message is a response (to a server-to-client request).
    pub response: Option<Value>,
}

#[derive(serde::Deserialize)]
struct Envelope {
    id: Option<Value>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

impl Incoming {
    pub fn parse(text: &str) -> Result<Incoming, RpcError> {
        let env: Envelope = serde_json::from_str(text).map_err(|e| {
            let code = if text.trim_start().starts_with('[') { INVALID_REQUEST } else { PARSE_ERROR };
            RpcError::new(code, format!("cannot parse message: {e}")).status(400)
        })?;
        let params = match &env.params {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let response = if env.method.is_none() && (env.result.is_some() || env.error.is_some()) {
            serde_json::from_str(text).ok()
        } else {
            None
        };
        Ok(Incoming { id: env.id, method: env.method, params, raw_params: env.params, response })
    }

    /// The request's `_meta`, or `Null`.
    pub fn meta(&self) -> &Value {
        self.params.get("_meta").unwrap_or(&Value::Null)
    }

    /// True when the request carries modern (2026-07-28) per-request metadata.
    pub fn has_modern_meta(&self) -> bool {
        self.meta().get(META_VERSION).is_some()
    }
}

/// What a running call sends before (or instead of) its final response.
#[derive(Debug)]
pub enum Frame {
    /// A complete JSON message (notification or server-to-client request), or a
    /// deliberately broken line when the `garbage` tool runs.
    Line(String),
    /// The final JSON-RPC response line and the HTTP status it should carry.
    Final { line: String, status: u16 },
}

pub type Emitter = mpsc::UnboundedSender<Frame>;

/// A JSON-RPC error plus the HTTP status the modern transport must use for it.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub status: u16,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None, status: 200 }
    }
    pub fn data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
    pub fn status(mut self, status: u16) -> RpcError {
        self.status = status;
        self
    }
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }
    pub fn header_mismatch(message: impl Into<String>) -> RpcError {
        RpcError::new(HEADER_MISMATCH, message).status(400)
    }
}

/// The outcome of a request.
pub enum Reply {
    /// A result as raw JSON text, written literally.
    Result(String),
    Error(RpcError),
    /// Nothing is ever sent (cancelled call, closed subscription).
    Silent,
}

impl Reply {
    pub fn value(v: Value) -> Reply {
        Reply::Result(v.to_string())
    }

    /// The response line and HTTP status, or `None` for `Silent`.
    pub fn encode(&self, id: &Value) -> Option<(String, u16)> {
        let id = id.to_string();
        match self {
            Reply::Result(raw) => Some((format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{raw}}}"#), 200)),
            Reply::Error(e) => Some((error_line(&id, e), e.status)),
            Reply::Silent => None,
        }
    }
}

/// An error response; `id` is already JSON text (`null` when unknown).
pub fn error_line(id: &str, e: &RpcError) -> String {
    let mut err = json!({"code": e.code, "message": e.message});
    if let Some(data) = &e.data {
        err["data"] = data.clone();
    }
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{err}}}"#)
}

pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}
