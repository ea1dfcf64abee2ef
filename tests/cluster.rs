//! `[cluster]`: real `sentinel serve` replicas sharing the machine's real Redis
//! (`SENTINEL_TEST_REDIS`, default 127.0.0.1:6379), each test under a key prefix of its own.
//! A quota is one quota across replicas; Redis going away never holds a call, and what the
//! calls get meanwhile is `on_redis_failure`'s; the limits are shared again once it is back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::proxy::Proxy;
use common::*;
use serde_json::{Value, json};

fn redis_addr() -> SocketAddr {
    let url = std::env::var("SENTINEL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
    hostport.parse().unwrap_or_else(|_| panic!("SENTINEL_TEST_REDIS must be redis://IP:PORT, not {url}"))
}

/// A replica's config: one mock backend, `m__echo` limited to `per_minute` (burst as large),
/// Redis at `redis`, a prefix of the test's own.
fn replica_config(redis: SocketAddr, prefix: &str, policy: &str, per_minute: u32) -> String {
    format!(
        "{}[rate_limit]\ntools = {{ \"m__echo\" = {{ per_minute = {per_minute}, burst = {per_minute} }} }}\n\
         [cluster]\nredis = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\non_redis_failure = \"{policy}\"\n",
        mock_stdio_backend("m", None, &[])
    )
}

fn prefix() -> String {
    format!("sentinel-test-{}:", uuid::Uuid::new_v4())
}

/// The call's error code, or `None` when it succeeded; a call that takes over 10 s fails the
/// test (no call may wait on Redis).
async fn code(c: &HttpClient) -> Option<i64> {
    tokio::time::timeout(Duration::from_secs(10), c.call("m__echo", json!({"text": "x"})))
        .await
        .expect("a call never waits on Redis")
        .error_code()
}

async fn ready(gw: &Gateway) -> Value {
    let text = reqwest::get(format!("{}/ready", gw.base())).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("/ready is JSON ({e}): {text}"))
}

async fn metrics(gw: &Gateway) -> String {
    reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap()
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_one_quota_across_replicas() {
    let prefix = prefix();
    let a = Gateway::start(&replica_config(redis_addr(), &prefix, "local", 10));
    let b = Gateway::start(&replica_config(redis_addr(), &prefix, "local", 10));
    let (ca, cb) = (HttpClient::modern(&a.url), HttpClient::modern(&b.url));
    let mut allowed = 0;
    let mut refused = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { &ca } else { &cb };
        let r = c.call("m__echo", json!({"text": "x"})).await.json();
        match r["error"]["code"].as_i64() {
            None => allowed += 1,
            Some(-32013) => refused.push(r["error"]["data"].clone()),
            Some(other) => panic!("unexpected error {other}: {r}"),
        }
    }
    assert_eq!(allowed, 10, "20 calls over two replicas, a quota of 10: exactly 10 succeed");
    for data in &refused {
        assert_eq!(data["limit"], "10/min burst 10", "{data}");
        assert!(data["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 6_000), "{data}");
    }
    for gw in [&a, &b] {
        let r = ready(gw).await;
        assert_eq!(r["cluster"]["redis"], "up", "{r}");
        assert!(r["replica"].as_str().is_some_and(|id| !id.is_empty()), "{r}");
        assert_eq!(sample(&metrics(gw).await, "sentinel_redis_up"), Some(1.0));
    }
    assert_ne!(ready(&a).await["replica"], ready(&b).await["replica"], "each replica has its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_falls_back_to_local_limits_and_shares_again_when_back() {
    let proxy = Proxy::start(redis_addr()).await;
    let prefix = prefix();
    let gw = Gateway::start(&replica_config(proxy.addr, &prefix, "local", 3));
    let c = HttpClient::modern(&gw.url);
    for _ in 0..3 {
        assert_eq!(code(&c).await, None);
    }
    assert_eq!(code(&c).await, Some(-32013), "the shared bucket is empty");

    proxy.cut();
    // The replica's own bucket is full: three calls pass, then it refuses on its own.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(code(&c).await);
    }
    assert_eq!(codes, [None, None, None, Some(-32013)], "local limits while Redis is away");
    let r = ready(&gw).await;
    assert_eq!(r["cluster"]["redis"], "down", "{r}");
    assert_eq!(r["ready"], true, "Redis does not decide readiness: {r}");
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, "sentinel_redis_up"), Some(0.0), "{m}");
    assert!(sample(&m, "sentinel_redis_failures_total").is_some_and(|n| n >= 4.0), "{m}");
    let log = gw.log();
    assert_eq!(log.matches("Redis does not answer").count(), 1, "one line per outage, not per call:\n{log}");

    proxy.restore();
    // Back on the shared bucket, still empty from before the outage: refused again, by Redis.
    let back = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let _ = code(&c).await;
            if ready(&gw).await["cluster"]["redis"] == "up" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the replica uses Redis again once it is back:\n{}", gw.log());
    assert_eq!(code(&c).await, Some(-32013), "the shared bucket is still the one that was emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_limited_calls_while_redis_is_away() {
    let proxy = Proxy::start(redis_addr()).await;
    let gw = Gateway::start(&replica_config(proxy.addr, &prefix(), "fail_closed", 100));
    let c = HttpClient::modern(&gw.url);
    assert_eq!(code(&c).await, None);
    proxy.cut();
    let r = tokio::time::timeout(Duration::from_secs(10), c.call("m__echo", json!({"text": "x"})))
        .await
        .expect("never waits")
        .json();
    assert_eq!(r["error"]["code"], -32014, "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("fail_closed") && message.contains("Redis"), "{r}");
    // A tool without a rate limit draws nothing from Redis and is served as usual.
    let r = c.call("m__test_simple_text", json!({})).await.json();
    assert!(r["error"].is_null(), "{r}");
    proxy.restore();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starts_while_redis_is_away_and_joins_when_it_answers() {
    let proxy = Proxy::start(redis_addr()).await;
    proxy.cut();
    let gw = Gateway::start(&replica_config(proxy.addr, &prefix(), "local", 100));
    let c = HttpClient::modern(&gw.url);
    assert_eq!(code(&c).await, None, "served on local limits");
    assert_eq!(ready(&gw).await["cluster"]["redis"], "down");
    proxy.restore();
    let joined = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let _ = code(&c).await;
            if ready(&gw).await["cluster"]["redis"] == "up" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(joined.is_ok(), "connects in the background once Redis answers:\n{}", gw.log());
}
