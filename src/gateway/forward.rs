//! Forwarding a call to the backend that owns it: rewrite its progress token and `_meta`,
//! send it (relaying what the backend sends meanwhile, see `relay.rs`), and hand back the
//! backend's answer as raw bytes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::future::BoxFuture;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::bridge::{self, Asked, Binding, Parked, Verdict};
use super::relay::{Call, refuse};
use super::{Answer, Gateway, RequestCtx, Route};
use crate::audit::AuditRecord;
use crate::backend::breaker::{Permit, Transition};
use crate::backend::{self, Backend, BackendError, CallOpts, Event, Reply};
use crate::cluster::BridgeRound;
use crate::error::Refusal;
use crate::method::Method;
use crate::protocol::{self, Generation, Params};
use crate::request;
use crate::session::{RegisteredCall, Session};

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
        call: request::Call,
        route: Route,
        audit: &AuditRecord,
    ) -> Result<Prepared<'a>, Refusal> {
        let (method, mut params) = (call.method, call.params);
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
    pub(super) async fn forward(&self, backend: &Arc<Backend>, call: Prepared<'_>) -> Result<BackendOutcome, Refusal> {
        let Prepared { req, method, params, route, client_token, our_token, in_flight, span, trace } = call;
        // A session-based client is served over the backend's own session where it has one, as
        // it would be directly (src/backend/mod.rs `session_based`).
        let backend = if req.ctx.stateless.is_none() { backend.for_session_based_client() } else { backend };
        let call = Call {
            req,
            client_token,
            cancelled: in_flight.token.clone(),
            timeout: backend.config.timeout,
            trace,
            roots: backend.config.roots.clone(),
            elsewhere_unreachable: std::sync::atomic::AtomicBool::new(false),
        };
        self.call_with_input(backend, method, params, route, our_token, &call).instrument(span).await
    }

    /// Resource subscriptions are counted per backend across clients: the backend hears of
    /// the first subscriber and the last unsubscriber only (stateless backends through the
    /// gateway's listen stream, session-based ones by the forwarded request). A shared
    /// session's subscriptions are held by the replica holding its GET stream (`streams.rs`).
    /// `None` when the request must still be forwarded.
    pub(super) async fn subscription(
        &self,
        session: &Session,
        backend: &Backend,
        method: Method,
        uri: &str,
    ) -> Option<Answer> {
        let subscribe = match method {
            Method::ResourcesSubscribe => true,
            Method::ResourcesUnsubscribe => false,
            _ => return None,
        };
        if self.share_subscription(session, uri, subscribe).await {
            return Some(Answer::Result("{}".into()));
        }
        let forward = if subscribe {
            session.subscribe(uri.to_string()) && backend.subscriptions.add(uri)
        } else {
            session.unsubscribe(uri) && backend.subscriptions.remove(uri)
        };
        (!forward || backend.generation == Generation::Stateless).then(|| Answer::Result("{}".into()))
    }

    /// Calls the backend; when a stateless backend answers a session-based client with
    /// `input_required`, asks the client the old way (server-to-client requests) and retries
    /// with its answers.
    async fn call_with_input(
        &self,
        backend: &Arc<Backend>,
        method: Method,
        mut params: Params,
        route: Route,
        progress_token: Option<String>,
        call: &Call<'_>,
    ) -> Result<BackendOutcome, Refusal> {
        let bridges = call.req.ctx.stateless.is_none() && backend.generation == Generation::Stateless;
        // A task-augmented call's answer is read whole: its task id is swapped for the gateway's.
        let tasked =
            method == Method::ToolsCall && super::task_handles::may_become_task(call.req.ctx.stateless, &params);
        // A session-based client's task-augmented call of a stateless backend: the extension's
        // task instead, the backend deciding (task_handles.rs).
        let to_extension = tasked && bridges && params.0.shift_remove("task").is_some();
        let opts = |events| CallOpts {
            events: Some(events),
            progress_token: progress_token.clone(),
            name: Some(route.name.clone()),
            client_capabilities: match (call.req.ctx.stateless, backend.generation) {
                (Some(m), _) => Some(m.capabilities.clone()),
                // The gateway answers a stateless backend's input requests for a session-based
                // client, so the backend may ask for what that client declared.
                (None, Generation::Stateless) if to_extension => {
                    Some(super::task_handles::with_extension(call.req.session.capabilities()))
                }
                (None, Generation::Stateless) => Some(call.req.session.capabilities()),
                (None, Generation::SessionBased(_)) => None,
            },
            log_level: match call.req.ctx.stateless {
                Some(m) => m.log_level.clone(),
                // Session-based clients filter by their own level at the gateway.
                None => Some("debug".into()),
            },
            param_headers: route.param_headers.clone(),
            trace: call.trace.clone(),
            // A bridged call's result is read whole, to see whether it asks for input.
            stream: !bridges && !tasked,
            parked: None,
        };
        // A session-based backend may ask a stateless client something only as an input round.
        if call.req.ctx.stateless.is_some() && matches!(backend.generation, Generation::SessionBased(_)) {
            let (tx, rx) = mpsc::unbounded_channel();
            let waiting = Arc::new(AtomicBool::new(false));
            let opts = CallOpts { parked: Some(waiting.clone()), ..opts(tx) };
            return self.call_parkable(backend, method, params, &route, opts, waiting, rx, call).await;
        }
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

    /// A stateless client's call to a session-based backend (src/gateway/bridge.rs): when the
    /// backend asks the client something, the call is parked and the client gets an
    /// `input_required` round; its retry (`requestState`, `inputResponses`) continues the
    /// parked call, on this replica or the one holding it.
    #[allow(clippy::too_many_arguments)]
    async fn call_parkable(
        &self,
        backend: &Arc<Backend>,
        method: Method,
        mut params: Params,
        route: &Route,
        opts: CallOpts,
        waiting: Arc<AtomicBool>,
        mut events: mpsc::UnboundedReceiver<Event>,
        call: &Call<'_>,
    ) -> Result<BackendOutcome, Refusal> {
        // What a round is bound to: made only for a retry or a park, not on every call.
        let binding = || Binding {
            subject: call.req.ctx.caller.subject().map(str::to_string),
            method: method.as_str().to_string(),
            name: route.exposed.clone(),
        };
        if let Some(state) = params.0.shift_remove("requestState") {
            let state: String = serde_json::from_str(state.get())
                .map_err(|_| Refusal::InvalidParams("requestState must be a string".into()))?;
            let responses: IndexMap<String, Box<RawValue>> = match params.0.shift_remove("inputResponses") {
                Some(r) => serde_json::from_str(r.get())
                    .map_err(|e| Refusal::InvalidParams(format!("inputResponses must be an object: {e}")))?,
                None => IndexMap::new(),
            };
            let binding = binding();
            let resumed =
                self.bridges.resume(&state, &binding, responses, self.cluster.as_ref(), backend.config.timeout);
            let round = tokio::select! {
                r = resumed => r?,
                _ = call.cancelled.cancelled() => return Ok(BackendOutcome::Cancelled),
            };
            return Ok(match round {
                BridgeRound::Result(r) => BackendOutcome::Replied(Reply::Result(r)),
                BridgeRound::Error(e) => BackendOutcome::Replied(Reply::Error(e)),
                BridgeRound::Timeout => BackendOutcome::Failed(BackendError::Timeout),
                BridgeRound::Unavailable(why) => BackendOutcome::Failed(BackendError::Unavailable(why)),
                BridgeRound::Gone => {
                    return Err(Refusal::InvalidParams(
                        "the call this requestState continues is over (the backend answered or timed out, or the replica holding it stopped); call the tool again without `requestState` and `inputResponses`".into(),
                    ));
                }
            });
        }
        // Borrowed from the request: cloned only if the call is parked.
        let null = serde_json::Value::Null;
        let capabilities = call.req.ctx.stateless.map_or(&null, |m| &m.capabilities);
        // A stateless client that takes the extension's tasks, calling a tool this session-based
        // backend may run as a task: sent task-augmented, bridged back (task_handles.rs).
        if method == Method::ToolsCall
            && super::task_handles::bridge_as_task(call.req.ctx.stateless, &backend.capabilities)
            && super::task_handles::may_run_as_task(self.catalog().tool(&route.exposed).map(|e| e.json.as_str()))
        {
            params.0.insert("task".into(), backend::raw("{}".into()));
        }
        let mut pending: BoxFuture<'static, Result<Reply, BackendError>> = {
            let (backend, name) = (backend.clone(), method.as_str());
            Box::pin(async move { backend.call(name, params, &opts).await })
        };
        let outcome = loop {
            tokio::select! {
                r = &mut pending => break match r {
                    Ok(reply) => BackendOutcome::Replied(reply),
                    Err(e) => BackendOutcome::Failed(e),
                },
                Some(ev) = events.recv() => match ev {
                    Event::Request { method, params, reply } => match bridge::judge(Asked { method, params, reply }, capabilities, &backend.config.roots) {
                        Verdict::Ask(asked) => {
                            let parked = Parked {
                                pending,
                                events,
                                capabilities: capabilities.clone(),
                                binding: binding(),
                                timeout: backend.config.timeout,
                                roots: backend.config.roots.clone(),
                                waiting,
                            };
                            let result = self.bridges.park(&self.tasks, parked, asked);
                            return Ok(BackendOutcome::Replied(Reply::Result(backend::raw(result))));
                        }
                        Verdict::Answered => {}
                        Verdict::Missing(capability) => {
                            break BackendOutcome::Replied(Reply::Error(bridge::missing_capability(capability)));
                        }
                    },
                    ev => self.relay(ev, call).await,
                },
                _ = call.cancelled.cancelled() => break BackendOutcome::Cancelled,
            }
        };
        drop(pending);
        self.drain(events, call).await;
        Ok(outcome)
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
                Some(ev) = events.recv() => self.relay(ev, call).await,
                _ = call.cancelled.cancelled() => break BackendOutcome::Cancelled,
            }
        };
        drop(pending);
        self.drain(events, call).await;
        outcome
    }

    /// After a backend call ended: notifications it sent before its answer must reach the
    /// client before it; requests it made can no longer be answered and are refused.
    async fn drain(&self, mut events: mpsc::UnboundedReceiver<Event>, call: &Call<'_>) {
        events.close();
        while let Ok(ev) = events.try_recv() {
            match ev {
                Event::Request { reply, .. } => refuse(reply, "the call has ended".into()),
                ev => self.relay(ev, call).await,
            }
        }
    }
}
