//! Calls through one shared backend: multiplexing many clients, progress going only to its
//! caller, cancellation reaching the backend, session and credentials kept per backend.

mod common;

use common::*;
use serde_json::{Value, json};

/// 200 concurrent calls from 20 clients (both generations) to one stdio backend process:
/// every answer reaches the caller that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_from_twenty_clients() {
    let gw = Gateway::start(&mock_stdio_backend("mock", None, &[]));
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(if i % 2 == 0 {
            HttpClient::legacy(&gw.url, json!({})).await
        } else {
            HttpClient::modern(&gw.url)
        });
    }
    let calls = clients.iter().enumerate().flat_map(|(i, c)| {
        (0..10).map(move |j| async move {
            let args = json!({"client": i, "call": j, "pad": "x".repeat(i * 37 + j)});
            let r = c.call("mock__echo", args.clone()).await;
            assert_eq!(r.json()["result"]["structuredContent"], args, "client {i} call {j} got someone else's answer");
        })
    });
    futures::future::join_all(calls).await;
}

/// Two callers use the same progress token at the same time; each sees only its own
/// notifications, under its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_only_its_caller() {
    let gw = Gateway::start(&mock_stdio_backend("mock", None, &[]));
    let a = HttpClient::modern(&gw.url);
    let b = HttpClient::legacy(&gw.url, json!({})).await;
    let call = |c: HttpClient, steps: u64| async move {
        c.request("tools/call", json!({"name": "mock__progress", "arguments": {"steps": steps, "delay_ms": 20}, "_meta": {"progressToken": "same"}}))
            .await
    };
    let (ra, rb) = tokio::join!(call(a, 3), call(b, 7));
    for (r, steps) in [(ra, 3), (rb, 7)] {
        let progress: Vec<Value> = r
            .messages
            .iter()
            .map(|m| serde_json::from_str::<Value>(m).unwrap())
            .filter(|v| v["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), steps, "{:?}", r.messages);
        assert!(
            progress.iter().all(|p| p["params"]["progressToken"] == "same" && p["params"]["total"] == steps as f64)
        );
    }
}

/// A cancelled call is cancelled at the backend: by `notifications/cancelled` (session-based
/// client) or by closing the response stream (stateless client), for stdio and HTTP backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_reaches_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let stdio_log = dir.path().join("stdio.log");
    let http_log = dir.path().join("http.log");
    let http_legacy_log = dir.path().join("http-legacy.log");
    let http = MockHttp::start(&["--log", http_log.to_str().unwrap()]);
    let http_legacy = MockHttp::start(&["--generation", "legacy", "--log", http_legacy_log.to_str().unwrap()]);
    let config = mock_stdio_backend("s", None, &["--log", stdio_log.to_str().unwrap()])
        + &http_backend("h", None, &http.url)
        + &http_backend("hl", None, &http_legacy.url);
    let gw = Gateway::start(&config);

    let cancelled_at = |log: std::path::PathBuf| async move {
        eventually("the backend logs the cancellation", || {
            let log = log.clone();
            async move { mock_log(&log).iter().any(|m| m["mock-event"] == "cancelled") }
        })
        .await;
    };
    let slow_seen = |log: std::path::PathBuf| async move {
        eventually("the slow call reaches the backend", || {
            let log = log.clone();
            async move { mock_log(&log).iter().any(|m| m["params"]["name"] == "slow") }
        })
        .await;
    };

    // Session-based client: notifications/cancelled, mapped to the backend's request id.
    for (tool, log) in [("s__slow", &stdio_log), ("hl__slow", &http_legacy_log)] {
        let c = HttpClient::legacy(&gw.url, json!({})).await;
        let body =
            json!({"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":tool,"arguments":{"ms":60000}}})
                .to_string();
        let call = tokio::spawn({
            let c = c.clone();
            async move { c.post_raw(&body, &[]).await }
        });
        slow_seen(log.clone()).await;
        c.notify("notifications/cancelled", json!({"requestId": 77, "reason": "test"})).await;
        cancelled_at(log.clone()).await;
        eventually("the backend receives notifications/cancelled", || async {
            mock_log(log).iter().any(|m| m["method"] == "notifications/cancelled")
        })
        .await;
        let backend_cancel = mock_log(log)
            .into_iter()
            .find(|m| m["method"] == "notifications/cancelled")
            .unwrap_or_else(|| panic!("cancel forwarded: {:?}", mock_log(log)));
        let backend_id = mock_log(log).into_iter().find(|m| m["params"]["name"] == "slow").unwrap()["id"].clone();
        assert_eq!(backend_cancel["params"]["requestId"], backend_id, "the backend's own id, not the client's");
        let r = call.await.unwrap();
        assert!(r.messages.is_empty(), "no response after a cancellation: {r:?}");
    }

    // Stateless client: closing the connection is the cancellation.
    for (tool, log) in [("s__slow", &stdio_log), ("h__slow", &http_log)] {
        std::fs::write(log, "").unwrap();
        let c = HttpClient::modern(&gw.url);
        let body = c.request_body(json!(5), "tools/call", json!({"name": tool, "arguments": {"ms": 60000}}));
        let call =
            tokio::spawn(async move { c.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).await });
        slow_seen(log.clone()).await;
        call.abort();
        cancelled_at(log.clone()).await;
    }
}

/// An HTTP backend's session is kept across calls; the client's credentials never reach it,
/// the backend's configured ones do.
#[tokio::test]
async fn http_backend_session_and_credentials() {
    let http = MockHttp::start(&["--generation", "legacy"]);
    let config = format!(
        "[[backend]]\nname = \"h\"\nhttp = {{ url = {}, headers = {{ X-Backend-Key = \"backend-secret\" }} }}\n",
        lit(&http.url)
    );
    let gw = Gateway::start(&config);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let whoami = |c: HttpClient| async move {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"h__whoami","arguments":{}}})
            .to_string();
        c.post_raw(&body, &[("authorization", "Bearer client-secret"), ("cookie", "client-cookie")]).await.json()["result"]["structuredContent"].clone()
    };
    let first = whoami(c.clone()).await;
    let second = whoami(c.clone()).await;
    assert!(first["sessionId"].is_string(), "{first}");
    assert_eq!(first["sessionId"], second["sessionId"], "one backend session, reused");
    let headers = first["headers"].to_string();
    assert!(
        !headers.contains("client-secret") && !headers.contains("client-cookie"),
        "client credentials leaked: {headers}"
    );
    assert!(headers.contains("backend-secret"), "the backend's own credentials are sent: {headers}");
    assert!(!gw.log().contains("backend-secret"), "secrets stay out of the log");
}

/// A session-based HTTP backend that restarts forgets the gateway's session (HTTP 404): the
/// gateway opens a new one and the call goes through.
#[tokio::test]
async fn http_backend_restart_gets_a_new_session() {
    let mut first = MockHttp::start(&["--generation", "legacy"]);
    let gw = Gateway::start(&http_backend("h", None, &first.url));
    let c = HttpClient::modern(&gw.url);
    let before = c.call("h__whoami", json!({})).await.json()["result"]["structuredContent"]["sessionId"].clone();
    assert!(before.is_string());
    let addr = first.url.trim_start_matches("http://").trim_end_matches("/mcp").to_string();
    let _ = first.child.kill();
    let _ = first.child.wait();
    let _second = MockHttp::start_at(&addr, &["--generation", "legacy"]);
    let r = c.call("h__whoami", json!({})).await;
    let after = r.json()["result"]["structuredContent"]["sessionId"].clone();
    assert!(after.is_string(), "{r:?}");
    assert_ne!(before, after, "a new backend session");
}

/// A session-based HTTP backend restarted under load, answering the session it forgot with
/// the spec's 404 or with 400 as server-everything does: calls fail while it is away (and
/// `/health`, `/ready` and `sentinel_backend_up` say it is down), then every call succeeds
/// again on a new backend session, with no gateway restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_restarted_under_load_is_reconnected() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for status in ["404", "400"] {
        let args = ["--generation", "legacy", "--unknown-session-status", status];
        let mut first = MockHttp::start(&args);
        let config = format!(
            "{}required = true\ncircuit = {{ failures = 5, cooldown = \"300ms\" }}\n",
            http_backend("h", None, &first.url)
        );
        let gw = Gateway::start(&config);
        let addr = first.url.trim_start_matches("http://").trim_end_matches("/mcp").to_string();
        let metrics_up = || async {
            let text = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
            text.lines().find(|l| l.starts_with("sentinel_backend_up{backend=\"h\"}")).map(|l| l.ends_with(" 1"))
        };
        let health_up = || async {
            let text = reqwest::get(format!("{}/health", gw.base())).await.unwrap().text().await.unwrap();
            let h: Value = serde_json::from_str(&text).unwrap();
            h["backends"]["up"] == 1
        };
        let ready = || async { reqwest::get(format!("{}/ready", gw.base())).await.unwrap().status() == 200 };
        assert!(ready().await && health_up().await && metrics_up().await == Some(true));

        // Load: clients of both generations calling in a loop, counting answers and failures.
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut load = Vec::new();
        for i in 0..6 {
            let c = if i % 2 == 0 { HttpClient::legacy(&gw.url, json!({})).await } else { HttpClient::modern(&gw.url) };
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0;
                // Bounded: the test stops the loop, and a loop never runs past 20,000 calls.
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    n += 1;
                    let r = c.call("h__echo", json!({"i": i, "n": n})).await;
                    let good = r.status == 200 && r.json()["result"]["structuredContent"] == json!({"i": i, "n": n});
                    (if good { &ok } else { &failed }).fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let answered = |n: usize| {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) >= n }
        };
        eventually("calls flow before the restart", || answered(50)).await;
        assert_eq!(failed.load(Ordering::Relaxed), 0, "{status}: no call fails while the backend is up");

        let _ = first.child.kill();
        let _ = first.child.wait();
        eventually("calls fail while the backend is away", || async { failed.load(Ordering::Relaxed) > 0 }).await;
        eventually("the backend is reported down", || async {
            !health_up().await && !ready().await && metrics_up().await == Some(false)
        })
        .await;

        let _second = MockHttp::start_at(&addr, &args);
        // Back: calls succeed again, on a new session, without restarting the gateway.
        eventually("every call succeeds again", || {
            let (ok, failed) = (ok.clone(), failed.clone());
            async move {
                // A window in which 30 more calls were answered and none failed.
                let (f, o) = (failed.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));
                for _ in 0..200 {
                    if ok.load(Ordering::Relaxed) >= o + 30 || failed.load(Ordering::Relaxed) != f {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                ok.load(Ordering::Relaxed) >= o + 30 && failed.load(Ordering::Relaxed) == f
            }
        })
        .await;
        eventually("the backend is reported up again", || async {
            health_up().await && ready().await && metrics_up().await == Some(true)
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.await.unwrap();
        }
        let log = gw.log();
        assert!(log.contains("new backend session open"), "{status}: {log}");
    }
}
