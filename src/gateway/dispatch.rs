//! Dispatch: `Gateway::handle`, the one function every client message passes through,
//! whichever front door it came in by. Requests go to the governed path (`pipeline.rs`),
//! answers to requests the gateway relayed go to their waiter, notifications are acted on.

use std::sync::Arc;

use super::{Answer, Ctx, Framed, Gateway, RequestCtx, lists};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::request::{self, ClientNotification, Incoming};
use crate::session::Session;
use http::StatusCode;

impl Gateway {
    /// Handles one client message, read by its front door ([`Incoming::parse`]); returns the
    /// HTTP status and the response to send, if any.
    pub async fn handle(
        self: &Arc<Self>,
        session: &Arc<Session>,
        msg: Incoming,
        ctx: Ctx<'_>,
    ) -> Option<(StatusCode, Framed)> {
        session.touch();
        match msg {
            Incoming::Invalid { id, refusal } => Some((refusal.status(), refusal.to_response(id.as_deref()).into())),
            Incoming::Nothing => None,
            Incoming::Response { id, reply } => {
                // The client's answer to a relayed request: to the call here that waits for it,
                // or to the replica that holds that call.
                if let Some(reply) = session.take_reply(&id, reply) {
                    if self.pass_on_reply(session, id.clone(), reply).await {
                        return None;
                    }
                    let id = crate::audit::bounded(&id, crate::audit::MAX_NAME_BYTES);
                    tracing::debug!(%id, "a client answered a request nobody waits for");
                }
                None
            }
            Incoming::Notification(n) => {
                match n {
                    ClientNotification::Cancelled(Some(id)) => {
                        if !session.cancel_call(id.get()) {
                            self.pass_on_cancel(session, id.get()).await;
                        }
                    }
                    ClientNotification::Cancelled(None) | ClientNotification::Known(_) => {}
                    ClientNotification::Other(method) => {
                        let method = crate::audit::bounded(&method, crate::audit::MAX_METHOD_BYTES);
                        tracing::debug!(%method, "ignoring client notification");
                    }
                }
                None
            }
            Incoming::Request { id, request } => {
                let method = request::method_of(&request);
                let req = RequestCtx { session, id: &id, ctx };
                let (status, text) = match self.govern(req, request).await {
                    // A stateless client gets the fields its revision requires on every result.
                    Ok(Answer::Result(r)) if ctx.stateless.is_some() => {
                        (StatusCode::OK, jsonrpc::result(&id, &lists::stateless_result(method, r)))
                    }
                    Ok(Answer::Result(r)) => (StatusCode::OK, jsonrpc::result(&id, &r)),
                    Ok(Answer::Stream(body)) => {
                        let fields = if ctx.stateless.is_some() { lists::stateless_fields(method) } else { &[] };
                        return Some((StatusCode::OK, Framed::result(&id, body, fields)));
                    }
                    Ok(Answer::Error(e)) => {
                        let status =
                            if ctx.stateless.is_some() { lists::http_status_of_error(&e) } else { StatusCode::OK };
                        (status, jsonrpc::error_raw(Some(&id), &e))
                    }
                    Ok(Answer::Cancelled) => return None,
                    Ok(Answer::Listen(l)) => return Some((StatusCode::OK, Framed::Listen(l))),
                    // Over stateless HTTP an unknown method is a 404 (the spec's version probe relies on it).
                    Err(r @ Refusal::MethodNotFound(_)) if ctx.stateless.is_some() => {
                        (StatusCode::NOT_FOUND, r.to_response(Some(&id)))
                    }
                    Err(r) => (r.status(), r.to_response(Some(&id))),
                };
                Some((status, text.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A real gateway with no backends, no audit store and no authentication.
    async fn gateway() -> Arc<Gateway> {
        let text = "[auth]\ndisabled = true\n[audit]\nurl = \"none\"\n";
        let config = Config::parse("t.toml", text, None, &|_| None).expect("valid config");
        Gateway::start(config).await.expect("starts")
    }

    async fn send(gw: &Arc<Gateway>, session: &Arc<Session>, text: &str) -> Option<(StatusCode, String)> {
        let msg = Incoming::parse(crate::jsonrpc::Message::parse(text.as_bytes()).expect("JSON"));
        let ctx = Ctx {
            caller: &super::super::Caller::Anonymous,
            stateless: None,
            out: None,
            peer: None,
            trace_parent: None,
            profile: None,
        };
        let (status, framed) = gw.handle(session, msg, ctx).await?;
        Some((status, framed.into_string().await.expect("whole")))
    }

    fn code(response: &str) -> Option<i64> {
        let v: serde_json::Value = serde_json::from_str(response).expect("JSON");
        v["error"]["code"].as_i64()
    }

    #[tokio::test]
    async fn each_kind_of_message_goes_to_its_handler() {
        let gw = gateway().await;
        let s = gw.new_session("stdio", None).expect("room");
        // A request the gateway answers itself.
        let (status, r) = send(&gw, &s, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await.expect("answered");
        assert_eq!((status, r.as_str()), (StatusCode::OK, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        let (_, r) = send(&gw, &s, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await.expect("answered");
        let v: serde_json::Value = serde_json::from_str(&r).expect("JSON");
        assert_eq!(v["result"]["tools"], serde_json::json!([]));
        // A call goes through the governed path: no backend serves the name.
        let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#;
        let (_, r) = send(&gw, &s, call).await.expect("answered");
        assert_eq!(code(&r), Some(-32602), "{r}");
        // Notifications and answers to nothing are taken without a response.
        assert!(send(&gw, &s, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await.is_none());
        assert!(send(&gw, &s, r#"{"jsonrpc":"2.0","id":"x","result":{}}"#).await.is_none());
        gw.stop_tasks(std::time::Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn malformed_and_unknown_requests_are_refused() {
        let gw = gateway().await;
        let s = gw.new_session("stdio", None).expect("room");
        let (_, r) = send(&gw, &s, r#"{"jsonrpc":"2.0","id":1,"method":"no/such"}"#).await.expect("answered");
        assert_eq!(code(&r), Some(-32601), "{r}");
        let (_, r) = send(&gw, &s, r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#).await.expect("answered");
        assert_eq!(code(&r), Some(-32600), "{r}");
        let (_, r) = send(&gw, &s, r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).await.expect("answered");
        assert_eq!(code(&r), Some(-32600), "{r}");
        let (_, r) = send(&gw, &s, r#"{"id":1}"#).await.expect("answered");
        assert_eq!(code(&r), Some(-32600), "{r}");
        gw.stop_tasks(std::time::Duration::from_secs(1)).await;
    }
}
