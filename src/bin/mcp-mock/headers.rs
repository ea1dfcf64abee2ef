//! HTTP header rules: the DNS-rebinding Host/Origin check, and the 2026-07-28
//! request-metadata validation (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`,
//! `Mcp-Param-*` with the `=?base64?...?=` sentinel encoding).

use crate::dispatch::{check_modern_version, modern_meta_version};
use crate::rpc::{Incoming, RpcError};
use crate::server::Server;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// True if Host and Origin (when present) name a loopback host.
pub fn allowed_origin(headers: &HeaderMap) -> bool {
    let host_ok = match headers.get("host").map(|h| h.to_str()) {
        None => true,
        Some(Ok(host)) => is_loopback(host),
        Some(Err(_)) => false,
    };
    let origin_ok = match headers.get("origin").map(|h| h.to_str()) {
        None => true,
        Some(Ok(origin)) => origin.split_once("://").is_some_and(|(_, rest)| is_loopback(rest)),
        Some(Err(_)) => false,
    };
    host_ok && origin_ok
}

/// `authority` is `host[:port]` (IPv6 in brackets).
fn is_loopback(authority: &str) -> bool {
    let authority = authority.trim_end_matches('/');
    let host = if authority.starts_with('[') {
        authority.split_once(']').map_or(authority, |(h, _)| h).trim_start_matches('[')
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(host.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RpcError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim_matches([' ', '\t'])))
            .map_err(|_| RpcError::header_mismatch(format!("{name} header contains invalid characters"))),
    }
}

/// Decodes a header value that may use the Base64 sentinel `=?base64?...?=`.
fn decode(name: &str, value: &str) -> Result<String, RpcError> {
    let Some(inner) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Ok(value.to_string());
    };
    let bytes = STANDARD
        .decode(inner)
        .map_err(|e| RpcError::header_mismatch(format!("{name} header is not valid Base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| RpcError::header_mismatch(format!("{name} header is not UTF-8")))
}

/// Validates a modern request's headers against its body, in the order the
/// conformance suite expects the errors.
pub fn validate_modern(headers: &HeaderMap, incoming: &Incoming, server: &Server) -> Result<(), RpcError> {
    let header_version = header(headers, "mcp-protocol-version")?
        .ok_or_else(|| RpcError::header_mismatch("Missing MCP-Protocol-Version header"))?;
    let version = modern_meta_version(&incoming.params)?;
    if header_version != version {
        return Err(RpcError::header_mismatch(format!(
            "MCP-Protocol-Version header {header_version:?} does not match _meta protocolVersion {version:?}"
        )));
    }
    check_modern_version(&version)?;

    let method = incoming.method.as_deref().unwrap_or("");
    match header(headers, "mcp-method")? {
        None => return Err(RpcError::header_mismatch("Missing Mcp-Method header")),
        Some(h) if h != method => {
            return Err(RpcError::header_mismatch(format!("Mcp-Method header {h:?} does not match body {method:?}")));
        }
        Some(_) => {}
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field {
        let body = incoming.params.get(field).and_then(Value::as_str).unwrap_or("");
        let h = header(headers, "mcp-name")?.ok_or_else(|| RpcError::header_mismatch("Missing Mcp-Name header"))?;
        if decode("Mcp-Name", h)? != body {
            return Err(RpcError::header_mismatch(format!("Mcp-Name header {h:?} does not match body {body:?}")));
        }
    }
    if method == "tools/call" {
        validate_params(headers, incoming, server)?;
    }
    Ok(())
}

/// Every argument whose schema property carries `x-mcp-header` must be mirrored in
/// `Mcp-Param-{Name}` with an equal value (absent or null arguments need no header).
fn validate_params(headers: &HeaderMap, incoming: &Incoming, server: &Server) -> Result<(), RpcError> {
    let name = incoming.params.get("name").and_then(Value::as_str).unwrap_or("");
    let Some(tool) = server.tool(name) else {
        return Ok(());
    };
    let Some(properties) = tool.pointer("/inputSchema/properties").and_then(Value::as_object).cloned() else {
        return Ok(());
    };
    let empty = Map::new();
    let args = incoming.params.get("arguments").and_then(Value::as_object).unwrap_or(&empty);
    for (prop, schema) in properties {
        let Some(suffix) = schema.get("x-mcp-header").and_then(Value::as_str) else {
            continue;
        };
        let Some(value) = args.get(&prop).filter(|v| !v.is_null()) else {
            continue;
        };
        let header_name = format!("mcp-param-{}", suffix.to_ascii_lowercase());
        let shown = format!("Mcp-Param-{suffix}");
        let raw = header(headers, &header_name)?
            .ok_or_else(|| RpcError::header_mismatch(format!("Missing {shown} header for argument {prop:?}")))?;
        let decoded = decode(&shown, raw)?;
        let matches = match value {
            Value::String(s) => *s == decoded,
            Value::Bool(b) => decoded == b.to_string(),
            Value::Number(n) => decoded.parse::<f64>().ok() == n.as_f64(),
            _ => false,
        };
        if !matches {
            return Err(RpcError::header_mismatch(format!("{shown} header does not match argument {prop:?}")));
        }
    }
    Ok(())
}

/// All request headers as a JSON object (lower-case names), for `whoami`.
pub fn to_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        map.insert(name.as_str().to_string(), Value::String(String::from_utf8_lossy(value.as_bytes()).into()));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_allowed_and_others_are_not() {
        for ok in ["localhost", "127.0.0.1:8080", "[::1]:9", "LOCALHOST:1"] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in ["evil.example.com", "127.0.0.2", "localhost.evil.com:80"] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn base64_sentinel_is_decoded_strictly() {
        assert_eq!(decode("x", "=?base64?SGVsbG8=?=").unwrap(), "Hello");
        assert!(decode("x", "=?base64?SGVsbG8?=").is_err(), "missing padding");
        assert!(decode("x", "=?base64?SGVs!!!bG8=?=").is_err(), "bad alphabet");
        assert_eq!(decode("x", "=?base64?SGVsbG8=").unwrap(), "=?base64?SGVsbG8=", "no suffix: literal");
    }
}
