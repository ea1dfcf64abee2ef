//! Backends acting for each caller, through the real binary (issue #16, SPEC §7): per-user
//! credentials in an HTTP backend's headers, one stdio child per user with the user's
//! credential in its environment, and the -32018 a caller without one gets.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::governance::{ADMIN_ROLE, hs256_auth, secret_env, token};
use common::{Gateway, HttpClient, MockHttp, eventually, lit, mock_bin, sentinel_bin};
use serde_json::{Value, json};

const KEY: &str = "q8mX0c2pYbW2n9fQk1u3t6vZr5sL4jH7gD0eA1bC2dE=";
const ALICE_SECRET: &str = "ghp_alice-0nly-s3cret-token";
const BOB_SECRET: &str = "ghp_bob-0nly-s3cret-token";

/// A key file of its own (the gateway's folder is made by `Gateway::start`).
fn key_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.key");
    std::fs::write(&path, KEY).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn config(key_path: &str, backend: &str) -> String {
    format!("{}{ADMIN_ROLE}\n[credentials]\nkey_file = {}\n\n{backend}", hs256_auth(""), lit(key_path))
}

/// `sentinel credentials set` on the gateway's own config (so its own store).
fn set_credential(gw: &Gateway, sub: &str, backend: &str, secret: &str) {
    set_credential_in(gw.dir.path(), sub, backend, secret);
}

/// `sentinel credentials set` on the `sentinel.toml` in `dir`.
fn set_credential_in(dir: &std::path::Path, sub: &str, backend: &str, secret: &str) {
    let mut child = Command::new(sentinel_bin())
        .args(["credentials", "set", "--sub", sub, "--backend", backend, "-c"])
        .arg(dir.join("sentinel.toml"))
        .current_dir(dir)
        .envs(secret_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(secret.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "credentials set: {}", String::from_utf8_lossy(&out.stderr));
}

async fn client(gw: &Gateway, sub: &str) -> HttpClient {
    HttpClient::new(&gw.url).with_token(&token(sub, &["admin"])).initialized(json!({})).await
}

/// What `whoami` reported to one caller.
async fn whoami(c: &HttpClient, tool: &str) -> Value {
    let r = c.call(tool, json!({})).await;
    let v = r.json();
    assert!(v["error"].is_null(), "{tool} failed: {v}");
    v["result"]["structuredContent"].clone()
}

fn all_bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            all.extend(std::fs::read(&p).unwrap_or_default());
        } else if p.is_dir() {
            all.extend(all_bytes_under(&p));
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// How many `tools/call` requests a mock logged.
fn calls_logged(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains("\"tools/call\"")).count()
}

/// `sentinel audit --json` on the gateway's store.
fn audit_json(gw: &Gateway) -> Vec<Value> {
    let out = Command::new(sentinel_bin())
        .args(["audit", "--json", "--limit", "1000", "-c"])
        .arg(gw.config_path())
        .current_dir(gw.dir.path())
        .envs(secret_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_reaches_an_http_backend_with_their_own_credential() {
    let (_keys, key_path) = key_file();
    let mock_dir = tempfile::tempdir().unwrap();
    let mock_log = mock_dir.path().join("mock.log");
    // Session-based, so that the backend's own sessions can be told apart too.
    let mock = MockHttp::start(&["--generation", "legacy", "--log", mock_log.to_str().unwrap()]);
    let backend = format!(
        "[[backend]]\nname = \"gh\"\nhttp = {{ url = {}, headers = {{ Authorization = \"Bearer {{credential}}\" }} }}\n\
         credentials = \"per_user\"\n",
        lit(&mock.url)
    );
    let gw = Gateway::start_with_env(&config(&key_path, &backend), &secret_env());
    set_credential(&gw, "alice", "gh", ALICE_SECRET);
    set_credential(&gw, "bob", "gh", &format!("{BOB_SECRET}\n"));

    let (alice, bob, carol) = (client(&gw, "alice").await, client(&gw, "bob").await, client(&gw, "carol").await);
    let a = whoami(&alice, "gh__whoami").await;
    let b = whoami(&bob, "gh__whoami").await;
    assert_eq!(a["headers"]["authorization"], format!("Bearer {ALICE_SECRET}"), "{a}");
    assert_eq!(b["headers"]["authorization"], format!("Bearer {BOB_SECRET}"), "{b}");
    // Each caller has a backend session of their own, kept across calls.
    assert!(a["sessionId"].is_string() && b["sessionId"].is_string(), "{a} {b}");
    assert_ne!(a["sessionId"], b["sessionId"]);
    let a2 = whoami(&alice, "gh__whoami").await;
    assert_eq!(a2["sessionId"], a["sessionId"]);
    // The client's own token never reaches the backend.
    let alice_jwt = alice.token.clone().unwrap();
    assert!(!a.to_string().contains(&alice_jwt), "{a}");

    // A caller without a credential: -32018, the command that sets it, and nothing sent.
    let before = calls_logged(&mock_log);
    let r = carol.call("gh__whoami", json!({})).await.json();
    assert_eq!(r["error"]["code"], -32018, "{r}");
    assert_eq!(r["error"]["data"]["backend"], "gh", "{r}");
    assert_eq!(r["error"]["data"]["reason"], "not_set", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("sentinel credentials set --sub carol --backend gh"), "{message}");
    assert!(!message.contains(ALICE_SECRET) && !message.contains(BOB_SECRET), "{message}");
    assert_eq!(calls_logged(&mock_log), before, "nothing reached the backend for carol");
    assert_eq!(before, 3, "alice's two calls and bob's one reached it");

    // The audit store names the mode, never the secret; so do the log and /metrics.
    let mut records = Vec::new();
    eventually("the four calls in the audit store", || {
        records = audit_json(&gw);
        let done = records.iter().filter(|r| r["method"] == "tools/call").count() >= 4;
        async move { done }
    })
    .await;
    let calls: Vec<&Value> = records.iter().filter(|r| r["method"] == "tools/call").collect();
    assert!(calls.iter().all(|r| r["credential_mode"] == "per_user"), "{calls:?}");
    let refused: Vec<&&Value> = calls.iter().filter(|r| r["client"] == "carol").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["error_code"], -32018);
    assert_eq!(refused[0]["outcome"], "unavailable");
    let metrics = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sentinel_credential_misses_total{backend="gh",reason="not_set"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sentinel_backend_instances{backend="gh"} 2"#), "{metrics}");
    let log = gw.log();
    assert!(log.contains("credential=\"per_user\"") || log.contains("credential=per_user"), "{log}");
    let disk = all_bytes_under(gw.dir.path());
    for secret in [ALICE_SECRET, BOB_SECRET] {
        assert!(!log.contains(secret), "a secret in the log");
        assert!(!metrics.contains(secret), "a secret in /metrics");
        assert!(!contains(&disk, secret), "a secret on disk in the clear (audit store, credential column, spool)");
    }
    assert!(contains(&disk, "alice"), "the scan does see the database");
}

/// One stdio backend, one child per user, with the user's credential in `MOCK_TOKEN`.
fn stdio_backend(extra: &str) -> String {
    format!(
        "[[backend]]\nname = \"jira\"\nstdio = {{ command = {}, env = {{ MOCK_TOKEN = \"{{credential}}\", MOCK_PLAIN = \"same\" }} }}\n\
         credentials = \"per_user\"\ninstances = \"per_user\"\n{extra}\n",
        lit(mock_bin().to_string_lossy())
    )
}

fn alive(pid: u64) -> bool {
    // Signal 0: whether the process exists (a reaped child does not).
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().unwrap().success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_a_child_of_their_own_and_one_crash_stays_theirs() {
    let (_keys, key_path) = key_file();
    let gw = Gateway::start_with_env(&config(&key_path, &stdio_backend("max_instances = 2")), &secret_env());
    for (sub, secret) in [("alice", "jira-alice"), ("bob", "jira-bob"), ("carol", "jira-carol")] {
        set_credential(&gw, sub, "jira", secret);
    }
    let (alice, bob, carol) = (client(&gw, "alice").await, client(&gw, "bob").await, client(&gw, "carol").await);
    let a = whoami(&alice, "jira__whoami").await;
    let b = whoami(&bob, "jira__whoami").await;
    assert_eq!(a["env"], json!({"MOCK_TOKEN": "jira-alice", "MOCK_PLAIN": "same"}), "{a}");
    assert_eq!(b["env"], json!({"MOCK_TOKEN": "jira-bob", "MOCK_PLAIN": "same"}), "{b}");
    let (a_pid, b_pid) = (a["pid"].as_u64().unwrap(), b["pid"].as_u64().unwrap());
    assert_ne!(a_pid, b_pid, "two users, two processes");
    assert_eq!(whoami(&alice, "jira__whoami").await["pid"], a_pid, "a user's calls go to their own child");

    // The cap: a third user's first call is refused, clearly, while two run.
    let r = carol.call("jira__whoami", json!({})).await.json();
    assert_eq!(r["error"]["code"], -32014, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("max_instances"), "{r}");

    // Alice's child dies: bob's calls go on on his; alice's next call gets a new child.
    assert!(Command::new("kill").args(["-9", &a_pid.to_string()]).status().unwrap().success());
    eventually("alice's child gone", || async move { !alive(a_pid) }).await;
    for _ in 0..3 {
        assert_eq!(whoami(&bob, "jira__whoami").await["pid"], b_pid);
    }
    // Her next call starts a new child (within a call or two: the gateway may not have seen
    // the exit yet when the first one comes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let again = loop {
        let r = alice.call("jira__whoami", json!({})).await.json();
        if r["error"].is_null() {
            break r["result"]["structuredContent"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "alice never served again: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_ne!(again["pid"].as_u64().unwrap(), a_pid);
    assert_eq!(again["env"]["MOCK_TOKEN"], "jira-alice");
    let metrics = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sentinel_backend_restarts_total{backend="jira"} 1"#), "{metrics}");
    let log = gw.log();
    for secret in ["jira-alice", "jira-bob", "jira-carol"] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }

    // A graceful stop leaves no user's child behind.
    let mut gw = gw;
    let new_pid = again["pid"].as_u64().unwrap();
    assert!(Command::new("kill").args(["-TERM", &gw.child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    eventually("no user's child left", || async move { !alive(b_pid) && !alive(new_pid) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_children_are_reaped_and_make_room() {
    let (_keys, key_path) = key_file();
    let backend = stdio_backend("max_instances = 1\nidle_timeout = \"300ms\"");
    let gw = Gateway::start_with_env(&config(&key_path, &backend), &secret_env());
    set_credential(&gw, "alice", "jira", "jira-alice");
    set_credential(&gw, "bob", "jira", "jira-bob");
    let (alice, bob) = (client(&gw, "alice").await, client(&gw, "bob").await);
    let pid = whoami(&alice, "jira__whoami").await["pid"].as_u64().unwrap();
    // Unused past idle_timeout, alice's child is stopped, and bob's first call finds room.
    eventually("alice's idle child stopped", || async move { !alive(pid) }).await;
    let b = whoami(&bob, "jira__whoami").await;
    assert_eq!(b["env"]["MOCK_TOKEN"], "jira-bob");
    assert!(gw.log().contains("idle per-user instances stopped"));
}

#[test]
fn the_config_says_what_a_per_user_backend_lacks() {
    let (_keys, key_path) = key_file();
    let dir = tempfile::tempdir().unwrap();
    let check = |body: &str| {
        let path = dir.path().join("sentinel.toml");
        std::fs::write(&path, format!("[server]\nlisten = \"127.0.0.1:0\"\n{body}")).unwrap();
        let out = Command::new(sentinel_bin()).args(["check", "-c"]).arg(&path).envs(secret_env()).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let http = |extra: &str, header: &str| {
        format!(
            "[[backend]]\nname = \"gh\"\nhttp = {{ url = \"http://127.0.0.1:9/mcp\", headers = {{ Authorization = \"{header}\" }} }}\n{extra}\n"
        )
    };
    // No key for the store.
    let out = check(&format!("{}{}", hs256_auth(""), http("credentials = \"per_user\"", "Bearer {credential}")));
    assert!(out.contains("needs its key"), "{out}");
    // A credential that goes nowhere.
    let with_key = format!("{}[credentials]\nkey_file = {}\n", hs256_auth(""), lit(&key_path));
    let out = check(&format!("{with_key}{}", http("credentials = \"per_user\"", "Bearer static")));
    assert!(out.contains("goes nowhere"), "{out}");
    // `{credential}` on a backend shared by everyone.
    let out = check(&format!("{with_key}{}", http("", "Bearer {credential}")));
    assert!(out.contains("has none per caller"), "{out}");
    // A stdio backend with per-user credentials needs a child per user.
    let stdio = "[[backend]]\nname = \"j\"\nstdio = { command = \"x\", env = { T = \"{credential}\" } }\ncredentials = \"per_user\"\n";
    let out = check(&format!("{with_key}{stdio}"));
    assert!(out.contains("instances = \\\"per_user\\\"") || out.contains("instances = \"per_user\""), "{out}");
    // The admin endpoint admits a token role: not without authentication.
    let no_auth =
        format!("[auth]\ndisabled = true\n[credentials]\nkey_file = {}\nadmin_role = \"ops\"\n", lit(&key_path));
    let out = check(&no_auth);
    assert!(out.contains("admin_role") && out.contains("turn authentication on"), "{out}");
    // The working config passes.
    let out = check(&format!("{with_key}{}", http("credentials = \"per_user\"", "Bearer {credential}")));
    assert!(!out.contains("error"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_sets_and_removes_credentials_through_the_admin_endpoint() {
    let (_keys, key_path) = key_file();
    let mock = MockHttp::start(&[]);
    let backend = format!(
        "[[backend]]\nname = \"gh\"\nhttp = {{ url = {}, headers = {{ Authorization = \"Bearer {{credential}}\" }} }}\n\
         credentials = \"per_user\"\n",
        lit(&mock.url)
    );
    let body = config(&key_path, &backend).replace("[credentials]\n", "[credentials]\nadmin_role = \"cred-admin\"\n");
    let gw = Gateway::start_with_env(&body, &secret_env());
    let endpoint = format!("{}/admin/credentials", gw.base());
    let http = reqwest::Client::new();
    let robot = token("deploy-bot", &["cred-admin"]);
    let put = |who: &str, sub: &str, secret: &str| {
        http.put(format!("{endpoint}?sub={sub}&backend=gh")).bearer_auth(who).body(secret.to_string()).send()
    };

    // Only a token with the role.
    let r = http.get(&endpoint).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = put(&token("alice", &["admin"]), "alice", "mine").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("cred-admin"));

    // Set: the answer says what was done, never the secret; the caller's calls carry it at once.
    let r = put(&robot, "alice%40example.com", ALICE_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(ALICE_SECRET), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["subject"].as_str(), v["replaced"].as_bool()), (Some("alice@example.com"), Some(false)));
    let alice = client(&gw, "alice@example.com").await;
    assert_eq!(whoami(&alice, "gh__whoami").await["headers"]["authorization"], format!("Bearer {ALICE_SECRET}"));
    // Replaced: the next call already carries the new one (no wait for the store's re-read).
    let r = put(&robot, "alice%40example.com", BOB_SECRET).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["replaced"], true);
    assert_eq!(whoami(&alice, "gh__whoami").await["headers"]["authorization"], format!("Bearer {BOB_SECRET}"));

    // List: who has one, never the secret.
    let r = http.get(format!("{endpoint}?backend=gh")).bearer_auth(&robot).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("alice@example.com") && !text.contains(BOB_SECRET), "{text}");

    // Bad input is refused with what is wrong.
    let r = put(&robot, "bob", &"x".repeat(20_000)).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = put(&robot, "bob", "two\nlines").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.put(format!("{endpoint}?sub=bob&backend=nope")).bearer_auth(&robot).body("x").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no backend `nope`"));

    // Removed: the caller's next call is refused.
    let r = http.delete(format!("{endpoint}?sub=alice%40example.com&backend=gh")).bearer_auth(&robot).send();
    assert_eq!(r.await.unwrap().status(), 200);
    let r = alice.call("gh__whoami", json!({})).await.json();
    assert_eq!(r["error"]["code"], -32018, "{r}");
    let r = http.delete(format!("{endpoint}?sub=alice%40example.com&backend=gh")).bearer_auth(&robot).send();
    assert_eq!(r.await.unwrap().status(), 404);

    let log = gw.log();
    assert!(log.contains("credential set through /admin/credentials") && log.contains("deploy-bot"), "{log}");
    assert!(!log.contains(ALICE_SECRET) && !log.contains(BOB_SECRET));
}

/// A server that answers nobody without a credential (as GitHub's does) is listed with the
/// stored credential of `list_as`; callers' calls still carry their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lists_only_for_a_user_is_listed_as_list_as() {
    let (_keys, key_path) = key_file();
    let mock = MockHttp::start(&["--require-authorization"]);
    let backend = format!(
        "[[backend]]\nname = \"gh\"\nhttp = {{ url = {}, headers = {{ Authorization = \"Bearer {{credential}}\" }} }}\n\
         credentials = \"per_user\"\nlist_as = \"sentinel-lister\"\n",
        lit(&mock.url)
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", config(&key_path, &backend));
    std::fs::write(dir.path().join("sentinel.toml"), text).unwrap();
    set_credential_in(dir.path(), "sentinel-lister", "gh", "lister-token");
    set_credential_in(dir.path(), "alice", "gh", ALICE_SECRET);
    let gw = Gateway::start_at(std::sync::Arc::new(dir), &secret_env());
    let alice = client(&gw, "alice").await;
    assert!(alice.tool_names().await.contains(&"gh__whoami".to_string()), "listed with list_as's credential");
    let a = whoami(&alice, "gh__whoami").await;
    assert_eq!(a["headers"]["authorization"], format!("Bearer {ALICE_SECRET}"), "{a}");
    // The lister's credential serves no caller's call.
    let r = client(&gw, "carol").await.call("gh__whoami", json!({})).await.json();
    assert_eq!(r["error"]["code"], -32018, "{r}");
    assert!(!gw.log().contains("lister-token"));
}

/// A user's child that will not start is not spawned again on every call: its starts back off
/// (as a shared child's restarts do), and other users are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_will_not_start_backs_off() {
    let (_keys, key_path) = key_file();
    // Exits at once when given the credential `bad`, as a server refusing a revoked token might.
    let script = format!("if [ \"$MOCK_TOKEN\" = bad ]; then exit 1; fi; exec {}", mock_bin().display());
    let backend = format!(
        "[[backend]]\nname = \"jira\"\nstdio = {{ command = \"sh\", args = [\"-c\", {}], env = {{ MOCK_TOKEN = \"{{credential}}\" }} }}\n\
         credentials = \"per_user\"\ninstances = \"per_user\"\n",
        lit(script)
    );
    let gw = Gateway::start_with_env(&config(&key_path, &backend), &secret_env());
    set_credential(&gw, "mallory", "jira", "bad");
    set_credential(&gw, "alice", "jira", "good");
    let mallory = client(&gw, "mallory").await;
    let mut messages = Vec::new();
    for _ in 0..5 {
        let r = mallory.call("jira__whoami", json!({})).await.json();
        assert_eq!(r["error"]["code"], -32014, "{r}");
        messages.push(r["error"]["message"].as_str().unwrap().to_string());
    }
    assert!(messages[0].contains("did not start"), "{messages:?}");
    // The starts back off (500 ms, then twice as long each time): the calls right after a
    // failed start are refused without a start.
    assert!(messages.iter().any(|m| m.contains("next attempt in")), "{messages:?}");
    let starts = gw.log().matches("per-user instance did not start").count();
    assert!(starts < 5, "{starts} starts for 5 calls");
    let a = whoami(&client(&gw, "alice").await, "jira__whoami").await;
    assert_eq!(a["env"]["MOCK_TOKEN"], "good");
}
