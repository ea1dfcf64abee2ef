//! The context one request runs in, and how a handler talks back to the client
//! while it runs: notifications, log messages, progress, and asking the client for
//! input — a real server-to-client request on the legacy protocol, a multi
//! round-trip `InputRequiredResult` (MRTR) on 2026-07-28.

use crate::rpc::{Emitter, Frame, META_CAPS, META_LOG_LEVEL, MISSING_CAPABILITY, RpcError, notification};
use crate::server::{Era, Server, Session, level_index};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Ctx {
    pub server: Arc<Server>,
    pub era: Era,
    pub id: Value,
    pub method: String,
    pub params: Value,
    pub raw_params: Option<Box<RawValue>>,
    /// Legacy state; `None` for modern (stateless) requests.
    pub session: Option<Arc<Session>>,
    pub out: Emitter,
    pub cancel: CancellationToken,
    /// HTTP request headers (lower-case names), reported by `whoami`.
    pub headers: Option<Value>,
    /// MRTR answers gathered so far: earlier rounds (from `requestState`) plus this one.
    answers: Map<String, Value>,
    /// True when the request carried a `requestState` whose signature verified.
    pub state_verified: bool,
}

/// Why a handler stopped before producing a normal result.
pub enum Flow {
    Error(RpcError),
    /// Reported as a tool result with `isError: true`.
    ToolError(String),
    /// A complete `InputRequiredResult` to return (modern only).
    InputRequired(Value),
    Cancelled,
}

impl From<RpcError> for Flow {
    fn from(e: RpcError) -> Flow {
        Flow::Error(e)
    }
}

/// One piece of input a handler needs from the client.
pub struct Ask {
    pub key: &'static str,
    pub method: &'static str,
    pub params: Value,
}

fn capability_for(method: &str) -> &'static str {
    match method {
        "sampling/createMessage" => "sampling",
        "elicitation/create" => "elicitation",
        _ => "roots",
    }
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: Arc<Server>,
        era: Era,
        id: Value,
        method: String,
        params: Value,
        raw_params: Option<Box<RawValue>>,
        session: Option<Arc<Session>>,
        out: Emitter,
        cancel: CancellationToken,
        headers: Option<Value>,
    ) -> Ctx {
        Ctx {
            server,
            era,
            id,
            method,
            params,
            raw_params,
            session,
            out,
            cancel,
            headers,
            answers: Map::new(),
            state_verified: false,
        }
    }

    pub fn meta(&self) -> &Value {
        self.params.get("_meta").unwrap_or(&Value::Null)
    }

    pub fn client_caps(&self) -> Value {
        match (&self.era, &self.session) {
            (Era::Legacy, Some(s)) => s.caps(),
            _ => self.meta().get(META_CAPS).cloned().unwrap_or(json!({})),
        }
    }

    pub fn args(&self) -> &Value {
        self.params.get("arguments").unwrap_or(&Value::Null)
    }

    pub fn notify(&self, method: &str, params: Value) {
        let _ = self.out.send(Frame::Line(notification(method, params)));
    }

    /// Sends `notifications/message` if the client asked for this level: legacy via
    /// `logging/setLevel`, modern only via `_meta` `io.modelcontextprotocol/logLevel`.
    pub fn log(&self, level: &str, message: &str) {
        let wanted = level_index(level).unwrap_or(1);
        let threshold = match (&self.era, &self.session) {
            (Era::Legacy, Some(s)) => s.log_level.lock().unwrap().unwrap_or(0),
            _ => match self.meta().get(META_LOG_LEVEL).and_then(Value::as_str).and_then(level_index) {
                Some(t) => t,
                None => return,
            },
        };
        if wanted >= threshold {
            let params = json!({"level": level, "logger": "mcp-mock", "data": message});
            self.notify("notifications/message", params);
        }
    }

    /// Sends `notifications/progress` when the request carried a progress token.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = self.meta().get("progressToken") else {
            return;
        };
        let mut params = json!({"progressToken": token, "progress": progress});
        if let Some(total) = total {
            params["total"] = json!(total);
        }
        if let Some(message) = message {
            params["message"] = json!(message);
        }
        self.notify("notifications/progress", params);
    }

    /// Sleeps, or returns `Flow::Cancelled` if the request is cancelled meanwhile.
    pub async fn sleep_ms(&self, ms: u64) -> Result<(), Flow> {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(ms)) => Ok(()),
            _ = self.cancel.cancelled() => Err(Flow::Cancelled),
        }
    }

    /// Reads `inputResponses` and `requestState` of a modern retry. Called before the
    /// handler runs so malformed input is a protocol error, not a tool result.
    pub fn prepare_mrtr(&mut self, subject: &str) -> Result<(), RpcError> {
        if let Some(state) = self.params.get("requestState") {
            let payload = state
                .as_str()
                .and_then(|s| self.verify(s))
                .filter(|p| p.get("subject").and_then(Value::as_str) == Some(subject))
                .ok_or_else(|| RpcError::invalid_params("requestState failed its integrity check"))?;
            if let Some(Value::Object(earlier)) = payload.get("answers") {
                self.answers.extend(earlier.clone());
            }
            self.state_verified = true;
        }
        match self.params.get("inputResponses") {
            None => {}
            Some(Value::Object(now)) => self.answers.extend(now.clone()),
            Some(_) => return Err(RpcError::invalid_params("inputResponses must be an object")),
        }
        Ok(())
    }

    /// Gets every answer in `asks`, in order.
    pub async fn ask_all(&self, asks: Vec<Ask>) -> Result<Vec<Value>, Flow> {
        let caps = self.client_caps();
        for ask in &asks {
            let cap = capability_for(ask.method);
            if caps.get(cap).is_none() {
                return Err(match self.era {
                    Era::Legacy => Flow::ToolError(format!("client does not support {cap} (no `{cap}` capability)")),
                    Era::Modern => Flow::Error(
                        RpcError::new(MISSING_CAPABILITY, format!("Missing required client capability: {cap}"))
                            .data(json!({"requiredCapabilities": {cap: {}}}))
                            .status(400),
                    ),
                });
            }
        }
        match self.era {
            Era::Legacy => {
                let mut answers = Vec::new();
                for ask in asks {
                    answers.push(self.request_client(ask.method, ask.params).await?);
                }
                Ok(answers)
            }
            Era::Modern => self.answers_or_input_required(asks),
        }
    }

    pub async fn ask(&self, key: &'static str, method: &'static str, params: Value) -> Result<Value, Flow> {
        let mut answers = self.ask_all(vec![Ask { key, method, params }]).await?;
        Ok(answers.remove(0))
    }

    fn answers_or_input_required(&self, asks: Vec<Ask>) -> Result<Vec<Value>, Flow> {
        let mut found = Vec::new();
        let mut missing = Map::new();
        for ask in asks {
            match self.answers.get(ask.key) {
                Some(answer @ Value::Object(_)) => found.push(answer.clone()),
                Some(_) => {
                    let message = format!("inputResponses.{} must be an object", ask.key);
                    return Err(RpcError::invalid_params(message).into());
                }
                None => {
                    missing.insert(ask.key.to_string(), json!({"method": ask.method, "params": ask.params}));
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let subject = self.mrtr_subject();
        let state = self.sign(&json!({"subject": subject, "answers": self.answers}));
        Err(Flow::InputRequired(json!({
            "resultType": "input_required", "inputRequests": missing, "requestState": state})))
    }

    /// The tool or prompt name a `requestState` is bound to.
    pub fn mrtr_subject(&self) -> String {
        let name = self.params.get("name").and_then(Value::as_str).unwrap_or("");
        format!("{}:{}", self.method, name)
    }

    /// A legacy server-to-client request: sent on this call's stream, answered by a
    /// JSON-RPC response from the client (stdin line or HTTP POST).
    pub async fn request_client(&self, method: &str, params: Value) -> Result<Value, Flow> {
        let session = self.session.as_ref().ok_or(Flow::ToolError("no session".into()))?;
        let id = session.next_request_id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        session.pending.lock().unwrap().insert(id.clone(), tx);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let _ = self.out.send(Frame::Line(request.to_string()));
        let response = tokio::select! {
            r = rx => r.map_err(|_| Flow::ToolError("client went away".into()))?,
            _ = self.cancel.cancelled() => {
                session.pending.lock().unwrap().remove(&id);
                return Err(Flow::Cancelled);
            }
        };
        if let Some(error) = response.get("error") {
            return Err(Flow::ToolError(format!("client answered {method} with error: {error}")));
        }
        Ok(response.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Integrity-protected opaque state: `base64url(payload).hash`. The hash is
    /// SipHash keyed by a per-process secret — enough to detect tampering in tests;
    /// hand-written to avoid an HMAC dependency in a test binary.
    fn sign(&self, payload: &Value) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{body}.{:016x}", self.digest(&body))
    }

    fn verify(&self, state: &str) -> Option<Value> {
        let (body, mac) = state.split_once('.')?;
        if format!("{:016x}", self.digest(body)) != mac {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    fn digest(&self, body: &str) -> u64 {
        let mut h = DefaultHasher::new();
        h.write(self.server.secret.as_bytes());
        h.write(body.as_bytes());
        h.finish()
    }
}
