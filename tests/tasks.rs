//! Backends' tasks (MCP 2025-11-25 experimental tasks) through the gateway (issue #15): a
//! session-based client's task-augmented `tools/call` of a backend that takes them
//! (`mcp-mock --tasks`), `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`, and the
//! backend's `notifications/tasks/status`, with the task's id the gateway's own, bound to the
//! subject that created it, governed like the tool (kill switch), and audited when it ends.

mod common;

use std::time::Duration;

use common::governance::{ADMIN_ROLE, audit_records, hs256_auth, secret_env, token};
use common::*;
use serde_json::{Value, json};

fn gateway() -> Gateway {
    let config =
        format!("{}{}", hs256_auth(ADMIN_ROLE), mock_stdio_backend("m", None, &["--generation", "legacy", "--tasks"]));
    Gateway::start_with_env(&config, &secret_env())
}

async fn client(gw: &Gateway, sub: &str) -> HttpClient {
    HttpClient::new(&gw.url).with_token(&token(sub, &["admin"])).initialized(json!({})).await
}

async fn create(c: &HttpClient, ms: u64) -> String {
    let r = c
        .request(
            "tools/call",
            json!({"name": "m__task_work", "arguments": {"ms": ms, "text": "hi"}, "task": {"ttl": 60000}}),
        )
        .await
        .json();
    let id = r["result"]["task"]["taskId"].as_str().unwrap_or_else(|| panic!("a CreateTaskResult: {r}")).to_string();
    assert!(id.starts_with("sentinel-task-"), "the gateway's id, not the backend's: {r}");
    assert_eq!(r["result"]["task"]["status"], "working", "{r}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_created_polled_and_its_result_fetched_under_the_gateways_id() {
    let gw = gateway();
    let alice = client(&gw, "alice").await;
    let init = alice
        .request(
            "initialize",
            json!({"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        )
        .await
        .json();
    assert!(init["result"]["capabilities"]["tasks"]["requests"]["tools"]["call"].is_object(), "declared: {init}");
    let tools = alice.request("tools/list", json!({})).await.json();
    let tool =
        tools["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "m__task_work").cloned().unwrap();
    assert_eq!(tool["execution"]["taskSupport"], "optional", "{tool}");

    let id = create(&alice, 300).await;
    let got = alice.request("tasks/get", json!({"taskId": id})).await.json();
    assert_eq!(got["result"]["taskId"], id.as_str(), "{got}");
    let result = tokio::time::timeout(Duration::from_secs(10), alice.request("tasks/result", json!({"taskId": id})))
        .await
        .unwrap()
        .json();
    assert_eq!(result["result"]["content"][0]["text"], "worked 300 ms: hi", "{result}");
    assert_eq!(result["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"], id.as_str(), "{result}");
    let listed = alice.request("tasks/list", json!({})).await.json();
    let ids: Vec<&str> =
        listed["result"]["tasks"].as_array().unwrap().iter().filter_map(|t| t["taskId"].as_str()).collect();
    assert_eq!(ids, [id.as_str()], "{listed}");

    // Two records for the tool: the call that created the task, and the task's end.
    eventually("the task's end is audited", || async {
        audit_records(&gw.log()).iter().filter(|r| r.get("tool").map(String::as_str) == Some("m__task_work")).count()
            == 2
    })
    .await;
    let log = gw.log();
    let end =
        audit_records(&log).into_iter().rfind(|r| r.get("tool").map(String::as_str) == Some("m__task_work")).unwrap();
    assert_eq!(end.get("outcome").map(String::as_str), Some("ok"), "{end:?}");
    assert!(
        end.get("latency_ms").and_then(|l| l.parse::<f64>().ok()).is_some_and(|l| l >= 300.0),
        "since it was created: {end:?}"
    );
    // Polled again: no second end record.
    alice.request("tasks/get", json!({"taskId": id})).await;
    assert_eq!(
        audit_records(&gw.log()).iter().filter(|r| r.get("tool").map(String::as_str) == Some("m__task_work")).count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_belongs_to_its_subject_and_follows_the_kill_switch() {
    let gw = gateway();
    let (alice, bob) = (client(&gw, "alice").await, client(&gw, "bob").await);
    let id = create(&alice, 10_000).await;
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let r = bob.request(method, json!({"taskId": id})).await.json();
        assert_eq!(r["error"]["code"], -32602, "{method} by another subject: {r}");
    }
    let listed = bob.request("tasks/list", json!({})).await.json();
    assert_eq!(listed["result"]["tasks"], json!([]), "{listed}");

    let out = std::process::Command::new(sentinel_bin())
        .args(["kill-switch", "add", "tool", "m__task_work", "-c"])
        .arg(gw.config_path())
        .env("SENTINEL_JWT_SECRET", common::governance::SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually_within(Duration::from_secs(5), "the task is refused with its tool", || async {
        alice.request("tasks/get", json!({"taskId": id})).await.error_code() == Some(-32012)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_cancelled_and_its_status_reaches_the_session() {
    let gw = gateway();
    let alice = client(&gw, "alice").await;
    let mut stream = alice.get_stream().await;
    let quick = create(&alice, 100).await;
    let status: Value =
        serde_json::from_str(&tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap())
            .unwrap();
    assert_eq!(status["method"], "notifications/tasks/status", "{status}");
    assert_eq!(status["params"]["taskId"], quick.as_str(), "with the gateway's id: {status}");
    assert_eq!(status["params"]["status"], "completed");

    let slow = create(&alice, 30_000).await;
    let r = alice.request("tasks/cancel", json!({"taskId": slow})).await.json();
    assert_eq!(
        (r["result"]["taskId"].as_str(), r["result"]["status"].as_str()),
        (Some(slow.as_str()), Some("cancelled")),
        "{r}"
    );

    // Stateless clients: these are not methods of 2026-07-28.
    let modern = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    assert_eq!(modern.request("tasks/get", json!({"taskId": slow})).await.error_code(), Some(-32601));
}
