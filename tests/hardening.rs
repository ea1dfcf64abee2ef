//! The holes an outside review found (issue #14), each shown closed on the real binary:
//! unauthenticated traffic cannot amplify into the audit trail, names follow backends, resource
//! URIs are judged in normal form, one subject cannot hold every session, secret-looking keys
//! are redacted, the side endpoints check the Host, and RBAC answers alike whether a name
//! exists, is switched off or not.

mod common;

use std::path::Path;

use common::governance::{ADMIN_ROLE, audit_records, hs256_auth, secret_env, strip_ansi, token};
use common::*;
use sentinel::audit::store::{AuditQuery, SqlStore};
use sentinel::audit::{AuditRecord, Outcome};
use serde_json::{Value, json};

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The records stored so far; none while the gateway has not yet created its table (it migrates
/// the store in the background, so it may answer calls before).
async fn store_records(gw: &Gateway) -> Vec<AuditRecord> {
    let store =
        SqlStore::connect(&format!("sqlite://{}", gw.dir.path().join("sentinel-audit.db").display())).await.unwrap();
    match store.query(&AuditQuery { limit: 10_000, ..Default::default() }).await {
        Ok(records) => records,
        // The gateway creates the store in the background and may still be migrating it (a
        // table without its newest columns): nothing to read yet, callers poll.
        Err(e) if ["no such table", "no such column"].iter().any(|m| format!("{e:#}").contains(m)) => Vec::new(),
        Err(e) => panic!("{e:#}"),
    }
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => bytes_under(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Requests without a token whose `method` is 3 MB each: every one is answered 401, and what
/// they leave in the store, the spool and the log is bounded — the method is recorded as
/// `<unknown>`, and past a small burst the refusals are counted instead of recorded.
#[tokio::test]
async fn unauthenticated_megabyte_methods_cost_bounded_bytes() {
    let gw = Gateway::start_with_env(&format!("{}{ADMIN_ROLE}", hs256_auth("")), &secret_env());
    let method = "x".repeat(3 * 1024 * 1024);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string();
    let client = HttpClient::new(&gw.url);
    const SENT: usize = 30;
    for _ in 0..SENT {
        assert_eq!(client.post_raw(&body, &[]).await.status, 401);
    }
    let suppressed = r#"sentinel_audit_suppressed_total{reason="denied_auth_throttled"}"#;
    let dropped = metric(&gw, suppressed).await.unwrap() as usize;
    assert!(dropped > 0, "past the burst, refusals are counted rather than recorded");
    let kept = SENT - dropped;
    eventually("the kept records reach the store", || async { store_records(&gw).await.len() == kept }).await;
    for r in store_records(&gw).await {
        assert_eq!((r.method.as_str(), r.outcome), ("<unknown>", Outcome::DeniedAuth));
    }
    // 30 × 3 MB would be 90 MB in each; a few records are a few kilobytes.
    let store = bytes_under(gw.dir.path()) - bytes_under(&gw.dir.path().join("sentinel-audit-spool"));
    let spool = bytes_under(&gw.dir.path().join("sentinel-audit-spool"));
    let log = gw.log().len() as u64;
    assert!(store < 1024 * 1024 && spool < 256 * 1024 && log < 256 * 1024, "store {store}, spool {spool}, log {log}");
    assert_eq!(strip_ansi(&gw.log()).matches("no longer audited one by one").count(), 1, "said once");
}

/// A backend without a prefix that lists a name in another backend's namespace neither
/// shadows nor extends it, and `sentinel check` refuses a prefix inside another's namespace.
#[tokio::test]
async fn a_backend_cannot_take_names_in_another_backends_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let other_log = dir.path().join("other.log");
    let config = format!(
        "{}{}",
        // Configured first: the old catalog kept the first of two equal names.
        mock_stdio_backend("squat", Some(""), &[]),
        mock_stdio_backend("other", None, &["--log", other_log.to_str().unwrap()])
    );
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    // At run time: the squatting backend's list changes to hold `other__echo` and `other__extra`.
    for name in ["other__echo", "other__extra"] {
        assert!(c.call("add_tool", json!({"name": name})).await.json()["result"].is_object());
    }
    eventually("the clash is logged", || async {
        strip_ansi(&gw.log()).contains("falls in backend `other`'s namespace")
    })
    .await;
    let names = c.tool_names().await;
    assert!(!names.contains(&"other__extra".to_string()), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "other__echo").count(), 1, "{names:?}");
    let r = c.call("other__echo", json!({"marker": "for-other"})).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
    let seen = mock_log(&other_log);
    assert!(seen.iter().any(|m| m.to_string().contains("for-other")), "the call reached `other`: {seen:?}");
    assert_eq!(c.call("other__extra", json!({})).await.error_code(), Some(-32602), "not served at all");

    // The config alone: a prefix inside another's namespace is refused by `sentinel check`.
    let path = dir.path().join("squat.toml");
    let squat = format!(
        "[auth]\ndisabled = true\n{}{}",
        mock_stdio_backend("other", None, &[]),
        mock_stdio_backend("squat", Some("other__x"), &[])
    );
    std::fs::write(&path, squat).unwrap();
    let out = std::process::Command::new(sentinel_bin()).arg("check").arg("-c").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("would fall in backend `other`'s namespace"), "{text}");
}

/// A resource URI with dot-segments, plain or percent-encoded, is refused before policy: it
/// never meets an `allow` glob, and the backend never sees it.
#[tokio::test]
async fn dot_segment_uris_are_refused_before_policy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let config = format!(
        "{}[roles.reader]\nallow = [\"test://template/*\"]\n{}",
        hs256_auth(""),
        mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()])
    );
    let gw = Gateway::start_with_env(&config, &secret_env());
    let c = HttpClient::modern(&gw.url).with_token(&token("rita", &["reader"]));
    let ok = c.request("resources/read", json!({"uri": "test://template/7/data"})).await;
    assert!(ok.json()["result"]["contents"].is_array(), "{ok:?}");
    for uri in ["test://template/../static-text", "test://template/%2E%2E/x/data", "test://template/7/./data"] {
        let r = c.request("resources/read", json!({"uri": uri})).await;
        assert_eq!(r.error_code(), Some(-32602), "{uri}: {r:?}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("normal form"), "{r:?}");
    }
    let seen: Vec<String> = mock_log(&log).iter().map(Value::to_string).collect();
    assert!(!seen.iter().any(|m| m.contains("..") || m.contains("%2E") || m.contains("/./")), "{seen:?}");
}

/// One subject at its session limit loses its longest-idle session for a new one; another
/// subject still gets a session.
#[tokio::test]
async fn one_subject_is_capped_while_another_still_gets_a_session() {
    let config = format!(
        "[server]\nmax_sessions_per_subject = 2\n{}{ADMIN_ROLE}{}",
        hs256_auth(""),
        mock_stdio_backend("m", None, &[])
    );
    // The harness writes its own [server] table first: merge by writing the file here.
    let dir = tempfile::tempdir().unwrap();
    let config = config.replace("[server]\n", "[server]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(dir.path().join("sentinel.toml"), config).unwrap();
    let gw = Gateway::start_at(std::sync::Arc::new(dir), &secret_env());
    let alice = token("alice", &["admin"]);
    let first = HttpClient::new(&gw.url).with_token(&alice).initialized(json!({})).await;
    // Holding a GET stream open does not keep a session from being the one that goes.
    let _held = first.get_stream().await;
    let second = HttpClient::new(&gw.url).with_token(&alice).initialized(json!({})).await;
    let _third = HttpClient::new(&gw.url).with_token(&alice).initialized(json!({})).await;
    let r = first.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "alice's longest-idle session made way: {r:?}");
    assert_eq!(second.request("tools/list", json!({})).await.status, 200);
    let bob = HttpClient::new(&gw.url).with_token(&token("bob", &["admin"])).initialized(json!({})).await;
    assert_eq!(bob.request("tools/list", json!({})).await.status, 200, "bob is not affected by alice's limit");
}

/// `access_token` and its kin are redacted by pattern, without any configured key, and so
/// are credentials in a URI's query string.
#[tokio::test]
async fn secret_looking_argument_keys_are_redacted() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let c = HttpClient::modern(&gw.url);
    let args = json!({
        "access_token": "tok-111", "client_secret": "cs-222", "x-api-key": "key-333",
        "url": "https://api.example/v1?api_key=key-444&q=rust", "query": "kept"
    });
    assert!(c.call("m__echo", args).await.json()["result"].is_object());
    eventually("the record is stored", || async { !store_records(&gw).await.is_empty() }).await;
    let stored = store_records(&gw).await[0].arguments.clone().unwrap();
    for secret in ["tok-111", "cs-222", "key-333", "key-444"] {
        assert!(!stored.contains(secret), "{secret} stored in clear: {stored}");
    }
    assert!(stored.contains("\"query\":\"kept\"") && stored.contains("q=rust"), "{stored}");
}

/// `/metrics`, `/health`, `/ready` and the protected-resource metadata refuse a foreign Host
/// (DNS rebinding), and `/metrics` asks for its bearer token when one is configured.
#[tokio::test]
async fn side_endpoints_check_the_host_and_metrics_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_token = \"${METRICS_TOKEN}\"\n[auth]\ndisabled = true\n";
    std::fs::write(dir.path().join("sentinel.toml"), config).unwrap();
    let gw = Gateway::start_at(std::sync::Arc::new(dir), &[("METRICS_TOKEN", "metrics-token-0123456789")]);
    let http = reqwest::Client::new();
    for path in ["/metrics", "/health", "/ready", "/.well-known/oauth-protected-resource"] {
        let r = http.get(format!("{}{path}", gw.base())).header("host", "evil.example").send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = http.get(format!("{}/metrics", gw.base())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{}/metrics", gw.base())).bearer_auth("wrong-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{}/metrics", gw.base())).bearer_auth("metrics-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sentinel_sessions"));
    assert_eq!(http.get(format!("{}/health", gw.base())).send().await.unwrap().status(), 200);
}

/// A caller who may not use a name gets one answer whether it exists, is switched off or does
/// not exist: -32011 with the same `data`, HTTP 200, audited `denied_rbac`. A caller who may
/// use it learns the difference (-32012 killed, -32602 unknown).
#[tokio::test]
async fn an_unauthorized_caller_cannot_tell_existing_killed_and_missing_tools_apart() {
    let config = format!(
        "{}{ADMIN_ROLE}[roles.echoer]\nallow = [\"m__echo\"]\n[kill_switch]\ntools = [\"m__slow\"]\n{}",
        hs256_auth(""),
        mock_stdio_backend("m", None, &[])
    );
    let gw = Gateway::start_with_env(&config, &secret_env());
    let echoer = HttpClient::modern(&gw.url).with_token(&token("eve", &["echoer"]));
    let mut answers = Vec::new();
    for tool in ["m__whoami", "m__slow", "m__no_such_tool"] {
        let r = echoer.call(tool, json!({})).await;
        let mut error = r.json()["error"].clone();
        error["data"]["tool"] = json!("<name>");
        error["message"] = json!(error["message"].as_str().unwrap().replace(tool, "<name>"));
        answers.push((r.status, error));
    }
    assert_eq!(answers[0].1["code"], -32011, "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");
    let denied: Vec<_> = common::governance::audited(&gw.log(), "denied_rbac");
    assert_eq!(denied.len(), 3, "{:?}", audit_records(&gw.log()));

    let admin = HttpClient::modern(&gw.url).with_token(&token("ann", &["admin"]));
    assert_eq!(admin.call("m__slow", json!({})).await.error_code(), Some(-32012));
    let r = admin.call("m__no_such_tool", json!({})).await;
    assert_eq!((r.error_code(), r.json()["error"]["data"]["tool"].clone()), (Some(-32602), json!("m__no_such_tool")));
}

/// Prompts, resource reads and completions draw from the rate limits too (by the name policy
/// judges), and a `per = "glob"` rule is one bucket for every name it matches.
#[tokio::test]
async fn limits_cover_prompts_resources_and_completions_and_globs_can_share_a_bucket() {
    let config = format!(
        "[rate_limit]\ntools = {{ \"m__test_simple*\" = {{ per_minute = 1, burst = 2, per = \"glob\" }}, \"test://*\" = {{ per_minute = 1, burst = 1 }} }}\n{}",
        mock_stdio_backend("m", None, &[])
    );
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    let read = || c.request("resources/read", json!({"uri": "test://static-text"}));
    assert!(read().await.json()["result"].is_object());
    let r = read().await;
    assert_eq!((r.error_code(), r.json()["error"]["data"]["scope"].clone()), (Some(-32013), json!("client+tool")));
    // The glob's two calls are shared by the prompt and the tool it matches.
    assert!(c.request("prompts/get", json!({"name": "m__test_simple_prompt"})).await.json()["result"].is_object());
    assert!(c.call("m__test_simple_text", json!({})).await.json()["result"].is_object());
    let r = c.call("m__test_simple_text", json!({})).await;
    assert_eq!((r.error_code(), r.json()["error"]["data"]["scope"].clone()), (Some(-32013), json!("client+glob")));
    let r = c
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "m__test_simple_prompt"}, "argument": {"name": "a", "value": "x"}}),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32013), "{r:?}");
}
