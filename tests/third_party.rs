//! Real third-party MCP servers behind Sentinel, driven by a real third-party client.
//!
//! Servers: `@modelcontextprotocol/server-everything` (TypeScript SDK, session-based
//! 2025-11-25) over stdio and over Streamable HTTP, and `mcp-server-time` (Python SDK, stateless
//! 2026-07-28) over stdio. Client: the official Python SDK (`tests/py/sdk_client.py`), once
//! connected to the server itself and once to Sentinel; what it sees must be the same except
//! for the tool-name prefix. Then the same at the wire level: the raw `result` bytes of a call
//! straight from the server and through Sentinel.
mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use common::peers::{self, Peers};
use common::{Gateway, HttpClient, StdioClient, http_backend, lit};

/// Deterministic server-everything calls: unicode and escapes, numbers, structured content,
/// annotations and images.
const EVERYTHING_CALLS: &[(&str, &str)] = &[
    ("echo", r#"{"message":"h\u00e9llo \"quoted\" \\ \u2713 \ud83d\ude80"}"#),
    ("get-sum", r#"{"a":2,"b":3.5}"#),
    ("get-structured-content", r#"{"location":"Chicago"}"#),
    ("get-annotated-message", r#"{"messageType":"success","includeImage":true}"#),
    ("get-tiny-image", "{}"),
];

/// `convert_time` is deterministic for fixed inputs (it uses today's date, the same for both
/// runs of one test, and zones without daylight saving time).
const TIME_CALLS: &[(&str, &str)] =
    &[("convert_time", r#"{"source_timezone":"UTC","time":"12:00","target_timezone":"Asia/Tokyo"}"#)];

/// server-everything offers `trigger-url-elicitation` only to clients that declare URL-mode
/// elicitation. The SDK client declares it; Sentinel declares `elicitation: {}` (form mode only)
/// to its backends, so the tool is not offered through Sentinel. If Sentinel starts relaying
/// URL-mode elicitation this list must shrink (the comparison below fails until it does).
const NEEDS_URL_ELICITATION: &[&str] = &["trigger-url-elicitation"];

fn stdio_backend(name: &str, command: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(lit).collect();
    format!(
        "[[backend]]\nname = {}\nstdio = {{ command = {}, args = [{}] }}\n",
        lit(name),
        lit(command),
        args.join(", ")
    )
}

fn everything_stdio_backend(p: &Peers) -> String {
    stdio_backend("everything", &p.node().to_string_lossy(), &[&p.everything().to_string_lossy(), "stdio"])
}

fn time_backend(p: &Peers) -> String {
    stdio_backend("time", &p.mcp_server_time().to_string_lossy(), &["--local-timezone", "UTC"])
}

/// `--call NAME JSON` arguments for `sdk_client.py`, with an optional exposed-name prefix.
fn call_args(calls: &[(&str, &str)], prefix: &str) -> Vec<String> {
    calls.iter().flat_map(|(name, args)| ["--call".to_string(), format!("{prefix}{name}"), args.to_string()]).collect()
}

fn sdk(p: &Peers, target: &[&str], extra: &[&str], calls: &[(&str, &str)], prefix: &str) -> Value {
    let calls = call_args(calls, prefix);
    let mut args: Vec<&str> = target.to_vec();
    args.extend_from_slice(extra);
    args.extend(calls.iter().map(String::as_str));
    p.sdk_client(&args)
}

/// Tools by name, with `prefix` stripped from every name (each must carry it).
fn tools_by_name(out: &Value, prefix: &str) -> BTreeMap<String, Value> {
    out["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| {
            let mut t = t.clone();
            let name = t["name"].as_str().expect("tool name");
            let bare =
                name.strip_prefix(prefix).unwrap_or_else(|| panic!("`{name}` lacks the prefix `{prefix}`")).to_string();
            t["name"] = json!(bare);
            (bare, t)
        })
        .collect()
}

/// The SDK saw the same tools and the same call results directly and through Sentinel.
fn assert_same_view(direct: &Value, through: &Value, prefix: &str, what: &str) {
    let mut direct_tools = tools_by_name(direct, "");
    let through_tools = tools_by_name(through, prefix);
    for name in NEEDS_URL_ELICITATION {
        if direct_tools.remove(*name).is_some() {
            assert!(!through_tools.contains_key(*name), "{what}: `{name}` is now offered through Sentinel");
        }
    }
    assert!(!direct_tools.is_empty(), "{what}: the server offered no tools");
    for (name, tool) in &direct_tools {
        assert_eq!(Some(tool), through_tools.get(name), "{what}: tool `{name}` differs through Sentinel");
    }
    let extra: Vec<&String> = through_tools.keys().filter(|k| !direct_tools.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{what}: tools only seen through Sentinel: {extra:?}");

    let (dc, tc) = (direct["calls"].as_array().unwrap(), through["calls"].as_array().unwrap());
    assert_eq!(dc.len(), tc.len(), "{what}: number of call results");
    for (d, t) in dc.iter().zip(tc) {
        assert_eq!(format!("{prefix}{}", d["name"].as_str().unwrap()), t["name"].as_str().unwrap());
        assert_eq!(d["result"], t["result"], "{what}: result of `{}` differs through Sentinel", d["name"]);
        assert_ne!(d["result"]["isError"], json!(true), "{what}: `{}` failed: {}", d["name"], d["result"]);
    }
}

#[test]
fn sdk_sees_server_everything_over_stdio_unchanged_through_sentinel() {
    let p = peers::ensure();
    let (node, everything) = (p.node().to_string_lossy().to_string(), p.everything().to_string_lossy().to_string());
    let direct = sdk(&p, &["--stdio", &node, &everything, "stdio", "--"], &[], EVERYTHING_CALLS, "");
    assert_eq!(direct["protocolVersion"], common::LEGACY, "server-everything is a session-based server");

    let gw = Gateway::start(&everything_stdio_backend(&p));
    // `auto` finds Sentinel stateless (2026-07-28); `legacy` forces the initialize handshake.
    for mode in ["auto", "legacy"] {
        let through = sdk(&p, &["--url", &gw.url], &["--mode", mode], EVERYTHING_CALLS, "everything__");
        let expected = if mode == "auto" { common::MODERN } else { common::LEGACY };
        assert_eq!(through["protocolVersion"], expected);
        assert_same_view(&direct, &through, "everything__", &format!("server-everything stdio, SDK mode {mode}"));
    }
}

#[test]
fn sdk_sees_server_everything_over_http_unchanged_through_sentinel() {
    let p = peers::ensure();
    let server = p.everything_http();
    let direct = sdk(&p, &["--url", &server.url], &[], EVERYTHING_CALLS, "");
    assert_eq!(direct["protocolVersion"], common::LEGACY);

    let gw = Gateway::start(&http_backend("everything", None, &server.url));
    for mode in ["auto", "legacy"] {
        let through = sdk(&p, &["--url", &gw.url], &["--mode", mode], EVERYTHING_CALLS, "everything__");
        assert_same_view(&direct, &through, "everything__", &format!("server-everything HTTP, SDK mode {mode}"));
    }
}

/// A dual-generation server (the Python SDK) whose tool asks for sampling the session-based
/// way, which it cannot do statelessly: a session-based client gets its answer directly, and
/// must get the same through Sentinel (which speaks to the backend statelessly for stateless
/// clients, and over a session of its own for session-based ones).
#[test]
fn a_dual_generation_servers_sampling_reaches_a_session_based_client_through_sentinel() {
    let p = peers::ensure();
    let server = p.dual_python_http();
    let calls: &[(&str, &str)] = &[("ask_llm", r#"{"prompt":"capital of France?"}"#), ("add", r#"{"a":2,"b":3}"#)];
    let answer = ["--mode", "legacy", "--answer-sampling", "Paris"];
    let direct = sdk(&p, &["--url", &server.url], &answer, calls, "");
    assert_eq!(direct["calls"][0]["result"]["content"][0]["text"], "sampled: Paris", "directly: {direct}");

    let gw = Gateway::start(&http_backend("dual", None, &server.url));
    let through = sdk(&p, &["--url", &gw.url], &answer, calls, "dual__");
    assert_same_view(&direct, &through, "dual__", "the Python SDK's dual server, session-based client");
    assert!(gw.log().contains("session_based_too=true"), "{}", gw.log());
}

/// The same server over stdio, where one process speaks one generation: with
/// `generation = "session-based"` its sampling reaches the official SDK client through Sentinel in
/// both generations — relayed to a session-based client, and put to a 2026-07-28 client as an
/// input round (which the SDK answers and retries), though the server cannot ask a 2026-07-28
/// client at all directly.
#[test]
fn a_dual_stdio_servers_sampling_reaches_both_generations_through_sentinel() {
    let p = peers::ensure();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dual_server.py");
    let backend = stdio_backend("dual", &p.python().to_string_lossy(), &[&script.to_string_lossy(), "stdio"]);
    let gw = Gateway::start(&format!("{backend}generation = \"session-based\"\n"));
    let calls: &[(&str, &str)] = &[("ask_llm", r#"{"prompt":"capital of France?"}"#)];
    for mode in ["legacy", common::MODERN] {
        let out = sdk(&p, &["--url", &gw.url], &["--mode", mode, "--answer-sampling", "Paris"], calls, "dual__");
        assert_eq!(out["calls"][0]["result"]["content"][0]["text"], "sampled: Paris", "SDK mode {mode}: {out}");
    }
}

#[test]
fn sdk_sees_mcp_server_time_unchanged_through_sentinel() {
    let p = peers::ensure();
    let time = p.mcp_server_time().to_string_lossy().to_string();
    let direct = sdk(&p, &["--stdio", &time, "--local-timezone", "UTC", "--"], &[], TIME_CALLS, "");
    assert_eq!(direct["protocolVersion"], common::MODERN, "mcp-server-time is a stateless server");

    let gw = Gateway::start(&time_backend(&p));
    for mode in ["auto", "legacy"] {
        let through = sdk(&p, &["--url", &gw.url], &["--mode", mode], TIME_CALLS, "time__");
        assert_same_view(&direct, &through, "time__", &format!("mcp-server-time via HTTP, SDK mode {mode}"));
    }

    // `sentinel stdio` as the SDK's stdio server: a desktop client's view of the gateway.
    let config = gw.dir.path().join("stdio.toml");
    // Authentication off: the SDK spawns the process itself, with no way to pass SENTINEL_TOKEN.
    std::fs::write(&config, format!("[auth]\ndisabled = true\n{}", time_backend(&p))).expect("write config");
    let sentinel = common::sentinel_bin().to_string_lossy().to_string();
    let stdio = ["--stdio", &sentinel, "stdio", "-c", &config.to_string_lossy(), "--"];
    let through = sdk(&p, &stdio, &[], TIME_CALLS, "time__");
    assert_same_view(&direct, &through, "time__", "mcp-server-time via `sentinel stdio`");
}

/// Raw `result` bytes of each call, as `(name, raw)`, from a session-based client.
async fn raw_results_legacy(client: &HttpClient, calls: &[(&str, &str)], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, args) in calls {
        let r = client.call(&format!("{prefix}{name}"), serde_json::from_str(args).unwrap()).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        out.push(r.raw_result());
    }
    out
}

/// A stateless client through Sentinel gets the backend's bytes with one addition:
/// Sentinel adds `,"resultType":"complete"` before the closing brace when a session-based
/// backend's result lacks it (2026-07-28 requires it on every result), and changes nothing else.
fn with_result_type(legacy: &str) -> String {
    assert!(!legacy.contains("\"resultType\""), "a 2025-11-25 result has no resultType: {legacy}");
    format!("{},\"resultType\":\"complete\"}}", legacy.strip_suffix('}').expect("an object"))
}

#[tokio::test]
async fn server_everything_results_are_byte_identical_through_sentinel() {
    let p = peers::ensure();
    let gw = Gateway::start(&everything_stdio_backend(&p));
    let server = p.everything_http();
    let gw_http = Gateway::start(&http_backend("everything", None, &server.url));

    // Straight from the server over stdio: initialize, then the calls.
    let mut direct = StdioClient::spawn(&p.node(), &[&p.everything().to_string_lossy(), "stdio"], None);
    direct.initialize().await;
    let mut from_stdio = Vec::new();
    for (i, (name, args)) in EVERYTHING_CALLS.iter().enumerate() {
        let line = direct
            .request(
                json!(i),
                "tools/call",
                json!({"name": name, "arguments": serde_json::from_str::<Value>(args).unwrap()}),
            )
            .await;
        from_stdio.push(common::raw_member(&line, "result"));
    }
    // Straight from the server over HTTP.
    let from_http = raw_results_legacy(&HttpClient::legacy(&server.url, json!({})).await, EVERYTHING_CALLS, "").await;
    assert_eq!(from_stdio, from_http, "server-everything answers the same over stdio and HTTP");

    for (gw, what) in [(&gw, "stdio backend"), (&gw_http, "HTTP backend")] {
        let legacy = HttpClient::legacy(&gw.url, json!({})).await;
        let through = raw_results_legacy(&legacy, EVERYTHING_CALLS, "everything__").await;
        for ((name, _), (d, t)) in EVERYTHING_CALLS.iter().zip(from_stdio.iter().zip(&through)) {
            assert_eq!(d, t, "{what}: `{name}` result bytes differ for a same-generation (2025-11-25) client");
        }
        let modern = HttpClient::modern(&gw.url);
        for ((name, args), d) in EVERYTHING_CALLS.iter().zip(&from_stdio) {
            let r = modern.call(&format!("everything__{name}"), serde_json::from_str(args).unwrap()).await;
            assert_eq!(r.raw_result(), with_result_type(d), "{what}: `{name}` result bytes for a 2026-07-28 client");
        }
    }
}

#[tokio::test]
async fn mcp_server_time_results_are_byte_identical_through_sentinel() {
    let p = peers::ensure();
    let gw = Gateway::start(&time_backend(&p));
    let mut direct = StdioClient::spawn(&p.mcp_server_time(), &["--local-timezone", "UTC"], None);
    let modern = HttpClient::modern(&gw.url);
    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    for (i, (name, args)) in TIME_CALLS.iter().enumerate() {
        let args: Value = serde_json::from_str(args).unwrap();
        // A stateless server needs no initialize: every request carries its `_meta`.
        let line = direct.request_modern(json!(i), "tools/call", json!({"name": name, "arguments": args})).await;
        let from_server = common::raw_member(&line, "result");
        assert!(from_server.contains(r#""resultType":"complete""#), "a 2026-07-28 result: {from_server}");
        let through = modern.call(&format!("time__{name}"), args.clone()).await;
        assert_eq!(
            through.raw_result(),
            from_server,
            "`{name}` result bytes for a same-generation (2026-07-28) client"
        );
        // A session-based client gets the very same bytes: `resultType` is an extra member
        // it ignores, and Sentinel never re-encodes a result to drop it.
        let through = legacy.call(&format!("time__{name}"), args).await;
        assert_eq!(through.raw_result(), from_server, "`{name}` result bytes for a 2025-11-25 client");
    }
}
