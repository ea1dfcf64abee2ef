//! What every request to `/mcp` passes before anything else: the Host and Origin check
//! (DNS-rebinding protection), the caller authenticated from its bearer token, and the 401
//! with its challenge for a caller without valid credentials. Shared by POST, GET and DELETE.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use super::respond::{framed_response, refuse};
use crate::gateway::{Caller, Ctx, Gateway};
use crate::jsonrpc::{self, Kind, Message};
use crate::request::Incoming;
use crate::session::Session;

/// The caller of a request to `/mcp` whose Host and Origin are allowed (a refused caller
/// included: POST still audits its request); a 403 otherwise.
pub(super) async fn prelude(gw: &Gateway, headers: &HeaderMap, uri: &Uri) -> Result<Caller, Response> {
    if let Err(why) = host_origin_ok(gw, headers, uri) {
        return Err(refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why));
    }
    Ok(gw.authenticate(bearer(headers)).await)
}

/// [`prelude`] for requests that carry no message to audit (GET, DELETE): a refused caller
/// is answered 401 here.
pub(super) async fn authenticated(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<std::net::IpAddr>,
) -> Result<Caller, Response> {
    let caller = prelude(gw, headers, uri).await?;
    if let Caller::Refused(_) = caller {
        return Err(unauthenticated(gw, &caller, None, headers, peer).await);
    }
    Ok(caller)
}

/// The client's IP address, when the server was started with connect info (`sentinel serve`).
pub(super) struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Peer(info.map(|c| c.0.ip())))
    }
}

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn accepts_sse(h: &HeaderMap) -> bool {
    header(h, "accept").is_some_and(|a| a.contains("text/event-stream"))
}

/// A client that accepts only `text/event-stream` gets every answer as SSE.
pub(super) fn accepts_only_sse(h: &HeaderMap) -> bool {
    header(h, "accept")
        .is_some_and(|a| a.contains("text/event-stream") && !a.contains("application/json") && !a.contains("*/*"))
}

/// DNS-rebinding protection: the Host must be a loopback name (or one configured), and an
/// Origin, when a browser sends one, must be loopback or explicitly allowed.
pub(super) fn host_origin_ok(gw: &Gateway, h: &HeaderMap, uri: &Uri) -> Result<(), &'static str> {
    let config = gw.config();
    let s = &config.server;
    // HTTP/2 carries the host as the URI's authority rather than a Host header.
    let Some(host) = header(h, "host").or_else(|| uri.authority().map(http::uri::Authority::as_str)) else {
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

/// The bearer token of an `Authorization` header (scheme case-insensitive).
pub(super) fn bearer(h: &HeaderMap) -> Option<&str> {
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

/// A request without valid credentials: answered 401 by the pipeline's first step (which
/// audits it), with the challenge header.
pub(super) async fn unauthenticated(
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
            let ctx = Ctx { caller, stateless: None, out: None, peer, trace_parent: None, profile: None };
            gw.handle(&session, Incoming::envelope(msg), ctx).await
        }
        _ => None,
    };
    let resp = match answered {
        Some((status, body)) => framed_response(status, body),
        None => refuse(StatusCode::UNAUTHORIZED, jsonrpc::code::UNAUTHENTICATED, &format!("Not authenticated: {why}")),
    };
    challenge(resp, headers, &why)
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
