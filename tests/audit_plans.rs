//! Every query `sentinel audit` issues, and retention's delete, is served by an index on a large
//! table: the plans of the real statements (`SqlStore::explain`), on 100,000 records in SQLite
//! and in PostgreSQL (`common::pg`), for every combination of filters. The store keeps as few
//! indexes as it can (each costs every insert), so this is what says none is missing.

mod common;

use common::pg::PgDb;
use sentinel::audit::store::{AuditQuery, SqlStore};
use sentinel::audit::{AuditRecord, Outcome};
use sqlx::Connection;
use uuid::Uuid;

const ROWS: usize = 100_000;
const T0: i64 = 1_700_000_000_000;

/// Record `i`, 10 ms after record `i - 1`, its id of the same millisecond (as the gateway makes
/// them). Most calls are `ok` from one of 50 clients to one of 5 backends; a few were refused
/// before a tool was known, or carry no client. What the queries look for is rare (a client, a
/// backend and its tool, an outcome: 0.1-1%), so that walking the primary key cannot find it
/// cheaply: a common value is found faster that way, and the planner rightly does so.
fn record(i: usize) -> AuditRecord {
    let ts_ms = T0 + i as i64 * 10;
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, (ts_ms / 1000) as u64, ((ts_ms % 1000) * 1_000_000) as u32);
    let refused = i % 50 == 49;
    let backend = if i % 1000 == 500 { "rare".to_string() } else { format!("b{}", i % 5) };
    AuditRecord {
        id: Uuid::new_v7(ts),
        ts_ms,
        client: match i % 1000 {
            250 => Some("auditor".into()),
            _ => (i % 20 != 19).then(|| format!("client-{}", i % 50)),
        },
        roles: vec!["dev".into()],
        session: None,
        transport: "http".into(),
        method: "tools/call".into(),
        tool: (!refused).then(|| format!("{backend}__t{}", i % 40)),
        backend: (!refused).then_some(backend),
        arguments: Some(format!(r#"{{"seq":{i}}}"#)),
        outcome: match i % 100 {
            0..97 => Outcome::Ok,
            97 => Outcome::DeniedRbac,
            98 => Outcome::ToolError,
            _ => Outcome::RateLimited,
        },
        error_code: None,
        latency_ms: 0.5,
        backend_latency_ms: Some(0.25),
        response_bytes: 100,
        trace_id: None,
        replica: Some("gw-1".into()),
        profile: None,
        credential_mode: None,
    }
}

async fn fill(store: &SqlStore) {
    store.migrate().await.unwrap();
    let records: Vec<_> = (0..ROWS).map(record).collect();
    for batch in records.chunks(5000) {
        store.insert_batch(batch).await.unwrap();
    }
}

/// Each filter alone, and the index that must serve it.
fn single_filters() -> Vec<(&'static str, AuditQuery, &'static str)> {
    let q = AuditQuery::default();
    vec![
        ("no filter", q.clone(), "pk"),
        ("--since", AuditQuery { since_ms: Some(since()), ..q.clone() }, "pk"),
        ("--follow", AuditQuery { after_id: Some(follow_from()), limit: 1000, ..q.clone() }, "pk"),
        ("--client", AuditQuery { client: Some("auditor".into()), ..q.clone() }, "audit_records_client_id"),
        ("--tool", AuditQuery { tool: Some("rare__t20".into()), ..q.clone() }, "audit_records_tool_id"),
        ("--backend", AuditQuery { backend: Some("rare".into()), ..q.clone() }, "audit_records_backend_id"),
        (
            "--outcome denied_rbac",
            AuditQuery { outcome: Some(Outcome::DeniedRbac), ..q.clone() },
            "audit_records_outcome_id",
        ),
        ("--outcome ok", AuditQuery { outcome: Some(Outcome::Ok), ..q }, "pk"),
    ]
}

/// The last 1% of the table, as `--since 1h` on a few days of records.
fn since() -> i64 {
    T0 + (ROWS as i64 * 99 / 100) * 10
}

/// Retention's cutoff: the oldest 1% goes, as an hourly prune finds it.
fn prune_before() -> i64 {
    T0 + (ROWS as i64 / 100) * 10
}

/// Where `--follow` goes on from: the newest record printed (here, near the end).
fn follow_from() -> Uuid {
    record(ROWS - 100).id
}

/// Every combination of filters the CLI can send: time window or not, each of client, tool,
/// backend, outcome (ok, another, none), as a listing or as a `--follow` page.
fn every_query() -> Vec<(String, AuditQuery)> {
    let mut out = Vec::new();
    for bits in 0..(1 << 6) * 3 {
        let (outcome, bits) = (bits % 3, bits / 3);
        let on = |n: u32| bits & (1 << n) != 0;
        let q = AuditQuery {
            since_ms: on(0).then(since),
            client: on(1).then(|| "auditor".into()),
            tool: on(2).then(|| "rare__t20".into()),
            backend: on(3).then(|| "rare".into()),
            outcome: [None, Some(Outcome::Ok), Some(Outcome::DeniedRbac)][outcome],
            after_id: on(4).then(follow_from),
            limit: if on(5) { 1000 } else { 50 },
        };
        out.push((format!("{q:?}"), q));
    }
    out
}

#[tokio::test]
async fn postgres_serves_every_filter_from_an_index() {
    let db = PgDb::create().await;
    fill(&db.store).await;
    // What autovacuum does on a real server: the planner needs statistics.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("ANALYZE audit_records").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    for (name, q, index) in single_filters() {
        let plan = db.store.explain(&q).await.unwrap().join("\n");
        let index = if index == "pk" { "audit_records_pkey" } else { index };
        assert!(plan.contains(index) && !plan.contains("Seq Scan"), "{name}: not served by {index}:\n{plan}");
    }
    for (name, q) in every_query() {
        let plan = db.store.explain(&q).await.unwrap().join("\n");
        assert!(!plan.contains("Seq Scan") && plan.contains("Index"), "{name}: no index:\n{plan}");
    }
    let plan = db.store.explain_prune(prune_before()).await.unwrap().join("\n");
    assert!(plan.contains("audit_records_pkey") && !plan.contains("Seq Scan"), "prune:\n{plan}");
    db.store.close().await;
}

/// SQLite as the gateway leaves it (no `ANALYZE`: its planner goes by the schema alone), and
/// after an `ANALYZE`, which someone may run.
#[tokio::test]
async fn sqlite_serves_every_filter_from_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("audit.db").display())).await.unwrap();
    fill(&store).await;
    for analyzed in [false, true] {
        if analyzed {
            let SqlStore::Sqlite(pool) = &store else { unreachable!() };
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        }
        for (name, q, index) in single_filters() {
            let plan = store.explain(&q).await.unwrap();
            let index = if index == "pk" { "sqlite_autoindex_audit_records_1" } else { index };
            let ok = plan.iter().any(|l| l.contains(index)) && plan.iter().all(|l| !l.contains("TEMP B-TREE"));
            assert!(ok, "{name} (analyzed: {analyzed}): not served by {index} in order:\n{}", plan.join("\n"));
        }
        for (name, q) in every_query() {
            let plan = store.explain(&q).await.unwrap();
            let full_scan = plan.iter().any(|l| l.starts_with("SCAN") && !l.contains("INDEX"));
            assert!(!full_scan, "{name} (analyzed: {analyzed}): a full scan:\n{}", plan.join("\n"));
        }
        let plan = store.explain_prune(prune_before()).await.unwrap();
        assert!(plan.iter().any(|l| l.contains("SEARCH") && l.contains("sqlite_autoindex")), "prune: {plan:?}");
    }
    store.close().await;
}
