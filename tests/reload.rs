//! Hot reload on SIGHUP, on the real binary under concurrent load: backends added, removed
//! and changed, a role, a rate limit and a kill-switch entry changed, with no call that should
//! succeed failing; calls in flight finish on the backend they started on; an invalid file
//! leaves everything serving; rotated auth keys take effect.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::governance::{SECRET, hs256_auth, secret_env, sighup, strip_ansi, token};
use common::*;
use serde_json::json;

/// Processes whose command line mentions `needle` (a backend's unique log path).
fn processes_with(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
        })
        .collect()
}

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn reloads_in_log(gw: &Gateway, what: &str) -> usize {
    strip_ansi(&gw.log()).matches(what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_roles_limits_and_kill_switch_change_under_load_without_failing_a_call() {
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| logs.path().join(name);
    let (changed_a, changed_b, removed, added) =
        (log("changed-a.log"), log("changed-b.log"), log("removed.log"), log("added.log"));
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let v1 = format!(
        "{}[roles.user]\nallow = [\"keep__*\", \"changed__*\", \"removed__*\"]\n\
         [rate_limit]\ntools = {{ \"keep__whoami\" = {{ per_minute = 1, burst = 2 }}, \"changed__whoami\" = {{ per_minute = 1, burst = 1 }} }}\n\
         [kill_switch]\ntools = []\n{}{}{}",
        hs256_auth(""),
        mock_stdio_backend("keep", None, &[]),
        mock_stdio_backend("changed", None, &["--log", &arg(&changed_a)]),
        mock_stdio_backend("removed", None, &["--log", &arg(&removed)]),
    );
    let v2 = format!(
        "{}[roles.user]\nallow = [\"keep__*\", \"changed__*\", \"added__*\"]\ndeny = [\"keep__progress\"]\n\
         [rate_limit]\ntools = {{ \"keep__whoami\" = {{ per_minute = 1, burst = 2 }}, \"changed__whoami\" = {{ per_minute = 1, burst = 3 }} }}\n\
         [kill_switch]\ntools = [\"keep__huge\"]\n{}{}{}",
        hs256_auth(""),
        mock_stdio_backend("keep", None, &[]),
        mock_stdio_backend("changed", None, &["--log", &arg(&changed_b)]),
        mock_stdio_backend("added", None, &["--log", &arg(&added)]),
    );
    let gw = Gateway::start_with_env(&v1, &secret_env());
    let c = HttpClient::modern(&gw.url).with_token(&token("alice", &["user"]));
    let code = |r: &Reply| r.error_code();

    // Rate-limit state before the reload: keep__whoami's burst of 2 is spent, so is changed__whoami's 1.
    for _ in 0..2 {
        assert!(c.call("keep__whoami", json!({})).await.json()["result"].is_object());
    }
    assert_eq!(code(&c.call("keep__whoami", json!({})).await), Some(-32013));
    assert!(c.call("changed__whoami", json!({})).await.json()["result"].is_object());
    assert_eq!(code(&c.call("changed__whoami", json!({})).await), Some(-32013));
    let old_changed = processes_with(&changed_a);
    let old_removed = processes_with(&removed);
    assert_eq!((old_changed.len(), old_removed.len()), (1, 1), "one process per stdio backend");

    // Load that must never fail: calls to backends that stay (one of them restarted by the reload).
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|n| {
            let (c, stop, ok) = (c.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for tool in ["keep__echo", "changed__echo"] {
                        let r = c.call(tool, json!({"n": n})).await;
                        if r.json()["result"]["structuredContent"] == json!({"n": n}) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failures.push(format!("{tool}: {}", r.json()));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    // Calls in flight across the reload, on the backend being replaced and the one being removed.
    let in_flight: Vec<_> = ["changed__slow", "removed__slow"]
        .into_iter()
        .map(|tool| {
            let c = c.clone();
            tokio::spawn(async move { (tool, c.call(tool, json!({"ms": 1500})).await.json()) })
        })
        .collect();
    eventually("load is flowing", || async { ok.load(Ordering::Relaxed) > 20 }).await;
    eventually("the slow calls reached their backends", || async {
        std::fs::read_to_string(&changed_a).unwrap_or_default().contains("\"slow\"")
            && std::fs::read_to_string(&removed).unwrap_or_default().contains("\"slow\"")
    })
    .await;

    std::fs::write(gw.config_path(), &v2).unwrap();
    sighup(gw.child.id());
    eventually("the reload is applied", || async { reloads_in_log(&gw, "config reloaded") == 1 }).await;
    let before = ok.load(Ordering::Relaxed);
    eventually("load flows after the reload", || async { ok.load(Ordering::Relaxed) > before + 20 }).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "calls that should have succeeded failed: {failures:#?}\n{}", gw.log());
    }
    for task in in_flight {
        let (tool, v) = task.await.unwrap();
        assert_eq!(v["result"]["content"][0]["text"], "slept 1500 ms", "{tool} in flight across the reload: {v}");
    }

    // The new config in force: lists, role, kill switch, backends.
    let tools = c.tool_names().await;
    for present in ["keep__echo", "changed__echo", "added__echo"] {
        assert!(tools.iter().any(|t| t == present), "{present} missing: {tools:?}");
    }
    for absent in ["removed__echo", "keep__huge", "keep__progress"] {
        assert!(!tools.iter().any(|t| t == absent), "{absent} still listed: {tools:?}");
    }
    assert_eq!(code(&c.call("keep__progress", json!({})).await), Some(-32011), "the role's new deny");
    assert_eq!(code(&c.call("keep__huge", json!({})).await), Some(-32012), "the new kill-switch entry");
    // The role no longer allows `removed__*`: refused by RBAC, which says nothing of whether it exists.
    assert_eq!(code(&c.call("removed__echo", json!({})).await), Some(-32011), "a removed backend's tool");
    assert_eq!(code(&c.call("added__no_such_tool", json!({})).await), Some(-32602), "an allowed unknown name");
    assert!(c.call("added__echo", json!({})).await.json()["result"].is_object());
    assert!(std::fs::read_to_string(&added).unwrap().contains("\"echo\""));
    // The changed backend's new process serves now (its new --log), the old one got nothing more.
    let a_before = std::fs::read_to_string(&changed_a).unwrap();
    assert!(c.call("changed__echo", json!({"after": true})).await.json()["result"].is_object());
    assert!(std::fs::read_to_string(&changed_b).unwrap().contains("\"after\""));
    assert_eq!(std::fs::read_to_string(&changed_a).unwrap_or_default(), a_before);

    // Rate limits: an unchanged quota keeps its state; a changed one starts full at its new size.
    assert_eq!(code(&c.call("keep__whoami", json!({})).await), Some(-32013), "state survived the reload");
    for _ in 0..3 {
        assert!(c.call("changed__whoami", json!({})).await.json()["result"].is_object());
    }
    assert_eq!(code(&c.call("changed__whoami", json!({})).await), Some(-32013));

    // The retired processes are gone once their calls finished; the removed backend's gauges too.
    eventually("the old processes of the changed and removed backends exit", || async {
        old_changed.iter().chain(&old_removed).all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    })
    .await;
    assert_eq!(processes_with(&changed_b).len(), 1);
    assert_eq!(metric(&gw, "sentinel_backend_up{backend=\"removed\"}").await, None);
    assert_eq!(metric(&gw, "sentinel_backend_up{backend=\"added\"}").await, Some(1.0));
    assert_eq!(metric(&gw, "sentinel_config_reloads_total{result=\"ok\"}").await, Some(1.0));
    let log = strip_ansi(&gw.log());
    assert!(log.contains("backends added: added; changed (restarted): changed; removed: removed"), "{log}");
}

#[tokio::test]
async fn an_invalid_file_leaves_the_running_config_serving_and_counts_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let good =
        format!("[kill_switch]\ntools = []\n{}", mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let gw = Gateway::start(&good);
    let c = HttpClient::modern(&gw.url);
    let pid = processes_with(&log);
    let path = gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let broken = [
        original.replace("[kill_switch]", "[kill_switch\n"),
        original.replace("tools = []", "tools = []\nbogus = 1"),
        original.replace("tools = []", "tools = [\"[\"]"),
        original.replace("[[backend]]", "[[backend]]\nname = \"x\"\n[[backend]]"),
    ];
    for (i, text) in broken.iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        sighup(gw.child.id());
        eventually("the reload is refused", || async { reloads_in_log(&gw, "config reload refused") > i }).await;
        assert!(c.call("m__echo", json!({"i": i})).await.json()["result"].is_object(), "still serving");
    }
    assert_eq!(metric(&gw, "sentinel_config_reloads_total{result=\"error\"}").await, Some(broken.len() as f64));
    assert_eq!(processes_with(&log), pid, "the backend was neither restarted nor stopped");
    // A valid file after all that is applied; what only a restart can change is said to wait for one.
    let fixed = original.replace("tools = []", "tools = [\"m__echo\"]");
    let fixed = fixed.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    assert!(fixed.contains("127.0.0.1:1"));
    std::fs::write(&path, fixed).unwrap();
    sighup(gw.child.id());
    eventually("the fixed file is applied", || async {
        c.call("m__echo", json!({})).await.error_code() == Some(-32012)
    })
    .await;
    // The reload logs its summary once the new config is in force, so a call can see the new
    // config a moment before the line is written.
    eventually("the reload says what waits for a restart", || async {
        strip_ansi(&gw.log()).contains("NOT applied until a restart: server.listen")
    })
    .await;
    assert_eq!(processes_with(&log), pid, "an unchanged backend keeps its process");
}

#[tokio::test]
async fn a_rotated_secret_file_takes_effect_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let auth = format!(
        "[auth]\nhs256_secret_file = \"{}\"\nissuer = \"{}\"\naudience = \"{}\"\n[roles.admin]\nallow = [\"*\"]\n",
        secret.display(),
        common::governance::ISSUER,
        common::governance::AUDIENCE
    );
    let gw = Gateway::start(&(auth + &mock_stdio_backend("m", None, &[])));
    let old = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    assert!(old.call("m__echo", json!({})).await.json()["result"].is_object());

    let rotated = "a-brand-new-secret-of-enough-length-0123456789";
    std::fs::write(&secret, rotated).unwrap();
    sighup(gw.child.id());
    eventually("the old secret's tokens are refused", || async { old.call("m__echo", json!({})).await.status == 401 })
        .await;
    let claims = common::governance::good_claims("bob");
    let new = HttpClient::modern(&gw.url).with_token(&common::governance::sign_hs256(&claims, rotated.as_bytes()));
    assert!(new.call("m__echo", json!({})).await.json()["result"].is_object());
}

/// A gateway bound beyond loopback keeps authenticating when a reload's file moves `listen`
/// to loopback and turns authentication off: `listen` only changes on a restart, so the
/// socket stays public and the reload is refused (logged, counted, and said by
/// `sentinel reload`), never applied.
#[tokio::test]
async fn a_reload_cannot_turn_authentication_off_on_a_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let backend = mock_stdio_backend("m", None, &[]);
    let public = format!(
        "[server]\nlisten = \"0.0.0.0:0\"\nallow_public = true\n{}{}{backend}",
        hs256_auth(""),
        common::governance::ADMIN_ROLE
    );
    std::fs::write(dir.path().join("sentinel.toml"), &public).unwrap();
    let mut gw = Gateway::start_at(Arc::new(dir), &secret_env());
    gw.url = gw.url.replace("0.0.0.0", "127.0.0.1");
    let anonymous = HttpClient::modern(&gw.url);
    assert_eq!(anonymous.call("m__echo", json!({})).await.status, 401);

    let downgrade = format!("[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ndisabled = true\n{backend}");
    std::fs::write(gw.config_path(), &downgrade).unwrap();
    sighup(gw.child.id());
    eventually("the reload is refused", || async { reloads_in_log(&gw, "config reload refused") > 0 }).await;
    assert!(strip_ansi(&gw.log()).contains("turns authentication off"), "{}", gw.log());
    assert_eq!(metric(&gw, "sentinel_config_reloads_total{result=\"error\"}").await, Some(1.0));
    let r =
        anonymous.post_raw(&anonymous.request_body(json!(1), "tools/list", json!({})), &[("host", "localhost")]).await;
    assert_eq!(r.status, 401, "authentication still applies: {r:?}");
    let admin = HttpClient::modern(&gw.url).with_token(&token("alice", &["admin"]));
    assert!(admin.call("m__echo", json!({})).await.json()["result"].is_object(), "the old config serves on");

    let out = std::process::Command::new(sentinel_bin())
        .args(["reload", "-c"])
        .arg(gw.config_path())
        .env("SENTINEL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && stdout.contains("turns authentication off"), "{stdout}");
    assert_eq!(metric(&gw, "sentinel_config_reloads_total{result=\"ok\"}").await, Some(0.0));
}
