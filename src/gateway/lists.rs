//! Results the gateway builds itself: `initialize`, `server/discover`, lists, and the fields
//! a stateless (2026-07-28) client needs on every result.

use crate::jsonrpc;
use crate::method::Method;
use crate::protocol::{self, META_SERVER_INFO};

/// How long a stateless client may cache a list; list_changed notifications cover changes sooner.
const LIST_TTL_MS: u64 = 60_000;

fn capabilities() -> serde_json::Value {
    serde_json::json!({
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "completions": {},
        "logging": {},
    })
}

const INSTRUCTIONS: &str =
    "Sentinel gateway: tools from several MCP servers, each named <server>__<tool> unless configured otherwise.";

pub fn initialize_result(version: &str, tasks: bool) -> String {
    let mut caps = capabilities();
    if tasks {
        caps["tasks"] = serde_json::json!({ "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } });
    }
    serde_json::json!({
        "protocolVersion": version,
        "capabilities": caps,
        "serverInfo": protocol::server_info(),
        "instructions": INSTRUCTIONS,
    })
    .to_string()
}

pub fn discover(tasks: bool) -> String {
    let mut caps = capabilities();
    if tasks {
        caps["extensions"] = serde_json::json!({ "io.modelcontextprotocol/tasks": {} });
    }
    // Stateless clients get logging per request and subscriptions through subscriptions/listen.
    caps.as_object_mut().expect("object").remove("logging");
    serde_json::json!({
        "resultType": "complete",
        "supportedVersions": protocol::SUPPORTED,
        "capabilities": caps,
        "instructions": INSTRUCTIONS,
        "ttlMs": LIST_TTL_MS,
        "cacheScope": "public",
        "_meta": { META_SERVER_INFO: protocol::server_info() },
    })
    .to_string()
}

/// `{"<key>":[...]}`, with the cache fields a stateless client expects.
pub fn list(key: &str, items: &str, stateless: bool) -> String {
    if stateless {
        format!(
            r#"{{"{key}":{items},"resultType":"complete","ttlMs":{LIST_TTL_MS},"cacheScope":"private","_meta":{{"{META_SERVER_INFO}":{}}}}}"#,
            protocol::server_info()
        )
    } else {
        format!(r#"{{"{key}":{items}}}"#)
    }
}

/// Adds what the 2026-07-28 revision requires of a result and a session-based backend did
/// not send (`resultType`; `ttlMs`/`cacheScope` on cacheable results), leaving every byte
/// the backend sent in place.
pub fn stateless_result(method: Option<Method>, mut r: String) -> String {
    if !r.trim_start().starts_with('{') {
        return r;
    }
    for (key, value) in stateless_fields(method) {
        if !jsonrpc::has_top_level_key(&r, key) {
            r = jsonrpc::splice_field(&r, key, value);
        }
    }
    r
}

/// The fields a stateless client must find in a result, with the value given when the
/// backend's result lacks them (`modern_result` for whole results).
pub fn stateless_fields(method: Option<Method>) -> &'static [(&'static str, &'static str)] {
    if method == Some(Method::ResourcesRead) {
        &[("resultType", "\"complete\""), ("cacheScope", "\"private\""), ("ttlMs", "0")]
    } else {
        &[("resultType", "\"complete\"")]
    }
}

pub fn is_input_required(r: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "resultType")]
        result_type: Option<String>,
    }
    serde_json::from_str::<R>(r).ok().and_then(|r| r.result_type).as_deref() == Some("input_required")
}

/// The HTTP status a stateless client must see for a backend's error: the protocol errors
/// the 2026-07-28 revision ties to `400 Bad Request` keep it through the gateway.
pub fn http_status_of_error(error: &str) -> http::StatusCode {
    #[derive(serde::Deserialize)]
    struct E {
        code: i64,
    }
    match serde_json::from_str::<E>(error).map(|e| e.code) {
        Ok(
            jsonrpc::code::HEADER_MISMATCH
            | jsonrpc::code::MISSING_CLIENT_CAPABILITY
            | jsonrpc::code::UNSUPPORTED_PROTOCOL_VERSION,
        ) => http::StatusCode::BAD_REQUEST,
        _ => http::StatusCode::OK,
    }
}
