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

/// Whether `gw` says Redis is up again within 15 s, calling meanwhile (a call is what notices).
async fn redis_up_again(gw: &Gateway, c: &HttpClient) -> bool {
    let up = async {
        loop {
            let _ = code(c).await;
            if ready(gw).await["cluster"]["redis"] == "up" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), up).await.is_ok()
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
    assert!(redis_up_again(&gw, &c).await, "the replica uses Redis again once it is back:\n{}", gw.log());
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
    assert!(redis_up_again(&gw, &c).await, "connects in the background once Redis answers:\n{}", gw.log());
}

/// Two replicas on one Redis, with their own audit stores, under one key prefix.
fn pair(prefix: &str, backend: &str, auth: &str) -> (Gateway, Gateway) {
    pair_with(prefix, backend, auth, "")
}

/// `pair`, with more `[cluster]` keys.
fn pair_with(prefix: &str, backend: &str, auth: &str, cluster: &str) -> (Gateway, Gateway) {
    let config =
        format!("{auth}{backend}[cluster]\nredis = \"redis://{}\"\nkey_prefix = \"{prefix}\"\n{cluster}", redis_addr());
    let env = common::governance::secret_env();
    (Gateway::start_with_env(&config, &env), Gateway::start_with_env(&config, &env))
}

async fn delete(c: &HttpClient) -> u16 {
    let mut req = c.http.delete(&c.url).header("mcp-session-id", c.session.clone().unwrap_or_default());
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_is_served_by_the_other_and_ended_on_both() {
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &[]), "");
    let mut c = HttpClient::legacy(&a.url, json!({})).await;
    assert!(c.session.is_some(), "a session");
    let level = c.request("logging/setLevel", json!({"level": "error"})).await.json();
    assert!(level["error"].is_null(), "{level}");
    for gw in [&b, &a, &b] {
        c.url = gw.url.clone();
        assert!(c.tool_names().await.contains(&"m__echo".to_string()), "tools/list on {}", gw.url);
        let r = c.call("m__echo", json!({"text": "hi"})).await.json();
        assert!(r["error"].is_null(), "a call on {}: {r}", gw.url);
    }
    c.url = b.url.clone();
    assert_eq!(delete(&c).await, 200, "DELETE on the other replica");
    for gw in [&a, &b] {
        c.url = gw.url.clone();
        let r = c.request("tools/list", json!({})).await;
        assert_eq!(r.status, 404, "ended everywhere: {} on {}", r.body, gw.url);
    }
    // An id nobody opened (well-formed, so it is looked up in Redis) is not found on either.
    c.session = Some(uuid::Uuid::new_v4().to_string());
    for gw in [&a, &b] {
        c.url = gw.url.clone();
        assert_eq!(c.request("tools/list", json!({})).await.status, 404, "an unknown id on {}", gw.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_stays_bound_to_its_subject() {
    use common::governance::{ADMIN_ROLE, hs256_auth, token};
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &[]), &hs256_auth(ADMIN_ROLE));
    let alice = HttpClient::new(&a.url).with_token(&token("alice", &["admin"])).initialized(json!({})).await;
    let mut mallory = HttpClient::new(&b.url).with_token(&token("mallory", &["admin"]));
    mallory.session = alice.session.clone();
    assert_eq!(mallory.request("tools/list", json!({})).await.status, 404, "another subject cannot use the id");
    assert_eq!(delete(&mallory).await, 404, "nor end it");
    let mut alice_on_b = alice;
    alice_on_b.url = b.url.clone();
    assert_eq!(alice_on_b.request("tools/list", json!({})).await.status, 200, "its subject can, on any replica");
}

/// A call on one replica whose backend asks the client for sampling; the client's answer
/// reaches the other replica and is passed on to the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_answer_reaching_the_other_replica_gets_to_the_call() {
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &["--generation", "legacy"]), "");
    let c = HttpClient::legacy(&a.url, json!({"sampling": {}})).await;
    let body = json!({"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"2+2?"}}});
    let mut stream = c.stream(&body.to_string(), &[]).await;
    let req: Value = serde_json::from_str(&stream.next().await.expect("a relayed request")).unwrap();
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let mut on_b = HttpClient::new(&b.url);
    on_b.session = c.session.clone();
    let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"four"},"model":"m","stopReason":"endTurn"}});
    assert_eq!(on_b.post_raw(&answer.to_string(), &[]).await.status, 202);
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("answered, not hung");
    let resp: Value = serde_json::from_str(&resp.expect("the call's response")).unwrap();
    assert_eq!(resp["id"], "call-1");
    assert!(resp["result"]["content"][0]["text"].as_str().unwrap_or_default().contains("four"), "{resp}");
}

/// A slow call on one replica, cancelled by a notification that reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reaching_the_other_replica_stops_the_call() {
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &[]), "");
    let c = HttpClient::legacy(&a.url, json!({})).await;
    let body = json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"m__slow","arguments":{"ms": 30000}}});
    let call = tokio::spawn({
        let post = c.post(&body.to_string(), &[]);
        async move { post.send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut on_b = HttpClient::new(&b.url);
    on_b.session = c.session.clone();
    let cancel = on_b.notify("notifications/cancelled", json!({"requestId": "slow-1"})).await;
    assert_eq!(cancel.status, 202);
    let ended = tokio::time::timeout(Duration::from_secs(10), call).await;
    assert!(ended.is_ok(), "the call on the first replica ends when the other hears the cancellation");
    let log = a.log();
    assert!(log.contains("outcome=\"cancelled\""), "audited as cancelled on the replica that ran it:\n{log}");
}

/// A stateless client's call on one replica whose session-based backend asks it something:
/// the retry that carries the answer reaches the other replica, which passes it to the one
/// holding the call (the replicas share `secret_file`, so either opens the state); rounds
/// alternate between replicas until the backend answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_retry_reaching_the_other_replica_continues_the_call() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "a-cluster-secret-of-enough-length-0123456789\n").unwrap();
    let sealed = format!("secret_file = {}\n", lit(secret.path().to_string_lossy()));
    let (a, b) = pair_with(&prefix(), &mock_stdio_backend("m", None, &["--generation", "legacy"]), "", &sealed);
    let tool = "m__test_input_required_result_multi_round";
    let on = |gw: &Gateway| HttpClient::modern(&gw.url);
    let first = rounds::call(&on(&a), tool, json!({})).await;
    let (k1, _) = rounds::question(&first);
    let second = rounds::call(
        &on(&b),
        tool,
        rounds::retry(&first, &k1, json!({"action": "accept", "content": {"name": "Ada"}})),
    )
    .await;
    let (k2, message) = rounds::question(&second);
    assert!(message.starts_with("Step 2"), "the backend went on with the answer given on the other replica: {second}");
    let done = rounds::call(
        &on(&a),
        tool,
        rounds::retry(&second, &k2, json!({"action": "accept", "content": {"color": "red"}})),
    )
    .await;
    assert_eq!(done["result"]["content"][0]["text"], "Ada likes red", "{done}");
}

/// Without `secret_file` each replica seals with a key of its own: a retry on the other replica
/// is refused with a message that says what to configure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_secret_a_retry_on_the_other_replica_says_what_to_set() {
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &["--generation", "legacy"]), "");
    let tool = "m__test_input_required_result_elicitation";
    let first = rounds::call(&HttpClient::modern(&a.url), tool, json!({})).await;
    let (k, _) = rounds::question(&first);
    let answer = rounds::retry(&first, &k, json!({"action": "accept", "content": {"name": "Ada"}}));
    let r = rounds::call(&HttpClient::modern(&b.url), tool, answer.clone()).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("secret_file"), "{r}");
    let done = rounds::call(&HttpClient::modern(&a.url), tool, answer).await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello, Ada!", "the replica that asked still continues it");
}

/// A stateless client's input rounds (MRTR) with a `[cluster]` of replicas.
mod rounds {
    use super::*;

    pub async fn call(c: &HttpClient, tool: &str, extra: Value) -> Value {
        stateless_call(c, tool, json!({"elicitation": {}}), extra).await
    }

    /// The round's one question: its key and message.
    pub fn question(r: &Value) -> (String, String) {
        assert_eq!(r["result"]["resultType"], "input_required", "an input round: {r}");
        let (key, q) = r["result"]["inputRequests"].as_object().expect("questions").iter().next().expect("one");
        (key.clone(), q["params"]["message"].as_str().unwrap_or_default().to_string())
    }

    pub fn retry(r: &Value, key: &str, answer: Value) -> Value {
        json!({"requestState": r["result"]["requestState"], "inputResponses": {key: answer}})
    }
}

/// With `secret_file`, a session record in Redis is sealed: nothing in it is readable there,
/// the other replica still serves the session, and a record someone else wrote is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_session_records_are_unreadable_in_redis_and_forged_ones_are_refused() {
    use redis::AsyncCommands;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "a-cluster-secret-of-enough-length-0123456789\n").unwrap();
    let sealed = format!("secret_file = {}\n", lit(secret.path().to_string_lossy()));
    let prefix = prefix();
    let (a, b) = pair_with(&prefix, &mock_stdio_backend("m", None, &[]), "", &sealed);
    let mut c = HttpClient::legacy(&a.url, json!({"roots": {"listChanged": true}})).await;
    let id = c.session.clone().unwrap();
    let redis = redis::Client::open(format!("redis://{}", redis_addr())).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let stored: std::collections::HashMap<String, String> =
        conn.hgetall(format!("{prefix}session:{id}")).await.unwrap();
    assert!(!stored.is_empty(), "a record");
    for (field, value) in &stored {
        assert!(serde_json::from_str::<Value>(value).is_err() && !value.contains("roots"), "sealed: {field} = {value}");
    }
    c.url = b.url.clone();
    assert_eq!(c.request("tools/list", json!({})).await.status, 200, "the other replica opens it");

    // A plain record under a fresh id, as anyone with Redis access could write it.
    let forged = uuid::Uuid::new_v4().to_string();
    let record = json!({"subject": null, "version": "2025-11-25", "capabilities": {}, "client_info": null});
    let key = format!("{prefix}session:{forged}");
    let _: () = conn.hset(&key, "record", record.to_string()).await.unwrap();
    let _: () = conn.expire(&key, 60).await.unwrap();
    c.session = Some(forged);
    for gw in [&a, &b] {
        c.url = gw.url.clone();
        assert_eq!(c.request("tools/list", json!({})).await.status, 404, "a forged record on {}", gw.url);
    }
    assert!(b.log().contains("a session record in Redis is refused"), "and said so:\n{}", b.log());
    // Each replica's log lines name it (`<hostname>-<pid>` without a replica_id).
    for gw in [&a, &b] {
        let me = format!("-{} ", gw.child.id());
        let log = gw.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(" INFO ") || l.contains(" WARN ")).collect();
        assert!(!lines.is_empty() && lines.iter().all(|l| l.starts_with("replica=") && l.contains(&me)), "{lines:#?}");
    }
}

/// The next message on a stream, parsed; none within 10 s fails the test (keep-alives do not
/// count).
async fn next_message(stream: &mut SseReader, what: &str) -> Value {
    let text = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what} is JSON ({e}): {text}"))
}

/// A call on one replica whose backend asks the client for sampling while the client's POST
/// takes JSON only: with no GET stream anywhere it is refused at once; with the session's GET
/// stream on the other replica (where it is the only one: a second is refused on either) the
/// request reaches it there, the client answers through either replica and the call completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_the_client_reaches_its_get_stream_on_the_other_replica() {
    let (a, b) = pair(&prefix(), &mock_stdio_backend("m", None, &["--generation", "legacy"]), "");
    let mut c = HttpClient::legacy(&a.url, json!({"sampling": {}})).await;
    c.accept = "application/json";
    let ask = |id: &str| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"2+2?"}}})
            .to_string()
    };
    let started = std::time::Instant::now();
    let r = c.post_raw(&ask("nowhere"), &[]).await;
    assert!(r.body.contains("no open stream"), "refused for want of a stream: {}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not at the call's timeout");

    let mut on_b = c.clone();
    on_b.url = b.url.clone();
    let mut stream = on_b.get_stream().await;
    let second = c.http.get(&c.url).header("accept", "text/event-stream");
    let second = second.header("mcp-session-id", c.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(second.status(), 409, "one GET stream per session, across replicas");
    for (n, answer_to) in [&b, &a].into_iter().enumerate() {
        let id = format!("call-{n}");
        let call = tokio::spawn({
            let post = c.post(&ask(&id), &[]);
            async move { post.send().await.unwrap().text().await.unwrap() }
        });
        let req = next_message(&mut stream, "the relayed request on the other replica's GET stream").await;
        assert_eq!(req["method"], "sampling/createMessage", "{req}");
        let mut answering = c.clone();
        answering.url = answer_to.url.clone();
        let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"four"},"model":"m","stopReason":"endTurn"}});
        assert_eq!(answering.post_raw(&answer.to_string(), &[]).await.status, 202);
        let resp = tokio::time::timeout(Duration::from_secs(10), call).await.expect("answered, not hung").unwrap();
        let resp: Value = serde_json::from_str(&resp).unwrap_or_else(|e| panic!("JSON ({e}): {resp}"));
        assert_eq!(resp["id"], id.as_str());
        let text = resp["result"]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("four"), "answered through {}: {resp}", answer_to.url);
    }
}

/// A session's resource subscriptions go with it: its GET stream on one replica, a subscribe
/// through the other, and the backend's update reaches the stream; an unsubscribe through
/// either replica stops it; when the stream moves to the other replica, its subscriptions
/// follow. One HTTP backend that both replicas reach (each with a session of its own there),
/// as a remote MCP server is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_taken_on_one_replica_brings_updates_to_the_stream_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let mock = MockHttp::start(&["--generation", "legacy", "--log", log.to_str().unwrap()]);
    let (a, b) = pair(&prefix(), &http_backend("m", None, &mock.url), "");
    let count = |method: &str| mock_log(&log).iter().filter(|m| m["method"] == method).count();
    let on_a = HttpClient::legacy(&a.url, json!({})).await;
    let mut on_b = on_a.clone();
    on_b.url = b.url.clone();
    let mut stream = on_b.get_stream().await;

    let (watched, marker) = (json!({"uri": "test://watched-resource"}), json!({"uri": "test://static-text"}));
    for uri in [&watched, &marker] {
        let r = on_a.request("resources/subscribe", uri.clone()).await.json();
        assert_eq!(r["result"], json!({}), "{r}");
    }
    // The replica holding the stream subscribes at the backend, once for each resource.
    eventually("the backend hears both subscriptions", || async { count("resources/subscribe") == 2 }).await;
    let r = on_a.call("m__update_resource", watched.clone()).await.json();
    assert!(r["error"].is_null(), "{r}");
    let update = next_message(&mut stream, "the resource update").await;
    assert_eq!(update["method"], "notifications/resources/updated", "{update}");
    assert_eq!(update["params"]["uri"], "test://watched-resource", "{update}");

    let r = on_b.request("resources/unsubscribe", watched.clone()).await.json();
    assert_eq!(r["result"], json!({}), "{r}");
    eventually("the backend hears the unsubscribe", || async { count("resources/unsubscribe") == 1 }).await;
    // The watched resource changes again, then the marker: only the marker's update comes.
    for uri in [&watched, &marker] {
        assert!(on_a.call("m__update_resource", uri.clone()).await.json()["error"].is_null());
    }
    let update = next_message(&mut stream, "the marker's update").await;
    assert_eq!(update["params"]["uri"], "test://static-text", "no update after the unsubscribe: {update}");

    // Subscribed again through the stream's replica, unsubscribed through the other.
    assert_eq!(on_b.request("resources/subscribe", watched.clone()).await.json()["result"], json!({}));
    assert_eq!(on_a.request("resources/unsubscribe", watched.clone()).await.json()["result"], json!({}));
    eventually("the backend hears the second unsubscribe", || async { count("resources/unsubscribe") == 2 }).await;
    for uri in [&watched, &marker] {
        assert!(on_b.call("m__update_resource", uri.clone()).await.json()["error"].is_null());
    }
    let update = next_message(&mut stream, "the marker's update").await;
    assert_eq!(update["params"]["uri"], "test://static-text", "no update after the unsubscribe: {update}");

    // The stream moves to the other replica: the subscription that is left goes with it.
    drop(stream);
    eventually("the closed stream's replica lets go", || async { count("resources/unsubscribe") == 3 }).await;
    let mut stream = on_a.get_stream().await;
    eventually("the new stream's replica subscribes", || async { count("resources/subscribe") == 4 }).await;
    assert!(on_b.call("m__update_resource", marker.clone()).await.json()["error"].is_null());
    let update = next_message(&mut stream, "the marker's update on the new stream").await;
    assert_eq!(update["params"]["uri"], "test://static-text", "{update}");
}
