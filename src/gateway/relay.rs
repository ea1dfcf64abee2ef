//! Relaying between a backend and the client whose call it is running: the backend's
//! notifications (progress, log messages) and its server-to-client requests (sampling,
//! elicitation, roots), asked of the client and answered back; and a stateless backend's
//! `input_required` answered the old way for a session-based client. Each goes on the call's
//! own stream, else on the session's GET stream, here or on another replica (`streams.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::streams::{Outbound, Undelivered};
use super::{Gateway, RequestCtx};
use crate::backend::{self, Event, Reply};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::method::{Notification, ServerRequest};
use crate::protocol::{self, Generation, Params};
use crate::session::{Relayed, Session};

/// One call in flight, as the relay needs to know it.
pub(super) struct Call<'a> {
    pub req: RequestCtx<'a>,
    /// The client's own progress token, restored on the backend's progress notifications.
    pub client_token: Option<Box<RawValue>>,
    pub cancelled: CancellationToken,
    /// How long a relayed request may wait for the client: the backend's call timeout.
    pub timeout: Duration,
    /// The backend span's context, for an HTTP backend's headers (telemetry on).
    pub trace: Option<crate::telemetry::TraceParent>,
    /// The backend's configured answer to `roots/list`, for a client that cannot be asked.
    pub roots: Arc<str>,
    /// Set when a notification for a GET stream on another replica could not be handed over
    /// (Redis away): the call's later notifications are dropped at once rather than each
    /// waiting for Redis.
    pub elsewhere_unreachable: AtomicBool,
}

/// Why a backend's request cannot be put to the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum CannotAsk {
    #[error("the client has no session to receive `{0}`")]
    NoSession(String),
    #[error("the client did not declare the `{0}` capability")]
    Undeclared(&'static str),
    #[error(transparent)]
    Undelivered(#[from] Undelivered),
}

impl Gateway {
    /// Asks a session-based client each of a stateless backend's `inputRequests` as a
    /// server-to-client request, and sets `inputResponses` and `requestState` for the retry.
    /// Returns an answer instead when the client refused (its error ends the call).
    pub(super) async fn answer_input_required(
        &self,
        result: &str,
        params: &mut Params,
        call: &Call<'_>,
    ) -> Result<Option<Reply>, Refusal> {
        #[derive(serde::Deserialize)]
        struct Request {
            method: String,
            params: Option<Box<RawValue>>,
        }
        #[derive(serde::Deserialize)]
        struct InputRequired {
            #[serde(rename = "inputRequests", default)]
            input_requests: IndexMap<String, Request>,
            #[serde(rename = "requestState")]
            request_state: Option<Box<RawValue>>,
        }
        let ir: InputRequired = serde_json::from_str(result)
            .map_err(|e| Refusal::NotBridged(format!("the backend sent a malformed input_required result: {e}")))?;
        let mut responses: IndexMap<String, Box<RawValue>> = IndexMap::new();
        let out = self.call_outbound(call);
        for (key, req) in ir.input_requests {
            let (pending, rx) = self
                .ask_client(call.req.session, &req.method, req.params.as_deref(), out.as_ref())
                .await
                .map_err(|e| Refusal::NotBridged(e.to_string()))?;
            match wait_client(call, pending, rx).await {
                Some(Reply::Result(r)) => {
                    responses.insert(key, r);
                }
                Some(err @ Reply::Error(_)) => return Ok(Some(err)),
                Some(Reply::Streamed(_)) | None => {
                    return Err(Refusal::NotBridged(format!("the client did not answer `{}`", req.method)));
                }
            }
        }
        params.0.insert("inputResponses".into(), serde_json::value::to_raw_value(&responses).expect("map serializes"));
        match ir.request_state {
            Some(s) => params.0.insert("requestState".into(), s),
            None => params.0.shift_remove("requestState"),
        };
        Ok(None)
    }

    /// Where a call's messages for the client go: the call's own stream, else (a session-based
    /// client) the session's GET stream, wherever it is.
    fn call_outbound(&self, call: &Call<'_>) -> Option<Outbound> {
        match call.req.ctx.out {
            Some(tx) => Some(Outbound::Here(tx.clone())),
            None if call.req.ctx.stateless.is_none() => self.outbound(call.req.session),
            None => None,
        }
    }

    /// Passes one backend event to the client whose call it belongs to.
    pub(super) async fn relay(&self, ev: Event, call: &Call<'_>) {
        let (session, ctx) = (call.req.session, call.req.ctx);
        let out = self.call_outbound(call);
        match ev {
            Event::Notification { method, params } => {
                let Some(out) = out else { return };
                let Some(params) = params else { return };
                let Ok(mut p) = Params::parse(Some(&params)) else { return };
                let kind = method.parse::<Notification>().ok();
                if kind == Some(Notification::Progress) {
                    let Some(tok) = &call.client_token else { return };
                    p.0.insert("progressToken".into(), tok.clone());
                } else if kind == Some(Notification::Message) {
                    let level = p.str("level").ok().flatten().and_then(|l| protocol::log_level_rank(&l)).unwrap_or(0);
                    let min = match ctx.stateless {
                        // A stateless client gets log messages only when it asked for them.
                        Some(m) => match m.log_level.as_deref().and_then(protocol::log_level_rank) {
                            Some(min) => min,
                            None => return,
                        },
                        None => session.log_level().unwrap_or(0),
                    };
                    if level < min {
                        return;
                    }
                }
                if out.is_elsewhere() && call.elsewhere_unreachable.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(Undelivered::Unreachable(_)) = out.send(jsonrpc::notification(&method, &p.to_json())).await {
                    call.elsewhere_unreachable.store(true, Ordering::Relaxed);
                }
            }
            Event::Request { method, params, reply } => {
                if ctx.stateless.is_some() {
                    return refuse(
                        reply,
                        format!(
                            "the client speaks MCP 2026-07-28; relaying `{method}` to it from a session-based server is not supported yet"
                        ),
                    );
                }
                match self.ask_client(session, &method, params.as_deref(), out.as_ref()).await {
                    // A client that cannot list its roots gets the backend's configured ones.
                    Err(_) if method.parse::<ServerRequest>() == Ok(ServerRequest::Roots) => {
                        let _ = reply.send(Reply::Result(backend::raw(call.roots.to_string())));
                    }
                    Err(CannotAsk::Undeclared(capability)) => refuse_undeclared(reply, capability),
                    Err(why) => refuse(reply, why.to_string()),
                    Ok((pending, rx)) => {
                        let (timeout, cancelled) = (call.timeout, call.cancelled.clone());
                        self.tasks.spawn(async move {
                            let answer = tokio::select! {
                                r = tokio::time::timeout(timeout, rx) => r.ok().and_then(Result::ok),
                                _ = cancelled.cancelled() => None,
                            };
                            drop(pending);
                            match answer {
                                Some(r) => {
                                    let _ = reply.send(r);
                                }
                                None => refuse(reply, "the client did not answer in time, or the call ended".into()),
                            }
                        });
                    }
                }
            }
        }
    }

    /// Sends a server-to-client request (sampling, elicitation, roots) to a session-based
    /// client; returns the id it was given and where its answer arrives. Refused when the
    /// client cannot take it.
    async fn ask_client(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: Option<&Outbound>,
    ) -> Result<(Relayed, oneshot::Receiver<Reply>), CannotAsk> {
        if !matches!(session.generation(), Some(Generation::SessionBased(_))) {
            return Err(CannotAsk::NoSession(method.to_string()));
        }
        // A request the client never declared it can take is refused; one the gateway does
        // not know is passed on (the client answers it if it can).
        if let Ok(capability) = method.parse::<ServerRequest>().map(ServerRequest::capability) {
            if session.capabilities().get(capability).is_none() {
                return Err(CannotAsk::Undeclared(capability));
            }
        }
        let Some(out) = out else {
            return Err(Undelivered::NoStream.into());
        };
        let rid = self.relayed_id();
        let (tx, rx) = oneshot::channel();
        let line = jsonrpc::request(&rid, method, params.map(RawValue::get).unwrap_or("{}"));
        // Registered before it is sent: the answer may come back through another replica at once.
        let pending = session.expect_reply_guarded(rid, tx);
        out.send(line).await?;
        Ok((pending, rx))
    }
}

/// Waits for a session-based client's answer to a request the gateway sent it, bounded by the
/// call's timeout and its cancellation; the pending entry is removed however this ends
/// (`pending` drops with the future).
async fn wait_client(call: &Call<'_>, pending: Relayed, rx: oneshot::Receiver<Reply>) -> Option<Reply> {
    let answer = tokio::select! {
        r = tokio::time::timeout(call.timeout, rx) => r.ok().and_then(Result::ok),
        _ = call.cancelled.cancelled() => None,
    };
    drop(pending);
    answer
}

/// Answers a backend's request for a capability the client did not declare, as a client
/// without a handler for it would: -32601.
pub(super) fn refuse_undeclared(reply: oneshot::Sender<Reply>, capability: &str) {
    let message = format!("Method not found: the client did not declare the `{capability}` capability");
    let e = serde_json::json!({ "code": jsonrpc::code::METHOD_NOT_FOUND, "message": message }).to_string();
    let _ = reply.send(Reply::Error(backend::raw(e)));
}

/// Answers a backend's server-to-client request with an error at once, so it never waits.
pub(super) fn refuse(reply: oneshot::Sender<Reply>, message: String) {
    let e = serde_json::json!({ "code": jsonrpc::code::INTERNAL_ERROR, "message": message }).to_string();
    let _ = reply.send(Reply::Error(backend::raw(e)));
}
