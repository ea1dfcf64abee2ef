//! The side endpoints beside `/mcp`: `/health`, `/ready`, `/metrics` and the RFC 9728
//! protected-resource metadata. They answer only to the Host (and Origin) `/mcp` accepts.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use super::prelude::{bearer, header, host_origin_ok};
use super::respond::{json_response, refuse};
use crate::gateway::Gateway;
use crate::jsonrpc;

/// The side endpoints answer only to the Host (and Origin) `/mcp` accepts: they name tools,
/// backends and the gateway's state, which a DNS-rebinding page must not read either.
fn side_refused(gw: &Gateway, h: &HeaderMap, uri: &Uri) -> Option<Response> {
    host_origin_ok(gw, h, uri).err().map(|why| refuse(StatusCode::FORBIDDEN, jsonrpc::code::INVALID_REQUEST, why))
}

pub(super) async fn health(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
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
pub(super) async fn ready(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = side_refused(&gw, &headers, &uri) {
        return r;
    }
    let (ok, detail) = gw.readiness();
    json_response(if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, detail.to_string())
}

/// Prometheus text; with `[server] metrics_token` set, only for a request bearing it.
pub(super) async fn metrics(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
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

/// Compares a presented secret with the configured one in time that depends only on their
/// lengths (hand-written: a dependency for five lines is not worth it).
fn same_secret(got: &[u8], want: &[u8]) -> bool {
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// RFC 9728 protected-resource metadata for `/mcp`.
pub(super) async fn resource_metadata(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
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
