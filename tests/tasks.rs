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

/// A stateless request declaring the tasks extension, with the headers its method needs; the
/// response.
async fn extension_request(c: &HttpClient, method: &str, params: Value) -> Value {
    let mut params = modern_params(params);
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let name = params.get("name").and_then(Value::as_str).map(str::to_string);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut h = vec![("mcp-method", method)];
    if let Some(n) = &name {
        h.push(("mcp-name", n.as_str()));
    }
    c.post_raw(&body, &h).await.json()
}

/// Polls a stateless client's `tasks/get` until the task completed (10 s at most).
async fn until_completed(c: &HttpClient, id: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let t = extension_request(c, "tasks/get", json!({"taskId": id})).await;
            if t["result"]["status"] == "completed" {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the task completes")
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
    // The end's record is the one timed from the task's creation (the two may be logged in
    // either order).
    let log = gw.log();
    let latency = |r: &std::collections::HashMap<String, String>| {
        r.get("latency_ms").and_then(|l| l.parse::<f64>().ok()).unwrap_or_default()
    };
    let records: Vec<_> =
        audit_records(&log).into_iter().filter(|r| r.get("tool").map(String::as_str) == Some("m__task_work")).collect();
    let end = records.iter().max_by(|a, b| latency(a).total_cmp(&latency(b))).unwrap();
    assert_eq!(end.get("outcome").map(String::as_str), Some("ok"), "{end:?}");
    assert!(latency(end) >= 300.0, "since it was created: {records:?}");
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

    // A stateless client reaches only tasks of its own kind; tasks/result is not a 2026-07-28
    // method.
    let modern = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    assert_eq!(modern.request("tasks/get", json!({"taskId": slow})).await.error_code(), Some(-32602));
    assert_eq!(modern.request("tasks/result", json!({"taskId": slow})).await.error_code(), Some(-32601));
}

/// A stateless client (2026-07-28) that declares the tasks extension, through a stateless
/// backend that serves it: the task handle under the gateway's id, `tasks/get` until it carries
/// the result, `tasks/update`, `tasks/cancel`, the subject binding, the end audited; the
/// session-based methods it lacks are -32601.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_follows_its_task_through_the_extension() {
    let config = format!("{}{}", hs256_auth(ADMIN_ROLE), mock_stdio_backend("m", None, &["--tasks"]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let alice = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    let bob = HttpClient::modern(&gw.url).with_token(&token("bob", &["admin"]));
    let discover = extension_request(&alice, "server/discover", json!({})).await;
    assert!(
        discover["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object(),
        "{discover}"
    );

    let created = extension_request(
        &alice,
        "tools/call",
        json!({"name": "m__task_work", "arguments": {"ms": 200, "text": "hi"}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    assert!(id.starts_with("sentinel-task-"), "{created}");
    assert_eq!(
        extension_request(&bob, "tasks/get", json!({"taskId": id})).await["error"]["code"],
        -32602,
        "another subject"
    );
    let done = until_completed(&alice, &id).await;
    assert_eq!(done["result"]["taskId"], id.as_str(), "{done}");
    assert_eq!(done["result"]["result"]["content"][0]["text"], "worked 200 ms: hi", "{done}");
    let update = extension_request(&alice, "tasks/update", json!({"taskId": id, "inputResponses": {}})).await;
    assert!(update["error"].is_null(), "{update}");
    eventually("the task's end is audited", || async {
        audit_records(&gw.log()).iter().filter(|r| r.get("tool").map(String::as_str) == Some("m__task_work")).count()
            == 2
    })
    .await;

    let slow =
        extension_request(&alice, "tools/call", json!({"name": "m__task_work", "arguments": {"ms": 30000}})).await;
    let slow = slow["result"]["taskId"].as_str().unwrap().to_string();
    let cancelled = extension_request(&alice, "tasks/cancel", json!({"taskId": slow})).await;
    assert_eq!(cancelled["result"]["status"], "cancelled", "{cancelled}");
    for method in ["tasks/result", "tasks/list"] {
        assert_eq!(extension_request(&alice, method, json!({"taskId": id})).await["error"]["code"], -32601, "{method}");
    }
}

/// Across generations: a stateless client that declares the extension, in front of a
/// session-based backend with 2025-11-25 tasks, gets the extension's task (the call sent
/// task-augmented, `tasks/get` carrying the result once done); a session-based client's
/// task-augmented call of a stateless backend with the extension gets a 2025-11-25 task
/// (`tasks/result` waits for the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_bridged_between_generations() {
    let config = format!(
        "{}{}{}",
        hs256_auth(ADMIN_ROLE),
        mock_stdio_backend("old", None, &["--generation", "legacy", "--tasks"]),
        mock_stdio_backend("new", None, &["--generation", "modern", "--tasks"])
    );
    let gw = Gateway::start_with_env(&config, &secret_env());

    // A 2026-07-28 client, a 2025-11-25 backend.
    let modern = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    let created = extension_request(
        &modern,
        "tools/call",
        json!({"name": "old__task_work", "arguments": {"ms": 200, "text": "old"}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "flattened for the stateless client: {created}");
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    let done = until_completed(&modern, &id).await;
    assert_eq!(done["result"]["taskId"], id.as_str(), "{done}");
    assert_eq!(done["result"]["result"]["content"][0]["text"], "worked 200 ms: old", "the result carried: {done}");
    let update = extension_request(&modern, "tasks/update", json!({"taskId": id, "inputResponses": {}})).await;
    assert!(update["error"]["message"].as_str().is_some_and(|m| m.contains("2025-11-25")), "{update}");

    // A 2025-11-25 client, a 2026-07-28 backend.
    let legacy = HttpClient::new(&gw.url).with_token(&token("alice", &["admin"])).initialized(json!({})).await;
    let r = legacy
        .request(
            "tools/call",
            json!({"name": "new__task_work", "arguments": {"ms": 200, "text": "new"}, "task": {"ttl": 60000}}),
        )
        .await
        .json();
    let id = r["result"]["task"]["taskId"].as_str().unwrap_or_else(|| panic!("a 2025-11-25 task: {r}")).to_string();
    assert!(id.starts_with("sentinel-task-") && r["result"].get("resultType").is_none_or(|t| t != "task"), "{r}");
    let got = legacy.request("tasks/get", json!({"taskId": id})).await.json();
    assert_eq!(got["result"]["taskId"], id.as_str(), "{got}");
    assert!(got["result"].get("result").is_none(), "a 2025-11-25 task state: {got}");
    let result = tokio::time::timeout(Duration::from_secs(10), legacy.request("tasks/result", json!({"taskId": id})))
        .await
        .unwrap()
        .json();
    assert_eq!(result["result"]["content"][0]["text"], "worked 200 ms: new", "{result}");
    assert_eq!(result["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"], id.as_str());
    let listed = legacy.request("tasks/list", json!({})).await.json();
    assert!(listed["result"]["tasks"].as_array().unwrap().iter().any(|t| t["taskId"] == id.as_str()), "{listed}");
    eventually("both tasks' ends are audited", || async {
        audit_records(&gw.log()).iter().filter(|r| r.get("tool").is_some_and(|t| t.ends_with("__task_work"))).count()
            == 4
    })
    .await;
}
