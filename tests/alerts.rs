//! Alerts: a local HTTP server stands in for the webhooks and receives what the gateway sends
//! when its mock backend crashes and comes back.

mod common;

use std::time::Duration;

use common::webhook::{bodies, webhook_server};
use common::*;
use serde_json::json;

fn alerts_section(min_interval: &str, hooks: &[(&str, &str)]) -> String {
    let mut s = format!("[alerts]\nmin_interval = {}\n", lit(min_interval));
    for (url, format) in hooks {
        s += &format!("[[alerts.webhook]]\nurl = {}\nformat = {}\n", lit(url), lit(format));
    }
    s
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn crash_and_wait_for_recovery(c: &HttpClient) {
    assert_eq!(c.call("m__crash", json!({})).await.error_code(), Some(-32014));
    eventually("the backend serves again", || async {
        c.call("m__echo", json!({"x": 1})).await.json()["result"].is_object()
    })
    .await;
}

#[tokio::test]
async fn a_crash_alerts_down_then_up_and_a_second_crash_within_the_window_is_quiet() {
    let (base, received) = webhook_server().await;
    let config = mock_stdio_backend("m", None, &[]) + &alerts_section("1h", &[(&format!("{base}/generic"), "generic")]);
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);

    crash_and_wait_for_recovery(&c).await;
    eventually("a down and an up alert", || async { bodies(&received, "generic").len() >= 2 }).await;
    let got = bodies(&received, "generic");
    assert_eq!(got[0]["kind"], "backend_down", "{got:?}");
    assert_eq!(got[0]["subject"], "m");
    assert_eq!(got[0]["gateway"], "sentinel");
    assert!(got[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{got:?}");
    assert!(got[0]["message"].as_str().unwrap().contains("restarting in"), "{got:?}");
    assert_eq!(got[1]["kind"], "backend_up", "{got:?}");
    assert_eq!(got[1]["subject"], "m");

    // Flapping: the second down (and its recovery, never announced) stay off the channel.
    crash_and_wait_for_recovery(&c).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = bodies(&received, "generic");
    assert_eq!(got.len(), 2, "de-duplicated within min_interval: {got:?}");
}

#[tokio::test]
async fn discord_gets_content_and_a_dead_webhook_neither_slows_calls_nor_goes_unlogged() {
    let (base, received) = webhook_server().await;
    let dead = format!("http://127.0.0.1:{}/api/webhooks/1/SECRET-TOKEN", closed_port());
    let config = mock_stdio_backend("m", None, &[])
        + &alerts_section("1h", &[(&dead, "generic"), (&format!("{base}/discord"), "discord")]);
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);

    let t = std::time::Instant::now();
    crash_and_wait_for_recovery(&c).await;
    eventually("a discord alert", || async { !bodies(&received, "discord").is_empty() }).await;
    let got = bodies(&received, "discord");
    let content = got[0]["content"].as_str().unwrap_or_default();
    assert_eq!(got[0].as_object().unwrap().len(), 1, "{got:?}");
    assert!(content.contains("backend_down") && content.contains("`m`"), "{content}");

    // Calls answer promptly while the dead webhook's deliveries fail beside them.
    for _ in 0..5 {
        let call = std::time::Instant::now();
        assert!(c.call("m__echo", json!({"x": 1})).await.json()["result"].is_object());
        assert!(call.elapsed() < Duration::from_millis(500), "{:?}", call.elapsed());
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    eventually("the failed delivery is logged", || async { gw.log().contains("alert webhook delivery failed") }).await;
    let log = gw.log();
    assert!(log.contains("127.0.0.1"), "the host is named");
    assert!(!log.contains("SECRET-TOKEN"), "the URL's token never reaches the log:\n{log}");
}

#[tokio::test]
async fn a_circuit_opening_and_closing_is_alerted() {
    let (base, received) = webhook_server().await;
    let config = mock_stdio_backend("m", None, &[])
        + "timeout = \"300ms\"\ncircuit = { failures = 2, cooldown = \"1s\" }\n"
        + &alerts_section("1h", &[(&format!("{base}/slack"), "slack")]);
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    for _ in 0..2 {
        assert_eq!(c.call("m__slow", json!({"ms": 5000})).await.error_code(), Some(-32015));
    }
    eventually("a circuit_open alert", || async { !bodies(&received, "slack").is_empty() }).await;
    eventually("the circuit closes after a probe", || async {
        c.call("m__echo", json!({})).await.json()["result"].is_object()
    })
    .await;
    eventually("a circuit_closed alert", || async { bodies(&received, "slack").len() >= 2 }).await;
    let got = bodies(&received, "slack");
    assert!(got[0]["text"].as_str().unwrap().contains("circuit_open"), "{got:?}");
    assert!(got[1]["text"].as_str().unwrap().contains("circuit_closed"), "{got:?}");
}
