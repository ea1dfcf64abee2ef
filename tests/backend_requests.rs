//! A backend's own requests to the client side (issue #15): `ping` is answered by the gateway
//! itself, always; `roots/list` is put to the client whose call it belongs to when that client
//! can answer it, and otherwise answered from the backend's configured `roots` (default none) —
//! at start-up, on the GET stream, with no call in flight, or for a client without the `roots`
//! capability. Real `sentinel serve` in front of `mcp-mock --generation legacy` over stdio and
//! over Streamable HTTP (where a server-to-client request arrives on the call's SSE stream or on
//! the backend's GET stream), as @playwright/mcp and server-filesystem behave.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ROOTS: &str = "roots = [{ uri = \"file:///srv/project\", name = \"project\" }]\n";

fn text(r: &Value) -> String {
    r["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("a tool result: {r}")).to_string()
}

/// What the mock's log says it received in answer to its `roots/list` (a response with
/// `roots`), if anything yet.
fn roots_answer(log: &std::path::Path) -> Option<Value> {
    mock_log(log).into_iter().find(|m| m["result"]["roots"].is_array() && m.get("method").is_none())
}

/// The backends under test: the mock over stdio, and over HTTP (started here), both with `ROOTS`.
fn backends(log: &std::path::Path, http: &MockHttp) -> String {
    let log = log.to_string_lossy();
    format!(
        "{}{ROOTS}{}{ROOTS}",
        mock_stdio_backend("s", None, &["--generation", "legacy", "--log", &log]),
        http_backend("h", None, &http.url)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_by_the_gateway_and_roots_from_the_config_when_the_client_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let http = MockHttp::start(&["--generation", "legacy"]);
    let gw = Gateway::start(&backends(&dir.path().join("s.log"), &http));
    // A session-based client without the roots capability, and a stateless one without it.
    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    let modern = HttpClient::modern(&gw.url);
    for c in [&legacy, &modern] {
        for tool in ["s__ping_and_roots", "h__ping_and_roots"] {
            let r = tokio::time::timeout(Duration::from_secs(20), c.call(tool, json!({}))).await.expect("not hung");
            let t = text(&r.json());
            assert!(t.starts_with("ping answered {}"), "{tool} for {}: {t}", c.version);
            assert!(t.contains("file:///srv/project"), "{tool} for {}: roots from the config: {t}", c.version);
        }
    }
}

/// A client that declared `roots` is asked itself (the backend's `ping` still never reaches it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_go_to_a_client_that_can_answer_and_ping_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let http = MockHttp::start(&["--generation", "legacy"]);
    let gw = Gateway::start(&backends(&dir.path().join("s.log"), &http));
    let c = HttpClient::legacy(&gw.url, json!({"roots": {}})).await;
    for (i, tool) in ["s__ping_and_roots", "h__ping_and_roots"].into_iter().enumerate() {
        let body =
            json!({"jsonrpc":"2.0","id":format!("c-{i}"),"method":"tools/call","params":{"name":tool,"arguments":{}}});
        let mut stream = c.stream(&body.to_string(), &[]).await;
        let asked: Value = serde_json::from_str(&stream.next().await.expect("a relayed request")).unwrap();
        assert_eq!(asked["method"], "roots/list", "{tool}: the first request the client sees: {asked}");
        let answer = json!({"jsonrpc":"2.0","id":asked["id"],"result":{"roots":[{"uri":"file:///home/me"}]}});
        assert_eq!(c.post_raw(&answer.to_string(), &[]).await.status, 202);
        let done: Value = serde_json::from_str(&stream.next().await.expect("the call's answer")).unwrap();
        let t = text(&done);
        assert!(t.starts_with("ping answered {}") && t.contains("file:///home/me"), "{tool}: {t}");
    }
}

/// A `roots/list` with no client call in flight (server-filesystem asks at start-up; a server
/// may ask on its GET stream any time) is answered from the config, over stdio and over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_asked_outside_any_call_are_answered_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (stdio_log, http_log) = (dir.path().join("s.log"), dir.path().join("h.log"));
    let http = MockHttp::start(&["--generation", "legacy", "--log", &http_log.to_string_lossy()]);
    let gw = Gateway::start(&backends(&stdio_log, &http));
    let c = HttpClient::legacy(&gw.url, json!({"roots": {}}));
    let c = c.await;
    for tool in ["s__roots_later", "h__roots_later"] {
        let r = c.call(tool, json!({"ms": 200})).await.json();
        assert!(text(&r).starts_with("roots/list will be asked"), "{r}");
    }
    for log in [&stdio_log, &http_log] {
        eventually_within(Duration::from_secs(10), "the backend's roots/list is answered", || async {
            roots_answer(log).is_some()
        })
        .await;
        let answer = roots_answer(log).unwrap();
        assert_eq!(answer["result"]["roots"], json!([{"uri": "file:///srv/project", "name": "project"}]), "{answer}");
    }
}

#[test]
fn roots_must_be_file_uris() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\ndisabled = true\n{}roots = [{{ uri = \"https://example.com\" }}]\n",
            mock_stdio_backend("s", None, &[])
        ),
    )
    .unwrap();
    let out = std::process::Command::new(sentinel_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("backend.0.roots.0.uri") && said.contains("not a file:// URI"), "{said}");
}
