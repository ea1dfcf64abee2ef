//! Framing the gateway's answers as HTTP responses: JSON (whole or streaming in), an event
//! stream, or an event stream that ends without a message.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{HeaderValue, StatusCode, header};

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
        Ok::<_, Infallible>(Event::default().data(m))
    });
    let mut resp = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
