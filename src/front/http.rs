//! The Streamable HTTP front door at `/mcp`, speaking both generations: session-based
//! (`initialize`, `Mcp-Session-Id`, GET stream, DELETE) and stateless 2026-07-28 (per-request
//! `_meta`, `Mcp-Method`/`Mcp-Name` headers checked against the body). Also `/health`, `/ready`,
//! `/metrics` and the protected-resource metadata, behind the same Host and Origin check.

mod admin;
mod prelude;
mod respond;
mod side;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Refusal;
use crate::gateway::{Caller, Ctx, Framed, Gateway};
use crate::jsonrpc::{self, Kind, Message};
use crate::method::Method;
use crate::param_headers;
use crate::protocol::{self, StatelessMeta};
use crate::request::{Incoming, Request, method_of};
use crate::session::Session;
use prelude::{Peer, accepts_only_sse, accepts_sse, authenticated, header, prelude, unauthenticated};
use respond::{
    AbortOnDrop, cancelled_request, framed_response, json_response, listen_stream, refuse, sse, sse_one, until_shutdown,
};
use side::{health, metrics, ready, resource_metadata};

/// The HTTP front door: `/mcp` and the side endpoints, behind the Host/Origin check and the body limit.
pub fn router(gw: Arc<Gateway>) -> Router {
    let limit = gw.config().server.max_body_bytes;
    // With telemetry off, POST is served as it always was: no span, not even an empty one.
    let mcp = get(get_stream).delete(delete);
    let mcp = if crate::telemetry::enabled() { mcp.post(post_traced) } else { mcp.post(post) };
    Router::new()
        .route("/mcp", mcp.clone())
        // A `[[profile]]`: the same front door, the catalog narrowed to the profile.
        .route("/mcp/{profile}", mcp)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/.well-known/oauth-protected-resource", get(resource_metadata))
        .route("/admin/credentials", axum::routing::any(admin::credentials))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gw)
}

/// The method a message names, if the gateway serves it (a lookup in the method table,
/// before the message is read: the front door's routing needs only this).
fn method_named(msg: &Message) -> Option<Method> {
    msg.method.as_deref().and_then(|m| m.parse().ok())
}

/// `post` in an HTTP server span (telemetry on): its parent is the client's context (the MCP
/// `_meta.traceparent` of the body, or else the `traceparent` header), and authentication and
/// the MCP request's span are its children.
async fn post_traced(state: State<Arc<Gateway>>, peer: Peer, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    use crate::telemetry::{Trace, TraceParent};
    use tracing::Instrument;
    let parent = TraceParent::from_body(&body).or_else(|| TraceParent::from_headers(&headers));
    // Decided here for the whole request: the pipeline makes its spans only inside this one.
    let trace = crate::telemetry::decide(parent.as_ref());
    if let Trace::Not = trace {
        return post(state, peer, uri, headers, body).await;
    }
    let span = crate::telemetry::http_span(uri.path());
    trace.adopt(&span);
    let resp = post(state, peer, uri, headers, body).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

/// The `[[profile]]` a path names (`/mcp/<profile>`); `Err` for a profile the config does
/// not have.
fn profile_of(gw: &Gateway, uri: &Uri) -> Result<Option<String>, ()> {
    let Some(name) = uri.path().strip_prefix("/mcp/") else { return Ok(None) };
    if gw.has_profile(name) { Ok(Some(name.to_string())) } else { Err(()) }
}

async fn post(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match prelude(&gw, &headers, &uri).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let Ok(profile) = profile_of(&gw, &uri) else {
        return refuse(
            StatusCode::NOT_FOUND,
            jsonrpc::code::INVALID_REQUEST,
            "No such profile ([[profile]] in the config)",
        );
    };
    let msg = match Message::parse(&body) {
        Ok(m) => m,
        Err(_) if matches!(caller, Caller::Refused(_)) => {
            return unauthenticated(&gw, &caller, None, &headers, peer).await;
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, jsonrpc::code::PARSE_ERROR, &format!("Parse error: {e}")),
    };
    if let Caller::Refused(_) = caller {
        return unauthenticated(&gw, &caller, Some(msg), &headers, peer).await;
    }
    let id = msg.id.clone();
    let fail = |r: Refusal| json_response(r.status(), r.to_response(id.as_deref()));

    // Session-based: an existing session, or an `initialize` that opens one.
    if let Some(sid) = header(&headers, "mcp-session-id") {
        // A session belongs to the subject that opened it: another caller cannot use its id.
        let Some(session) = gw.find_session(sid, caller.subject()).await else {
            return refuse(
                StatusCode::NOT_FOUND,
                jsonrpc::code::INVALID_REQUEST,
                "Session not found (it ended or never existed); send initialize again",
            );
        };
        if let Some(v) = header(&headers, "mcp-protocol-version") {
            if !protocol::SUPPORTED.contains(&v) {
                return fail(Refusal::UnsupportedVersion(v.to_string()));
            }
        }
        return dispatch(gw, session, msg, None, caller, &headers, peer, profile).await;
    }
    // `initialize` opens a session unless it carries stateless `_meta` (then it is a
    // 2026-07-28 request for a method that revision removed).
    if method_named(&msg) == Some(Method::Initialize) && matches!(super::stateless_meta_raw(&msg), Ok(None)) {
        let Some(session) = gw.new_session("http", caller.subject()) else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                jsonrpc::code::INTERNAL_ERROR,
                "too many sessions; try again later",
            );
        };
        let sid = session.id.clone();
        let ctx =
            Ctx { caller: &caller, stateless: None, out: None, peer, trace_parent: None, profile: profile.as_deref() };
        let Some((status, body)) = gw.handle(&session, Incoming::parse(msg), ctx).await else {
            gw.end_session(&sid);
            return StatusCode::ACCEPTED.into_response();
        };
        let body = body.into_string().await.unwrap_or_default();
        // Only a successful initialize opens a session (and only a successful one settles its
        // generation: the answer need not be read again to know).
        let mut resp = json_response(status, body);
        if session.generation().is_some() {
            gw.share_session(&session).await;
            resp.headers_mut().insert("mcp-session-id", HeaderValue::from_str(&sid).expect("uuid is a header value"));
        } else {
            gw.end_session(&sid);
        }
        return resp;
    }

    // Stateless 2026-07-28.
    let header_version = header(&headers, "mcp-protocol-version");
    let stateless = match super::stateless_meta_raw(&msg) {
        Ok(m) => m,
        Err(r) => return fail(r),
    };
    let is_request = matches!(msg.kind(), Some(Kind::Request));
    let Some(stateless) = stateless.filter(|_| is_request).or_else(|| {
        // A version header alone still marks the request as stateless: it then lacks `_meta`.
        (is_request && header_version == Some(protocol::STATELESS)).then(|| StatelessMeta {
            version: String::new(),
            capabilities: serde_json::Value::Null,
            log_level: None,
        })
    }) else {
        if !is_request {
            // 2026-07-28 defines no client notifications over HTTP; accept and ignore them.
            return StatusCode::ACCEPTED.into_response();
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            jsonrpc::code::INVALID_REQUEST,
            "Bad Request: no Mcp-Session-Id header; send initialize first (2025-11-25), or per-request _meta (2026-07-28)",
        );
    };
    let session = Arc::new(Session::new(String::new(), "http", caller.subject()));
    dispatch(gw, session, msg, Some(stateless), caller, &headers, peer, profile).await
}

/// The 2026-07-28 checks, in the order the spec's conformance suite expects: the version
/// header, the `_meta` fields, header against body, the version itself, then `Mcp-Method`,
/// `Mcp-Name` and `Mcp-Param-*` against the body — so that nothing routing on headers sees
/// a different request than the one the gateway authorizes.
fn check_headers(gw: &Gateway, h: &HeaderMap, msg: &Incoming, m: &StatelessMeta) -> Result<(), Refusal> {
    let Some(v) = header(h, "mcp-protocol-version") else {
        return Err(Refusal::HeaderMismatch("the MCP-Protocol-Version header is required".into()));
    };
    if m.version.is_empty() {
        return Err(Refusal::MalformedStateless(format!(
            "a {} request must carry `_meta.{}` and `_meta.{}`",
            protocol::STATELESS,
            protocol::META_PROTOCOL_VERSION,
            protocol::META_CLIENT_CAPABILITIES
        )));
    }
    if !m.capabilities.is_object() {
        super::check_stateless(m)?;
    }
    if v != m.version {
        return Err(Refusal::HeaderMismatch(format!(
            "MCP-Protocol-Version header `{v}` does not match `_meta` version `{}`",
            m.version
        )));
    }
    super::check_stateless(m)?;
    let Incoming::Request { request, .. } = msg else { return Ok(()) };
    let name = match request {
        Ok(Request::Other(name)) => name.as_str(),
        _ => method_of(request).map(Method::as_str).unwrap_or_default(),
    };
    match header(h, "mcp-method").map(str::trim) {
        None => return Err(Refusal::HeaderMismatch("the Mcp-Method header is required".into())),
        Some(v) if v != name => {
            return Err(Refusal::HeaderMismatch(format!(
                "Mcp-Method header `{v}` does not match body method `{name}`"
            )));
        }
        _ => {}
    }
    let method = method_of(request);
    if !matches!(method, Some(Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead)) {
        return Ok(());
    }
    // What the headers are checked against: the name or URI as sent, and a tool's arguments
    // (from the request as read; when its params could not be read, what could be).
    let (body_value, arguments) = match request {
        Ok(Request::Call(c)) => (c.target.as_str(), c.arguments.as_ref()),
        Err(bad) => (bad.asked.as_deref().unwrap_or_default(), bad.arguments.as_ref()),
        Ok(_) => ("", None),
    };
    match h.get("mcp-name").and_then(|v| v.to_str().ok()) {
        None => return Err(Refusal::HeaderMismatch("the Mcp-Name header is required for this method".into())),
        Some(v) => match param_headers::decode(v.trim()) {
            Some(d) if d == body_value => {}
            Some(d) => {
                return Err(Refusal::HeaderMismatch(format!(
                    "Mcp-Name header value '{d}' does not match body value '{body_value}'"
                )));
            }
            None => return Err(Refusal::HeaderMismatch("the Mcp-Name header is not validly encoded".into())),
        },
    }
    if method == Some(Method::ToolsCall) {
        if let Some(tool) = gw.catalog().tool(body_value).filter(|t| !t.param_headers.is_empty()) {
            let null = serde_json::Value::Null;
            param_headers::check(&tool.param_headers, arguments.unwrap_or(&null), |name| {
                header(h, name).map(str::to_string)
            })
            .map_err(|e| Refusal::HeaderMismatch(e.to_string()))?;
        }
    }
    Ok(())
}

/// Runs one message through the gateway and frames the answer as JSON, SSE or 202.
#[allow(clippy::too_many_arguments)] // the request's parts, each used once; a struct would only rename them
async fn dispatch(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    msg: Message,
    stateless: Option<StatelessMeta>,
    caller: Caller,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    profile: Option<String>,
) -> Response {
    let msg = Incoming::parse(msg);
    if let Some(m) = stateless.as_ref().filter(|_| msg.is_request()) {
        if let Err(r) = check_headers(&gw, headers, &msg, m) {
            let Incoming::Request { id, .. } = &msg else { unreachable!("a request") };
            return json_response(r.status(), r.to_response(Some(id)));
        }
    }
    // Answered as one JSON body (or 202), with no stream for the call's own messages.
    let plain = Ctx {
        caller: &caller,
        stateless: stateless.as_ref(),
        out: None,
        peer,
        trace_parent: None,
        profile: profile.as_deref(),
    };
    if !msg.is_request() {
        return match gw.handle(&session, msg, plain).await {
            Some((status, body)) if status != StatusCode::OK => framed_response(status, body),
            _ => StatusCode::ACCEPTED.into_response(),
        };
    }
    let streams = msg.method().is_some_and(Method::makes_backend_work);
    if !(streams && accepts_sse(headers)) {
        return match gw.handle(&session, msg, plain).await {
            Some((_, Framed::Listen(l))) => listen_stream(l),
            Some((StatusCode::OK, body)) if accepts_only_sse(headers) => sse_one(body).await,
            Some((status, body)) => framed_response(status, body),
            None => cancelled_request(),
        };
    }
    // The call's notifications and server-to-client requests, then its response. The call
    // runs in a task that is aborted if the client goes away (closing the stream is
    // cancellation), which drops the backend call and cancels it there too. A call that
    // sends nothing before its answer is answered as plain JSON, so that an error keeps
    // its HTTP status (400 for the protocol errors that require it).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    // A session-based client's stream is resumable (src/replay.rs); a stateless one's is not
    // (the 2026-07-28 transport removed resumption: closing it cancels the call).
    let resumable_in = (stateless.is_none() && !session.id.is_empty()).then(|| session.clone());
    let gw_config = gw.config();
    // In the request's span (telemetry): the call's spans stay in its trace.
    let guard = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(async move {
        let ctx = Ctx {
            caller: &caller,
            stateless: stateless.as_ref(),
            out: Some(&tx),
            peer,
            trace_parent: None,
            profile: profile.as_deref(),
        };
        let _ = done_tx.send(gw.handle(&session, msg, ctx).await);
    })));
    tokio::select! {
        biased;
        Some(first) = rx.recv() => {
            // After events, the response is one more event: a streamed result is gathered
            // for it (see docs/performance.md).
            let last = futures::stream::once(async move {
                match done_rx.await.ok().flatten() {
                    Some((_, body)) => body.into_string().await,
                    None => None,
                }
            })
            .filter_map(futures::future::ready);
            let stream = futures::stream::once(async move { first }).chain(UnboundedReceiverStream::new(rx)).chain(last);
            match resumable_in {
                Some(session) => respond::resumable(session, stream, guard, gw_config.server.stream_reconnect_after),
                None => sse(stream, Some(guard)),
            }
        }
        done = &mut done_rx => match done.ok().flatten() {
            Some((status, body)) if status == StatusCode::OK && accepts_only_sse(headers) => sse_one(body).await,
            Some((status, body)) => framed_response(status, body),
            None => cancelled_request(),
        },
    }
}

/// `GET /mcp`: a session-based client's stream for server-initiated messages.
async fn get_stream(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap) -> Response {
    let caller = match authenticated(&gw, &headers, &uri, peer).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let Some(sid) = header(&headers, "mcp-session-id") else {
        // Stateless clients use subscriptions/listen instead.
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    let Some(session) = gw.find_session(sid, caller.subject()).await else {
        return refuse(StatusCode::NOT_FOUND, jsonrpc::code::INVALID_REQUEST, "Session not found");
    };
    if !accepts_sse(&headers) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::code::INVALID_REQUEST,
            "GET /mcp needs Accept: text/event-stream",
        );
    }
    // A resume of one of the session's call streams (2025-11-25 resumability).
    if let Some(resumed) = header(&headers, "last-event-id").and_then(|id| respond::resumed(&session, id)) {
        return resumed;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(open) = gw.open_stream(&session, tx).await else {
        return refuse(
            StatusCode::CONFLICT,
            jsonrpc::code::INVALID_REQUEST,
            "this session already has a GET stream open",
        );
    };
    // The stream is let go of (`open` dropped) when the client goes away or the gateway stops.
    let messages = UnboundedReceiverStream::new(rx).map(move |m| {
        let _open = &open;
        m
    });
    sse(until_shutdown(&gw, messages), None)
}

/// `DELETE /mcp`: ends a session.
async fn delete(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap) -> Response {
    let caller = match authenticated(&gw, &headers, &uri, peer).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    match header(&headers, "mcp-session-id") {
        None => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Some(sid) if gw.find_session(sid, caller.subject()).await.is_some() => {
            gw.end_session_everywhere(sid).await;
            StatusCode::OK.into_response()
        }
        Some(_) => refuse(StatusCode::NOT_FOUND, jsonrpc::code::INVALID_REQUEST, "Session not found"),
    }
}
