//! The audit trail end to end, through the real `sentinel` binary and real stores: one right
//! record per call in PostgreSQL and SQLite (secrets redacted, read back with `sentinel audit`),
//! nothing lost or doubled through a database outage or a `kill -9`, and `on_audit_failure`
//! when not even the spool can be written.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::governance::{ADMIN_ROLE, hs256_auth, secret_env, token};
use common::pg::PgDb;
use common::proxy::Proxy;
use common::{
    Gateway, HttpClient, MODERN, StdioClient, eventually, lit, mock_log, mock_stdio_backend, modern_params,
    sentinel_bin, sse_messages,
};
use sentinel::audit::store::{AuditQuery, SqlStore};
use sentinel::audit::{AuditRecord, Outcome};
use serde_json::{Value, json};

const SECRET_ARG: &str = "hunter2";

/// The gateway's `/health` JSON.
async fn health(gw: &Gateway) -> Value {
    let body = reqwest::get(format!("{}/health", gw.base())).await.expect("GET /health").text().await.unwrap();
    serde_json::from_str(&body).expect("health JSON")
}

async fn audit_stat(gw: &Gateway, key: &str) -> u64 {
    health(gw).await["audit"][key].as_u64().unwrap_or_else(|| panic!("no audit.{key} in /health"))
}

/// Every record in the store, oldest first (ids are UUIDv7: id order is arrival order).
async fn stored(store: &SqlStore) -> Vec<AuditRecord> {
    let mut records = store.query(&AuditQuery { limit: usize::MAX, ..AuditQuery::default() }).await.unwrap();
    records.sort_by_key(|r| r.id);
    records
}

/// The SQLite store a gateway keeps by default, beside its config.
async fn default_sqlite(gw: &Gateway) -> SqlStore {
    SqlStore::connect(&format!("sqlite://{}", gw.dir.path().join("sentinel-audit.db").display())).await.unwrap()
}

/// Waits until the writer has stored everything it spooled and the store holds `n` records.
async fn settled(gw: &Gateway, store: &SqlStore, n: u64) {
    eventually(&format!("the spool drained and {n} records stored"), || async {
        audit_stat(gw, "backlog").await == 0 && store.count().await.is_ok_and(|c| c == n)
    })
    .await;
}

/// `sentinel audit -c CONFIG --json --limit N`, parsed.
fn cli_records(config: &Path, limit: usize) -> (Vec<AuditRecord>, String) {
    let out = std::process::Command::new(sentinel_bin())
        .arg("audit")
        .arg("-c")
        .arg(config)
        .args(["--json", "--limit", &limit.to_string()])
        .envs(secret_env())
        .output()
        .expect("run sentinel audit");
    assert!(out.status.success(), "sentinel audit failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let records =
        text.lines().map(|l| sentinel::audit::query::parse_json_line(l).expect("a record per line")).collect();
    (records, text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (database, WAL, spool segments, the gateway's log).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

fn args_of(r: &AuditRecord) -> Value {
    serde_json::from_str(r.arguments.as_deref().expect("arguments recorded")).expect("arguments are JSON")
}

/// What one call of the mix should leave in the trail.
struct Expect {
    outcome: Outcome,
    tool: Option<&'static str>,
    backend: Option<&'static str>,
    client: Option<&'static str>,
    roles: &'static [&'static str],
    error_code: Option<i64>,
    /// Whether a backend answered (so the record has the backend's latency).
    answered_by_backend: bool,
}

const fn expect(outcome: Outcome, tool: &'static str, client: &'static str, roles: &'static [&'static str]) -> Expect {
    Expect {
        outcome,
        tool: Some(tool),
        backend: Some("m"),
        client: Some(client),
        roles,
        error_code: None,
        answered_by_backend: false,
    }
}

/// The mix: every outcome a call can have, one call each (two for rate limiting), by an admin
/// over a session, a reader without one, and a caller with a forged token.
async fn records_are_right(
    audit_section: &str,
    open_store: impl AsyncFnOnce(&Gateway) -> SqlStore,
) -> (Gateway, SqlStore) {
    let config = format!(
        "{}{ADMIN_ROLE}[roles.reader]\nallow = [\"m__echo\", \"m__whoami\"]\n\
         [rate_limit]\ntools = {{ \"m__test_simple_text\" = {{ per_minute = 1, burst = 1 }} }}\n\
         [kill_switch]\ntools = [\"m__crash\"]\n{audit_section}\n{}",
        hs256_auth(""),
        mock_stdio_backend("m", None, &[])
    );
    let gw = Gateway::start_with_env(&config, &secret_env());
    let (admin_token, reader_token) = (token("ann", &["admin"]), token("rita", &["reader"]));
    let forged = format!("{}x", admin_token.rsplit_once('.').unwrap().0) + ".AAAA";
    let admin = HttpClient::new(&gw.url).with_token(&admin_token).initialized(json!({})).await;
    let reader = HttpClient::modern(&gw.url).with_token(&reader_token);
    let intruder = HttpClient::modern(&gw.url).with_token(&forged);

    let secret_args = json!({"user": "ann", "nested": {"PassWord": SECRET_ARG, "list": [{"token": "t0k3n-value"}]}});
    let big_args = json!({"text": "zoë ☃ 検索 🤖 \"quoted\" \\ \u{0007} ".repeat(20_000), "n": 1.5});
    assert!(big_args.to_string().len() > 500_000);

    let mut expected = Vec::new();
    let r = admin.call("m__echo", secret_args.clone()).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
    expected.push(Expect { answered_by_backend: true, ..expect(Outcome::Ok, "m__echo", "ann", &["admin"]) });

    let r = admin.call("m__test_error_handling", json!({})).await;
    assert_eq!(r.json()["result"]["isError"], true, "{r:?}");
    expected.push(Expect {
        answered_by_backend: true,
        ..expect(Outcome::ToolError, "m__test_error_handling", "ann", &["admin"])
    });

    // The mock answers a nameless add_tool with a JSON-RPC error of its own.
    let r = admin.call("m__add_tool", json!({"name": ""})).await;
    assert_eq!(r.error_code(), Some(-32602), "{r:?}");
    expected.push(Expect {
        error_code: Some(-32602),
        answered_by_backend: true,
        ..expect(Outcome::BackendError, "m__add_tool", "ann", &["admin"])
    });

    let r = admin.call("m__no_such_tool", json!({"q": 1})).await;
    assert_eq!(r.error_code(), Some(-32602), "{r:?}");
    expected.push(Expect {
        backend: None,
        error_code: Some(-32602),
        ..expect(Outcome::InvalidArgs, "m__no_such_tool", "ann", &["admin"])
    });

    let r = reader.call("m__test_simple_text", json!({})).await;
    assert_eq!(r.error_code(), Some(-32011), "{r:?}");
    // RBAC judges the name before it is resolved: a refused caller's record names no backend.
    expected.push(Expect {
        backend: None,
        error_code: Some(-32011),
        ..expect(Outcome::DeniedRbac, "m__test_simple_text", "rita", &["reader"])
    });

    let r = admin.call("m__test_simple_text", json!({})).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
    expected
        .push(Expect { answered_by_backend: true, ..expect(Outcome::Ok, "m__test_simple_text", "ann", &["admin"]) });
    let r = admin.call("m__test_simple_text", json!({})).await;
    assert_eq!(r.error_code(), Some(-32013), "{r:?}");
    expected.push(Expect {
        error_code: Some(-32013),
        ..expect(Outcome::RateLimited, "m__test_simple_text", "ann", &["admin"])
    });

    let r = admin.call("m__validated", json!({"unexpected": true})).await;
    assert_eq!(r.json()["result"]["isError"], true, "{r:?}");
    expected.push(expect(Outcome::InvalidArgs, "m__validated", "ann", &["admin"]));

    let r = admin.call("m__crash", json!({})).await;
    assert_eq!(r.error_code(), Some(-32012), "{r:?}");
    expected.push(Expect { error_code: Some(-32012), ..expect(Outcome::Killed, "m__crash", "ann", &["admin"]) });

    let r = admin.call("m__whoami", json!({})).await;
    let backend_saw = r.json()["result"]["structuredContent"]["meta"]["dev.sentinel/requestId"].clone();
    assert!(backend_saw.is_string(), "the backend got no request id: {r:?}");
    expected.push(Expect { answered_by_backend: true, ..expect(Outcome::Ok, "m__whoami", "ann", &["admin"]) });

    let r = reader.call("m__echo", big_args.clone()).await;
    assert_eq!(r.json()["result"]["structuredContent"], big_args);
    expected.push(Expect { answered_by_backend: true, ..expect(Outcome::Ok, "m__echo", "rita", &["reader"]) });

    let r = intruder.call("m__echo", json!({})).await;
    assert_eq!((r.status, r.error_code()), (401, Some(-32010)), "{r:?}");
    expected.push(Expect {
        tool: None,
        backend: None,
        client: None,
        roles: &[],
        error_code: Some(-32010),
        ..expect(Outcome::DeniedAuth, "", "", &[])
    });

    let store = open_store(&gw).await;
    settled(&gw, &store, expected.len() as u64).await;
    let records = stored(&store).await;

    // The real CLI reads the very same records.
    let (mut from_cli, cli_text) = cli_records(&gw.config_path(), 100);
    from_cli.sort_by_key(|r| r.id);
    assert_eq!(from_cli, records, "`sentinel audit --json` disagrees with the store");

    let session = admin.session.clone();
    for (i, (r, want)) in records.iter().zip(&expected).enumerate() {
        let at = format!("record {i} ({:?} {:?}): {r:?}", want.outcome, want.tool);
        assert_eq!(r.outcome, want.outcome, "{at}");
        assert_eq!(r.tool.as_deref(), want.tool, "{at}");
        assert_eq!(r.backend.as_deref(), want.backend, "{at}");
        assert_eq!(r.client.as_deref(), want.client, "{at}");
        assert_eq!(r.roles, want.roles, "{at}");
        assert_eq!(r.error_code, want.error_code, "{at}");
        assert_eq!((r.transport.as_str(), r.method.as_str()), ("http", "tools/call"), "{at}");
        assert!(r.latency_ms > 0.0, "{at}");
        if want.answered_by_backend {
            assert!(r.backend_latency_ms.is_some_and(|l| l > 0.0 && l <= r.latency_ms), "{at}");
        } else {
            assert_eq!(r.backend_latency_ms, None, "{at}");
        }
        // Every answer that is a result (or the backend's error) counts its bytes.
        if want.answered_by_backend || want.error_code.is_none() {
            assert!(r.response_bytes > 0, "{at}");
        }
        if want.client == Some("ann") {
            assert_eq!(r.session, session, "{at}");
        }
    }
    assert_eq!(records.len(), expected.len());

    // Redacted at any depth, case-insensitively; the other values kept.
    assert_eq!(
        args_of(&records[0]),
        json!({"user": "ann", "nested": {"PassWord": "[redacted]", "list": [{"token": "[redacted]"}]}})
    );
    assert_eq!(args_of(&records[3]), json!({"q": 1}), "an unknown tool's arguments are kept too");
    // The record id is the request id the backend was given.
    assert_eq!(json!(records[9].id.to_string()), backend_saw);
    // Half a megabyte of unicode, escapes included, stored exactly.
    assert_eq!(args_of(&records[10]), big_args);
    assert!(records[10].response_bytes as usize > 2 * 500_000);

    // Neither the secret argument nor any token is anywhere: store, spool, log, CLI output.
    let needles = [SECRET_ARG, "t0k3n-value", &admin_token, &reader_token, &forged];
    let signature = |t: &str| t.rsplit_once('.').unwrap().1.to_string();
    let signatures = [signature(&admin_token), signature(&reader_token)];
    for needle in needles.iter().copied().chain(signatures.iter().map(String::as_str)) {
        assert!(!cli_text.contains(needle), "`sentinel audit` printed {needle}");
        for file in files_under(gw.dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!contains(&bytes, needle.as_bytes()), "{} holds {needle}", file.display());
        }
    }
    (gw, store)
}

#[tokio::test]
async fn every_call_leaves_one_right_record_in_postgres() {
    let db = PgDb::create().await;
    let url = db.url.clone();
    let (gw, store) =
        records_are_right(&format!("[audit]\nurl = {}\n", lit(&url)), async |_| SqlStore::connect(&url).await.unwrap())
            .await;
    // The whole database, as `pg_dump` sees it, holds no secret either.
    let dump = std::process::Command::new("pg_dump").arg(&db.url).output().expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("m__whoami") && dump.contains("[redacted]"), "pg_dump missed the records");
    assert!(!dump.contains(SECRET_ARG) && !dump.contains("t0k3n-value") && !dump.contains("eyJ"), "{dump:.2000}");
    store.close().await;
    drop(gw);
}

#[tokio::test]
async fn every_call_leaves_one_right_record_in_sqlite_by_default() {
    let (_gw, store) = records_are_right("", async |gw| default_sqlite(gw).await).await;
    store.close().await;
}

/// Clients calling `m__echo` as fast as they are answered, each call with a unique marker in
/// its arguments, until stopped. Counts the markers whose calls were answered OK.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<Mutex<Vec<String>>>,
    sent: Arc<Mutex<BTreeSet<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            sent: Arc::default(),
            failed: Arc::default(),
            clients: Vec::new(),
        };
        let clients = (0..clients)
            .map(|c| {
                let (url, stop, ok, sent, failed) =
                    (url.to_string(), load.stop.clone(), load.ok.clone(), load.sent.clone(), load.failed.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let marker = format!("c{c}-{n}");
                        n += 1;
                        sent.lock().unwrap().insert(marker.clone());
                        match echo(&http, &url, &marker).await {
                            Ok(()) => ok.lock().unwrap().push(marker),
                            Err(e) => {
                                failed.lock().unwrap().push(e);
                                // A dead gateway refuses at once: do not spin.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { clients, ..load }
    }

    fn answered_ok(&self) -> usize {
        self.ok.lock().unwrap().len()
    }

    /// Stops the clients; returns the markers answered OK, every marker sent, and the failures.
    async fn stop(self) -> (Vec<String>, BTreeSet<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.await.unwrap();
        }
        fn take<T: Default>(m: &Mutex<T>) -> T {
            std::mem::take(&mut *m.lock().unwrap())
        }
        (take(&self.ok), take(&self.sent), take(&self.failed))
    }
}

/// One stateless `tools/call` of `m__echo`; `Ok` when answered with a result.
async fn echo(http: &reqwest::Client, url: &str, marker: &str) -> Result<(), String> {
    let body = HttpClient::modern(url).request_body(
        json!(marker),
        "tools/call",
        json!({"name": "m__echo", "arguments": {"marker": marker}}),
    );
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "m__echo")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{marker}: {e}"))?;
    let text = resp.text().await.map_err(|e| format!("{marker}: {e}"))?;
    let message = if text.starts_with('{') { text.clone() } else { sse_messages(&text).pop().unwrap_or_default() };
    let v: Value = serde_json::from_str(&message).map_err(|e| format!("{marker}: {e}: {text}"))?;
    if v["result"]["structuredContent"]["marker"] == marker { Ok(()) } else { Err(format!("{marker}: {v}")) }
}

/// How many records each marker has in the store (records of other calls are ignored).
fn markers(records: &[AuditRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        if let Some(m) = args_of(r)["marker"].as_str() {
            *counts.entry(m.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn assert_no_duplicates(counts: &BTreeMap<String, usize>) {
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
}

/// A gateway whose PostgreSQL store is reached through a proxy that can cut it off; `extra`
/// goes into its `[audit]` table.
async fn gateway_behind_proxy(extra: &str) -> (PgDb, Proxy, Gateway) {
    let db = PgDb::create().await;
    let proxy = Proxy::start(db.server_addr()).await;
    let config =
        format!("[audit]\nurl = {}\n{extra}\n{}", lit(db.url_via(proxy.addr)), mock_stdio_backend("m", None, &[]));
    // Starting blocks on the gateway's first line: off the runtime the proxy runs on.
    let gw = tokio::task::spawn_blocking(move || Gateway::start(&config)).await.unwrap();
    (db, proxy, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_loses_and_doubles_nothing() {
    let (db, proxy, gw) = gateway_behind_proxy("").await;
    let load = Load::start(&gw.url, 8);
    eventually("calls flowing", || async { load.answered_ok() >= 20 }).await;

    proxy.cut();
    let before_cut = load.answered_ok();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the outage itself, not a wait
    let during_cut = load.answered_ok() - before_cut;
    let backlog_in_outage = audit_stat(&gw, "backlog").await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(1000)).await; // load goes on after the outage
    let (ok, _, failed) = load.stop().await;

    assert!(failed.is_empty(), "calls failed though the spool was writable: {failed:?}");
    assert!(during_cut >= 10, "only {during_cut} calls answered during the outage");
    assert!(backlog_in_outage > 0, "nothing waited in the spool during the outage");
    settled(&gw, &db.store, ok.len() as u64).await;
    let counts = markers(&stored(&db.store).await);
    assert_no_duplicates(&counts);
    let stored: BTreeSet<&String> = counts.keys().collect();
    let answered: BTreeSet<&String> = ok.iter().collect();
    assert_eq!(stored.len(), answered.len());
    assert!(stored == answered, "lost: {:?}", answered.difference(&stored).take(10).collect::<Vec<_>>());
    assert!(gw.log().contains("audit store reachable again"), "{}", gw.log());
    db.store.close().await;
}

/// The default `durability = "write"`: an answered call's record is in the kernel, not yet
/// on disk, which a `kill -9` does not lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_stores_every_answered_call_once() {
    kill_9_under_load_then_restart("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_stores_every_answered_call_once_with_durability_fsync() {
    kill_9_under_load_then_restart("durability = \"fsync\"").await;
}

async fn kill_9_under_load_then_restart(audit_extra: &str) {
    let (db, proxy, gw) = gateway_behind_proxy(audit_extra).await;
    let load = Load::start(&gw.url, 4);
    eventually("calls flowing", || async { load.answered_ok() >= 20 }).await;
    // With the store cut off, what follows stays in the spool: the restart has to replay it.
    proxy.cut();
    let at_cut = load.answered_ok();
    eventually("calls answered from the spool", || async { load.answered_ok() >= at_cut + 40 }).await;
    let first_pid = gw.child.id();
    let status = std::process::Command::new("kill").args(["-KILL", &first_pid.to_string()]).status().unwrap();
    assert!(status.success());
    let (ok, sent, _) = load.stop().await;
    let dir = gw.dir.clone();
    drop(gw);
    proxy.restore();

    let gw = tokio::task::spawn_blocking(move || Gateway::start_at(dir, &[])).await.unwrap();
    eventually("the spool replayed", || async { audit_stat(&gw, "backlog").await == 0 }).await;
    assert!(audit_stat(&gw, "replayed").await > 0, "nothing was replayed");
    let records = stored(&db.store).await;
    // Every call was answered by the first process: its records name it as their replica,
    // also those the second process replayed from the spool.
    let first = format!("-{first_pid}");
    let others: Vec<_> =
        records.iter().filter(|r| !r.replica.as_deref().is_some_and(|id| id.ends_with(&first))).collect();
    assert!(others.is_empty(), "records not naming replica *{first}: {:?}", &others[..others.len().min(3)]);
    let counts = markers(&records);
    assert_no_duplicates(&counts);
    let lost: Vec<_> = ok.iter().filter(|m| !counts.contains_key(*m)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered calls lost, e.g. {:?}",
        lost.len(),
        ok.len(),
        &lost[..lost.len().min(10)]
    );
    let unknown: Vec<_> = counts.keys().filter(|m| !sent.contains(*m)).collect();
    assert!(unknown.is_empty(), "records of calls never made: {unknown:?}");
    db.store.close().await;
}

/// Replaces the spool folder with a regular file while the gateway runs; calls with big
/// arguments (`blob` bytes, echoed: a result of about twice that) fill the open segment until a
/// new one must be made, which then fails. Returns how many calls were answered OK, the
/// folder's new place, and whether the call whose record could not be written had its response
/// cut off (rather than answered -32016).
async fn break_the_spool(gw: &Gateway, client: &HttpClient, fail_open: bool, blob: usize) -> (u64, PathBuf, bool) {
    let spool = gw.dir.path().join("sentinel-audit-spool");
    let moved = gw.dir.path().join("spool-moved-away");
    std::fs::rename(&spool, &moved).unwrap();
    std::fs::write(&spool, "not a folder").unwrap();
    let big = json!({"blob": "x".repeat(blob)});
    let mut ok = 0;
    // The default segment holds 8 MiB: each record holds the call's arguments.
    for _ in 0..(8 << 20) / blob + 20 {
        let Some(r) = client.try_call("m__echo", big.clone()).await else {
            assert!(!fail_open, "fail_open cut a response off");
            assert!(audit_stat(gw, "failed").await > 0, "a response cut off with no lost record");
            return (ok, moved, true);
        };
        if r.json()["result"].is_object() {
            ok += 1;
        } else {
            assert!(!fail_open, "fail_open refused a call: {:.300}", r.body);
            assert_eq!(r.error_code(), Some(-32016), "{:.300}", r.body);
        }
        if audit_stat(gw, "failed").await > 0 {
            assert_eq!(fail_open, r.json()["result"].is_object(), "{:.300}", r.body);
            return (ok, moved, false);
        }
    }
    panic!("calls of {blob} bytes did not run into the unwritable spool");
}

/// Puts the spool folder back; the writer's probe notices and calls flow again.
async fn repair_the_spool(gw: &Gateway, client: &HttpClient, moved: &Path) {
    let spool = gw.dir.path().join("sentinel-audit-spool");
    std::fs::remove_file(&spool).unwrap();
    std::fs::rename(moved, &spool).unwrap();
    eventually("the spool writable again", || async { health(gw).await["audit"]["writable"] == true }).await;
    let r = client.call("m__echo", json!({"after": "repair"})).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
}

#[tokio::test]
async fn fail_closed_refuses_calls_while_the_spool_cannot_be_written() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let client = HttpClient::modern(&gw.url);
    assert!(client.call("m__echo", json!({"before": 1})).await.json()["result"].is_object());
    // A result of 2 MiB flows before its end (and record) is reached: the call whose record
    // cannot be written has its response cut off, never completed.
    let (ok, moved, cut_off) = break_the_spool(&gw, &client, false, 1024 * 1024).await;
    assert!(cut_off, "a 2 MiB result was not streamed");

    assert_eq!(health(&gw).await["audit"]["writable"], false);
    for _ in 0..3 {
        let r = client.call("m__echo", json!({"small": true})).await;
        assert_eq!(r.error_code(), Some(-32016), "{r:?}");
    }
    assert!(gw.log().contains("fail_closed: calls refused"), "{}", gw.log());

    repair_the_spool(&gw, &client, &moved).await;
    // Every call answered OK has its record; the refused ones and the one whose record could
    // not be written have none.
    let store = default_sqlite(&gw).await;
    settled(&gw, &store, 1 + ok + 1).await;
    assert!(stored(&store).await.iter().all(|r| r.outcome == Outcome::Ok));
    store.close().await;
}

/// A result below the streaming threshold (256 KiB) is held until its record is written: under
/// fail-closed the call whose record cannot be written is answered -32016 like any other call,
/// its response never started.
#[tokio::test]
async fn fail_closed_answers_a_result_below_the_streaming_threshold_with_minus_32016() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let client = HttpClient::modern(&gw.url);
    assert!(client.call("m__echo", json!({"before": 1})).await.json()["result"].is_object());
    // Echoed twice (text and structuredContent): results of about 200 KiB.
    let (ok, moved, cut_off) = break_the_spool(&gw, &client, false, 100 * 1024).await;
    assert!(!cut_off, "a result below the threshold was cut off instead of answered -32016");
    assert!(ok > 0);
    let r = client.call("m__echo", json!({"small": true})).await;
    assert_eq!(r.error_code(), Some(-32016), "{r:?}");

    repair_the_spool(&gw, &client, &moved).await;
    let store = default_sqlite(&gw).await;
    settled(&gw, &store, 1 + ok + 1).await;
    assert!(stored(&store).await.iter().all(|r| r.outcome == Outcome::Ok));
    store.close().await;
}

#[tokio::test]
async fn fail_open_lets_calls_through_and_counts_the_lost_records() {
    let config = format!("[audit]\non_audit_failure = \"fail_open\"\n{}", mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start(&config);
    let client = HttpClient::modern(&gw.url);
    assert!(client.call("m__echo", json!({"before": 1})).await.json()["result"].is_object());
    let (ok, moved, _) = break_the_spool(&gw, &client, true, 1024 * 1024).await;
    assert_eq!(health(&gw).await["audit"]["writable"], false);
    let failed = audit_stat(&gw, "failed").await;
    for i in 1..=3 {
        let r = client.call("m__echo", json!({"small": i})).await;
        assert!(r.json()["result"].is_object(), "{r:?}");
        assert_eq!(audit_stat(&gw, "failed").await, failed + i);
    }
    assert!(gw.log().contains("fail_open: calls proceed unaudited"), "{}", gw.log());

    repair_the_spool(&gw, &client, &moved).await;
    let store = default_sqlite(&gw).await;
    // The calls whose records were lost are exactly the ones counted as failed.
    settled(&gw, &store, 1 + ok - failed + 1).await;
    store.close().await;
}

#[tokio::test]
async fn stdio_calls_are_recorded_with_their_transport() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(&config, format!("[auth]\ndisabled = true\n{}", mock_stdio_backend("m", None, &[]))).unwrap();
    let mut client = StdioClient::spawn(&sentinel_bin(), &["stdio", "-c", config.to_str().unwrap()], Some(dir.path()));
    let r =
        client.request_modern(json!(1), "tools/call", json!({"name": "m__echo", "arguments": {"via": "stdio"}})).await;
    assert!(r.contains("\"result\""), "{r}");
    let store =
        SqlStore::connect(&format!("sqlite://{}", dir.path().join("sentinel-audit.db").display())).await.unwrap();
    // The gateway migrates its store in the background: the table may not be there yet.
    eventually("the stdio call stored", || async { store.count().await.is_ok_and(|n| n == 1) }).await;
    let r = &stored(&store).await[0];
    assert_eq!((r.transport.as_str(), r.tool.as_deref(), r.outcome), ("stdio", Some("m__echo"), Outcome::Ok), "{r:?}");
    assert_eq!(args_of(r), json!({"via": "stdio"}));
    store.close().await;
}

/// `sentinel serve` and `sentinel stdio` (e.g. one per Claude Code session) on one config share
/// one configured spool folder: each process writes in a locked folder of its own, so neither
/// takes the other's live segments for left-overs.
#[tokio::test]
async fn two_processes_on_one_config_lose_no_records() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let http = HttpClient::modern(&gw.url);
    assert!(http.call("m__echo", json!({"n": 0})).await.json()["result"].is_object());
    let config = gw.config_path();
    let mut stdio =
        StdioClient::spawn(&sentinel_bin(), &["stdio", "-c", config.to_str().unwrap()], Some(gw.dir.path()));
    let r = stdio.request_modern(json!(1), "tools/call", json!({"name": "m__echo", "arguments": {"n": "stdio"}})).await;
    assert!(r.contains("\"result\""), "{r}");
    for n in 1..=20 {
        assert!(http.call("m__echo", json!({"n": n})).await.json()["result"].is_object());
    }
    let store = default_sqlite(&gw).await;
    settled(&gw, &store, 22).await;
    // Each process names itself as the replica of its records: host name and pid.
    let replicas: BTreeMap<String, usize> = stored(&store).await.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.replica.clone().expect("every record names its replica")).or_default() += 1;
        m
    });
    let serve = replicas.iter().find(|(id, _)| id.ends_with(&format!("-{}", gw.child.id())));
    assert_eq!(serve.map(|(_, n)| *n), Some(21), "{replicas:?}");
    assert_eq!(replicas.len(), 2, "one replica id per process: {replicas:?}");
    store.close().await;
}

/// A call whose client goes away before its answer (the HTTP request dropped mid-call) leaves
/// exactly one record, `cancelled`: over a JSON answer and over an event stream (where the call
/// runs in a task of its own, aborted with the stream).
#[tokio::test]
async fn a_call_whose_client_went_away_leaves_one_cancelled_record() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("mock.log");
    let gw = Gateway::start(&mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]));
    let store = default_sqlite(&gw).await;
    for (n, accept) in [(1, "application/json"), (2, "application/json, text/event-stream")] {
        let mut c = HttpClient::modern(&gw.url);
        c.accept = accept;
        let call = tokio::spawn(async move { c.call("m__slow", json!({"ms": 60_000})).await });
        eventually("the call reaches the backend", || async {
            mock_log(&log).iter().filter(|m| m["params"]["name"] == "slow").count() >= n
        })
        .await;
        // The client goes away: its connection closes and the gateway drops the call.
        call.abort();
        let _ = call.await;
        settled(&gw, &store, n as u64).await;
    }
    // Later calls find exactly those two records besides their own: none doubled, none late.
    let r = HttpClient::modern(&gw.url).call("m__echo", json!({"after": "abort"})).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
    settled(&gw, &store, 3).await;
    let records = stored(&store).await;
    for r in &records[..2] {
        assert_eq!((r.tool.as_deref(), r.outcome, r.error_code), (Some("m__slow"), Outcome::Cancelled, None), "{r:?}");
        assert_eq!(r.backend.as_deref(), Some("m"));
        assert!(r.latency_ms > 0.0);
    }
    assert_eq!(records[2].outcome, Outcome::Ok);
    store.close().await;
}

/// `sentinel stdio` whose client goes away mid-call (stdin closed) cancels the call and records
/// it, `cancelled`, before it exits.
#[tokio::test]
async fn a_stdio_call_whose_client_went_away_is_recorded_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let config = dir.path().join("sentinel.toml");
    let backend = mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()]);
    std::fs::write(&config, format!("[auth]\ndisabled = true\n{backend}")).unwrap();
    let mut client = StdioClient::spawn(&sentinel_bin(), &["stdio", "-c", config.to_str().unwrap()], Some(dir.path()));
    let params = modern_params(json!({"name": "m__slow", "arguments": {"ms": 60_000}}));
    client.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string()).await;
    eventually("the call reaches the backend", || async {
        mock_log(&log).iter().any(|m| m["params"]["name"] == "slow")
    })
    .await;
    let mut child = client.close();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("sentinel stdio exits");
    assert!(status.unwrap().success());
    let store =
        SqlStore::connect(&format!("sqlite://{}", dir.path().join("sentinel-audit.db").display())).await.unwrap();
    let records = stored(&store).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.transport.as_str(), r.tool.as_deref(), r.outcome), ("stdio", Some("m__slow"), Outcome::Cancelled));
    store.close().await;
}
