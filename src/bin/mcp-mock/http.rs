//! The Streamable HTTP transport at `/mcp`: legacy sessions (`Mcp-Session-Id`,
//! GET notification stream, DELETE) and stateless 2026-07-28 requests, answered as
//! JSON or as an SSE stream when the call emits something before its result.

use crate::context::Ctx;
use crate::dispatch::{self, unsupported_version};
use crate::headers::{allowed_origin, to_json, validate_modern};
use crate::rpc::{Frame, Incoming, RpcError, error_line};
use crate::server::{Era, Generation, Server, Session};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

const SESSION_HEADER: &str = "mcp-session-id";

pub async fn run(server: Arc<Server>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mcp-mock listening on http://{local}/mcp")?;
    stdout.flush()?;
    let app = Router::new().route("/mcp", post(on_post).get(on_get).delete(on_delete)).with_state(server);
    axum::serve(listener, app).await?;
    Ok(())
}

fn json_response(status: u16, line: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], line).into_response()
}

fn reject(id: Option<&Value>, e: &RpcError) -> Response {
    let id = id.map_or("null".to_string(), Value::to_string);
    let status = if e.status == 200 { 400 } else { e.status };
    json_response(status, error_line(&id, e))
}

fn forbidden() -> Response {
    reject(None, &RpcError::new(-32000, "Forbidden: Host/Origin is not localhost").status(403))
}

fn session_of(server: &Server, headers: &HeaderMap) -> Result<Option<Arc<Session>>, Box<Response>> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    match server.sessions.lock().unwrap().get(id) {
        Some(session) => Ok(Some(session.clone())),
        None if server.unknown_session_status == 400 => {
            Err(Box::new(reject(None, &RpcError::new(-32000, "Bad Request: No valid session ID provided").status(400))))
        }
        None => Err(Box::new(reject(None, &RpcError::new(-32001, "Session not found").status(404)))),
    }
}

async fn on_post(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    if !allowed_origin(&headers) {
        return forbidden();
    }
    if server.require_authorization && !headers.contains_key("authorization") {
        return (axum::http::StatusCode::UNAUTHORIZED, "no Authorization header").into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    server.record(&text);
    let incoming = match Incoming::parse(&text) {
        Ok(incoming) => incoming,
        Err(e) => return reject(None, &e),
    };
    let stateless = server.generation == Generation::Modern;
    let session = if stateless {
        None
    } else {
        match session_of(&server, &headers) {
            Ok(session) => session,
            Err(response) => return *response,
        }
    };

    if let Some(response) = incoming.response {
        let id = incoming.id.as_ref().and_then(Value::as_str).unwrap_or_default();
        if let Some(waiter) = session.and_then(|s| s.pending.lock().unwrap().remove(id)) {
            let _ = waiter.send(response);
        }
        return StatusCode::ACCEPTED.into_response();
    }
    let (Some(method), Some(id)) = (incoming.method.clone(), incoming.id.clone()) else {
        if incoming.method.as_deref() == Some("notifications/cancelled") {
            let request_id = incoming.params.get("requestId").map(Value::to_string).unwrap_or_default();
            if let Some(token) = session.and_then(|s| s.inflight.lock().unwrap().get(&request_id).cloned()) {
                token.cancel();
            }
        }
        return StatusCode::ACCEPTED.into_response();
    };
    server.count_request();

    let (era, session, new_session) = match session {
        Some(session) => (Era::Legacy, Some(session), false),
        None if method == "initialize" && !incoming.has_modern_meta() && !stateless => {
            let id = uuid::Uuid::new_v4().to_string();
            let session = Arc::new(Session::new(Some(id.clone())));
            server.sessions.lock().unwrap().insert(id, session.clone());
            server.add_legacy_sink(session.clone());
            (Era::Legacy, Some(session), true)
        }
        None if server.generation == Generation::Legacy => {
            let e = RpcError::new(-32000, "Bad Request: Server not initialized").status(400);
            return reject(None, &e);
        }
        None => {
            let checked = if method == "initialize" && !incoming.has_modern_meta() {
                let asked = incoming.params.get("protocolVersion").and_then(Value::as_str).unwrap_or("");
                Err(unsupported_version(asked))
            } else {
                validate_modern(&headers, &incoming, &server)
            };
            if let Err(e) = checked {
                return reject(Some(&id), &e);
            }
            (Era::Modern, None, false)
        }
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let cancel = CancellationToken::new();
    let key = id.to_string();
    if let Some(session) = &session {
        session.inflight.lock().unwrap().insert(key.clone(), cancel.clone());
    }
    let guard = cancel.clone().drop_guard();
    let session_id = session.as_ref().and_then(|s| s.id.clone()).filter(|_| new_session);
    let ctx = Ctx::new(
        server.clone(),
        era,
        id.clone(),
        method,
        incoming.params,
        incoming.raw_params,
        session.clone(),
        tx.clone(),
        cancel,
        Some(to_json(&headers)),
    );
    tokio::spawn(async move {
        let reply = dispatch::handle(ctx).await;
        if let Some(session) = &session {
            session.inflight.lock().unwrap().remove(&key);
        }
        if let Some((line, status)) = reply.encode(&id) {
            let _ = tx.send(Frame::Final { line, status });
        }
    });

    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("*/*");
    let wants_sse = accept.contains("text/event-stream");
    let takes_json = accept.contains("application/json") || accept.contains("*/*");
    let mut response = match rx.recv().await {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(Frame::Final { line, status }) if takes_json || !wants_sse => json_response(status, line),
        Some(first) if wants_sse => sse_response(Some(first), rx, Some(guard)),
        Some(_) => loop {
            // No SSE allowed: drop what the call emits and wait for its result.
            match rx.recv().await {
                Some(Frame::Final { line, status }) => break json_response(status, line),
                Some(Frame::Line(_)) => continue,
                None => break StatusCode::NO_CONTENT.into_response(),
            }
        },
    };
    if let Some(id) = session_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(SESSION_HEADER, id);
    }
    response
}

fn sse_event(line: &str) -> String {
    format!("event: message\ndata: {line}\n\n")
}

/// An SSE body that ends after the final response (or when the channel closes).
/// Dropping the body — the client closed the stream — cancels the call.
fn sse_response(first: Option<Frame>, rx: mpsc::UnboundedReceiver<Frame>, guard: Option<DropGuard>) -> Response {
    let stream = futures::stream::unfold((first, rx, guard, false), |(first, mut rx, guard, done)| async move {
        if done {
            return None;
        }
        let frame = match first {
            Some(frame) => frame,
            None => rx.recv().await?,
        };
        let (line, done) = match frame {
            Frame::Line(line) => (line, false),
            Frame::Final { line, .. } => (line, true),
        };
        Some((Ok::<_, Infallible>(sse_event(&line)), (None, rx, guard, done)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .expect("static headers are valid")
}

/// GET opens a legacy session's stream for server-initiated messages.
async fn on_get(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if !allowed_origin(&headers) {
        return forbidden();
    }
    if server.generation == Generation::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let session = match session_of(&server, &headers) {
        Ok(Some(session)) => session,
        Ok(None) => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Err(response) => return *response,
    };
    if !session.ready.load(Ordering::SeqCst) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    *session.stream.lock().unwrap() = Some(tx);
    sse_response(None, rx, None)
}

/// DELETE ends a legacy session; later requests with its id get 404.
async fn on_delete(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if !allowed_origin(&headers) {
        return forbidden();
    }
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match server.remove_session(id) {
        Some(session) => {
            for token in session.inflight.lock().unwrap().values() {
                token.cancel();
            }
            *session.stream.lock().unwrap() = None;
            StatusCode::OK.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
