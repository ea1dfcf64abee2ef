//! The audit store against real databases: SQLite in a temporary folder and PostgreSQL on this
//! machine (`postgres://postgres@127.0.0.1:5432`, or `SENTINEL_TEST_PG`; see `common::pg`).

mod common;

use common::pg::PgDb;
use sentinel::audit::store::{AuditQuery, SqlStore};
use sentinel::audit::{AuditRecord, AuditStore, Outcome};
use uuid::Uuid;

async fn sqlite() -> (tempfile::TempDir, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    (dir, store)
}

/// Runs one scenario against a migrated SQLite store and a migrated PostgreSQL store.
macro_rules! both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite_store {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (_dir, store) = super::sqlite().await;
                    store.migrate().await.unwrap();
                    super::$scenario(&store).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let db = super::PgDb::create().await;
                    db.store.migrate().await.unwrap();
                    super::$scenario(&db.store).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

both!(migrate_twice, round_trip, same_batch_twice, filters, follow_order, prune, batches_over_the_parameter_limit);

const T0: i64 = 1_700_000_000_000;

const OUTCOMES: [Outcome; 12] = Outcome::ALL;

/// Record `i` of a test batch: one second apart from `T0`, a fresh id of the same millisecond
/// (so id order is time order, as in production), and every field varying with `i`.
fn record(i: usize) -> AuditRecord {
    let ts_ms = T0 + i as i64 * 1000;
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, (ts_ms / 1000) as u64, ((ts_ms % 1000) * 1_000_000) as u32);
    AuditRecord {
        id: Uuid::new_v7(ts),
        ts_ms,
        client: if i % 5 == 4 { None } else { Some(["alice", "bob", "zoë 🤖"][i % 3].to_string()) },
        roles: match i % 3 {
            0 => vec![],
            1 => vec!["admin".into()],
            _ => vec!["researcher".into(), "ops, \"quoted\" {x} back\\slash NULL".into(), String::new()],
        },
        session: (i % 2 == 0).then(|| format!("session-{i}")),
        transport: if i % 2 == 0 { "http" } else { "stdio" }.into(),
        method: "tools/call".into(),
        tool: (i % 7 != 6).then(|| ["exa__search", "fs__read", "検索__ツール"][i % 3].to_string()),
        backend: (i % 7 != 6).then(|| ["exa", "fs", "検索"][i % 3].to_string()),
        arguments: (i % 4 != 3).then(|| format!(r#"{{"q":"näive ☃ {i}","password":"[redacted]"}}"#)),
        outcome: OUTCOMES[i % OUTCOMES.len()],
        error_code: (i % OUTCOMES.len() != 0).then(|| -32000 - i as i64),
        latency_ms: 0.1 + i as f64 / 3.0,
        backend_latency_ms: (i % 2 == 1).then_some(i as f64 * 1.25),
        response_bytes: i as u64 * 1000,
        trace_id: (i % 3 != 2).then(|| format!("{:032x}", 0x4bf9_2f35_77b3_4da6_u128 + i as u128)),
        replica: (i % 5 != 4).then(|| format!("host-{}.example-{}", i % 3, 1000 + i)),
        profile: None,
        credential_mode: (i % 4 == 1).then(|| "per_user".to_string()),
    }
}

fn batch(n: usize) -> Vec<AuditRecord> {
    (0..n).map(record).collect()
}

async fn all(store: &SqlStore) -> Vec<AuditRecord> {
    let mut got = store.query(&AuditQuery { limit: usize::MAX, ..AuditQuery::default() }).await.unwrap();
    got.sort_by_key(|r| r.id);
    got
}

async fn migrate_twice(store: &SqlStore) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
}

async fn round_trip(store: &SqlStore) {
    let mut records = batch(40);
    // One megabyte of arguments, multi-byte characters included.
    records[5].arguments = Some(format!(r#"{{"text":"{}"}}"#, "é☃x".repeat(1024 * 1024 / 6)));
    assert!(records[5].arguments.as_ref().unwrap().len() >= 1024 * 1024);
    records[6].response_bytes = i64::MAX as u64;
    AuditStore::insert(store, &records).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 40);
    assert_eq!(all(store).await, records);
}

async fn same_batch_twice(store: &SqlStore) {
    let records = batch(25);
    store.insert(&records).await.unwrap();
    store.insert(&records).await.unwrap();
    // An overlapping batch stores only what is new.
    let more: Vec<_> = records.iter().cloned().chain((25..30).map(record)).collect();
    store.insert(&more).await.unwrap();
    store.insert(&[]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 30);
    assert_eq!(all(store).await, more);
}

async fn filters(store: &SqlStore) {
    let records = batch(60);
    store.insert(&records).await.unwrap();
    let ids = |got: Vec<AuditRecord>| got.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Newest first.
    let expect = |keep: &dyn Fn(&AuditRecord) -> bool, limit: usize| {
        records.iter().rev().filter(|r| keep(r)).take(limit).map(|r| r.id).collect::<Vec<_>>()
    };
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery { limit: 1000, ..AuditQuery::default() };
        f(&mut q);
        q
    };

    let got = ids(store.query(&q(|q| q.limit = 5)).await.unwrap());
    assert_eq!(got, expect(&|_| true, 5));

    let got = ids(store.query(&q(|q| q.since_ms = Some(T0 + 50_000))).await.unwrap());
    assert_eq!(got, expect(&|r| r.ts_ms >= T0 + 50_000, 1000));
    assert_eq!(got.len(), 10);

    let got = ids(store.query(&q(|q| q.client = Some("zoë 🤖".into()))).await.unwrap());
    assert_eq!(got, expect(&|r| r.client.as_deref() == Some("zoë 🤖"), 1000));
    assert!(!got.is_empty());

    let got = ids(store.query(&q(|q| q.tool = Some("fs__read".into()))).await.unwrap());
    assert_eq!(got, expect(&|r| r.tool.as_deref() == Some("fs__read"), 1000));
    assert!(!got.is_empty());

    let got = ids(store.query(&q(|q| q.backend = Some("検索".into()))).await.unwrap());
    assert_eq!(got, expect(&|r| r.backend.as_deref() == Some("検索"), 1000));
    assert!(!got.is_empty());

    let got = ids(store.query(&q(|q| q.outcome = Some(Outcome::DeniedRbac))).await.unwrap());
    assert_eq!(got, expect(&|r| r.outcome == Outcome::DeniedRbac, 1000));
    assert_eq!(got.len(), 5, "60 records, one outcome in 12");

    let got = ids(store
        .query(&q(|q| {
            q.since_ms = Some(T0 + 10_000);
            q.client = Some("alice".into());
            q.tool = Some("exa__search".into());
            q.limit = 2;
        }))
        .await
        .unwrap());
    let want = |r: &AuditRecord| {
        r.ts_ms >= T0 + 10_000 && r.client.as_deref() == Some("alice") && r.tool.as_deref() == Some("exa__search")
    };
    assert_eq!(got, expect(&want, 2));
    assert_eq!(got.len(), 2);

    let got = ids(store
        .query(&q(|q| {
            q.client = Some("bob".into());
            q.outcome = Some(Outcome::ToolError);
        }))
        .await
        .unwrap());
    assert_eq!(got, expect(&|r| r.client.as_deref() == Some("bob") && r.outcome == Outcome::ToolError, 1000));
    assert!(!got.is_empty());

    assert!(store.query(&q(|q| q.client = Some("nobody".into()))).await.unwrap().is_empty());
    assert!(store.query(&q(|q| q.limit = 0)).await.unwrap().is_empty());
}

async fn follow_order(store: &SqlStore) {
    let records = batch(20);
    store.insert(&records[..10]).await.unwrap();
    let q = AuditQuery { after_id: Some(records[9].id), limit: 100, ..AuditQuery::default() };
    assert!(store.query(&q).await.unwrap().is_empty());
    store.insert(&records[10..]).await.unwrap();
    // Oldest first, from just after the given id; filters still apply.
    let got = store.query(&q).await.unwrap();
    assert_eq!(got, records[10..]);
    let q = AuditQuery { after_id: Some(records[9].id), tool: Some("exa__search".into()), limit: 2, ..q };
    let got: Vec<_> = store.query(&q).await.unwrap().into_iter().map(|r| r.ts_ms).collect();
    assert_eq!(got, [T0 + 12_000, T0 + 15_000]);
}

async fn prune(store: &SqlStore) {
    store.insert(&batch(30)).await.unwrap();
    assert_eq!(store.prune(T0 + 10_000).await.unwrap(), 10);
    assert_eq!(store.count().await.unwrap(), 20);
    assert_eq!(store.prune(T0 + 10_000).await.unwrap(), 0);
    let oldest = all(store).await.into_iter().map(|r| r.ts_ms).min();
    assert_eq!(oldest, Some(T0 + 10_000));
}

/// More rows than one statement may bind (SQLite: 2,184 rows of 15 columns; PostgreSQL: 4,369).
async fn batches_over_the_parameter_limit(store: &SqlStore) {
    let records = batch(9000);
    store.insert(&records).await.unwrap();
    store.insert(&records).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 9000);
}

#[tokio::test]
async fn postgres_text_cannot_hold_nul_so_it_becomes_a_replacement_character() {
    let db = PgDb::create().await;
    db.store.migrate().await.unwrap();
    let mut r = record(1);
    r.tool = Some("evil\0tool".into());
    r.roles = vec!["ro\0le".into()];
    db.store.insert(std::slice::from_ref(&r)).await.unwrap();
    let got = db.store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(got[0].tool.as_deref(), Some("evil\u{FFFD}tool"));
    assert_eq!(got[0].roles, ["ro\u{FFFD}le"]);
    db.store.close().await;
}

/// Fresh batches go in by binary COPY, and only a replay falls back to the INSERT that skips
/// stored ids. Storing is right either way (`round_trip` checks every field), so without this a
/// COPY that always failed with a unique violation would pass every other test. The fallback's
/// debug event is how it shows; a current-thread runtime keeps the insert on this thread, where
/// the subscriber below is the default.
#[tokio::test]
async fn postgres_fresh_batches_go_in_by_copy_and_only_replays_fall_back() {
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_writer(events.clone()).finish(),
    );
    let fallback = "records already stored";
    let db = PgDb::create().await;
    db.store.migrate().await.unwrap();
    let records = batch(50);
    // Several batches of one row and of many, roles and NULLs included (see `record`).
    for part in records.chunks(7) {
        db.store.insert_batch(part).await.unwrap();
    }
    assert_eq!(db.store.count().await.unwrap(), 50);
    assert!(!events.text().contains(fallback), "a fresh batch fell back from COPY:\n{}", events.text());
    // A replay: the same records again, with new ones after them.
    let more: Vec<_> = records[40..].iter().cloned().chain((50..55).map(record)).collect();
    db.store.insert_batch(&more).await.unwrap();
    assert!(events.text().contains(fallback), "a replay did not fall back:\n{}", events.text());
    assert_eq!(db.store.count().await.unwrap(), 55);
    db.store.close().await;
}

/// What a test's tracing subscriber writes, kept in memory.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Events {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Events {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Events {
    type Writer = Events;
    fn make_writer(&'a self) -> Events {
        self.clone()
    }
}

/// An insert cut short at any point (the drainer gives up on a slow one after its timeout)
/// stores all of its batch or none of it, and leaves no half-used connection for the next: the
/// same batch again, as the drainer retries it, is then stored exactly once.
#[tokio::test]
async fn postgres_insert_cut_short_stores_all_or_nothing_and_the_retry_exactly_once() {
    let db = PgDb::create().await;
    db.store.migrate().await.unwrap();
    let mut stored = 0;
    for cut_us in [0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000] {
        // About 13 MB: the COPY goes out in several pieces, so some cuts fall between them.
        let big: Vec<_> = (0..200)
            .map(|i| AuditRecord { id: Uuid::now_v7(), arguments: Some("x".repeat(64 * 1024)), ..record(i) })
            .collect();
        let cut = tokio::time::timeout(std::time::Duration::from_micros(cut_us), db.store.insert_batch(&big)).await;
        let now = db.store.count().await.unwrap();
        assert!(now == stored || now == stored + 200, "cut after {cut_us} µs: {now} records, {stored} before");
        if cut.is_ok() {
            assert_eq!(now, stored + 200);
        }
        db.store.insert_batch(&big).await.unwrap();
        stored += 200;
        assert_eq!(db.store.count().await.unwrap(), stored, "cut after {cut_us} µs");
    }
    db.store.close().await;
}

#[tokio::test]
async fn connection_errors_hide_the_password() {
    let e = SqlStore::connect("postgres://audit:hunter2@127.0.0.1:1/audit").await.err().unwrap();
    let e = format!("{e:#}");
    assert!(!e.contains("hunter2") && e.contains("127.0.0.1:1"), "{e}");
    let e = SqlStore::connect("mysql://audit:hunter2@127.0.0.1/audit").await.err().unwrap().to_string();
    assert!(!e.contains("hunter2") && e.contains("sqlite://"), "{e}");
}

#[tokio::test]
async fn sqlite_file_is_created_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = sqlite().await;
    store.migrate().await.unwrap();
    store.insert(&batch(3)).await.unwrap();
    let mode = std::fs::metadata(dir.path().join("audit.db")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("audit.db-wal").exists());
    // A second process (here: a second pool) sees the same records.
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let other = SqlStore::connect(&url).await.unwrap();
    other.migrate().await.unwrap();
    assert_eq!(other.count().await.unwrap(), 3);
}

/// `sentinel audit` against a SQLite store beside its config: a config and the store it names.
async fn cli_setup(records: &[AuditRecord]) -> (tempfile::TempDir, std::path::PathBuf, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(&config, "[auth]\ndisabled = true\n[audit]\nurl = \"sqlite://audit.db\"\n").unwrap();
    let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("audit.db").display())).await.unwrap();
    store.migrate().await.unwrap();
    store.insert(records).await.unwrap();
    (dir, config, store)
}

fn sentinel_audit(config: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.arg("audit").arg("-c").arg(config).args(args);
    cmd
}

#[tokio::test]
async fn cli_prints_json_lines_and_a_table() {
    let records = batch(12);
    let (_dir, config, _store) = cli_setup(&records).await;

    let out = sentinel_audit(&config, &["--json", "--limit", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<AuditRecord> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| sentinel::audit::query::parse_json_line(l).unwrap())
        .collect();
    // The newest three, oldest at the top.
    assert_eq!(got, records[9..]);

    let out = sentinel_audit(&config, &["--outcome", "denied_rbac"]).output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)") && lines[0].contains("OUTCOME"), "{table}");
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[1].starts_with("2023-11-14T22:13:23.000Z  alice") && lines[1].contains("denied_rbac"), "{table}");

    let out = sentinel_audit(&config, &["--outcome", "denied"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("denied_rbac, killed"), "{err}");
}

#[tokio::test]
async fn cli_follow_prints_new_records_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let records = batch(4);
    let (_dir, config, store) = cli_setup(&records[..2]).await;
    let mut child =
        Reaped(sentinel_audit(&config, &["--json", "--follow"]).stdout(std::process::Stdio::piped()).spawn().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(sentinel::audit::query::parse_json_line(&line.unwrap()).unwrap());
        }
    });
    let next = || rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a record within 20 s");
    assert_eq!([next(), next()], records[..2]);
    store.insert(&records[2..]).await.unwrap();
    assert_eq!([next(), next()], records[2..]);

    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A child process that does not outlive a failed test.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
