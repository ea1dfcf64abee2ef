//! `sentinel kill-switch` against running gateways: a tool or backend switched off from the
//! command line is refused and hidden within a second on every gateway of the audit database,
//! clients are told their lists changed, the change is audited, and it holds across a restart
//! while the database is down.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::PgDb;
use common::proxy::Proxy;
use common::*;
use serde_json::{Value, json};

fn kill_switch(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(sentinel_bin())
        .arg("kill-switch")
        .args(args)
        .arg("-c")
        .arg(config)
        .env("USER", "oncall")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ok(config: &Path, args: &[&str]) -> String {
    let (ok, out) = kill_switch(config, args);
    assert!(ok, "{args:?}: {out}");
    out
}

async fn code_of(c: &HttpClient, tool: &str) -> Option<i64> {
    c.call(tool, json!({"text": "x"})).await.error_code()
}

/// How long until `c` sees `tool` refused (Some) or served again (None), up to 3 s.
async fn until(c: &HttpClient, tool: &str, killed: bool) -> Duration {
    let start = Instant::now();
    loop {
        let refused = code_of(c, tool).await == Some(-32012);
        if refused == killed {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{tool} killed={killed} not seen within 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tool_switched_off_from_the_command_line_is_refused_hidden_announced_and_audited() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let config = gw.config_path();
    let c = HttpClient::modern(&gw.url);
    let legacy = HttpClient::legacy(&gw.url, json!({})).await;
    let mut stream = legacy.get_stream().await;
    assert!(c.tool_names().await.contains(&"m__echo".to_string()));
    assert_eq!(code_of(&c, "m__echo").await, None);

    let out = ok(&config, &["add", "tool", "m__echo", "--reason", "incident 42"]);
    assert!(out.contains("switched off"), "{out}");
    let took = until(&c, "m__echo", true).await;
    eprintln!("applied after {took:?}");
    let v = c.call("m__echo", json!({"text": "x"})).await.json();
    assert_eq!(v["error"]["data"], json!({"tool": "m__echo", "backend": "m"}), "{v}");
    assert!(!c.tool_names().await.contains(&"m__echo".to_string()), "a switched-off tool is not listed");
    let note = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = stream.next().await.expect("the stream stays open");
            if m.contains("notifications/tools/list_changed") {
                return m;
            }
        }
    })
    .await
    .expect("a session is told its tool list changed");
    assert!(note.contains("list_changed"));

    let list = ok(&config, &["list"]);
    assert!(list.contains("m__echo") && list.contains("incident 42") && list.contains("oncall"), "{list}");
    let json_list: Vec<Value> =
        ok(&config, &["list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(json_list.len(), 1);
    assert_eq!(json_list[0]["kind"], "tool");
    assert_eq!(json_list[0]["source"], "kill-switch");

    ok(&config, &["remove", "tool", "m__echo"]);
    until(&c, "m__echo", false).await;
    assert!(c.tool_names().await.contains(&"m__echo".to_string()));

    // A whole backend, too.
    ok(&config, &["add", "backend", "m"]);
    until(&c, "m__echo", true).await;
    ok(&config, &["remove", "backend", "m"]);
    until(&c, "m__echo", false).await;

    // Every change is in the audit trail: who, what, why.
    let out =
        Command::new(sentinel_bin()).args(["audit", "--json", "--limit", "100", "-c"]).arg(&config).output().unwrap();
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let changes: Vec<&Value> =
        records.iter().filter(|r| r["method"].as_str().is_some_and(|m| m.starts_with("kill_switch/"))).collect();
    assert_eq!(changes.len(), 4, "{changes:?}");
    let add = changes.iter().find(|r| r["method"] == "kill_switch/add" && r["tool"] == "m__echo").expect("the add");
    assert!(add["client"].as_str().unwrap().starts_with("oncall"), "{add}");
    assert!(add["arguments"].to_string().contains("incident 42"), "{add}");
}

#[test]
fn mistakes_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\ndisabled = true\n[kill_switch]\ntools = [\"m__danger\"]\n{}",
            mock_stdio_backend("m", None, &[])
        ),
    )
    .unwrap();
    let (okay, out) = kill_switch(&config, &["add", "backend", "mm"]);
    assert!(!okay && out.contains("no backend `mm`") && out.contains("it has: m"), "{out}");
    let (okay, out) = kill_switch(&config, &["add", "tool", "m__[x"]);
    assert!(!okay && out.contains("not a glob"), "{out}");
    let (okay, out) = kill_switch(&config, &["remove", "tool", "m__echo"]);
    assert!(!okay && out.contains("is not switched off"), "{out}");
    let (okay, out) = kill_switch(&config, &["remove", "tool", "m__danger"]);
    assert!(!okay && out.contains("[kill_switch]") && out.contains("sentinel reload"), "{out}");
    let list = ok(&config, &["list"]);
    assert!(list.contains("m__danger") && list.contains("config"), "the config's baseline is listed: {list}");
    let (okay, out) = kill_switch(&config, &["add", "tool", "x", "--reason", &"r".repeat(300)]);
    assert!(!okay && out.contains("longer than"), "{out}");
    std::fs::write(
        &config,
        format!("[auth]\ndisabled = true\n[audit]\nurl = \"none\"\n{}", mock_stdio_backend("m", None, &[])),
    )
    .unwrap();
    let (okay, out) = kill_switch(&config, &["list"]);
    assert!(!okay && out.contains("audit database"), "{out}");
}

/// Two gateways on one PostgreSQL (two replicas): a switch reaches both; a gateway restarted
/// while the database is unreachable keeps refusing what was switched off.
#[tokio::test(flavor = "multi_thread")]
async fn every_gateway_of_the_database_applies_it_and_a_restart_without_the_database_keeps_it() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(db.server_addr()).await;
    let url = db.url_via(proxy.addr);
    let config = format!("[audit]\nurl = \"{url}\"\n{}", mock_stdio_backend("m", None, &[]));
    let a = Gateway::start(&config);
    let b = Gateway::start(&config);
    let (ca, cb) = (HttpClient::modern(&a.url), HttpClient::modern(&b.url));
    assert_eq!(code_of(&ca, "m__echo").await, None);
    assert_eq!(code_of(&cb, "m__echo").await, None);

    let cfg = a.config_path();
    tokio::task::spawn_blocking(move || ok(&cfg, &["add", "tool", "m__ec*", "--reason", "both"])).await.unwrap();
    let (ta, tb) = tokio::join!(until(&ca, "m__echo", true), until(&cb, "m__echo", true));
    eprintln!("applied after {ta:?} and {tb:?}");

    // B goes; the database becomes unreachable; B comes back on its config and spool folder.
    let b_dir = b.dir.clone();
    drop(b);
    proxy.cut();
    let b = Gateway::start_at(b_dir, &[]);
    let cb = HttpClient::modern(&b.url);
    assert_eq!(code_of(&cb, "m__echo").await, Some(-32012), "the last list holds while the database is away");
    assert_eq!(code_of(&ca, "m__echo").await, Some(-32012));

    // The database returns and the entry is removed: both serve again.
    proxy.restore();
    let cfg = a.config_path();
    tokio::task::spawn_blocking(move || ok(&cfg, &["remove", "tool", "m__ec*"])).await.unwrap();
    let (ta, tb) = tokio::join!(until(&ca, "m__echo", false), until(&cb, "m__echo", false));
    eprintln!("revived after {ta:?} and {tb:?}");
}
