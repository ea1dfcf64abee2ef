//! A stateless (2026-07-28) client calling a session-based backend whose tool asks the client
//! something mid-call (elicitation, sampling, roots): the gateway answers with an
//! `input_required` round (MRTR), keeps the backend call waiting, and continues it with the
//! client's retry. Real `sentinel serve` over HTTP in front of `mcp-mock --generation legacy`
//! over stdio (whose tools send real server-to-client requests there).

mod common;

use common::*;
use serde_json::{Value, json};

async fn call(c: &HttpClient, tool: &str, capabilities: &Value, extra: Value) -> Value {
    stateless_call(c, tool, capabilities.clone(), extra).await
}

/// The one question of an `input_required` round: (key, method, params).
fn question(r: &Value) -> (String, String, Value) {
    let result = &r["result"];
    assert_eq!(result["resultType"], "input_required", "an input round: {r}");
    assert!(result["requestState"].is_string(), "with the gateway's state: {r}");
    let asked = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(asked.len(), 1, "one question: {r}");
    let (key, q) = asked.iter().next().unwrap();
    (key.clone(), q["method"].as_str().unwrap().to_string(), q["params"].clone())
}

fn retry(r: &Value, key: &str, answer: Value) -> Value {
    json!({"requestState": r["result"]["requestState"], "inputResponses": {key: answer}})
}

fn text(r: &Value) -> String {
    r["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("a tool result: {r}")).to_string()
}

fn legacy_mock() -> Gateway {
    Gateway::start(&mock_stdio_backend("m", None, &["--generation", "legacy"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_based_backends_questions_become_input_rounds() {
    let gw = legacy_mock();
    let c = HttpClient::modern(&gw.url);
    let caps = json!({"elicitation": {}, "sampling": {}, "roots": {}});

    // One elicitation: asked as a round, answered by the retry.
    let first = call(&c, "m__test_input_required_result_elicitation", &caps, json!({})).await;
    let (key, method, params) = question(&first);
    assert_eq!(method, "elicitation/create");
    assert_eq!(params["message"], "What is your name?", "the backend's question as it asked it: {first}");
    let answer = json!({"action": "accept", "content": {"name": "Ada"}});
    let done = call(&c, "m__test_input_required_result_elicitation", &caps, retry(&first, &key, answer)).await;
    assert_eq!(text(&done), "Hello, Ada!");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");

    // Two rounds in a row, each with a state of its own.
    let tool = "m__test_input_required_result_multi_round";
    let r1 = call(&c, tool, &caps, json!({})).await;
    let (k1, _, _) = question(&r1);
    let r2 = call(&c, tool, &caps, retry(&r1, &k1, json!({"action": "accept", "content": {"name": "Bo"}}))).await;
    let (k2, _, p2) = question(&r2);
    assert_ne!(k1, k2, "keys are unique within the call");
    assert!(p2["message"].as_str().unwrap().starts_with("Step 2"), "{r2}");
    let r3 = call(&c, tool, &caps, retry(&r2, &k2, json!({"action": "accept", "content": {"color": "teal"}}))).await;
    assert_eq!(text(&r3), "Bo likes teal");

    // Sampling and roots likewise.
    let r = call(&c, "m__test_input_required_result_sampling", &caps, json!({})).await;
    let (k, method, _) = question(&r);
    assert_eq!(method, "sampling/createMessage");
    let sampled = json!({"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "m", "stopReason": "endTurn"});
    let r = call(&c, "m__test_input_required_result_sampling", &caps, retry(&r, &k, sampled)).await;
    assert!(text(&r).contains("Paris"), "{r}");
    let r = call(&c, "m__test_input_required_result_list_roots", &caps, json!({})).await;
    let (k, method, _) = question(&r);
    assert_eq!(method, "roots/list");
    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let r = call(&c, "m__test_input_required_result_list_roots", &caps, retry(&r, &k, roots)).await;
    assert_eq!(text(&r), "Roots: file:///work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_continues_only_with_its_own_untampered_state() {
    let gw = legacy_mock();
    let c = HttpClient::modern(&gw.url);
    let caps = json!({"elicitation": {}});
    let tool = "m__test_input_required_result_elicitation";
    let first = call(&c, tool, &caps, json!({})).await;
    let (key, _, _) = question(&first);
    let answer = json!({"action": "accept", "content": {"name": "Eve"}});

    // A changed byte, and a state presented on another tool's call, are refused.
    let mut tampered = retry(&first, &key, answer.clone());
    let state = tampered["requestState"].as_str().unwrap().to_string();
    let flipped = if state.ends_with('A') { 'B' } else { 'A' };
    tampered["requestState"] = json!(format!("{}{flipped}", &state[..state.len() - 1]));
    let r = call(&c, tool, &caps, tampered).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("was not issued by this gateway"), "{r}");
    let r = call(&c, "m__test_input_required_result_multi_round", &caps, retry(&first, &key, answer.clone())).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("another call"), "{r}");

    // The parked call is still there for the right retry, once; then it is over.
    let done = call(&c, tool, &caps, retry(&first, &key, answer.clone())).await;
    assert_eq!(text(&done), "Hello, Eve!");
    let again = call(&c, tool, &caps, retry(&first, &key, answer)).await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
    assert!(again["error"]["message"].as_str().unwrap().contains("is over"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_belongs_to_the_subject_that_started_it() {
    use common::governance::{ADMIN_ROLE, hs256_auth, secret_env, token};
    let config = format!("{}{}", hs256_auth(ADMIN_ROLE), mock_stdio_backend("m", None, &["--generation", "legacy"]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let alice = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    let mallory = HttpClient::modern(&gw.url).with_token(&token("mallory", &["admin"]));
    let caps = json!({"elicitation": {}});
    let tool = "m__test_input_required_result_elicitation";
    let first = call(&alice, tool, &caps, json!({})).await;
    let (key, _, _) = question(&first);
    let answer = json!({"action": "accept", "content": {"name": "Mallory"}});
    let stolen = call(&mallory, tool, &caps, retry(&first, &key, answer)).await;
    assert_eq!(stolen["error"]["code"], -32602, "{stolen}");
    assert!(stolen["error"]["message"].as_str().unwrap().contains("another caller"), "{stolen}");
    let done =
        call(&alice, tool, &caps, retry(&first, &key, json!({"action": "accept", "content": {"name": "Alice"}}))).await;
    assert_eq!(text(&done), "Hello, Alice!", "the owner's retry still continues it");
}

/// A question the client never declared it can take is not put to it: the stateless client's
/// call fails with -32021 naming the capability (HTTP 400), as a 2026-07-28 server answers, and
/// the backend hears a refusal. A session-based client's backend gets -32601, as from a client
/// without a handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_capability_is_never_asked() {
    let gw = legacy_mock();
    let c = HttpClient::modern(&gw.url);
    let tool = "m__test_input_required_result_elicitation";
    let body = stateless_call_body(tool, json!({"sampling": {}}), json!({}));
    let r = c.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).await;
    assert_eq!(r.status, 400, "{r:?}");
    let e = &r.json()["error"];
    assert_eq!(e["code"], -32021, "{e}");
    assert_eq!(e["data"]["requiredCapabilities"], json!({"elicitation": {}}), "{e}");

    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    let r = legacy.call("m__test_sampling", json!({"prompt": "hi"})).await.json();
    let t = r.to_string();
    assert!(t.contains("-32601") && t.contains("did not declare the `sampling` capability"), "{r}");
}

/// A call parked for its client's answers does not count when a stdio backend's question (which
/// cannot name its call) is attributed: another client's call asking meanwhile gets its own
/// question, instead of a refusal for "2 calls in flight".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_call_does_not_take_another_calls_questions() {
    let gw = legacy_mock();
    let modern = HttpClient::modern(&gw.url);
    let first =
        call(&modern, "m__test_input_required_result_elicitation", &json!({"elicitation": {}}), json!({})).await;
    question(&first);
    let legacy = HttpClient::legacy(&gw.url, json!({"sampling": {}})).await;
    let body = json!({"jsonrpc":"2.0","id":"s-1","method":"tools/call","params":{"name":"m__test_sampling","arguments":{"prompt":"2+2?"}}});
    let mut stream = legacy.stream(&body.to_string(), &[]).await;
    let asked: Value = serde_json::from_str(&stream.next().await.expect("a relayed request")).unwrap();
    assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
    let answer = json!({"jsonrpc":"2.0","id":asked["id"],"result":{"role":"assistant","content":{"type":"text","text":"four"},"model":"m","stopReason":"endTurn"}});
    legacy.post_raw(&answer.to_string(), &[]).await;
    let done: Value = serde_json::from_str(&stream.next().await.expect("the answer")).unwrap();
    assert!(text(&done).contains("four"), "{done}");
}
