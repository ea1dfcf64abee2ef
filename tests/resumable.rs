//! Event streams as the 2025-11-25 transport recommends (issue #15): a session-based client's
//! call answered as an event stream starts with a priming event (an id, empty data, `retry`),
//! every event has an id, a dropped connection does not cancel the call, and a `GET` with
//! `Last-Event-ID` replays what was missed and follows the rest; with
//! `server.stream_reconnect_after` the gateway closes a long call's connection itself. A
//! stateless (2026-07-28) client's stream has no ids: that revision removed resumption.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// One SSE event as sent: `id`, `retry`, `data` (joined), in order.
#[derive(Debug, Default, Clone)]
struct Ev {
    id: Option<String>,
    retry: Option<String>,
    data: Option<String>,
}

fn events(text: &str) -> Vec<Ev> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut e = Ev::default();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                e.id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("retry:") {
                e.retry = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                e.data = Some(e.data.map_or(v.to_string(), |d| format!("{d}\n{v}")));
            }
        }
        if e.id.is_some() || e.retry.is_some() || e.data.is_some() {
            out.push(e);
        }
    }
    out
}

fn progress_call(id: &str, steps: u64, delay_ms: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "m__progress", "arguments": {"steps": steps, "delay_ms": delay_ms}, "_meta": {"progressToken": "p"}}})
    .to_string()
}

fn messages(evs: &[Ev]) -> Vec<Value> {
    evs.iter()
        .filter_map(|e| e.data.as_deref().filter(|d| !d.is_empty()))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn get_resume(c: &HttpClient, last: &str) -> reqwest::Response {
    c.http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .header("last-event-id", last)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stream_is_primed_and_every_event_has_an_id() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let text = c.post(&progress_call("c-1", 2, 10), &[]).send().await.unwrap().text().await.unwrap();
    let evs = events(&text);
    let first = &evs[0];
    assert!(first.id.as_deref().is_some_and(|i| i.ends_with("-0")), "priming id: {text}");
    assert_eq!(first.data.as_deref(), Some(""), "priming data is empty: {text}");
    assert!(first.retry.is_some(), "priming carries retry: {text}");
    let msgs = messages(&evs);
    assert_eq!(msgs.len(), 3, "two progress notifications and the answer: {text}");
    assert!(evs.iter().filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty())).all(|e| e.id.is_some()), "{text}");
    assert_eq!(msgs[2]["id"], "c-1");

    // A stateless client's stream: no ids, no priming.
    let m = HttpClient::modern(&gw.url);
    let body = m.request_body(
        json!(7),
        "tools/call",
        json!({"name": "m__progress", "arguments": {"steps": 2, "delay_ms": 10}, "_meta": {"progressToken": "p"}}),
    );
    let text = m
        .post(&body, &[("mcp-method", "tools/call"), ("mcp-name", "m__progress")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evs = events(&text);
    assert!(evs.iter().all(|e| e.id.is_none()) && evs.len() == 3, "{text}");
}

/// The client's connection drops after the first progress event; the call goes on, and a GET
/// with that event's id gets the rest, the answer included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_resumed_with_last_event_id() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let mut resp = c.post(&progress_call("c-2", 4, 300), &[]).send().await.unwrap();
    let mut seen = String::new();
    let last = loop {
        let chunk = resp.chunk().await.unwrap().expect("more of the stream");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let evs = events(&seen);
        if let Some(e) = evs.iter().find(|e| e.data.as_deref().is_some_and(|d| d.contains("notifications/progress"))) {
            break e.id.clone().expect("an id");
        }
    };
    drop(resp);
    let text = tokio::time::timeout(Duration::from_secs(20), get_resume(&c, &last).await.text()).await.expect("ends");
    let msgs = messages(&events(&text.unwrap()));
    let progress = msgs.iter().filter(|m| m["method"] == "notifications/progress").count();
    assert_eq!(progress, 3, "the three progress events after the first: {msgs:?}");
    let answer = msgs.last().unwrap();
    assert_eq!(answer["id"], "c-2", "{answer}");
    assert!(
        answer["result"]["content"][0]["text"].as_str().unwrap().starts_with("progress done"),
        "not cancelled: {answer}"
    );
    // An id the session does not know opens the ordinary GET stream instead.
    assert_eq!(get_resume(&c, "999-3").await.status(), 200);
}

/// With `stream_reconnect_after`, the gateway closes a long call's connection after it (with a
/// retry hint); the client resumes and gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_closes_a_long_calls_connection_and_the_client_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstream_reconnect_after = \"1s\"\n[auth]\ndisabled = true\n{}",
        mock_stdio_backend("m", None, &[])
    );
    std::fs::write(dir.path().join("sentinel.toml"), config).unwrap();
    let gw = Gateway::start_at(std::sync::Arc::new(dir), &[]);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        c.post(&progress_call("c-3", 3, 800), &[]).send().await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the connection is closed by the gateway");
    let evs = events(&text);
    assert!(evs.last().is_some_and(|e| e.retry.is_some()), "a retry hint before closing: {text}");
    assert!(messages(&evs).iter().all(|m| m.get("id").is_none()), "closed before the answer: {text}");
    let last = evs.iter().rev().find_map(|e| e.id.clone()).unwrap();
    let rest = get_resume(&c, &last).await.text().await.unwrap();
    let answer = messages(&events(&rest)).pop().unwrap();
    assert_eq!(answer["id"], "c-3", "{rest}");
}
