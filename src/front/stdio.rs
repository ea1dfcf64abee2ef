//! The stdio front door: one client on stdin/stdout, newline-delimited JSON-RPC. Requests
//! run concurrently; every line written to stdout is one whole message.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, FramedRead};

use crate::gateway::{Caller, Ctx, Gateway};
use crate::jsonrpc::{self, Kind, Message};

/// Serves one client until stdin closes. `caller` was authenticated once at start.
pub async fn serve(gw: Arc<Gateway>, caller: Caller) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(crate::line_writer::write_lines(crate::std_streams::stdout(), rx));
    let session = gw.new_session("stdio", caller.subject()).ok_or_else(|| anyhow::anyhow!("too many sessions"))?;
    let caller = Arc::new(caller);
    session.open_outbound(tx.clone());
    let mut lines = FramedRead::new(crate::std_streams::stdin(), LineCodec::new(gw.config().server.max_body_bytes));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let line = match lines.next().await {
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
            Some(Err(e)) => return Err(e.into()),
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
        let (gw, session, tx, caller) = (gw.clone(), session.clone(), tx.clone(), caller.clone());
        tasks.spawn(async move {
            let modern = match super::modern_meta(&msg) {
                Ok(m) => m,
                Err(r) => {
                    if matches!(msg.kind(), Some(Kind::Request)) {
                        let _ = tx.send(r.to_response(msg.id.as_deref()));
                    }
                    return;
                }
            };
            if modern.is_some() && msg.method.as_deref() == Some("subscriptions/listen") {
                return listen(&gw, &caller, &session, msg, tx).await;
            }
            let ctx = Ctx { caller: &caller, modern: modern.as_ref(), out: Some(&tx), peer: None };
            if let Some((_, resp)) = gw.handle(&session, msg, ctx).await {
                let _ = tx.send(resp);
            }
        });
    }
    tasks.close();
    // stdin closed: the client is gone; calls still running have nobody to answer to.
    session.close();
    gw.end_session(&session.id);
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}

/// One line from the client: a message's bytes (not yet known to be UTF-8 or JSON: both are
/// the parser's to refuse, with -32700), or the notice that a line was over the limit.
enum Line {
    Message(Bytes),
    TooLong,
}

/// Newline-delimited frames of at most `max` bytes. An over-long line is a frame, not a
/// decoder error, because `FramedRead` ends the stream after any decoder error
/// (tokio-rs/tokio#3976), which would end the client's session; its bytes are skipped up
/// to the next newline.
struct LineCodec(AnyDelimiterCodec);

impl LineCodec {
    fn new(max: usize) -> LineCodec {
        LineCodec(AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max))
    }

    fn frame(r: Result<Option<Bytes>, AnyDelimiterCodecError>) -> std::io::Result<Option<Line>> {
        match r {
            Ok(line) => Ok(line.map(Line::Message)),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(AnyDelimiterCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        LineCodec::frame(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        LineCodec::frame(self.0.decode_eof(buf))
    }
}

/// A `subscriptions/listen` stream on stdio: notifications go to stdout until the client
/// cancels the request.
async fn listen(
    gw: &Gateway,
    caller: &Caller,
    session: &crate::session::Session,
    msg: Message,
    tx: mpsc::UnboundedSender<String>,
) {
    let id = msg.id.expect("request has an id");
    let (ack, mut rx) = match gw.listen(caller, &id, msg.params.as_deref()) {
        Ok(l) => l,
        Err(r) => {
            let _ = tx.send(r.to_response(Some(&id)));
            return;
        }
    };
    let Some(call) = session.start_call(id.get()) else {
        let r = crate::error::Refusal::InvalidRequest(format!("request id {} is already in flight", id.get()));
        let _ = tx.send(r.to_response(Some(&id)));
        return;
    };
    let _ = tx.send(ack);
    loop {
        tokio::select! {
            n = rx.recv() => match n {
                Some(n) => { let _ = tx.send(n); }
                None => break,
            },
            _ = call.token.cancelled() => break,
        }
    }
    session.end_call(id.get(), &call);
}
