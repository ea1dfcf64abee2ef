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

/// Across generations there is no relay yet: the call still ends, with a clear error,
/// instead of hanging.
#[tokio::test]
async fn stateless_client_gets_a_clear_error_not_a_hang() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--generation", "legacy"]));
    let c = HttpClient::modern(&gw.url);
    let r =
        tokio::time::timeout(std::time::Duration::from_secs(20), c.call("m__test_sampling", json!({"prompt": "x"})))
            .await
            .expect("answered, not hung");
    assert!(r.body.contains("2026-07-28"), "the error names the reason: {}", r.body);
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
