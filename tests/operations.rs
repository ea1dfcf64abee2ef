//! Operations: `/metrics` (every family of the contract, moving with calls), `/ready`, and the
//! per-backend circuit breaker.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const FAMILIES: [&str; 10] = [
    "sentinel_requests_total",
    "sentinel_request_duration_seconds",
    "sentinel_backend_up",
    "sentinel_circuit_state",
    "sentinel_backend_restarts_total",
    "sentinel_rate_limited_total",
    "sentinel_audit_queue_depth",
    "sentinel_audit_records_total",
    "sentinel_config_reloads_total",
    "sentinel_sessions",
];

async fn scrape(gw: &Gateway) -> String {
    let r = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    r.text().await.unwrap()
}

/// The value of one series, e.g. `sentinel_requests_total{...outcome="ok"...}`.
fn value(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_cover_the_contract_and_move_with_calls() {
    let config =
        mock_stdio_backend("m", None, &[]) + "[rate_limit]\ntools = { \"m__slow\" = { per_minute = 1, burst = 1 } }\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    c.call("m__echo", json!({})).await;
    c.call("m__slow", json!({"ms": 1})).await;
    assert_eq!(c.call("m__slow", json!({"ms": 1})).await.error_code(), Some(-32013));
    c.call("m__no_such_tool", json!({})).await;
    let text = scrape(&gw).await;
    for f in FAMILIES {
        assert!(text.contains(&format!("# TYPE {f}")) || text.contains(f), "{f} missing from /metrics:\n{text}");
    }
    let ok = value(&text, "sentinel_requests_total", &["tool=\"m__echo\"", "outcome=\"ok\""]);
    assert_eq!(ok, 1.0, "{text}");
    assert_eq!(value(&text, "sentinel_rate_limited_total", &["tool=\"m__slow\""]), 1.0);
    assert_eq!(value(&text, "sentinel_requests_total", &["tool=\"<unknown>\""]), 1.0, "unknown names share one series");
    assert_eq!(value(&text, "sentinel_backend_up", &["backend=\"m\""]), 1.0);
    assert_eq!(value(&text, "sentinel_sessions", &["transport=\"http\""]), 1.0);
    assert!(value(&text, "sentinel_request_duration_seconds_count", &["backend=\"m\""]) >= 2.0);
    c.call("m__echo", json!({})).await;
    eventually("the audit records are counted", || async {
        value(&scrape(&gw).await, "sentinel_audit_records_total", &["result=\"written\""]) >= 5.0
    })
    .await;
    let text = scrape(&gw).await;
    assert_eq!(value(&text, "sentinel_requests_total", &["tool=\"m__echo\"", "outcome=\"ok\""]), 2.0);
}

/// A fresh gateway, before any call, already lists every family of the contract with a zero
/// series (so alert rules and dashboards work from the start, and a first event is an increase).
#[tokio::test]
async fn a_fresh_gateway_lists_every_contract_family_with_zero_series() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let text = scrape(&gw).await;
    for f in FAMILIES {
        let sample = text.lines().find(|l| l.starts_with(f) && !l.starts_with('#'));
        assert!(
            text.contains(&format!("# TYPE {f} ")) && sample.is_some(),
            "{f} has no series on a fresh gateway:\n{text}"
        );
    }
    for (family, labels) in [
        ("sentinel_rate_limited_total", &["tool=\"m__echo\""][..]),
        ("sentinel_rate_limited_total", &["tool=\"<unknown>\""]),
        ("sentinel_requests_total", &["tool=\"m__echo\"", "backend=\"m\"", "outcome=\"ok\""]),
        ("sentinel_request_duration_seconds_count", &["backend=\"m\""]),
        ("sentinel_backend_restarts_total", &["backend=\"m\""]),
    ] {
        let line = text.lines().find(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)));
        assert_eq!(line.and_then(|l| l.rsplit(' ').next()), Some("0"), "{family}{labels:?}:\n{text}");
    }
}

#[tokio::test]
async fn ready_flips_when_a_required_backend_is_down() {
    let gw = Gateway::start(&(mock_stdio_backend("m", None, &[]) + "required = true\n"));
    let ready = || async {
        let r = reqwest::get(format!("{}/ready", gw.base())).await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backends"][0]["up"], true);
    // Down from the crash until its restart (at least a quarter second of backoff).
    assert_eq!(HttpClient::modern(&gw.url).call("m__crash", json!({})).await.error_code(), Some(-32014));
    let down = std::sync::Mutex::new(None);
    eventually("/ready reports the required backend down", || async {
        let (status, body) = ready().await;
        if status == 503 {
            *down.lock().unwrap() = Some(body);
        }
        status == 503
    })
    .await;
    let body = down.lock().unwrap().take().unwrap();
    assert_eq!(body["backends"][0]["up"], false, "{body}");
    assert_eq!(body["ready"], false, "{body}");
}

/// A stdio backend that exits is restarted (with backoff), listed again, and serves again.
#[tokio::test]
async fn a_crashed_backend_is_restarted() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let c = HttpClient::modern(&gw.url);
    assert_eq!(c.call("m__crash", json!({})).await.error_code(), Some(-32014), "in-flight call answered at once");
    eventually("the backend serves again", || async {
        c.call("m__echo", json!({"x": 1})).await.json()["result"].is_object()
    })
    .await;
    let text = scrape(&gw).await;
    assert_eq!(value(&text, "sentinel_backend_restarts_total", &["backend=\"m\""]), 1.0, "{text}");
    assert_eq!(value(&text, "sentinel_backend_up", &["backend=\"m\""]), 1.0);
    assert!(c.tool_names().await.contains(&"m__echo".to_string()));
    assert!(gw.log().contains("restarting in"), "the restart is logged");
}

#[tokio::test]
async fn the_circuit_opens_refuses_fast_then_probes_and_closes() {
    let config =
        mock_stdio_backend("m", None, &[]) + "timeout = \"300ms\"\ncircuit = { failures = 2, cooldown = \"1s\" }\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    for _ in 0..2 {
        assert_eq!(c.call("m__slow", json!({"ms": 5000})).await.error_code(), Some(-32015));
    }
    // Open: refused at once, with how long to wait.
    let t = std::time::Instant::now();
    let r = c.call("m__echo", json!({})).await;
    assert_eq!(r.error_code(), Some(-32014), "{r:?}");
    assert!(r.body.contains("circuit"), "{}", r.body);
    let retry = r.json()["error"]["data"]["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 1000, "{retry}");
    assert!(t.elapsed() < Duration::from_millis(250), "refused fast");
    assert_eq!(value(&scrape(&gw).await, "sentinel_circuit_state", &["backend=\"m\""]), 2.0, "open");
    // After the cooldown one probe goes through; its success closes the circuit.
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    assert!(c.call("m__echo", json!({})).await.json()["result"].is_object());
    assert!(c.call("m__echo", json!({})).await.json()["result"].is_object());
    assert_eq!(value(&scrape(&gw).await, "sentinel_circuit_state", &["backend=\"m\""]), 0.0, "closed");
}
