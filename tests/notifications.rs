//! Server-to-client requests relayed to the caller, and list changes reaching the clients
//! that asked for them.

mod common;

use common::*;
use serde_json::{Value, json};

/// A session-based backend's `sampling/createMessage` during a call reaches the session-based
/// client that made the call, and the client's answer gets back to the backend.
#[tokio::test]
async fn sampling_request_is_relayed_to_the_caller() {
    for backend in ["stdio", "http"] {
        let http = MockHttp::start(&["--generation", "legacy"]);
        let config = if backend == "stdio" {
            mock_stdio_backend("m", None, &["--generation", "legacy"])
        } else {
            http_backend("m", None, &http.url)
        };
        let gw = Gateway::start(&config);
        let c = HttpClient::legacy(&gw.url, json!({"sampling": {}})).await;
        let body = json!({"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"2+2?"}}});
        let mut stream = c.stream(&body.to_string(), &[]).await;
        let req: Value = serde_json::from_str(&stream.next().await.expect("a relayed request")).unwrap();
        assert_eq!(req["method"], "sampling/createMessage", "{backend}: {req}");
        assert_eq!(req["params"]["messages"][0]["content"]["text"], "2+2?");
        let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"four"},"model":"test-model","stopReason":"endTurn"}});
        assert_eq!(c.post_raw(&answer.to_string(), &[]).await.status, 202);
        let resp: Value = serde_json::from_str(&stream.next().await.expect("the call's response")).unwrap();
        assert_eq!(resp["id"], "call-1");
        assert!(resp["result"]["content"][0]["text"].as_str().unwrap().contains("four"), "{backend}: {resp}");
    }
}

/// Across generations: a stateless client that did not declare sampling gets the spec's -32021
/// naming it, at once, instead of a hang (one that did gets an input round: tests/input_rounds.rs).
#[tokio::test]
async fn stateless_client_without_sampling_gets_the_specs_error_not_a_hang() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--generation", "legacy"]));
    let c = HttpClient::modern(&gw.url);
    let r =
        tokio::time::timeout(std::time::Duration::from_secs(20), c.call("m__test_sampling", json!({"prompt": "x"})))
            .await
            .expect("answered, not hung");
    assert_eq!(r.error_code(), Some(-32021), "{}", r.body);
    assert_eq!(r.json()["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}), "{}", r.body);
}

#[tokio::test]
async fn list_changes_reach_listening_clients() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    let mut get = legacy.get_stream().await;
    let modern = HttpClient::modern(&gw.url);
    let listen = modern.request_body(
        json!("sub-1"),
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let mut sub = modern.stream(&listen, &[("mcp-method", "subscriptions/listen")]).await;
    let ack: Value = serde_json::from_str(&sub.next().await.unwrap()).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1");
    assert_eq!(ack["params"]["notifications"], json!({"toolsListChanged": true}));

    assert!(!legacy.tool_names().await.contains(&"m__fresh".to_string()));
    modern.call("m__add_tool", json!({"name": "fresh"})).await;

    let n: Value = serde_json::from_str(&get.next().await.unwrap()).unwrap();
    assert_eq!(n["method"], "notifications/tools/list_changed");
    let n: Value = serde_json::from_str(&sub.next().await.unwrap()).unwrap();
    assert_eq!(n["method"], "notifications/tools/list_changed");
    assert_eq!(n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1");
    // The notification is sent after the catalog was rebuilt: the new tool is listed and callable.
    assert!(legacy.tool_names().await.contains(&"m__fresh".to_string()));
    assert!(modern.call("m__fresh", json!({})).await.body.contains("called fresh"));
}

/// SIGTERM ends the gateway promptly even while clients hold long-lived streams open.
#[tokio::test]
async fn sigterm_ends_open_streams() {
    let mut gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    let mut get = legacy.get_stream().await;
    let modern = HttpClient::modern(&gw.url);
    let listen =
        modern.request_body(json!(1), "subscriptions/listen", json!({"notifications": {"toolsListChanged": true}}));
    let mut sub = modern.stream(&listen, &[("mcp-method", "subscriptions/listen")]).await;
    assert!(sub.next().await.is_some(), "acknowledged");
    let pid = gw.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(8), "still running 8 s after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert_eq!(get.next().await, None, "the GET stream ended");
    assert_eq!(sub.next().await, None, "the listen stream ended");
}

/// Resource subscriptions are counted across clients: a session-based backend hears the
/// first subscribe and the last unsubscribe only, and a session that ends lets go of its own.
#[tokio::test]
async fn resource_subscriptions_are_counted_across_clients() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let gw =
        Gateway::start(&mock_stdio_backend("m", None, &["--generation", "legacy", "--log", log.to_str().unwrap()]));
    let a = HttpClient::legacy(&gw.url, json!({})).await;
    let b = HttpClient::legacy(&gw.url, json!({})).await;
    let uri = json!({"uri": "test://watched-resource"});
    let count = |method: &'static str| {
        let log = log.clone();
        move || mock_log(&log).iter().filter(|m| m["method"] == method).count()
    };
    for c in [&a, &b, &a] {
        assert_eq!(c.request("resources/subscribe", uri.clone()).await.json()["result"], json!({}));
    }
    assert_eq!(count("resources/subscribe")(), 1, "one subscription at the backend for all clients");
    assert_eq!(b.request("resources/unsubscribe", uri.clone()).await.json()["result"], json!({}));
    assert_eq!(count("resources/unsubscribe")(), 0, "a still has it");
    // Ending a's session releases its subscription: the backend is told.
    let del = a.http.delete(&gw.url).header("mcp-session-id", a.session.as_ref().unwrap()).send().await.unwrap();
    assert_eq!(del.status(), 200);
    eventually("the backend is unsubscribed", || async { count("resources/unsubscribe")() == 1 }).await;
}

/// A relayed request the client never answers does not hold the call past its timeout.
#[tokio::test]
async fn an_unanswered_relay_ends_with_the_call() {
    let gw = Gateway::start(&(mock_stdio_backend("m", None, &["--generation", "legacy"]) + "timeout = \"1s\"\n"));
    let c = HttpClient::legacy(&gw.url, json!({"sampling": {}})).await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"x"}}});
    let mut stream = c.stream(&body.to_string(), &[]).await;
    let req: Value = serde_json::from_str(&stream.next().await.unwrap()).unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    // No answer: the call times out at the gateway with -32015.
    let resp: Value = serde_json::from_str(&stream.next().await.expect("an answer")).unwrap();
    assert_eq!(resp["error"]["code"], -32015, "{resp}");
    // A late answer is accepted and ignored.
    let late = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"late"},"model":"m"}});
    assert_eq!(c.post_raw(&late.to_string(), &[]).await.status, 202);
}
