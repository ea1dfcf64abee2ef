//! Two real `sentinel serve` replicas behind a real HAProxy running the shipped config
//! (`deploy/haproxy/haproxy.cfg`, tests/common/haproxy.rs), sharing the machine's Redis
//! (`[cluster]`, a key prefix per test) and one PostgreSQL audit database (a database per
//! test). What a client of the load balancer sees: stateless clients served by every replica
//! under one quota and one kill switch; session-based clients served by every replica with no
//! stickiness, their sessions outliving the replica that opened them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::pg::PgDb;
use common::*;
use serde_json::json;

const REPLICAS: [&str; 2] = ["a", "b"];

fn redis_url() -> String {
    std::env::var("SENTINEL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The replicas, their audit database and the load balancer in front of them.
struct Cluster {
    lb: Haproxy,
    /// `None` once killed.
    replicas: Vec<Option<Gateway>>,
    db: PgDb,
}

impl Cluster {
    /// One mock backend; `m__echo` limited to 10 calls a minute (burst 10) across the replicas.
    async fn start() -> Cluster {
        Cluster::start_with(&[], "").await
    }

    /// `start`, the mock run with `mock_args`, and more `[cluster]` keys.
    async fn start_with(mock_args: &[&str], cluster: &str) -> Cluster {
        common::haproxy::binary(); // before starting anything else
        let db = PgDb::create().await;
        let prefix = format!("sentinel-lb-test-{}:", uuid::Uuid::new_v4());
        let replicas: Vec<Gateway> = REPLICAS
            .iter()
            .map(|id| {
                Gateway::start(&format!(
                    "[audit]\nurl = {}\n{}[rate_limit]\ntools = {{ \"m__echo\" = {{ per_minute = 10, burst = 10 }} }}\n\
                     [cluster]\nredis = {}\nkey_prefix = {}\nreplica_id = {}\n{cluster}",
                    lit(&db.url),
                    mock_stdio_backend("m", None, mock_args),
                    lit(redis_url()),
                    lit(&prefix),
                    lit(id)
                ))
            })
            .collect();
        let servers: Vec<(&str, std::net::SocketAddr)> = REPLICAS
            .iter()
            .zip(&replicas)
            .map(|(id, gw)| (*id, gw.base().trim_start_matches("http://").parse().unwrap()))
            .collect();
        let lb = Haproxy::start(&servers);
        Cluster { lb, replicas: replicas.into_iter().map(Some).collect(), db }
    }

    fn config(&self) -> std::path::PathBuf {
        self.replicas.iter().flatten().next().expect("a live replica").config_path()
    }

    /// SIGKILL, as an OOM killer or a lost node would: no shutdown of any kind.
    fn kill(&mut self, id: &str) {
        let i = REPLICAS.iter().position(|r| *r == id).unwrap();
        let mut gw = self.replicas[i].take().expect("alive");
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
    }

    /// (replica, outcome) → records of `tool` in the shared audit database.
    async fn audited(&self, tool: &str) -> BTreeMap<(String, String), i64> {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let rows: Vec<(Option<String>, String, i64)> = sqlx::query_as(
            "SELECT replica, outcome, count(*) FROM audit_records WHERE tool = $1 GROUP BY replica, outcome",
        )
        .bind(tool)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows.into_iter().map(|(r, o, n)| ((r.unwrap_or_default(), o), n)).collect()
    }
}

fn served_by(r: &Reply) -> String {
    r.headers
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no x-served-by: {r:?}"))
}

fn kill_switch(config: &Path, args: &[&str]) {
    let out = Command::new(sentinel_bin()).arg("kill-switch").args(args).arg("-c").arg(config).output().unwrap();
    assert!(
        out.status.success(),
        "kill-switch {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Calls `tool` through the load balancer until the last answer of every replica is `killed`
/// (refused -32012) or not, and returns how long that took; 3 s at most.
async fn until_every_replica(c: &HttpClient, tool: &str, killed: bool) -> Duration {
    let start = Instant::now();
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        let r = c.call(tool, json!({})).await;
        last.insert(served_by(&r), r.error_code() == Some(-32012));
        if last.len() == REPLICAS.len() && last.values().all(|k| *k == killed) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{tool} killed={killed} not seen on every replica within 3 s: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_clients_reach_every_replica_through_round_robin_under_one_quota() {
    let cluster = Cluster::start().await;
    let c = HttpClient::modern(&cluster.lb.url);

    // Round robin: consecutive requests alternate between the replicas, as /ready tells.
    let mut ready_ids = Vec::new();
    for _ in 0..2 {
        let text = reqwest::get(cluster.lb.url.replace("/mcp", "/ready")).await.unwrap().text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        ready_ids.push(v["replica"].as_str().unwrap().to_string());
    }
    assert_ne!(ready_ids[0], ready_ids[1], "/ready through the load balancer, twice: {ready_ids:?}");

    let mut listed_by = BTreeSet::new();
    for _ in 0..4 {
        let r = c.request("tools/list", json!({})).await;
        assert_eq!(r.status, 200, "{r:?}");
        let tools = r.json()["result"]["tools"].clone();
        let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"m__echo") && names.contains(&"m__test_simple_text"), "{names:?}");
        listed_by.insert(served_by(&r));
    }
    assert_eq!(listed_by.len(), 2, "both replicas listed: {listed_by:?}");
    for _ in 0..4 {
        let r = c.call("m__test_simple_text", json!({})).await;
        assert!(r.json()["error"].is_null(), "{:?}", r.json());
    }

    // A quota of 10 a minute, 20 calls alternating between the replicas: exactly 10 succeed.
    let mut allowed = 0;
    let mut by = BTreeMap::<String, u32>::new();
    for _ in 0..20 {
        let r = c.call("m__echo", json!({"text": "x"})).await;
        *by.entry(served_by(&r)).or_default() += 1;
        match r.error_code() {
            None => allowed += 1,
            Some(-32013) => {}
            Some(other) => panic!("unexpected error {other}: {:?}", r.json()),
        }
    }
    assert_eq!(allowed, 10, "20 calls through the load balancer, one quota of 10: exactly 10 succeed");
    assert_eq!(by.values().copied().collect::<Vec<_>>(), [10, 10], "round robin spread the calls: {by:?}");

    // The shared audit trail names the replica that answered each call.
    eventually("the 20 calls' audit records are in PostgreSQL", || async {
        cluster.audited("m__echo").await.values().sum::<i64>() == 20
    })
    .await;
    let audited = cluster.audited("m__echo").await;
    let replicas: BTreeSet<&str> = audited.keys().map(|(r, _)| r.as_str()).collect();
    assert_eq!(replicas, BTreeSet::from(REPLICAS), "{audited:?}");
    let ok: i64 = audited.iter().filter(|((_, o), _)| o == "ok").map(|(_, n)| n).sum();
    let limited: i64 = audited.iter().filter(|((_, o), _)| o == "rate_limited").map(|(_, n)| n).sum();
    assert_eq!((ok, limited), (10, 10), "{audited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_reaches_every_replica_behind_the_load_balancer() {
    let cluster = Cluster::start().await;
    let c = HttpClient::modern(&cluster.lb.url);
    until_every_replica(&c, "m__test_simple_text", false).await;

    let config = cluster.config();
    tokio::task::spawn_blocking(move || {
        kill_switch(&config, &["add", "tool", "m__test_simple_text", "--reason", "lb test"]);
    })
    .await
    .unwrap();
    // Within a second on every replica (each polls the database every 500 ms).
    let took = until_every_replica(&c, "m__test_simple_text", true).await;
    eprintln!("refused by every replica {took:?} after `kill-switch add` returned");
    assert!(took < Duration::from_secs(1), "refused by every replica only after {took:?}");
    for _ in 0..4 {
        let r = c.request("tools/list", json!({})).await;
        assert!(!r.body.contains("\"m__test_simple_text\""), "hidden on {}: {}", served_by(&r), r.body);
    }

    let config = cluster.config();
    tokio::task::spawn_blocking(move || kill_switch(&config, &["remove", "tool", "m__test_simple_text"]))
        .await
        .unwrap();
    let took = until_every_replica(&c, "m__test_simple_text", false).await;
    eprintln!("served by every replica again {took:?} after `kill-switch remove` returned");
    assert!(took < Duration::from_secs(1), "served by every replica again only after {took:?}");
}

/// A session-based client through plain round robin (no stickiness): one session's requests
/// alternate between the replicas and all succeed (sessions are shared through Redis); DELETE
/// ends it on both. One replica SIGKILLed mid-session: stateless requests keep succeeding (the
/// shipped config's retries and redispatch), and every session, whichever replica opened it,
/// goes on on the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_served_by_every_replica_and_outlive_the_one_that_opened_them() {
    let mut cluster = Cluster::start().await;

    // A long conversation of one session over plain round robin: every request succeeds, and
    // both replicas served it.
    let s = HttpClient::legacy(&cluster.lb.url, json!({})).await;
    let mut by = BTreeMap::<String, usize>::new();
    for i in 0..12 {
        let r = if i % 3 == 0 {
            s.request("tools/list", json!({})).await
        } else {
            s.call("m__test_simple_text", json!({})).await
        };
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(r.json()["error"].is_null(), "{:?}", r.json());
        *by.entry(served_by(&r)).or_default() += 1;
    }
    assert_eq!(by.len(), 2, "one session, served by both replicas: {by:?}");
    let del =
        s.http.delete(&cluster.lb.url).header("mcp-session-id", s.session.as_ref().unwrap()).send().await.unwrap();
    assert_eq!(del.status(), 200);
    for _ in 0..2 {
        assert_eq!(s.request("tools/list", json!({})).await.status, 404, "ended on both replicas");
    }

    // A session opened on each replica (directly), then used through the load balancer.
    let mut sessions = BTreeMap::<String, HttpClient>::new();
    for (id, gw) in REPLICAS.iter().zip(&cluster.replicas) {
        let mut c = HttpClient::legacy(&gw.as_ref().expect("running").url, json!({})).await;
        c.url = cluster.lb.url.clone();
        sessions.insert(id.to_string(), c);
    }
    let (victim, survivor) = (REPLICAS[0], REPLICAS[1]);

    cluster.kill(victim);

    // Stateless requests at once: the request that meets the dead replica is sent to the other.
    let modern = HttpClient::modern(&cluster.lb.url);
    for i in 0..10 {
        let r = modern.call("m__test_simple_text", json!({})).await;
        assert_eq!(r.status, 200, "stateless call {i} after the kill: {r:?}");
        assert!(r.json()["error"].is_null(), "{:?}", r.json());
        assert_eq!(served_by(&r), survivor);
    }
    // Both sessions go on, the dead replica's included: the survivor knows it from Redis.
    for (opened_by, c) in &sessions {
        for _ in 0..3 {
            let r = c.call("m__test_simple_text", json!({})).await;
            assert_eq!((r.status, served_by(&r)), (200, survivor.to_string()), "session opened by {opened_by}: {r:?}");
            assert!(r.json()["error"].is_null(), "{:?}", r.json());
        }
    }

    // HAProxy's health checks take the dead replica out.
    eventually("HAProxy marks the killed replica down", || async {
        cluster.lb.servers().iter().any(|(b, s, status)| b == "sentinel" && s == victim && status.starts_with("DOWN"))
    })
    .await;
}

/// The official Python SDK client, session-based (`--mode legacy`), through plain round robin:
/// its session's requests reach both replicas (the shared audit trail says which answered),
/// and every call succeeds as it would on one gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_client_keeps_its_session_across_replicas() {
    let peers = common::peers::ensure();
    let cluster = Cluster::start().await;
    let url = cluster.lb.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let call = ["--call", "m__test_simple_text", "{}"];
        let mut args = vec!["--url", url.as_str(), "--mode", "legacy"];
        for _ in 0..6 {
            args.extend_from_slice(&call);
        }
        peers.sdk_client(&args)
    })
    .await
    .unwrap();
    assert!(out["protocolVersion"].as_str().is_some_and(|v| v.starts_with("2025-")), "a session-based session: {out}");
    let calls = out["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 6, "{out}");
    for c in calls {
        assert_ne!(c["result"]["isError"], true, "{c}");
    }
    eventually("the 6 calls' audit records are in PostgreSQL", || async {
        cluster.audited("m__test_simple_text").await.values().sum::<i64>() == 6
    })
    .await;
    let audited = cluster.audited("m__test_simple_text").await;
    let by_replica: BTreeSet<&str> =
        audited.keys().filter(|(_, outcome)| outcome == "ok").map(|(r, _)| r.as_str()).collect();
    assert_eq!(by_replica, BTreeSet::from(["a", "b"]), "one session's calls answered by both replicas: {audited:?}");
}

/// A `[cluster]` secret in a file of the test's own, as `secret_file = ...`.
fn shared_secret() -> (tempfile::NamedTempFile, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "a-cluster-secret-of-enough-length-0123456789\n").unwrap();
    let key = format!("secret_file = {}\n", lit(file.path().to_string_lossy()));
    (file, key)
}

/// A stateless 2026-07-28 client through round robin, calling a session-based backend's tool
/// that asks for elicitation: the input round is answered by one replica and the retry that
/// carries the answer by the other, which passes it to the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_input_round_is_continued_by_the_other_replica() {
    let (_secret, key) = shared_secret();
    let cluster = Cluster::start_with(&["--generation", "legacy"], &key).await;
    let c = HttpClient::modern(&cluster.lb.url);
    let tool = "m__test_input_required_result_elicitation";
    let post = |extra: serde_json::Value| {
        let mut params = json!({"name": tool, "arguments": {}});
        params.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let mut params = modern_params(params);
        params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}});
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
        let c = c.clone();
        async move { c.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).await }
    };
    let first = post(json!({})).await;
    let round = first.json();
    assert_eq!(round["result"]["resultType"], "input_required", "{round}");
    let (k, _) = round["result"]["inputRequests"].as_object().unwrap().iter().next().unwrap();
    let answer = json!({"action": "accept", "content": {"name": "Lin"}});
    let retry =
        post(json!({"requestState": round["result"]["requestState"], "inputResponses": {k.as_str(): answer}})).await;
    assert_ne!(served_by(&retry), served_by(&first), "the retry reached the other replica");
    assert_eq!(retry.json()["result"]["content"][0]["text"], "Hello, Lin!", "{:?}", retry.json());
}

/// A session-based client through round robin: a call whose backend asks it for sampling (its
/// answer lands on the other replica), then a slow call cancelled by a notification that lands
/// on the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_answers_and_cancellations_reach_the_replica_holding_the_call() {
    let cluster = Cluster::start_with(&["--generation", "legacy"], "").await;
    let c = HttpClient::legacy(&cluster.lb.url, json!({"sampling": {}})).await;
    let body = json!({"jsonrpc":"2.0","id":"s-1","method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"2+2?"}}});
    let mut stream = c.stream(&body.to_string(), &[]).await;
    let holder = stream.header("x-served-by").expect("x-served-by");
    let req: serde_json::Value = serde_json::from_str(&stream.next().await.expect("a relayed request")).unwrap();
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"four"},"model":"m","stopReason":"endTurn"}});
    let posted = c.post_raw(&answer.to_string(), &[]).await;
    assert_eq!(posted.status, 202);
    assert_ne!(served_by(&posted), holder, "the answer reached the other replica");
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("answered, not hung");
    let resp: serde_json::Value = serde_json::from_str(&resp.expect("the call's response")).unwrap();
    assert!(resp["result"]["content"][0]["text"].as_str().unwrap_or_default().contains("four"), "{resp}");

    let slow = json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"m__slow","arguments":{"ms": 30000}}});
    let mut stream = c.stream(&slow.to_string(), &[]).await;
    let holder = stream.header("x-served-by").expect("x-served-by");
    let cancel = c.notify("notifications/cancelled", json!({"requestId": "slow-1"})).await;
    assert_eq!(cancel.status, 202);
    assert_ne!(served_by(&cancel), holder, "the cancellation reached the other replica");
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(ended.is_ok(), "the call ends when the other replica hears the cancellation");
}
