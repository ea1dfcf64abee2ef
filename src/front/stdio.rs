//! The stdio front door: one client on stdin/stdout, newline-delimited JSON-RPC. Requests
//! run concurrently; every line written to stdout is one whole message.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::line_codec::{Line, LineCodec};

use crate::gateway::{Caller, Ctx, Framed, Gateway, Listening};
use crate::jsonrpc::{self, Kind, Message};
use crate::request::Incoming;

/// Why serving the stdio client ended in an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gateway holds as many sessions as it may.
    #[error("too many sessions")]
    TooManySessions,
    /// Reading stdin failed.
    #[error("{}", crate::audit::store::chain(.0))]
    Read(std::io::Error),
}

/// Serves one client until stdin closes. `caller` was authenticated once at start.
pub async fn serve(gw: Arc<Gateway>, caller: Caller, profile: Option<String>) -> Result<(), ServeError> {
    let profile: Option<Arc<str>> = profile.map(Into::into);
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let mut writer = tokio::spawn(crate::line_writer::write_lines(crate::std_streams::stdout(), rx));
    let session = gw.new_session("stdio", caller.subject()).ok_or(ServeError::TooManySessions)?;
    let caller = Arc::new(caller);
    session.open_outbound(tx.clone());
    let mut lines = FramedRead::new(crate::std_streams::stdin(), LineCodec::new(gw.config().server.max_body_bytes));
    let tasks = tokio_util::task::TaskTracker::new();
    let mut client_gone = false;
    loop {
        let next = tokio::select! {
            next = lines.next() => next,
            // The client stopped reading (closed our stdout: EPIPE): nothing it asks can be
            // answered any more, so nothing more is read or run.
            written = &mut writer => {
                let why = match written {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the writer ended".into(),
                };
                tracing::warn!("the client stopped reading stdout ({why}); ending the session");
                client_gone = true;
                break;
            }
        };
        let line = match next {
            None => break,
            Some(Ok(Line::Message(l))) => l,
            Some(Ok(Line::TooLong)) => {
                let _ = tx.send(jsonrpc::error(
                    None,
                    jsonrpc::code::INVALID_REQUEST,
                    "message larger than server.max_body_bytes",
                    None,
                ));
                continue;
            }
            Some(Err(e)) => return Err(ServeError::Read(e)),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg = match Message::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(jsonrpc::error(None, jsonrpc::code::PARSE_ERROR, &format!("Parse error: {e}"), None));
                continue;
            }
        };
        let (gw, session, tx, caller, profile) =
            (gw.clone(), session.clone(), tx.clone(), caller.clone(), profile.clone());
        tasks.spawn(async move {
            let stateless = match super::stateless_meta(&msg) {
                Ok(m) => m,
                Err(r) => {
                    if matches!(msg.kind(), Some(Kind::Request)) {
                        let _ = tx.send(r.to_response(msg.id.as_deref()));
                    }
                    return;
                }
            };
            // The client's trace context, read from `_meta` before the message is (telemetry on).
            let parent = if crate::telemetry::enabled() {
                crate::telemetry::TraceParent::from_params(msg.params.as_deref())
            } else {
                None
            };
            let ctx = Ctx {
                caller: &caller,
                stateless: stateless.as_ref(),
                out: Some(&tx),
                peer: None,
                trace_parent: parent.as_ref(),
                profile: profile.as_deref(),
            };
            let id = msg.id.clone();
            let msg = Incoming::parse(msg);
            // Lines are written whole: a streamed result is gathered here (one copy, not the
            // three of a result parsed and framed again). One that broke off (or could not be
            // audited, fail-closed) is answered with an error instead.
            match gw.handle(&session, msg, ctx).await {
                Some((_, Framed::Listen(l))) => listen(l, &tx).await,
                Some((_, resp)) => {
                    let line = resp.into_string().await.unwrap_or_else(|| {
                        let why = "the backend's result broke off, or its call could not be audited";
                        jsonrpc::error(id.as_deref(), jsonrpc::code::INTERNAL_ERROR, why, None)
                    });
                    let _ = tx.send(line);
                }
                None => {}
            }
        });
    }
    tasks.close();
    // stdin closed, or stdout: the client is gone; calls still running have nobody to answer
    // to and are cancelled (at their backends too).
    session.close();
    gw.end_session(&session.id);
    // Cancelled calls end at once and write their records (`cancelled`) on the way out; they
    // are waited for (briefly: a call is never stuck after its cancellation) so that the audit
    // flush that follows includes them.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tasks.wait()).await;
    drop(tx);
    if !client_gone {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    }
    Ok(())
}

/// A `subscriptions/listen` stream on stdio: notifications go to stdout until the client
/// cancels the request.
async fn listen(mut l: Listening, tx: &mpsc::UnboundedSender<String>) {
    let _ = tx.send(l.ack);
    loop {
        tokio::select! {
            n = l.notifications.next() => match n {
                Some(n) => { let _ = tx.send(n); }
                None => break,
            },
            _ = l.call.token.cancelled() => break,
        }
    }
}
