//! What must never leak or be smuggled through the gateway: secrets in a backend's
//! environment or URL, duplicate keys that would let two parsers disagree, reused ids.

mod common;

use common::*;
use serde_json::json;

/// A stdio backend sees a few harmless variables, the ones its config names, and its own
/// `env` — never Sentinel's secrets or a client's token.
#[tokio::test]
async fn stdio_backends_get_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("env.txt");
    let script =
        format!("env > {}; exec {} \"$@\"", lit(dump.to_string_lossy()).replace('"', "'"), mock_bin().display());
    let config = format!(
        "[[backend]]\nname = \"m\"\nstdio = {{ command = \"sh\", args = [\"-c\", {}, \"sh\"], env = {{ OWN_SETTING = \"own\" }}, inherit_env = [\"PASSED_ON\"] }}\n",
        lit(script)
    );
    let gw = Gateway::start_with_env(
        &config,
        &[("SENTINEL_TOKEN", "client-token"), ("OTHER_BACKEND_KEY", "s3cret"), ("PASSED_ON", "yes")],
    );
    assert_eq!(HttpClient::modern(&gw.url).call("m__echo", json!({})).await.status, 200);
    let env = std::fs::read_to_string(&dump).unwrap();
    for want in ["PATH=", "PASSED_ON=yes", "OWN_SETTING=own"] {
        assert!(env.lines().any(|l| l.starts_with(want)), "{want} missing from the backend's environment:\n{env}");
    }
    for secret in ["client-token", "s3cret", "SENTINEL_LOG"] {
        assert!(!env.contains(secret), "{secret} leaked into the backend's environment:\n{env}");
    }
}

/// A key in a backend URL's query string never shows in the log or in a client's error.
#[tokio::test]
async fn backend_url_secrets_stay_out_of_logs_and_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = Gateway::start(&http_backend("h", None, &format!("http://127.0.0.1:{port}/mcp?apiKey=hunter2")));
    let log = gw.log();
    assert!(log.contains("backend `h`"), "the failure is logged: {log}");
    assert!(!log.contains("hunter2"), "{log}");
    let r = HttpClient::modern(&gw.url).call("h__anything", json!({})).await;
    assert!(!r.body.contains("hunter2"), "{}", r.body);
}

/// Duplicate keys anywhere in `arguments` are refused before the backend sees the call: the
/// gateway's parser and the backend's could keep different copies.
#[tokio::test]
async fn duplicate_keys_in_arguments_never_reach_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    for args in [r#"{"a":1,"a":2}"#, r#"{"deep":[{"x":1},{"y":1,"y":2}]}"#, r#"{"a":1,"\u0061":2}"#] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"m__echo","arguments":{args}}}}}"#
        );
        let r = c.post_raw(&body, &[]).await;
        assert_eq!(r.error_code(), Some(-32602), "{args}: {r:?}");
        assert!(r.body.contains("duplicate key"), "{}", r.body);
    }
    assert!(!mock_log(&log).iter().any(|m| m["method"] == "tools/call"), "a refused call reached the backend");
    // Siblings with the same key are fine.
    let r = c.call("m__echo", json!({"list": [{"k": 1}, {"k": 2}]})).await;
    assert_eq!(r.json()["result"]["structuredContent"], json!({"list": [{"k": 1}, {"k": 2}]}));
}

/// Two requests in flight with the same id in one session are refused: their answers and
/// cancellations could not be told apart.
#[tokio::test]
async fn a_reused_id_in_flight_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let slow =
        r#"{"jsonrpc":"2.0","id":"same","method":"tools/call","params":{"name":"m__slow","arguments":{"ms":60000}}}"#;
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.post_raw(slow, &[]).await }
    });
    eventually("the first call reaches the backend", || async {
        mock_log(&log).iter().any(|m| m["params"]["name"] == "slow")
    })
    .await;
    let r = c.post_raw(slow, &[]).await;
    assert_eq!(r.error_code(), Some(-32600), "{r:?}");
    assert!(r.body.contains("already in flight"), "{}", r.body);
    // The first call is untouched: it can still be cancelled by its id.
    c.notify("notifications/cancelled", json!({"requestId": "same"})).await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), first).await.expect("cancelled").unwrap();
    assert!(first.messages.is_empty(), "{first:?}");
    assert_eq!(mock_log(&log).iter().filter(|m| m["params"]["name"] == "slow").count(), 1);
}

/// One byte that is not UTF-8 on a stdio backend's stderr (a Latin-1 `é`) must not end the
/// gateway's reading of that pipe: a closed stderr fails the backend's next write, and a
/// backend that writes errors to stderr then stops serving.
#[tokio::test]
async fn a_non_utf8_stderr_byte_leaves_the_backend_serving() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let c = HttpClient::modern(&gw.url);
    // 0xE9 alone, then a line longer than the gateway's line bound (its tail is dropped).
    for (hex, repeat) in [("e90a", 1), ("78", 20_000), ("0a", 1)] {
        let r = c.call("m__stderr", json!({"hex": hex, "repeat": repeat})).await;
        assert_eq!(r.json()["result"]["isError"], json!(null), "{r:?}");
        assert!(r.json()["result"]["content"][0]["text"].as_str().unwrap().starts_with("wrote"), "{r:?}");
    }
    // The backend still writes to stderr and answers, and it was never restarted.
    for _ in 0..3 {
        let r = c.call("m__stderr", json!({"hex": "6f6b0a"})).await;
        assert!(r.json()["result"]["content"][0]["text"].as_str().unwrap().starts_with("wrote"), "{r:?}");
    }
    eventually("the lossy line logged", || async { gw.log().contains("stderr: \u{FFFD}") }).await;
    let log = gw.log();
    assert!(log.contains("more bytes of this line dropped"), "{log}");
    assert!(!log.contains("backend process ended") && !log.contains("connection closed"), "{log}");
}

/// A stdio backend's line over `max_message_bytes` is dropped (its call times out), and the
/// backend goes on serving: the reader used to end at the codec's error, which closed the
/// backend's stdout and had it killed and restarted.
#[tokio::test]
async fn an_over_long_backend_line_is_dropped_and_the_backend_serves_on() {
    let config = mock_stdio_backend("m", None, &[]) + "max_message_bytes = 20000\ntimeout = \"2s\"\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    let r = c.call("m__huge", json!({"bytes": 100_000})).await;
    assert_eq!(r.error_code(), Some(-32015), "the call has no answer and times out: {r:?}");
    let r = c.call("m__echo", json!({"after": "long line"})).await;
    assert_eq!(r.json()["result"]["structuredContent"], json!({"after": "long line"}), "{r:?}");
    let log = gw.log();
    assert!(log.contains("exceeded max_message_bytes"), "{log}");
    assert!(!log.contains("backend process ended"), "the backend was not restarted: {log}");
}
