//! Fixed content: media payloads, resource bodies, prompt messages, completions,
//! and the `exact_bytes` result texts that byte-exactness tests compare against.

use crate::rpc::RpcError;
use serde_json::{Value, json};

/// A 1x1 red PNG.
pub const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV header with no samples.
pub const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA=";

/// `exact_bytes` on the legacy protocol. Odd key order, vendor `_meta`, unknown
/// fields, number spellings and both escaped and raw non-ASCII: a gateway that
/// decodes and re-encodes will change these bytes.
pub const EXACT_BYTES_LEGACY: &str = r#"{"structuredContent":{"z":1,"a":{"nested":[1.0,1e3,-0,12345678901234567890]},"caf\u00e9":"café"},"content":[{"type":"text","text":"caf\u00e9 café","annotations":{"priority":1.0}}],"_meta":{"vendor.example/trace":"abc","io.example/n":1e3},"unknownField":{"keep":[true,null]},"isError":false}"#;

/// `exact_bytes` on 2026-07-28: the same, plus the mandatory `resultType`.
pub const EXACT_BYTES_MODERN: &str = r#"{"structuredContent":{"z":1,"a":{"nested":[1.0,1e3,-0,12345678901234567890]},"caf\u00e9":"café"},"resultType":"complete","content":[{"type":"text","text":"caf\u00e9 café","annotations":{"priority":1.0}}],"_meta":{"vendor.example/trace":"abc","io.example/n":1e3},"unknownField":{"keep":[true,null]},"isError":false}"#;

pub fn read_resource(uri: &str) -> Result<Value, RpcError> {
    let contents = match uri {
        "test://static-text" => json!({"uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."}),
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
        "test://watched-resource" => json!({"uri": uri, "mimeType": "text/plain",
            "text": "Watched resource content."}),
        _ => match template_id(uri) {
            Some(id) => json!({"uri": uri, "mimeType": "application/json",
                "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string()}),
            None => {
                return Err(RpcError::invalid_params("Resource not found").data(json!({"uri": uri})));
            }
        },
    };
    Ok(json!({"contents": [contents]}))
}

/// The `{id}` of `test://template/{id}/data`.
fn template_id(uri: &str) -> Option<&str> {
    let id = uri.strip_prefix("test://template/")?.strip_suffix("/data")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn user_text(text: &str) -> Value {
    json!({"role": "user", "content": {"type": "text", "text": text}})
}

/// `prompts/get` for every prompt except the MRTR one (which needs input).
pub fn get_prompt(name: &str, args: &Value) -> Result<Value, RpcError> {
    let arg = |key: &str| args.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let messages = match name {
        "test_simple_prompt" => json!([user_text("This is a simple prompt for testing.")]),
        "test_prompt_with_arguments" => {
            json!([user_text(&format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2")))])
        }
        "test_prompt_with_embedded_resource" => json!([
            {"role": "user", "content": {"type": "resource", "resource": {"uri": arg("resourceUri"),
                "mimeType": "text/plain", "text": "Embedded resource content for testing."}}},
            user_text("Please process the embedded resource above.")
        ]),
        "test_prompt_with_image" => json!([
            {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
            user_text("Please analyze the image above.")
        ]),
        _ => return Err(RpcError::invalid_params(format!("Unknown prompt: {name}"))),
    };
    Ok(json!({"messages": messages}))
}

/// Deterministic completions: fixed candidates filtered by prefix.
pub fn complete(params: &Value) -> Value {
    let prefix = params.pointer("/argument/value").and_then(Value::as_str).unwrap_or("");
    let values: Vec<&str> =
        ["paris", "park", "party", "test-value"].into_iter().filter(|v| v.starts_with(prefix)).collect();
    json!({"completion": {"values": values, "total": values.len(), "hasMore": false}})
}
