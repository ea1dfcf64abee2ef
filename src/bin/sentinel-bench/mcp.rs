//! The MCP messages the bench sends and the check every answer passes. Written here rather
//! than taken from the gateway's library: a load generator that shared Sentinel's parser
//! would share its bugs, and the direct side must not depend on the thing it is compared with.

use std::borrow::Cow;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::json;

use crate::args::{Generation, Payload};

pub const MODERN: &str = "2026-07-28";
pub const LEGACY: &str = "2025-11-25";

/// The `_meta` every stateless (2026-07-28) request carries.
fn modern_meta() -> serde_json::Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}})
}

/// One call of the mock's `bench` tool, as a JSON-RPC request line (no newline).
pub fn call_body(id: u64, tool: &str, generation: Generation, payload: Payload, client: usize, seq: u64) -> String {
    let mut arguments = json!({"client": client, "seq": seq});
    if let Some(bytes) = payload.bytes() {
        arguments["bytes"] = json!(bytes);
    }
    let mut params = json!({"name": tool, "arguments": arguments});
    if generation == Generation::Modern {
        params["_meta"] = modern_meta();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

/// Any other request (`initialize`, `tools/list`), with `_meta` when stateless.
pub fn request_body(id: u64, method: &str, mut params: serde_json::Value, generation: Generation) -> String {
    if generation == Generation::Modern {
        params["_meta"] = modern_meta();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn initialize_params() -> serde_json::Value {
    json!({"protocolVersion": LEGACY, "capabilities": {},
           "clientInfo": {"name": "sentinel-bench", "version": env!("CARGO_PKG_VERSION")}})
}

pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

#[derive(Deserialize)]
struct Answer<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<CallResult<'a>>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CallResult<'a> {
    #[serde(rename = "resultType", borrow)]
    result_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Vec<Content<'a>>,
    #[serde(rename = "structuredContent")]
    structured: Option<CallIds>,
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize, PartialEq, Debug)]
struct CallIds {
    client: usize,
    seq: u64,
}

/// The answer to `call_body(id, .., client, seq)` must be that call's result: our id, not an
/// error, `{client, seq}` as structuredContent, and exactly the text the payload asks for.
pub fn check_call(
    answer: &[u8],
    id: u64,
    generation: Generation,
    payload: Payload,
    client: usize,
    seq: u64,
) -> anyhow::Result<()> {
    let a: Answer =
        serde_json::from_slice(answer).with_context(|| format!("not a JSON-RPC answer: {}", preview(answer)))?;
    ensure!(a.id == Some(id), "answer for id {:?}, sent {id}: {}", a.id, preview(answer));
    if let Some(e) = a.error {
        bail!("error answer to {id}: {e}");
    }
    let r = a.result.with_context(|| format!("no result for {id}: {}", preview(answer)))?;
    ensure!(r.is_error != Some(true), "isError result for {id}: {}", preview(answer));
    if generation == Generation::Modern {
        ensure!(r.result_type.as_deref() == Some("complete"), "resultType is {:?} for {id}", r.result_type);
    }
    ensure!(
        r.structured == Some(CallIds { client, seq }),
        "structuredContent {:?}, sent client {client} seq {seq}",
        r.structured
    );
    let [Content { kind, text: Some(text) }] = r.content.as_slice() else {
        bail!("not one text content for {id}: {}", preview(answer));
    };
    ensure!(kind == "text", "content type {kind} for {id}");
    match payload.bytes() {
        None => ensure!(*text == format!("{client}-{seq}"), "text {text:?} for client {client} seq {seq}"),
        Some(n) => {
            ensure!(text.len() == n && text.bytes().all(|b| b == b'x'), "a {}-byte text, not {n} x's", text.len());
        }
    }
    Ok(())
}

/// The `id` of a message, if it is a response: how the stdio driver finds the waiting caller
/// without decoding the rest.
pub fn response_id(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Id {
        id: Option<u64>,
        method: Option<serde::de::IgnoredAny>,
    }
    let m: Id = serde_json::from_slice(line).ok()?;
    if m.method.is_some() { None } else { m.id }
}

/// Whether a `tools/list` answer lists `tool`.
pub fn lists_tool(answer: &[u8], tool: &str) -> bool {
    let v: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    v["result"]["tools"].as_array().is_some_and(|ts| ts.iter().any(|t| t["name"] == tool))
}

/// The start of a message, for error reports (a 1 MB answer must not flood the terminal).
pub fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
    if b.len() > 300 { format!("{s}... ({} bytes)", b.len()) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_answer(id: u64, client: usize, seq: u64) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"complete","content":[{{"type":"text","text":"{client}-{seq}"}}],"structuredContent":{{"client":{client},"seq":{seq}}}}}}}"#
        )
    }

    #[test]
    fn a_right_answer_passes_and_each_wrong_one_fails() {
        let (g, p) = (Generation::Modern, Payload::Small);
        assert!(check_call(small_answer(7, 2, 9).as_bytes(), 7, g, p, 2, 9).is_ok());
        assert!(check_call(small_answer(8, 2, 9).as_bytes(), 7, g, p, 2, 9).is_err(), "wrong id");
        assert!(check_call(small_answer(7, 3, 9).as_bytes(), 7, g, p, 2, 9).is_err(), "another client's result");
        let err = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32013,"message":"rate limited"}}"#;
        assert!(check_call(err.as_bytes(), 7, g, p, 2, 9).is_err(), "an error");
        assert!(check_call(small_answer(7, 2, 9).as_bytes(), 7, g, Payload::OneMb, 2, 9).is_err(), "short text");
    }

    #[test]
    fn a_megabyte_is_checked_to_the_byte() {
        let text = "x".repeat(1_000_000);
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}],"structuredContent":{{"client":0,"seq":1}}}}}}"#
        );
        assert!(check_call(ok.as_bytes(), 1, Generation::Legacy, Payload::OneMb, 0, 1).is_ok());
        let bad = ok.replacen("xx", "xy", 1);
        assert!(check_call(bad.as_bytes(), 1, Generation::Legacy, Payload::OneMb, 0, 1).is_err());
    }

    #[test]
    fn only_responses_have_a_response_id() {
        assert_eq!(response_id(br#"{"jsonrpc":"2.0","id":5,"result":{}}"#), Some(5));
        assert_eq!(response_id(br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#), None);
        assert_eq!(response_id(br#"{"jsonrpc":"2.0","method":"notifications/message"}"#), None);
    }
}
