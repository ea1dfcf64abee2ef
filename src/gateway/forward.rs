//! Forwarding a call to the backend that owns it: resolve the exposed name, rewrite the
//! name and progress token, relay the call's notifications and server-to-client requests to
//! its caller, and hand back the backend's answer as raw bytes.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{Answer, Ctx, Gateway};
use crate::backend::{Backend, BackendError, CallOpts, Event, Reply};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::param_headers;
use crate::protocol::{self, Generation, Params};
use crate::session::Session;

/// Where a call goes: the backend, the name or URI it is about, and the `Mcp-Param-*`
/// headers its arguments call for.
struct Route {
    backend: usize,
    name: String,
    param_headers: Vec<(String, String)>,
}

/// How many `input_required` rounds the gateway answers for a session-based client before
/// giving up (a backend that never completes must not loop forever).
const MAX_INPUT_ROUNDS: usize = 16;

impl Gateway {
    pub(super) async fn forward(
        &self,
        session: &Arc<Session>,
        id: &RawValue,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let mut params = Params::parse(params.as_deref()).map_err(Refusal::InvalidParams)?;
        let route = self.route(method, &mut params)?;
        let backend = self.backend(route.backend).cloned().ok_or_else(|| Refusal::BackendUnavailable {
            backend: self.config.backends[route.backend].name.clone(),
            reason: "it did not start; see the gateway log".into(),
        })?;

        if backend.generation == Generation::Modern {
            // Stateless backends have no subscribe method: subscriptions ride on the
            // gateway's listen stream to that backend.
            match method {
                "resources/subscribe" => {
                    if session.subscribe(route.name.clone()) {
                        backend.subscriptions.add(&route.name);
                    }
                    return Ok(Answer::Result("{}".into()));
                }
                "resources/unsubscribe" => {
                    if session.unsubscribe(&route.name) {
                        backend.subscriptions.remove(&route.name);
                    }
                    return Ok(Answer::Result("{}".into()));
                }
                _ => {}
            }
        }
        match method {
            "resources/subscribe" => {
                session.subscribe(route.name.clone());
            }
            "resources/unsubscribe" => {
                session.unsubscribe(&route.name);
            }
            _ => {}
        }

        let mut meta = params.meta().map_err(Refusal::InvalidParams)?;
        let client_token = meta.remove("progressToken");
        let our_token = client_token.as_ref().map(|_| format!("sentinel-{}", self.next_seq()));
        if let Some(t) = &our_token {
            meta.insert("progressToken".into(), t.clone().into());
        }
        meta.insert(protocol::META_REQUEST_ID.into(), uuid::Uuid::now_v7().to_string().into());
        params.set_meta(&meta);

        let legacy_client = ctx.modern.is_none();
        let opts = |events| CallOpts {
            events: Some(events),
            progress_token: our_token.clone(),
            name: Some(route.name.clone()),
            // A session-based client's capabilities come from its initialize; the gateway
            // bridges a stateless backend's input requests to it (see below).
            client_capabilities: Some(match ctx.modern {
                Some(m) => m.capabilities.clone(),
                None => session.capabilities(),
            }),
            log_level: match ctx.modern {
                Some(m) => m.log_level.clone(),
                // Session-based clients filter by their own level at the gateway.
                None => Some("debug".into()),
            },
            param_headers: route.param_headers.clone(),
        };

        let key = id.get().to_string();
        let cancelled = session.start_call(&key);
        let mut rounds = 0;
        let outcome = loop {
            let (tx, rx) = mpsc::unbounded_channel();
            let opts = opts(tx);
            let call = self.call_once(
                &backend,
                method,
                params.clone(),
                &opts,
                rx,
                session,
                client_token.as_ref(),
                ctx,
                &cancelled,
            );
            let outcome = call.await;
            let input = match &outcome {
                Some(Ok(Reply::Result(r))) if legacy_client && super::lists::is_input_required(r.get()) => {
                    r.get().to_string()
                }
                _ => break outcome,
            };
            rounds += 1;
            if rounds > MAX_INPUT_ROUNDS {
                session.end_call(&key);
                return Err(Refusal::NotBridged(format!(
                    "backend `{}` asked for client input more than {MAX_INPUT_ROUNDS} times; giving up",
                    backend.name()
                )));
            }
            // A stateless backend needs input (sampling, elicitation, roots): ask the
            // session-based client the old way, then retry with its answers.
            match self.answer_input_required(session, &input, &mut params, ctx).await {
                Ok(()) => continue,
                Err(e) => {
                    session.end_call(&key);
                    return e;
                }
            }
        };
        session.end_call(&key);
        match outcome {
            None => Ok(Answer::Cancelled),
            Some(Ok(Reply::Result(r))) => Ok(Answer::Result(r.get().to_string())),
            Some(Ok(Reply::Error(e))) => Ok(Answer::Error(e.get().to_string())),
            Some(Err(BackendError::Timeout)) => Err(Refusal::BackendTimeout {
                backend: backend.name().to_string(),
                timeout_ms: backend.config.timeout.as_millis() as u64,
            }),
            Some(Err(BackendError::Unavailable(reason))) => {
                Err(Refusal::BackendUnavailable { backend: backend.name().to_string(), reason })
            }
        }
    }

    /// One request to the backend, relaying its events to the caller until it answers or
    /// the client cancels (`None`). Dropping an unfinished call cancels it at the backend.
    #[allow(clippy::too_many_arguments)]
    async fn call_once(
        &self,
        backend: &Backend,
        method: &str,
        params: Params,
        opts: &CallOpts,
        mut events: mpsc::UnboundedReceiver<Event>,
        session: &Arc<Session>,
        client_token: Option<&serde_json::Value>,
        ctx: Ctx<'_>,
        cancelled: &tokio_util::sync::CancellationToken,
    ) -> Option<Result<Reply, BackendError>> {
        let mut call = Box::pin(backend.call(method, params, opts));
        let outcome = loop {
            tokio::select! {
                r = &mut call => break Some(r),
                Some(ev) = events.recv() => self.relay(session, ev, client_token, ctx),
                _ = cancelled.cancelled() => break None,
            }
        };
        drop(call);
        // Notifications the backend sent before its answer must reach the client before it.
        while let Ok(ev) = events.try_recv() {
            self.relay(session, ev, client_token, ctx);
        }
        outcome
    }

    /// Asks a session-based client each of a stateless backend's `inputRequests` as a
    /// server-to-client request, and sets `inputResponses` and `requestState` for the retry.
    async fn answer_input_required(
        &self,
        session: &Arc<Session>,
        result: &str,
        params: &mut Params,
        ctx: Ctx<'_>,
    ) -> Result<(), Result<Answer, Refusal>> {
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
        let ir: InputRequired = serde_json::from_str(result).map_err(|e| {
            Err(Refusal::NotBridged(format!("the backend sent a malformed input_required result: {e}")))
        })?;
        let mut responses: IndexMap<String, Box<RawValue>> = IndexMap::new();
        for (key, req) in ir.input_requests {
            let rx = self.ask_client(
                session,
                &req.method,
                req.params.as_deref(),
                ctx.out.cloned().or_else(|| session.outbound()),
            );
            let reply = match rx {
                Ok(rx) => rx.await.map_err(|_| Err(Refusal::NotBridged("the client did not answer".into())))?,
                Err(why) => return Err(Err(Refusal::NotBridged(why))),
            };
            match reply {
                Reply::Result(r) => {
                    responses.insert(key, r);
                }
                Reply::Error(e) => return Err(Ok(Answer::Error(e.get().to_string()))),
            }
        }
        params.0.insert("inputResponses".into(), serde_json::value::to_raw_value(&responses).expect("map serializes"));
        match ir.request_state {
            Some(s) => params.0.insert("requestState".into(), s),
            None => params.0.shift_remove("requestState"),
        };
        Ok(())
    }

    /// Finds the owning backend and rewrites the exposed name to the backend's own.
    fn route(&self, method: &str, params: &mut Params) -> Result<Route, Refusal> {
        let catalog = self.catalog();
        let required = |p: &Params, k: &str| -> Result<String, Refusal> {
            p.str(k)
                .map_err(Refusal::InvalidParams)?
                .ok_or_else(|| Refusal::InvalidParams(format!("`{k}` is required")))
        };
        let simple = |backend, name| Route { backend, name, param_headers: Vec::new() };
        match method {
            "tools/call" => {
                params.check_case_variants(&["name", "arguments", "_meta"]).map_err(Refusal::InvalidParams)?;
                let name = required(params, "name")?;
                let e = catalog.tool(&name).ok_or(Refusal::UnknownTool(name))?;
                params.set_str("name", &e.original);
                let param_headers = if e.param_headers.is_empty() {
                    Vec::new()
                } else {
                    let args =
                        params.0.get("arguments").and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
                    param_headers::headers_for(&e.param_headers, &args)
                };
                Ok(Route { backend: e.backend, name: e.original.clone(), param_headers })
            }
            "prompts/get" => {
                params.check_case_variants(&["name", "arguments", "_meta"]).map_err(Refusal::InvalidParams)?;
                let name = required(params, "name")?;
                let e = catalog.prompt(&name).ok_or(Refusal::UnknownPrompt(name))?;
                params.set_str("name", &e.original);
                Ok(simple(e.backend, e.original.clone()))
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                params.check_case_variants(&["uri", "_meta"]).map_err(Refusal::InvalidParams)?;
                let uri = required(params, "uri")?;
                let b = catalog.resource_backend(&uri).ok_or(Refusal::UnknownResource(uri.clone()))?;
                Ok(simple(b, uri))
            }
            "completion/complete" => {
                let r = params.0.get("ref").ok_or_else(|| Refusal::InvalidParams("`ref` is required".into()))?;
                let mut r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r.get())
                    .map_err(|_| Refusal::InvalidParams("`ref` must be an object".into()))?;
                let (b, name) = match r.get("type").and_then(|t| t.as_str()) {
                    Some("ref/prompt") => {
                        let name = r.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
                        let e = catalog.prompt(&name).ok_or(Refusal::UnknownPrompt(name))?;
                        r.insert("name".into(), e.original.clone().into());
                        (e.backend, e.original.clone())
                    }
                    Some("ref/resource") => {
                        let uri = r.get("uri").and_then(|n| n.as_str()).unwrap_or_default().to_string();
                        let b = catalog.resource_backend(&uri).ok_or(Refusal::UnknownResource(uri.clone()))?;
                        (b, uri)
                    }
                    _ => {
                        return Err(Refusal::InvalidParams(
                            "`ref.type` must be \"ref/prompt\" or \"ref/resource\"".into(),
                        ));
                    }
                };
                params.0.insert("ref".into(), serde_json::value::to_raw_value(&r).expect("map serializes"));
                Ok(simple(b, name))
            }
            _ => Err(Refusal::MethodNotFound(method.to_string())),
        }
    }

    /// Passes one backend event to the client whose call it belongs to.
    fn relay(&self, session: &Arc<Session>, ev: Event, client_token: Option<&serde_json::Value>, ctx: Ctx<'_>) {
        let out = ctx.out.cloned().or_else(|| if ctx.modern.is_none() { session.outbound() } else { None });
        match ev {
            Event::Notification { method, params } => {
                let Some(out) = out else { return };
                let Some(params) = params else { return };
                let Ok(mut p) = Params::parse(Some(&params)) else { return };
                if method == "notifications/progress" {
                    let Some(tok) = client_token else { return };
                    p.0.insert("progressToken".into(), serde_json::value::to_raw_value(tok).expect("value serializes"));
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
                let refuse = |reply: oneshot::Sender<Reply>, msg: String| {
                    let e = serde_json::json!({ "code": jsonrpc::code::METHOD_NOT_FOUND, "message": msg }).to_string();
                    let _ = reply.send(Reply::Error(crate::backend_raw(e)));
                };
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
                    Ok(rx) => {
                        tokio::spawn(async move {
                            if let Ok(r) = rx.await {
                                let _ = reply.send(r);
                            }
                        });
                    }
                }
            }
        }
    }

    /// Sends a server-to-client request (sampling, elicitation, roots) to a session-based
    /// client; the receiver gets its answer. Refused when the client cannot take it.
    fn ask_client(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<oneshot::Receiver<Reply>, String> {
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
        session.expect_reply(rid.clone(), tx);
        let line = jsonrpc::request(&rid, method, params.map(RawValue::get).unwrap_or("{}"));
        if out.send(line).is_err() {
            session.forget_reply(&rid);
            return Err("the client's stream closed".into());
        }
        Ok(rx)
    }
}
