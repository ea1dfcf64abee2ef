//! Policy through the real binary: RBAC on lists and calls (and the parser tricks that try to
//! slip past it), the kill switch and its SIGHUP reload, rate limits, and argument validation
//! against a tool's `inputSchema` — each refusal with its code, `data` and audit outcome, and
//! the backend's own log showing that nothing refused ever reached it.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::governance::*;
use common::*;
use serde_json::{Value, json};

const ROLES: &str = r#"
[roles.admin]
allow = ["*"]
[roles.reader]
allow = ["m__echo", "m__test_*_content", "m__test_simple_prompt", "test://static-*"]
deny = ["m__test_audio_content"]
[roles.cautious]
deny = ["m__test_error_handling"]
"#;

async fn session(gw: &Gateway, sub: &str, roles: &[&str]) -> HttpClient {
    HttpClient::new(&gw.url).with_token(&token(sub, roles)).initialized(json!({})).await
}

/// The names (or URIs) of a list.
async fn names(c: &HttpClient, method: &str, field: &str, key: &str) -> Vec<String> {
    let r = c.request(method, json!({})).await;
    let v = r.json();
    v["result"][field]
        .as_array()
        .unwrap_or_else(|| panic!("{method}: {v}"))
        .iter()
        .map(|e| e[key].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the log holds exactly `n` audit records with this outcome, and returns them.
async fn audited_exactly(gw: &Gateway, outcome: &str, n: usize) -> Vec<HashMap<String, String>> {
    eventually(&format!("{n} audit records with outcome={outcome}"), || async {
        audited(&gw.log(), outcome).len() >= n
    })
    .await;
    let records = audited(&gw.log(), outcome);
    assert_eq!(records.len(), n, "{records:?}");
    records
}

/// The `tools/call`s a mock backend received, by its own tool name.
fn calls_received(log: &Path, tool: &str) -> Vec<Value> {
    mock_log(log).into_iter().filter(|m| m["method"] == "tools/call" && m["params"]["name"] == tool).collect()
}

#[tokio::test]
async fn roles_filter_every_list_and_gate_every_call() {
    let config = format!("{}{ROLES}{}", hs256_auth(""), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let reader = session(&gw, "rita", &["reader"]).await;

    assert_eq!(names(&reader, "tools/list", "tools", "name").await, ["m__test_image_content", "m__echo"]);
    let mut modern = HttpClient::modern(&gw.url);
    modern.token = reader.token.clone();
    assert_eq!(modern.tool_names().await, ["m__test_image_content", "m__echo"], "stateless lists alike");
    assert_eq!(names(&reader, "prompts/list", "prompts", "name").await, ["m__test_simple_prompt"]);
    assert_eq!(
        names(&reader, "resources/list", "resources", "uri").await,
        ["test://static-text", "test://static-binary"]
    );
    assert!(names(&reader, "resources/templates/list", "resourceTemplates", "uriTemplate").await.is_empty());

    // What is listed can be used.
    assert_eq!(
        reader.call("m__echo", json!({"ok": true})).await.json()["result"]["structuredContent"],
        json!({"ok": true})
    );
    let r = reader.request("prompts/get", json!({"name": "m__test_simple_prompt"})).await;
    assert!(r.json()["result"]["messages"].is_array(), "{r:?}");
    let r = reader.request("resources/read", json!({"uri": "test://static-text"})).await;
    assert!(r.json()["result"]["contents"].is_array(), "{r:?}");

    // What is not listed is refused, with the tool and the caller's roles.
    let refused = [
        reader.call("m__test_simple_text", json!({})).await,
        reader.call("m__test_audio_content", json!({})).await,
        reader.request("prompts/get", json!({"name": "m__test_prompt_with_image"})).await,
        reader.request("resources/read", json!({"uri": "test://watched-resource"})).await,
    ];
    for (r, name) in refused.iter().zip(["m__test_simple_text", "m__test_audio_content", "m__test_prompt_with_image"]) {
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        assert_eq!(v["error"]["code"], json!(-32011), "{v}");
        assert_eq!(v["error"]["data"], json!({"tool": name, "roles": ["reader"]}), "{v}");
    }
    assert_eq!(refused[3].error_code(), Some(-32011), "{:?}", refused[3]);

    // Deny in any role beats allow in another.
    let admin = session(&gw, "ada", &["admin"]).await;
    let all = names(&admin, "tools/list", "tools", "name").await;
    assert!(all.iter().any(|t| t == "m__test_error_handling") && all.len() > 20, "{all:?}");
    let both = session(&gw, "carl", &["admin", "cautious"]).await;
    let expected: Vec<String> = all.iter().filter(|t| *t != "m__test_error_handling").cloned().collect();
    assert_eq!(names(&both, "tools/list", "tools", "name").await, expected);
    let r = both.call("m__test_error_handling", json!({})).await;
    assert_eq!(r.json()["error"]["data"], json!({"tool": "m__test_error_handling", "roles": ["admin", "cautious"]}));
    assert!(both.call("m__test_simple_text", json!({})).await.json()["result"].is_object());
    // A role the config does not know grants nothing.
    let stranger = session(&gw, "sam", &["no-such-role"]).await;
    assert!(names(&stranger, "tools/list", "tools", "name").await.is_empty());
    assert_eq!(stranger.call("m__echo", json!({})).await.error_code(), Some(-32011));

    let records = audited_exactly(&gw, "denied_rbac", 6).await;
    let rita: Vec<&str> = records.iter().filter(|r| r["client"] == "rita").map(|r| r["tool"].as_str()).collect();
    assert_eq!(
        rita,
        ["m__test_simple_text", "m__test_audio_content", "m__test_prompt_with_image", "test://watched-resource"]
    );
}

/// Two `name`s, or a `Name` beside the `name`, must not let the gateway authorize one tool
/// while the backend runs another.
#[tokio::test]
async fn duplicate_and_case_variant_names_cannot_reach_a_forbidden_tool() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let config =
        format!("{}{ROLES}{}", hs256_auth(""), mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let reader = session(&gw, "rita", &["reader"]).await;
    assert!(reader.call("m__echo", json!({"control": 1})).await.json()["result"].is_object());

    let tricks = [
        r#"{"name":"m__echo","name":"m__test_simple_text","arguments":{}}"#,
        r#"{"name":"m__test_simple_text","name":"m__echo","arguments":{}}"#,
        r#"{"name":"m__echo","Name":"m__test_simple_text","arguments":{}}"#,
        r#"{"Name":"m__test_simple_text","name":"m__echo","arguments":{}}"#,
        r#"{"NAME":"m__test_simple_text","arguments":{}}"#,
        r#"{"name":"m__echo","\u006eame":"m__test_simple_text","arguments":{}}"#,
    ];
    for params in tricks {
        let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params}}}"#);
        let r = reader.post_raw(&body, &[]).await;
        let v = r.json();
        assert!(v["result"].is_null(), "{params} was answered with a result: {v}");
        assert!(matches!(v["error"]["code"].as_i64(), Some(-32602 | -32011)), "{params}: {v}");
    }
    // Whatever the gateway forwarded has reached the backend by the time the control call after it returns.
    assert!(reader.call("m__echo", json!({"control": 2})).await.json()["result"].is_object());
    assert_eq!(calls_received(&log, "echo").len(), 2, "the log records calls: {:?}", mock_log(&log));
    let smuggled: Vec<Value> =
        mock_log(&log).into_iter().filter(|m| m.to_string().contains("test_simple_text")).collect();
    assert!(smuggled.is_empty(), "a forbidden call reached the backend: {smuggled:?}");
}

#[tokio::test]
async fn the_kill_switch_hides_and_refuses_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let kill = "[kill_switch]\ntools = [\"m__test_*\"]\nbackends = [\"n\"]\n";
    let config = format!(
        "{kill}{}{}",
        mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]),
        mock_stdio_backend("n", None, &[])
    );
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);

    let tools = c.tool_names().await;
    assert!(tools.iter().any(|t| t == "m__echo"), "{tools:?}");
    let shown: Vec<&String> = tools.iter().filter(|t| t.starts_with("m__test_") || t.starts_with("n__")).collect();
    assert!(shown.is_empty(), "killed tools are listed: {shown:?}");
    let prompts = names(&c, "prompts/list", "prompts", "name").await;
    assert!(prompts.iter().all(|p| !p.starts_with("n__") && !p.starts_with("m__test_")), "{prompts:?}");

    let killed = |tool: &'static str, backend: &'static str| {
        let c = c.clone();
        async move {
            let v = c.call(tool, json!({})).await.json();
            assert_eq!(v["error"]["code"], json!(-32012), "{v}");
            assert_eq!(v["error"]["data"], json!({"tool": tool, "backend": backend}), "{v}");
        }
    };
    killed("m__test_simple_text", "m").await;
    killed("n__echo", "n").await;
    audited_exactly(&gw, "killed", 2).await;
    assert!(calls_received(&log, "test_simple_text").is_empty(), "a killed call reached the backend");

    // Revive the tools but one; the backend stays off. No restart.
    let path = gw.dir.path().join("sentinel.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let revived = original.replace(kill, "[kill_switch]\ntools = [\"m__test_image_*\"]\nbackends = [\"n\"]\n");
    assert_ne!(revived, original);
    std::fs::write(&path, &revived).unwrap();
    sighup(gw.child.id());
    // Lists are not audited, so polling one leaves the count of refused calls exact.
    eventually("m__test_simple_text is listed again", || async {
        c.tool_names().await.iter().any(|t| t == "m__test_simple_text")
    })
    .await;
    assert!(c.call("m__test_simple_text", json!({})).await.json()["result"]["content"].is_array());
    killed("m__test_image_content", "m").await;
    killed("n__echo", "n").await;

    // Invalid files are refused with a log line; the kill switch in force stays.
    let refusals = |log: &str| strip_ansi(log).matches("config reload refused").count();
    for (i, broken) in [
        "[kill_switch]\ntools = []\nbackends = []\nrevive_everything = true\n",
        "[kill_switch]\ntools = []\nbackends = [\"no-such-backend\"]\n",
        "[kill_switch\ntools = []\n",
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(
            &path,
            revived.replace("[kill_switch]\ntools = [\"m__test_image_*\"]\nbackends = [\"n\"]\n", broken),
        )
        .unwrap();
        sighup(gw.child.id());
        eventually("the reload is refused", || async { refusals(&gw.log()) > i }).await;
        killed("m__test_image_content", "m").await;
        killed("n__echo", "n").await;
    }
    assert_eq!(refusals(&gw.log()), 3);
    audited_exactly(&gw, "killed", 10).await;
    let forwarded: Vec<Value> = mock_log(&log)
        .into_iter()
        .filter(|m| m["method"] == "tools/call" && m["params"]["name"] != "test_simple_text")
        .collect();
    assert!(forwarded.is_empty(), "a killed call reached the backend: {forwarded:?}");
}

#[tokio::test]
async fn rate_limits_are_per_client_per_tool() {
    let limits = "[rate_limit]\ntools = { \"m__echo*\" = { per_minute = 60, burst = 3 } }\n";
    let config = format!("{}{ADMIN_ROLE}{limits}{}", hs256_auth(""), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let alice = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    let bob = HttpClient::modern(&gw.url).with_token(&token("bob", &["admin"]));

    for i in 0..3 {
        let r = alice.call("m__echo", json!({"i": i})).await;
        assert!(r.json()["result"].is_object(), "call {i} within the burst: {r:?}");
    }
    let r = alice.call("m__echo", json!({"i": 3})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["error"]["code"], json!(-32013), "{v}");
    let data = &v["error"]["data"];
    let retry = data["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("{v}"));
    assert!(retry > 0 && retry <= 1000, "retry_after_ms {retry}");
    assert_eq!(data["limit"], json!("60/min burst 3"), "{v}");
    assert_eq!(data["scope"], json!("client+tool"), "{v}");

    // Another client, and another tool of the same client, are not affected.
    for i in 0..3 {
        assert!(bob.call("m__echo", json!({"i": i})).await.json()["result"].is_object(), "bob's call {i}");
    }
    assert!(alice.call("m__whoami", json!({})).await.json()["result"].is_object());

    let records = audited_exactly(&gw, "rate_limited", 1).await;
    assert_eq!((records[0]["client"].as_str(), records[0]["tool"].as_str()), ("alice", "m__echo"));

    // After the advertised wait exactly one more call passes.
    tokio::time::sleep(std::time::Duration::from_millis(retry + 20)).await;
    assert!(alice.call("m__echo", json!({})).await.json()["result"].is_object(), "not refilled after {retry} ms");
    assert_eq!(alice.call("m__echo", json!({})).await.error_code(), Some(-32013));
}

/// A call to `validated` that must be refused: its arguments, the path of every violation,
/// and words the explanation must contain.
struct Invalid {
    what: &'static str,
    args: Value,
    paths: Vec<&'static str>,
    says: Vec<&'static str>,
}

fn invalid_calls() -> Vec<Invalid> {
    let case = |what, args, paths, says| Invalid { what, args, paths, says };
    vec![
        case("missing required", json!({"name": "x"}), vec![""], vec!["\"count\"", "required"]),
        case("wrong type", json!({"name": "x", "count": "two"}), vec!["/count"], vec!["integer"]),
        case("bad format", json!({"name": "x", "count": 1, "email": "not-an-email"}), vec!["/email"], vec!["email"]),
        case("pattern mismatch", json!({"name": "x", "count": 1, "code": "abc-123"}), vec!["/code"], vec!["match"]),
        case(
            "oneOf failure",
            json!({"name": "x", "count": 1, "contact": {"email": "a@example.com", "phone": "+1234567"}}),
            vec!["/contact"],
            vec!["oneOf"],
        ),
        case("extra property", json!({"name": "x", "count": 1, "extra": true}), vec![""], vec!["extra"]),
        case(
            "all at once",
            json!({"count": "two", "email": "nope", "code": "x", "contact": {}, "extra": 1}),
            vec!["", "", "/count", "/email", "/code", "/contact"],
            vec!["\"name\"", "integer", "email", "match", "oneOf", "extra"],
        ),
    ]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn paths(violations: &Value) -> Vec<String> {
    violations
        .as_array()
        .unwrap_or_else(|| panic!("violations: {violations}"))
        .iter()
        .map(|v| {
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            v["path"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn arguments_are_checked_against_the_schema_before_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let c = HttpClient::modern(&gw.url);

    let valid = [
        json!({"name": "x", "count": 2, "email": "a@example.com", "code": "ABC-123", "contact": {"phone": "+1234567"}}),
        json!({"name": "y", "count": 0, "contact": {"email": "b@example.org"}}),
    ];
    for args in &valid {
        let v = c.call("m__validated", args.clone()).await.json();
        assert_ne!(v["result"]["isError"], json!(true), "{v}");
        assert_eq!(v["result"]["content"][0]["text"], json!(format!("validated called with {args}")), "{v}");
    }

    let cases = invalid_calls();
    for Invalid { what, args, paths: expected, says } in &cases {
        let expected = sorted(expected.iter().map(std::string::ToString::to_string).collect());
        let v = c.call("m__validated", args.clone()).await.json();
        let result = &v["result"];
        assert_eq!(result["isError"], json!(true), "{what}: {v}");
        assert_eq!(sorted(paths(&result["_meta"]["dev.sentinel/violations"])), expected, "{what}: {v}");
        // The text names every violation, one line each, with its path.
        let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), expected.len(), "{what}: {text}");
        let line_paths =
            lines.iter().map(|l| l.split(": ").next().unwrap().replace("(root)", "")).collect::<Vec<String>>();
        assert_eq!(sorted(line_paths), expected, "{what}: {text}");
        for word in says {
            assert!(text.contains(word), "{what}: `{word}` not in {text}");
        }
    }

    audited_exactly(&gw, "invalid_args", cases.len()).await;
    let received: Vec<Value> =
        calls_received(&log, "validated").into_iter().map(|m| m["params"]["arguments"].clone()).collect();
    assert_eq!(received, valid, "only the valid calls reached the backend, with their arguments");
}

#[tokio::test]
async fn schema_errors_can_be_answered_as_jsonrpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let config = format!(
        "[validation]\nschema_errors = \"jsonrpc\"\n{}",
        mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()])
    );
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    let cases = invalid_calls();
    for Invalid { what, args, paths: expected, .. } in &cases {
        let r = c.call("m__validated", args.clone()).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        let v = r.json();
        assert_eq!(v["error"]["code"], json!(-32602), "{what}: {v}");
        assert_eq!(v["error"]["data"]["tool"], json!("m__validated"), "{what}: {v}");
        let expected = sorted(expected.iter().map(std::string::ToString::to_string).collect());
        assert_eq!(sorted(paths(&v["error"]["data"]["violations"])), expected, "{what}: {v}");
    }
    audited_exactly(&gw, "invalid_args", cases.len()).await;
    assert!(c.call("m__validated", json!({"name": "ok", "count": 1})).await.json()["result"].is_object());
    assert_eq!(calls_received(&log, "validated").len(), 1, "{:?}", mock_log(&log));
}

/// Without authentication, rate limits still apply: local callers share one client.
#[tokio::test]
async fn rate_limits_apply_without_authentication() {
    let config = mock_stdio_backend("m", None, &[]) + "[rate_limit]\ndefault = { per_minute = 1, burst = 1 }\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    assert!(c.call("m__echo", serde_json::json!({})).await.json()["result"].is_object());
    let r = c.call("m__echo", serde_json::json!({})).await;
    assert_eq!(r.error_code(), Some(-32013), "{r:?}");
}
