//! Forwarding a call to the backend that owns it: resolve the exposed name, rewrite the
//! name and progress token, relay the call's notifications and server-to-client requests to
//! its caller, and hand back the backend's answer as raw bytes.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Answer, Gateway, RequestCtx};
use crate::audit::AuditRecord;
use crate::backend::breaker::{Permit, Transition};
use crate::backend::{self, Backend, BackendError, CallOpts, Event, Reply};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::method::Method;
use crate::param_headers;
use crate::protocol::{self, Generation, Params};
use crate::session::{RegisteredCall, Relayed, Session};

/// Where a call goes: the backend, the name or URI it is about, and the `Mcp-Param-*`
/// headers its arguments call for.
pub struct Route {
    pub backend: usize,
    /// The name policy is about: the exposed tool or prompt name, or the resource URI.
    pub exposed: String,
    /// The name or URI at the backend.
    pub name: String,
    pub param_headers: Vec<(String, String)>,
}

/// A call ready to send: rewritten for its backend (progress token, request id) and
/// registered in its session, so that the client can cancel it.
pub(super) struct Prepared<'a> {
    req: RequestCtx<'a>,
    method: Method,
    params: Params,
    route: Route,
    /// The client's own progress token, restored on the backend's progress notifications.
    client_token: Option<Box<RawValue>>,
    /// The progress token the backend sees instead.
    our_token: Option<String>,
    /// Unregisters the call when it ends; its token is cancelled when the client cancels it.
    in_flight: RegisteredCall,
    /// The backend call's span (telemetry), and its context as the backend receives it.
    span: tracing::Span,
    trace: Option<crate::telemetry::TraceParent>,
}

/// One call in flight, as the relay needs to know it.
struct Call<'a> {
    req: RequestCtx<'a>,
    /// The client's own progress token, restored on the backend's progress notifications.
    client_token: Option<Box<RawValue>>,
    cancelled: CancellationToken,
    /// How long a relayed request may wait for the client: the backend's call timeout.
    timeout: Duration,
    /// The backend span's context, for an HTTP backend's headers (telemetry on).
    trace: Option<crate::telemetry::TraceParent>,
}

/// How a call to a backend ended.
pub(super) enum BackendOutcome {
    Replied(Reply),
    Failed(BackendError),
    /// The client cancelled it (or went away).
    Cancelled,
}

impl BackendOutcome {
    /// Tells the circuit breaker how the backend fared: timeouts and transport failures count
    /// against it; an answer, even a JSON-RPC error or a tool's `isError`, means it is
    /// working. A cancelled call counts as neither.
    pub(super) fn judge(&self, permit: Permit<'_>) -> Option<Transition> {
        match self {
            BackendOutcome::Replied(_) => permit.success(),
            BackendOutcome::Failed(_) => permit.failure(),
            BackendOutcome::Cancelled => None,
        }
    }

    /// The answer to the client, or the refusal a failure becomes.
    pub(super) fn into_answer(self, backend: &Backend) -> Result<Answer, Refusal> {
        match self {
            BackendOutcome::Cancelled => Ok(Answer::Cancelled),
            BackendOutcome::Replied(Reply::Result(r)) => Ok(Answer::Result(backend::raw_into_string(r))),
            BackendOutcome::Replied(Reply::Error(e)) => Ok(Answer::Error(backend::raw_into_string(e))),
            BackendOutcome::Replied(Reply::Streamed(body)) => Ok(Answer::Stream(body)),
            BackendOutcome::Failed(BackendError::Timeout) => Err(Refusal::BackendTimeout {
                backend: backend.name().to_string(),
                timeout_ms: backend.config.timeout.as_millis() as u64,
            }),
            BackendOutcome::Failed(BackendError::Unavailable(reason) | BackendError::Unreachable(reason)) => {
                Err(Refusal::BackendUnavailable { backend: backend.name().to_string(), reason, retry_after_ms: 1000 })
            }
        }
    }
}

/// How many `input_required` rounds the gateway answers for a session-based client before
/// giving up (a backend that never completes must not loop forever).
const MAX_INPUT_ROUNDS: usize = 16;

impl Gateway {
    /// Rewrites an admitted call for its backend: the client's progress token is swapped for
    /// one of the gateway's (so that progress from different clients cannot be confused), and
    /// the audit record's id goes along in `_meta`. The call is registered in its session.
    pub(super) fn prepare<'a>(
        &self,
        req: RequestCtx<'a>,
        backend: &Backend,
        method: Method,
        mut params: Params,
        route: Route,
        audit: &AuditRecord,
    ) -> Result<Prepared<'a>, Refusal> {
        let mut meta = params.meta()?;
        let client_token = match meta.remove("progressToken") {
            Some(t) => Some(serde_json::value::to_raw_value(&t).map_err(|e| Refusal::InvalidParams(e.to_string()))?),
            None => None,
        };
        let our_token = client_token.as_ref().map(|_| format!("sentinel-{}", self.next_seq()));
        if let Some(t) = &our_token {
            meta.insert("progressToken".into(), t.clone().into());
        }
        meta.insert(protocol::META_REQUEST_ID.into(), audit.id.to_string().into());
        // The backend call's span; with telemetry on, the backend continues the trace from it
        // (`_meta.traceparent`, and headers over HTTP), in place of what the client sent.
        let span = crate::stage_span!(
            "sentinel.backend",
            "otel.name" = format!("{} {}", method.as_str(), backend.name()),
            "otel.kind" = "client",
            "rpc.system" = "jsonrpc",
            "rpc.method" = method.as_str(),
            "sentinel.backend" = backend.name(),
            "gen_ai.tool.name" = route.name.as_str(),
        );
        let trace = crate::telemetry::TraceParent::of(&span);
        if let Some(t) = &trace {
            meta.insert("traceparent".into(), t.traceparent.clone().into());
            match &t.tracestate {
                Some(s) => meta.insert("tracestate".into(), s.clone().into()),
                None => meta.remove("tracestate"),
            };
        }
        params.set_meta(&meta);

        let key = req.id.get().to_string();
        let in_flight = req
            .session
            .start_call(&key)
            .ok_or_else(|| Refusal::InvalidRequest(format!("request id {key} is already in flight in this session")))?;
        Ok(Prepared { req, method, params, route, client_token, our_token, in_flight, span, trace })
    }

    /// Sends a prepared call to its backend, relays what the backend sends meanwhile to the
    /// client, and hands back how the call ended. A refusal here is the gateway's own (a
    /// stateless backend's input requests it could not bridge).
    pub(super) async fn forward(&self, backend: &Backend, call: Prepared<'_>) -> Result<BackendOutcome, Refusal> {
        let Prepared { req, method, params, route, client_token, our_token, in_flight, span, trace } = call;
        let call =
            Call { req, client_token, cancelled: in_flight.token.clone(), timeout: backend.config.timeout, trace };
        self.call_with_input(backend, method, params, route, our_token, &call).instrument(span).await
    }

    /// Resource subscriptions are counted per backend across clients: the backend hears of
    /// the first subscriber and the last unsubscriber only (stateless backends through the
    /// gateway's listen stream, session-based ones by the forwarded request). `None` when
    /// the request must still be forwarded.
    pub(super) fn subscription(
        &self,
        session: &Session,
        backend: &Backend,
        method: Method,
        uri: &str,
    ) -> Option<Answer> {
        let forward = match method {
            Method::ResourcesSubscribe => session.subscribe(uri.to_string()) && backend.subscriptions.add(uri),
            Method::ResourcesUnsubscribe => session.unsubscribe(uri) && backend.subscriptions.remove(uri),
            _ => return None,
        };
        (!forward || backend.generation == Generation::Modern).then(|| Answer::Result("{}".into()))
    }

    /// Calls the backend; when a stateless backend answers a session-based client with
    /// `input_required`, asks the client the old way (server-to-client requests) and retries
    /// with its answers.
    async fn call_with_input(
        &self,
        backend: &Backend,
        method: Method,
        mut params: Params,
        route: Route,
        progress_token: Option<String>,
        call: &Call<'_>,
    ) -> Result<BackendOutcome, Refusal> {
        let bridges = call.req.ctx.modern.is_none() && backend.generation == Generation::Modern;
        let opts = |events| CallOpts {
            events: Some(events),
            progress_token: progress_token.clone(),
            name: Some(route.name.clone()),
            client_capabilities: match (call.req.ctx.modern, backend.generation) {
                (Some(m), _) => Some(m.capabilities.clone()),
                // The gateway answers a stateless backend's input requests for a session-based
                // client, so the backend may ask for what that client declared.
                (None, Generation::Modern) => Some(call.req.session.capabilities()),
                (None, Generation::Legacy(_)) => None,
            },
            log_level: match call.req.ctx.modern {
                Some(m) => m.log_level.clone(),
                // Session-based clients filter by their own level at the gateway.
                None => Some("debug".into()),
            },
            param_headers: route.param_headers.clone(),
            trace: call.trace.clone(),
            // A bridged call's result is read whole, to see whether it asks for input.
            stream: !bridges,
        };
        for _ in 0..MAX_INPUT_ROUNDS {
            let (tx, rx) = mpsc::unbounded_channel();
            // Only a call that may be retried keeps a copy of its params.
            let sent = if bridges { params.clone() } else { std::mem::take(&mut params) };
            let outcome = self.call_once(backend, method, sent, &opts(tx), rx, call).await;
            match &outcome {
                BackendOutcome::Replied(Reply::Result(r)) if bridges && super::lists::is_input_required(r.get()) => {
                    let r = r.get().to_string();
                    if let Some(answer) = self.answer_input_required(&r, &mut params, call).await? {
                        return Ok(BackendOutcome::Replied(answer));
                    }
                }
                _ => return Ok(outcome),
            }
        }
        Err(Refusal::NotBridged(format!(
            "backend `{}` asked for client input more than {MAX_INPUT_ROUNDS} times; giving up",
            backend.name()
        )))
    }

    /// One request to the backend, relaying its events to the caller until it answers or
    /// the client cancels. Dropping an unfinished call cancels it at the backend.
    async fn call_once(
        &self,
        backend: &Backend,
        method: Method,
        params: Params,
        opts: &CallOpts,
        mut events: mpsc::UnboundedReceiver<Event>,
        call: &Call<'_>,
    ) -> BackendOutcome {
        let mut pending = Box::pin(backend.call(method.as_str(), params, opts));
        let outcome = loop {
            tokio::select! {
                r = &mut pending => break match r {
                    Ok(reply) => BackendOutcome::Replied(reply),
                    Err(e) => BackendOutcome::Failed(e),
                },
                Some(ev) = events.recv() => self.relay(ev, call),
                _ = call.cancelled.cancelled() => break BackendOutcome::Cancelled,
            }
        };
        drop(pending);
        // Notifications the backend sent before its answer must reach the client before it;
        // requests it made can no longer be answered and are refused.
        events.close();
        while let Ok(ev) = events.try_recv() {
            match ev {
                Event::Request { reply, .. } => refuse(reply, "the call has ended".into()),
                ev => self.relay(ev, call),
            }
        }
        outcome
    }

    /// Asks a session-based client each of a stateless backend's `inputRequests` as a
    /// server-to-client request, and sets `inputResponses` and `requestState` for the retry.
    /// Returns an answer instead when the client refused (its error ends the call).
    async fn answer_input_required(
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
        let out = call.req.ctx.out.cloned().or_else(|| call.req.session.outbound());
        for (key, req) in ir.input_requests {
            let (pending, rx) = self
                .ask_client(call.req.session, &req.method, req.params.as_deref(), out.clone())
                .map_err(Refusal::NotBridged)?;
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

    /// Finds the backend that serves `exposed` (the name or URI the pipeline judged) and
    /// rewrites it to the backend's own name. `params` were checked strictly already;
    /// `arguments` is the parsed form of a tool's arguments.
    pub(super) fn route(
        &self,
        method: Method,
        params: &mut Params,
        exposed: String,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Route, Refusal> {
        let catalog = self.catalog();
        let simple = |backend, exposed: String, name| Route { backend, exposed, name, param_headers: Vec::new() };
        match method {
            Method::ToolsCall => {
                let e = catalog.tool(&exposed).ok_or_else(|| Refusal::UnknownTool(exposed.clone()))?;
                let param_headers = match arguments {
                    Some(args) if !e.param_headers.is_empty() => param_headers::headers_for(&e.param_headers, args),
                    _ => Vec::new(),
                };
                params.set_str("name", &e.original);
                Ok(Route { backend: e.backend, exposed, name: e.original.clone(), param_headers })
            }
            Method::PromptsGet => {
                let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                params.set_str("name", &e.original);
                Ok(simple(e.backend, exposed, e.original.clone()))
            }
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                Ok(simple(b, exposed.clone(), exposed))
            }
            Method::Complete => {
                let r = params.0.get("ref").ok_or_else(|| Refusal::InvalidParams("`ref` is required".into()))?;
                let mut r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r.get())
                    .map_err(|_| Refusal::InvalidParams("`ref` must be an object".into()))?;
                let route = if r.get("type").and_then(|t| t.as_str()) == Some("ref/prompt") {
                    let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                    r.insert("name".into(), e.original.clone().into());
                    simple(e.backend, exposed, e.original.clone())
                } else {
                    let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                    simple(b, exposed.clone(), exposed)
                };
                params.0.insert("ref".into(), serde_json::value::to_raw_value(&r).expect("map serializes"));
                Ok(route)
            }
            _ => Err(Refusal::MethodNotFound(method.as_str().to_string())),
        }
    }

    /// Passes one backend event to the client whose call it belongs to.
    fn relay(&self, ev: Event, call: &Call<'_>) {
        let (session, ctx) = (call.req.session, call.req.ctx);
        let out = ctx.out.cloned().or_else(|| if ctx.modern.is_none() { session.outbound() } else { None });
        match ev {
            Event::Notification { method, params } => {
                let Some(out) = out else { return };
                let Some(params) = params else { return };
                let Ok(mut p) = Params::parse(Some(&params)) else { return };
                if method == "notifications/progress" {
                    let Some(tok) = &call.client_token else { return };
                    p.0.insert("progressToken".into(), tok.clone());
                } else if method == "notifications/message" {
                    let level = p.str("level").ok().flatten().and_then(|l| protocol::log_level_rank(&l)).unwrap_or(0);
                    let min = match ctx.modern {
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
                let _ = out.send(jsonrpc::notification(&method, &p.to_json()));
            }
            Event::Request { method, params, reply } => {
                if ctx.modern.is_some() {
                    return refuse(
                        reply,
                        format!(
                            "the client speaks MCP 2026-07-28; relaying `{method}` to it from a session-based server is not supported yet"
                        ),
                    );
                }
                match self.ask_client(session, &method, params.as_deref(), out) {
                    Err(why) => refuse(reply, why),
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
    fn ask_client(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<(Relayed, oneshot::Receiver<Reply>), String> {
        if !matches!(session.generation(), Some(Generation::Legacy(_))) {
            return Err(format!("the client has no session to receive `{method}`"));
        }
        let capability = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => "",
        };
        if !capability.is_empty() && session.capabilities().get(capability).is_none() {
            return Err(format!("the client did not declare the `{capability}` capability"));
        }
        let Some(out) = out else {
            return Err("the client has no open stream to receive this request (send Accept: text/event-stream or open the GET stream)".into());
        };
        let rid = format!("\"sentinel-{}\"", self.next_seq());
        let (tx, rx) = oneshot::channel();
        let line = jsonrpc::request(&rid, method, params.map(RawValue::get).unwrap_or("{}"));
        let pending = session.expect_reply_guarded(rid, tx);
        if out.send(line).is_err() {
            return Err("the client's stream closed".into());
        }
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

/// Answers a backend's server-to-client request with an error at once, so it never waits.
fn refuse(reply: oneshot::Sender<Reply>, message: String) {
    let e = serde_json::json!({ "code": jsonrpc::code::INTERNAL_ERROR, "message": message }).to_string();
    let _ = reply.send(Reply::Error(backend::raw(e)));
}
