//! Framing the gateway's answers as HTTP responses: JSON (whole or streaming in), an event
//! stream, or an event stream that ends without a message.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{HeaderValue, StatusCode, header};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::gateway::{Framed, Gateway};
use crate::jsonrpc;

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A JSON response whose body may still be streaming in from a backend: sent as it arrives,
/// cut off if it breaks.
pub(super) fn framed_response(status: StatusCode, body: Framed) -> Response {
    match body {
        Framed::Whole(s) => json_response(status, s),
        Framed::Listen(l) => listen_stream(l),
        Framed::Streamed(s) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            axum::body::Body::from_stream(s),
        )
            .into_response(),
    }
}

/// A `subscriptions/listen` stream as an event stream: the acknowledgment, then notifications
/// until the client goes away or the gateway shuts down.
pub(super) fn listen_stream(l: crate::gateway::Listening) -> Response {
    let call = l.call;
    let messages = futures::stream::once(async move { l.ack }).chain(l.notifications).map(move |m| {
        // The request stays registered while its stream is open.
        let _registered = &call;
        m
    });
    sse(messages, None)
}

/// A response as the one event of an event stream (a streamed result gathered whole first).
pub(super) async fn sse_one(body: Framed) -> Response {
    let text = body.into_string().await;
    sse(futures::stream::iter(text), None)
}

pub(super) fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    json_response(status, jsonrpc::error(None, code, message, None))
}

/// A request the client cancelled gets no response message: an event stream that ends
/// without one (a request must be answered with JSON or a stream, never an empty 202).
pub(super) fn cancelled_request() -> Response {
    sse(futures::stream::empty(), None)
}

pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ends a long-lived stream (GET stream, listen stream) when the gateway shuts down, so that
/// graceful shutdown does not wait on it forever.
pub(super) fn until_shutdown(
    gw: &Gateway,
    s: impl Stream<Item = String> + Send + 'static,
) -> impl Stream<Item = String> + Send + 'static {
    s.take_until(gw.shutdown.clone().cancelled_owned())
}

pub(super) fn sse(messages: impl Stream<Item = String> + Send + 'static, guard: Option<AbortOnDrop>) -> Response {
    let events = messages.map(move |m| {
        let _keep = &guard;
        Event::default().data(m)
    });
    sse_events(events)
}

fn sse_events(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let mut resp = Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// How long a client waits before reconnecting to a stream the gateway closed (SSE `retry`).
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A session-based client's call answered as a resumable event stream (src/replay.rs): a
/// priming event (an id and an empty data field, with `retry`), then each message with its id.
/// The call runs in a task of its own that records its messages in the session, so it goes on
/// when the connection drops (the 2025-11-25 transport: a disconnection is not a cancellation;
/// the client cancels with `notifications/cancelled`) and a `GET` with `Last-Event-ID` picks the
/// stream up. With `server.stream_reconnect_after` the gateway itself closes a long call's
/// connection after that long, saying `retry` first.
pub(super) fn resumable(
    session: std::sync::Arc<crate::session::Session>,
    messages: impl Stream<Item = String> + Send + 'static,
    call: AbortOnDrop,
    reconnect_after: Option<std::time::Duration>,
) -> Response {
    let (no, live) = session.replay.open();
    let s = session.clone();
    tokio::spawn(async move {
        let _call = call;
        let mut messages = std::pin::pin!(messages);
        while let Some(m) = messages.next().await {
            s.replay.push(no, m);
        }
        s.replay.finish(no);
    });
    let priming = format!("id: {no}-0\nretry: {}\ndata: \n\n", RETRY.as_millis());
    let events = futures::stream::once(async move { priming }).chain(UnboundedReceiverStream::new(live).map(frame));
    match reconnect_after {
        None => sse_framed(events),
        Some(after) => {
            let bye = format!(": reconnect with GET and Last-Event-ID\nretry: {}\n\n", RETRY.as_millis());
            sse_framed(events.take_until(tokio::time::sleep(after)).chain(futures::stream::once(async move { bye })))
        }
    }
}

/// One recorded event as SSE text: its id, and its data line by line.
fn frame(e: crate::replay::Sent) -> String {
    let mut out = format!("id: {}\n", e.id);
    for line in e.data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// An event stream of events already framed as text, with a keep-alive comment when nothing
/// was sent for a while (as axum's `KeepAlive` does). Framed by hand because a priming event
/// needs an empty `data:` field, which axum's `Event` cannot write (it writes no data line
/// for empty data).
fn sse_framed(events: impl Stream<Item = String> + Send + 'static) -> Response {
    const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);
    let events = Box::pin(events);
    let body = futures::stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        match tokio::time::timeout(KEEP_ALIVE, events.next()).await {
            Ok(Some(text)) => Some((Ok::<_, Infallible>(bytes::Bytes::from(text)), Some(events))),
            Ok(None) => None,
            Err(_) => Some((Ok(bytes::Bytes::from_static(b":\n\n")), Some(events))),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    let mut resp = (headers, axum::body::Body::from_stream(body)).into_response();
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// A `GET` with `Last-Event-ID` of a stream this session still keeps: the events the client
/// missed, then the rest as they come. `None`: not one of this session's streams here.
pub(super) fn resumed(session: &crate::session::Session, last_event_id: &str) -> Option<Response> {
    let r = session.replay.resume(last_event_id)?;
    let replay = futures::stream::iter(r.replay);
    let rest = futures::stream::iter(r.live).flat_map(UnboundedReceiverStream::new);
    Some(sse_framed(replay.chain(rest).map(frame)))
}
