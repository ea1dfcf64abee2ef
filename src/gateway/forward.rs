//! Forwarding a call to the backend that owns it: resolve the exposed name, rewrite the
//! name and progress token, relay the call's notifications and server-to-client requests to
//! its caller, and hand back the backend's answer as raw bytes.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{Answer, Ctx, Gateway};
use crate::backend::{BackendError, CallOpts, Event, Reply};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::param_headers;
use crate::protocol::{self, Generation, Params};
use crate::session::Session;

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
        let (backend, name, param_headers) = self.route(method, &mut params)?;
        let backend = self.backend(backend).cloned().ok_or_else(|| Refusal::BackendUnavailable {
            backend: self.config.backends[backend].name.clone(),
            reason: "it did not start; see the gateway log".into(),
        })?;

        let mut meta = params.meta().map_err(Refusal::InvalidParams)?;
        let client_token = meta.remove("progressToken");
        let our_token = client_token.as_ref().map(|_| format!("sentinel-{}", self.next_seq()));
        if let Some(t) = &our_token {
            meta.insert("progressToken".into(), t.clone().into());
        }
        meta.insert(protocol::META_REQUEST_ID.into(), uuid::Uuid::now_v7().to_string().into());
        params.set_meta(&meta);

        match method {
            "resources/subscribe" => session.subscribe(name.clone()),
            "resources/unsubscribe" => session.unsubscribe(&name),
            _ => {}
        }

        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let opts = CallOpts {
            events: Some(ev_tx),
            progress_token: our_token,
            name: Some(name),
            client_capabilities: ctx.modern.map(|m| m.capabilities.clone()),
            log_level: ctx.modern.and_then(|m| m.log_level.clone()),
            param_headers,
        };
        let key = id.get().to_string();
        let cancelled = session.start_call(&key);
        let mut call = Box::pin(backend.call(method, params, &opts));
        let outcome = loop {
            tokio::select! {
                r = &mut call => break Some(r),
                Some(ev) = ev_rx.recv() => self.relay(session, ev, client_token.as_ref(), ctx),
                _ = cancelled.cancelled() => break None,
            }
        };
        session.end_call(&key);
        // Dropping an unfinished call cancels it at the backend.
        drop(call);
        drop(opts);
        // Notifications the backend sent before its answer must reach the client before it.
        while let Ok(ev) = ev_rx.try_recv() {
            self.relay(session, ev, client_token.as_ref(), ctx);
        }
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

    /// Finds the owning backend and rewrites the exposed name to the backend's own.
    /// Returns the backend index, the name or URI the call is about, and the `Mcp-Param-*`
    /// headers its arguments call for.
    fn route(&self, method: &str, params: &mut Params) -> Result<(usize, String, Vec<(String, String)>), Refusal> {
        let catalog = self.catalog();
        let required = |p: &Params, k: &str| -> Result<String, Refusal> {
            p.str(k)
                .map_err(Refusal::InvalidParams)?
                .ok_or_else(|| Refusal::InvalidParams(format!("`{k}` is required")))
        };
        match method {
            "tools/call" => {
                params.check_case_variants(&["name", "arguments", "_meta"]).map_err(Refusal::InvalidParams)?;
                let name = required(params, "name")?;
                let e = catalog.tool(&name).ok_or(Refusal::UnknownTool(name))?;
                params.set_str("name", &e.original);
                let headers = if e.param_headers.is_empty() {
                    Vec::new()
                } else {
                    let args =
                        params.0.get("arguments").and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
                    param_headers::headers_for(&e.param_headers, &args)
                };
                Ok((e.backend, e.original.clone(), headers))
            }
            "prompts/get" => {
                params.check_case_variants(&["name", "arguments", "_meta"]).map_err(Refusal::InvalidParams)?;
                let name = required(params, "name")?;
                let e = catalog.prompt(&name).ok_or(Refusal::UnknownPrompt(name))?;
                params.set_str("name", &e.original);
                Ok((e.backend, e.original.clone(), Vec::new()))
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                params.check_case_variants(&["uri", "_meta"]).map_err(Refusal::InvalidParams)?;
                let uri = required(params, "uri")?;
                let b = catalog.resource_backend(&uri).ok_or(Refusal::UnknownResource(uri.clone()))?;
                Ok((b, uri, Vec::new()))
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
                Ok((b, name, Vec::new()))
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
            Event::Request { method, params, reply } => self.relay_request(session, method, params, reply, out, ctx),
        }
    }

    fn relay_request(
        &self,
        session: &Arc<Session>,
        method: String,
        params: Option<Box<RawValue>>,
        reply: oneshot::Sender<Reply>,
        out: Option<mpsc::UnboundedSender<String>>,
        ctx: Ctx<'_>,
    ) {
        let refuse = |reply: oneshot::Sender<Reply>, msg: String| {
            let e = serde_json::json!({ "code": jsonrpc::code::METHOD_NOT_FOUND, "message": msg }).to_string();
            let _ = reply.send(Reply::Error(crate::backend_raw(e)));
        };
        if ctx.modern.is_some() || !matches!(session.generation(), Some(Generation::Legacy(_))) {
            return refuse(
                reply,
                format!(
                    "the client speaks MCP 2026-07-28; relaying `{method}` to it from a session-based server is not supported yet"
                ),
            );
        }
        let capability = match method.as_str() {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => "",
        };
        if !capability.is_empty() && session.capabilities().get(capability).is_none() {
            return refuse(reply, format!("the client did not declare the `{capability}` capability"));
        }
        let Some(out) = out else {
            return refuse(reply, "the client has no open stream to receive this request (send Accept: text/event-stream or open the GET stream)".into());
        };
        let rid = format!("\"sentinel-{}\"", self.next_seq());
        let (tx, rx) = oneshot::channel();
        session.expect_reply(rid.clone(), tx);
        let line = jsonrpc::request(&rid, &method, params.as_deref().map(RawValue::get).unwrap_or("{}"));
        if out.send(line).is_err() {
            session.forget_reply(&rid);
            return refuse(reply, "the client's stream closed".into());
        }
        let session = session.clone();
        tokio::spawn(async move {
            // The backend's own timeout bounds the call; this only stops the task if the client never answers.
            let answer = tokio::time::timeout(std::time::Duration::from_secs(600), rx).await;
            session.forget_reply(&rid);
            if let Ok(Ok(r)) = answer {
                let _ = reply.send(r);
            }
        });
    }
}
