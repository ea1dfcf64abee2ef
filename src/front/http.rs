//! The Streamable HTTP front door at `/mcp`, speaking both generations: session-based
//! (`initialize`, `Mcp-Session-Id`, GET stream, DELETE) and stateless 2026-07-28 (per-request
//! `_meta`, `Mcp-Method`/`Mcp-Name` headers checked against the body). Also `/health`, `/ready`,
//! `/metrics` and the protected-resource metadata, behind the same Host and Origin check.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Refusal;
use crate::gateway::{Caller, Ctx, Framed, Gateway};
use crate::jsonrpc::{self, Kind, Message};
use crate::method::Method;
use crate::param_headers;
use crate::protocol::{self, ModernMeta};
use crate::session::Session;

pub fn router(gw: Arc<Gateway>) -> Router {
    let limit = gw.config().server.max_body_bytes;
    // With telemetry off, POST is served as it always was: no span, not even an empty one.
    let mcp = get(get_stream).delete(delete);
    let mcp = if crate::telemetry::enabled() { mcp.post(post_traced) } else { mcp.post(post) };
    Router::new()
        .route("/mcp", mcp)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/.well-known/oauth-protected-resource", get(resource_metadata))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gw)
}

/// The side endpoints answer only to the Host (and Origin) `/mcp` accepts: they name tools,
/// backends and the gateway's state, which a DNS-rebinding page must not read either.
fn side_refused(gw: &Gateway, h: &HeaderMap, uri: &Uri) -> Option<Response> {
    host_origin_ok(gw, h, uri).err().map(|why| refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why))
}

async fn health(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = side_refused(&gw, &headers, &uri) {
        return r;
    }
    let a = gw.audit_stats();
    let body = serde_json::json!({
        "status": "ok",
        "backends": { "configured": gw.config().backends.len(), "up": gw.backends_up() },
        "tools": gw.catalog().tools.len(),
        "audit": {
            "writable": gw.audit_writable(),
            "queue_depth": a.queue_depth,
            "backlog": a.backlog,
            "written": a.written,
            "spooled": a.spooled,
            "replayed": a.replayed,
            "failed": a.failed,
            "dead_lettered": a.dead_lettered,
            "store_up": a.store_up,
        },
    });
    json_response(StatusCode::OK, body.to_string())
}

/// Ready to serve: config loaded, audit writable, every `required` backend up (503 otherwise).
async fn ready(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = side_refused(&gw, &headers, &uri) {
        return r;
    }
    let (ok, detail) = gw.readiness();
    json_response(if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, detail.to_string())
}

/// Prometheus text; with `[server] metrics_token` set, only for a request bearing it.
async fn metrics(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = side_refused(&gw, &headers, &uri) {
        return r;
    }
    if let Some(want) = &gw.config().server.metrics_token {
        if !bearer(&headers).is_some_and(|got| same_secret(got.as_bytes(), want.0.as_bytes())) {
            let mut resp = (StatusCode::UNAUTHORIZED, "a bearer token is required for /metrics\n").into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sentinel-metrics\""));
            return resp;
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE))],
        gw.render_metrics(),
    )
        .into_response()
}

/// The client's IP address, when the server was started with connect info (`sentinel serve`).
struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Peer(info.map(|c| c.0.ip())))
    }
}

/// Compares a presented secret with the configured one in time that depends only on their
/// lengths (hand-written: a dependency for five lines is not worth it).
fn same_secret(got: &[u8], want: &[u8]) -> bool {
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A JSON response whose body may still be streaming in from a backend: sent as it arrives,
/// cut off if it breaks.
fn framed_response(status: StatusCode, body: Framed) -> Response {
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
fn listen_stream(l: crate::gateway::Listening) -> Response {
    let call = l.call;
    let messages = futures::stream::once(async move { l.ack }).chain(l.notifications).map(move |m| {
        // The request stays registered while its stream is open.
        let _registered = &call;
        m
    });
    sse(messages, None)
}

/// A response as the one event of an event stream (a streamed result gathered whole first).
async fn sse_one(body: Framed) -> Response {
    let text = body.into_string().await;
    sse(futures::stream::iter(text), None)
}

/// The method a message names, if the gateway serves it.
fn method_of(msg: &Message) -> Option<Method> {
    msg.method.as_deref().and_then(|m| m.parse().ok())
}

fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    json_response(status, jsonrpc::error(None, code, message, None))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// DNS-rebinding protection: the Host must be a loopback name (or one configured), and an
/// Origin, when a browser sends one, must be loopback or explicitly allowed.
fn host_origin_ok(gw: &Gateway, h: &HeaderMap, uri: &Uri) -> Result<(), &'static str> {
    let config = gw.config();
    let s = &config.server;
    // HTTP/2 carries the host as the URI's authority rather than a Host header.
    let Some(host) = header(h, "host").or_else(|| uri.authority().map(|a| a.as_str())) else {
        return Err("a Host header is required");
    };
    {
        let name = strip_port(host);
        let listen_ip = s.listen.ip().to_string();
        let ok = is_loopback_name(name)
            || (s.allow_public && (name == listen_ip || s.listen.ip().is_unspecified()) && s.allowed_hosts.is_empty())
            || s.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name));
        if !ok {
            return Err("Host header is not allowed (DNS rebinding protection); add it to server.allowed_hosts");
        }
    }
    if let Some(origin) = header(h, "origin") {
        let host = origin.split_once("://").map(|(_, r)| r).unwrap_or("");
        let ok = is_loopback_name(strip_port(host)) || s.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        if !ok {
            return Err("Origin is not allowed (DNS rebinding protection); add it to server.allowed_origins");
        }
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().map(|h| if h.is_empty() { host } else { h }).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host }).unwrap_or(host)
}

fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn accepts_sse(h: &HeaderMap) -> bool {
    header(h, "accept").is_some_and(|a| a.contains("text/event-stream"))
}

/// A client that accepts only `text/event-stream` gets every answer as SSE.
fn accepts_only_sse(h: &HeaderMap) -> bool {
    header(h, "accept")
        .is_some_and(|a| a.contains("text/event-stream") && !a.contains("application/json") && !a.contains("*/*"))
}

/// The bearer token of an `Authorization` header (scheme case-insensitive).
fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = header(h, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A 401 carries the challenge that tells a client where to learn how to authenticate
/// (RFC 6750, and RFC 9728's protected-resource metadata).
fn challenge(mut resp: Response, h: &HeaderMap, why: &str) -> Response {
    let host = header(h, "host").unwrap_or("localhost");
    let value = format!(
        "Bearer realm=\"sentinel\", error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"http://{host}/.well-known/oauth-protected-resource\"",
        why.replace(['"', '\\'], "")
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// RFC 9728 protected-resource metadata for `/mcp`.
async fn resource_metadata(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = side_refused(&gw, &headers, &uri) {
        return r;
    }
    let host = header(&headers, "host").unwrap_or("localhost");
    let mut body = serde_json::json!({
        "resource": format!("http://{host}/mcp"),
        "bearer_methods_supported": ["header"],
        "resource_name": "Sentinel MCP gateway",
    });
    if let crate::config::AuthConfig::Jwt(j) = &gw.config().auth {
        if let Some(iss) = j.issuer.as_deref().filter(|i| i.starts_with("https://") || i.starts_with("http://")) {
            body["authorization_servers"] = serde_json::json!([iss]);
        }
    }
    json_response(StatusCode::OK, body.to_string())
}

/// `post` in an HTTP server span (telemetry on): its parent is the client's context (the MCP
/// `_meta.traceparent` of the body, or else the `traceparent` header), and authentication and
/// the MCP request's span are its children.
async fn post_traced(state: State<Arc<Gateway>>, peer: Peer, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    use tracing::Instrument;
    let span = crate::stage_span!(
        "http.request",
        "otel.name" = "POST /mcp",
        "otel.kind" = "server",
        "http.request.method" = "POST",
        "url.path" = uri.path(),
        "http.response.status_code" = tracing::field::Empty,
    );
    let parent = crate::telemetry::TraceParent::from_body(&body)
        .or_else(|| crate::telemetry::TraceParent::from_headers(&headers));
    if let Some(p) = parent {
        crate::telemetry::set_parent(&span, &p);
    }
    let resp = post(state, peer, uri, headers, body).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

async fn post(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = host_origin_ok(&gw, &headers, &uri) {
        return refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why);
    }
    let caller = gw.authenticate(bearer(&headers)).await;
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
        let Some(session) = gw.session(sid).filter(|s| s.subject.as_deref() == caller.subject()) else {
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
        return dispatch(gw, session, msg, None, caller, &headers, peer).await;
    }
    // `initialize` opens a session unless it carries stateless `_meta` (then it is a
    // 2026-07-28 request for a method that revision removed).
    if method_of(&msg) == Some(Method::Initialize) && matches!(super::modern_meta_raw(&msg), Ok(None)) {
        let Some(session) = gw.new_session("http", caller.subject()) else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                jsonrpc::code::INTERNAL_ERROR,
                "too many sessions; try again later",
            );
        };
        let sid = session.id.clone();
        let ctx = Ctx { caller: &caller, modern: None, out: None, peer };
        let Some((status, body)) = gw.handle(&session, msg, ctx).await else {
            gw.end_session(&sid);
            return StatusCode::ACCEPTED.into_response();
        };
        let body = body.into_string().await.unwrap_or_default();
        // Only a successful initialize opens a session.
        let ok = Message::parse(body.as_bytes()).is_ok_and(|m| m.result.is_some());
        let mut resp = json_response(status, body);
        if ok {
            resp.headers_mut().insert("mcp-session-id", HeaderValue::from_str(&sid).expect("uuid is a header value"));
        } else {
            gw.end_session(&sid);
        }
        return resp;
    }

    // Stateless 2026-07-28.
    let header_version = header(&headers, "mcp-protocol-version");
    let modern = match super::modern_meta_raw(&msg) {
        Ok(m) => m,
        Err(r) => return fail(r),
    };
    let is_request = matches!(msg.kind(), Some(Kind::Request));
    let Some(modern) = modern.filter(|_| is_request).or_else(|| {
        // A version header alone still marks the request as stateless: it then lacks `_meta`.
        (is_request && header_version == Some(protocol::MODERN)).then(|| ModernMeta {
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
    if let Err(r) = check_headers(&gw, &headers, &msg, &modern) {
        return fail(r);
    }
    let session = Arc::new(Session::new(String::new(), "http", caller.subject()));
    dispatch(gw, session, msg, Some(modern), caller, &headers, peer).await
}

/// A request without valid credentials: answered 401 by the pipeline's first step (which
/// audits it), with the challenge header.
async fn unauthenticated(
    gw: &Arc<Gateway>,
    caller: &Caller,
    msg: Option<Message>,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Response {
    let why = match caller {
        Caller::Refused(e) => e.to_string(),
        _ => String::new(),
    };
    let answered = match msg {
        Some(msg) if matches!(msg.kind(), Some(Kind::Request)) => {
            let session = Arc::new(Session::new(String::new(), "http", None));
            gw.handle(&session, msg, Ctx { caller, modern: None, out: None, peer }).await
        }
        _ => None,
    };
    let resp = match answered {
        Some((status, body)) => framed_response(status, body),
        None => refuse(StatusCode::UNAUTHORIZED, jsonrpc::code::UNAUTHENTICATED, &format!("Not authenticated: {why}")),
    };
    challenge(resp, headers, &why)
}

/// The 2026-07-28 checks, in the order the spec's conformance suite expects: the version
/// header, the `_meta` fields, header against body, the version itself, then `Mcp-Method`,
/// `Mcp-Name` and `Mcp-Param-*` against the body — so that nothing routing on headers sees
/// a different request than the one the gateway authorizes.
fn check_headers(gw: &Gateway, h: &HeaderMap, msg: &Message, m: &ModernMeta) -> Result<(), Refusal> {
    let Some(v) = header(h, "mcp-protocol-version") else {
        return Err(Refusal::HeaderMismatch("the MCP-Protocol-Version header is required".into()));
    };
    if m.version.is_empty() {
        return Err(Refusal::MalformedModern(format!(
            "a {} request must carry `_meta.{}` and `_meta.{}`",
            protocol::MODERN,
            protocol::META_PROTOCOL_VERSION,
            protocol::META_CLIENT_CAPABILITIES
        )));
    }
    if !m.capabilities.is_object() {
        super::check_modern(m)?;
    }
    if v != m.version {
        return Err(Refusal::HeaderMismatch(format!(
            "MCP-Protocol-Version header `{v}` does not match `_meta` version `{}`",
            m.version
        )));
    }
    super::check_modern(m)?;
    let name = msg.method.as_deref().unwrap_or_default();
    match header(h, "mcp-method").map(str::trim) {
        None => return Err(Refusal::HeaderMismatch("the Mcp-Method header is required".into())),
        Some(v) if v != name => {
            return Err(Refusal::HeaderMismatch(format!(
                "Mcp-Method header `{v}` does not match body method `{name}`"
            )));
        }
        _ => {}
    }
    let method = method_of(msg);
    let key = match method {
        Some(Method::ToolsCall | Method::PromptsGet) => "name",
        Some(Method::ResourcesRead) => "uri",
        _ => return Ok(()),
    };
    /// Only what the headers are checked against, borrowed (the pipeline parses `params`
    /// strictly later; anything malformed here reads as empty and fails the comparison).
    #[derive(serde::Deserialize, Default)]
    struct Target<'a> {
        #[serde(borrow, default)]
        name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        uri: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        arguments: Option<&'a serde_json::value::RawValue>,
    }
    let target: Target = msg.params.as_deref().and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or_default();
    let body_value = match key {
        "name" => target.name.as_deref(),
        _ => target.uri.as_deref(),
    }
    .unwrap_or_default();
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
            let args = target.arguments.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
            param_headers::check(&tool.param_headers, &args, |name| header(h, name).map(str::to_string))
                .map_err(Refusal::HeaderMismatch)?;
        }
    }
    Ok(())
}

/// Runs one message through the gateway and frames the answer as JSON, SSE or 202.
async fn dispatch(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    msg: Message,
    modern: Option<ModernMeta>,
    caller: Caller,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Response {
    if !matches!(msg.kind(), Some(Kind::Request)) {
        return match gw.handle(&session, msg, Ctx { caller: &caller, modern: modern.as_ref(), out: None, peer }).await {
            Some((status, body)) if status != StatusCode::OK => framed_response(status, body),
            _ => StatusCode::ACCEPTED.into_response(),
        };
    }
    let streams = method_of(&msg).is_some_and(Method::makes_backend_work);
    if !(streams && accepts_sse(headers)) {
        return match gw.handle(&session, msg, Ctx { caller: &caller, modern: modern.as_ref(), out: None, peer }).await {
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
    // In the request's span (telemetry): the call's spans stay in its trace.
    let guard = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(async move {
        let ctx = Ctx { caller: &caller, modern: modern.as_ref(), out: Some(&tx), peer };
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
            sse(stream, Some(guard))
        }
        done = &mut done_rx => match done.ok().flatten() {
            Some((status, body)) if status == StatusCode::OK && accepts_only_sse(headers) => sse_one(body).await,
            Some((status, body)) => framed_response(status, body),
            None => cancelled_request(),
        },
    }
}

/// A request the client cancelled gets no response message: an event stream that ends
/// without one (a request must be answered with JSON or a stream, never an empty 202).
fn cancelled_request() -> Response {
    sse(futures::stream::empty(), None)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ends a long-lived stream (GET stream, listen stream) when the gateway shuts down, so that
/// graceful shutdown does not wait on it forever.
fn until_shutdown(
    gw: &Gateway,
    s: impl Stream<Item = String> + Send + 'static,
) -> impl Stream<Item = String> + Send + 'static {
    s.take_until(gw.shutdown.clone().cancelled_owned())
}

fn sse(messages: impl Stream<Item = String> + Send + 'static, guard: Option<AbortOnDrop>) -> Response {
    let events = messages.map(move |m| {
        let _keep = &guard;
        Ok::<_, Infallible>(Event::default().data(m))
    });
    let mut resp = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `GET /mcp`: a session-based client's stream for server-initiated messages.
async fn get_stream(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(why) = host_origin_ok(&gw, &headers, &uri) {
        return refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why);
    }
    let caller = gw.authenticate(bearer(&headers)).await;
    if let Caller::Refused(_) = caller {
        return unauthenticated(&gw, &caller, None, &headers, peer).await;
    }
    let Some(sid) = header(&headers, "mcp-session-id") else {
        // Stateless clients use subscriptions/listen instead.
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    let Some(session) = gw.session(sid).filter(|s| s.subject.as_deref() == caller.subject()) else {
        return refuse(StatusCode::NOT_FOUND, jsonrpc::code::INVALID_REQUEST, "Session not found");
    };
    if !accepts_sse(&headers) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::code::INVALID_REQUEST,
            "GET /mcp needs Accept: text/event-stream",
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if !session.open_outbound(tx) {
        return refuse(
            StatusCode::CONFLICT,
            jsonrpc::code::INVALID_REQUEST,
            "this session already has a GET stream open",
        );
    }
    sse(until_shutdown(&gw, UnboundedReceiverStream::new(rx)), None)
}

/// `DELETE /mcp`: ends a session.
async fn delete(State(gw): State<Arc<Gateway>>, Peer(peer): Peer, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(why) = host_origin_ok(&gw, &headers, &uri) {
        return refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why);
    }
    let caller = gw.authenticate(bearer(&headers)).await;
    if let Caller::Refused(_) = caller {
        return unauthenticated(&gw, &caller, None, &headers, peer).await;
    }
    match header(&headers, "mcp-session-id") {
        None => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Some(sid)
            if gw.session(sid).is_some_and(|s| s.subject.as_deref() == caller.subject()) && gw.end_session(sid) =>
        {
            StatusCode::OK.into_response()
        }
        Some(_) => refuse(StatusCode::NOT_FOUND, jsonrpc::code::INVALID_REQUEST, "Session not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(strip_port("localhost:8800"), "localhost");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("::1"));
        assert!(!is_loopback_name("evil.example"));
    }
}
