//! The audit trail under store faults, through the real binary and real PostgreSQL: a gateway
//! that starts while its store is down, two deployments sharing one spool folder, and a record
//! the database refuses for good.

mod common;

use std::sync::Arc;

use common::pg::PgDb;
use common::proxy::Proxy;
use common::webhook::{bodies, webhook_server};
use common::{Gateway, HttpClient, eventually, lit, mock_stdio_backend, sentinel_bin};
use sentinel::audit::store::{AuditQuery, SqlStore};
use serde_json::{Value, json};

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}{path}", gw.base())).await.expect("GET");
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap()).expect("JSON"))
}

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `n` calls of `m__echo` carrying `marker-i`, each answered.
async fn calls(gw: &Gateway, marker: &str, n: usize) {
    let client = HttpClient::modern(&gw.url);
    for i in 0..n {
        let r = client.call("m__echo", json!({"marker": format!("{marker}-{i}")})).await;
        assert!(r.json()["result"].is_object(), "{r:?}");
    }
}

/// The markers of every record in a store, sorted.
async fn markers(store: &SqlStore) -> Vec<String> {
    let records = store.query(&AuditQuery { limit: usize::MAX, ..AuditQuery::default() }).await.unwrap();
    let mut out: Vec<String> = records
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r.arguments.as_deref()?).ok())
        .filter_map(|a| a["marker"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

fn expected(marker: &str, n: usize) -> Vec<String> {
    let mut out: Vec<String> = (0..n).map(|i| format!("{marker}-{i}")).collect();
    out.sort();
    out
}

async fn start(config: String) -> Gateway {
    // Starting blocks on the gateway's first line: off the runtime the proxy runs on.
    tokio::task::spawn_blocking(move || Gateway::start(&config)).await.unwrap()
}

fn sentinel_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(sentinel_bin()).args(args).output().expect("run sentinel");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// The database is down when the gateway starts: it serves anyway on the spool, says the store
/// is down in `/ready` and `/metrics` (ready stays 200: records are durable in the spool), alerts,
/// and once the database answers, migrates it and stores every record. `sentinel doctor` still
/// fails the unreachable store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_while_its_store_is_down_and_stores_everything_when_it_appears() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(db.server_addr()).await;
    proxy.cut();
    let (hooks, received) = webhook_server().await;
    let config = format!(
        "[audit]\nurl = {}\n[alerts]\n[[alerts.webhook]]\nurl = {}\nformat = \"generic\"\n{}",
        lit(db.url_via(proxy.addr)),
        lit(format!("{hooks}/hook")),
        mock_stdio_backend("m", None, &[])
    );
    let gw = start(config).await;

    calls(&gw, "early", 8).await;
    let (status, ready) = get_json(&gw, "/ready").await;
    assert_eq!(status, 200, "the spool is writable, so the gateway is ready: {ready}");
    assert_eq!(ready["audit"]["store"], "down", "{ready}");
    assert_eq!(ready["audit"]["writable"], true);
    assert_eq!(metric(&gw, "sentinel_audit_store_up").await, Some(0.0));
    let (ok, out) = sentinel_cli(&["doctor", "-c", gw.config_path().to_str().unwrap()]);
    assert!(!ok && out.contains("FAIL  audit store"), "{out}");
    eventually("the store-down alert", || async {
        bodies(&received, "hook").iter().any(|b| b["kind"] == "audit_store_down")
    })
    .await;

    proxy.restore();
    eventually("the store connected and every record stored", || async {
        get_json(&gw, "/ready").await.1["audit"]["store"] == "up"
            && get_json(&gw, "/health").await.1["audit"]["backlog"] == 0
    })
    .await;
    calls(&gw, "late", 4).await;
    eventually("the late records stored", || async { db.store.count().await.is_ok_and(|n| n == 12) }).await;
    let mut want = expected("early", 8);
    want.extend(expected("late", 4));
    want.sort();
    assert_eq!(markers(&db.store).await, want);
    assert_eq!(metric(&gw, "sentinel_audit_store_up").await, Some(1.0));
    drop(gw);
    db.store.close().await;
}

/// Two deployments with different stores whose configs share one spool folder: the first is
/// killed with records pending; the second starts, does not replay them (its store gets only its
/// own records) and reports the folder; the first's store receives them when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_for_different_stores_never_replay_each_others_spool() {
    let spool = tempfile::tempdir().unwrap();
    let (db_a, db_b) = (PgDb::create().await, PgDb::create().await);
    let proxy = Proxy::start(db_a.server_addr()).await;
    let config = |url: &str| {
        format!(
            "[audit]\nurl = {}\nspool_dir = {}\n{}",
            lit(url),
            lit(spool.path().to_string_lossy()),
            mock_stdio_backend("m", None, &[])
        )
    };
    let gw_a = start(config(&db_a.url_via(proxy.addr))).await;
    calls(&gw_a, "a-stored", 3).await;
    eventually("a's first records stored", || async { db_a.store.count().await.is_ok_and(|n| n == 3) }).await;
    proxy.cut();
    calls(&gw_a, "a-pending", 10).await;
    let status = std::process::Command::new("kill").args(["-KILL", &gw_a.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let dir_a = gw_a.dir.clone();
    drop(gw_a);

    let gw_b = start(config(&db_b.url)).await;
    calls(&gw_b, "b", 5).await;
    eventually("b's records stored", || async {
        get_json(&gw_b, "/health").await.1["audit"]["backlog"] == 0 && db_b.store.count().await.is_ok_and(|n| n == 5)
    })
    .await;
    assert_eq!(markers(&db_b.store).await, expected("b", 5), "only b's own records in b's store");
    let (_, ready) = get_json(&gw_b, "/ready").await;
    let foreign = ready["audit"]["foreign_spools"].as_array().expect("foreign_spools").clone();
    assert_eq!(foreign.len(), 1, "{ready}");
    let a_identity = sentinel::audit::store::identity(&db_a.url_via(proxy.addr));
    assert_eq!(foreign[0]["store"], a_identity.as_str(), "{ready}");
    assert_eq!(foreign[0]["owner_running"], false, "{ready}");
    let (_, out) = sentinel_cli(&["doctor", "-c", gw_b.config_path().to_str().unwrap()]);
    assert!(out.lines().any(|l| l.starts_with("warn") && l.contains(&a_identity)), "{out}");

    proxy.restore();
    let gw_a = tokio::task::spawn_blocking(move || Gateway::start_at(dir_a, &[])).await.unwrap();
    eventually("a's pending records stored in a's store", || async { db_a.store.count().await.is_ok_and(|n| n == 13) })
        .await;
    let mut want = expected("a-stored", 3);
    want.extend(expected("a-pending", 10));
    want.sort();
    assert_eq!(markers(&db_a.store).await, want);
    assert!(get_json(&gw_b, "/ready").await.1["audit"]["foreign_spools"].as_array().unwrap().is_empty());
    assert_eq!(db_b.store.count().await.unwrap(), 5);
    drop((gw_a, gw_b));
    db_a.store.close().await;
    db_b.store.close().await;
}

/// A record PostgreSQL refuses for good (here a CHECK constraint the test adds) goes to the
/// dead-letter file with the reason, is counted and alerted, and the records after it are stored;
/// `sentinel audit --dead-letter` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_postgresql_refuses_for_good_is_dead_lettered_and_later_records_are_stored() {
    let db = PgDb::create().await;
    db.store.migrate().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE audit_records ADD CONSTRAINT no_poison CHECK (arguments NOT LIKE '%poison-pill%')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (hooks, received) = webhook_server().await;
    let config = format!(
        "[audit]\nurl = {}\n[alerts]\n[[alerts.webhook]]\nurl = {}\nformat = \"generic\"\n{}",
        lit(&db.url),
        lit(format!("{hooks}/hook")),
        mock_stdio_backend("m", None, &[])
    );
    let gw = Arc::new(start(config).await);
    // One batch holding good records around the refused one.
    let client = HttpClient::modern(&gw.url);
    let sends = (0..12).map(|i| {
        let client = client.clone();
        async move {
            let marker = if i == 5 { "poison-pill".to_string() } else { format!("good-{i}") };
            assert!(client.call("m__echo", json!({"marker": marker})).await.json()["result"].is_object());
        }
    });
    futures::future::join_all(sends).await;
    calls(&gw, "after", 5).await;
    eventually("every record stored or dead-lettered", || async {
        get_json(&gw, "/health").await.1["audit"]["backlog"] == 0 && db.store.count().await.is_ok_and(|n| n == 16)
    })
    .await;
    let stored = markers(&db.store).await;
    assert!(!stored.iter().any(|m| m == "poison-pill"));
    assert_eq!(stored.iter().filter(|m| m.starts_with("after-")).count(), 5, "{stored:?}");
    assert_eq!(get_json(&gw, "/health").await.1["audit"]["dead_lettered"], 1);
    assert_eq!(metric(&gw, r#"sentinel_audit_records_total{result="dead_lettered"}"#).await, Some(1.0));
    eventually("the dead-letter alert", || async {
        bodies(&received, "hook").iter().any(|b| b["kind"] == "audit_dead_letter")
    })
    .await;

    let (ok, out) = sentinel_cli(&["audit", "-c", gw.config_path().to_str().unwrap(), "--dead-letter", "--json"]);
    assert!(ok, "{out}");
    let letter: Value = serde_json::from_str(out.lines().next().unwrap()).expect("a letter per line");
    assert!(letter["reason"].as_str().unwrap().contains("no_poison"), "{letter}");
    assert!(letter["record"]["arguments"].as_str().unwrap().contains("poison-pill"), "{letter}");
    let (ok, table) = sentinel_cli(&["audit", "-c", gw.config_path().to_str().unwrap(), "--dead-letter"]);
    assert!(ok && table.contains("m__echo") && table.contains("refused:"), "{table}");
    drop(gw);
    db.store.close().await;
}
