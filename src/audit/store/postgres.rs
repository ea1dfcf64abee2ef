//! The PostgreSQL dialect of the audit store: `timestamptz` times, `uuid` ids, `text[]` roles.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};

use super::{AuditQuery, WAIT, parse_outcome, statements, stored_bytes};
use crate::audit::AuditRecord;

/// The protocol's limit on bound parameters per statement (a 16-bit count).
const MAX_PARAMS: usize = 65535;

/// Milliseconds since the epoch as `timestamptz`, exactly (`to_timestamp` goes through a
/// float of seconds); the bound value follows.
const TS_FROM_MS: &str = "(TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * ";

const SELECT: &str = "SELECT id, (EXTRACT(EPOCH FROM ts) * 1000)::bigint AS ts_ms, client, roles, session, \
     transport, method, tool, backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, \
     response_bytes FROM audit_records";

pub(super) async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name("sentinel");
    // One plain attempt first: the pool would retry a refused connection until its timeout,
    // and a server that is down should be reported at once.
    let first = tokio::time::timeout(WAIT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {WAIT:?}"))??;
    first.close().await?;
    Ok(PgPoolOptions::new().max_connections(4).acquire_timeout(WAIT).connect_lazy_with(options))
}

pub(super) async fn insert(pool: &PgPool, batch: &[AuditRecord]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for part in statements(batch, MAX_PARAMS) {
        let mut b = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit_records (id, ts, client, roles, session, transport, method, tool, backend, \
             arguments, outcome, error_code, latency_ms, backend_latency_ms, response_bytes) ",
        );
        b.push_values(part, |mut row, r| {
            row.push_bind(r.id)
                .push(TS_FROM_MS)
                .push_bind_unseparated(r.ts_ms)
                .push_unseparated(")")
                .push_bind(text(&r.client))
                .push_bind(r.roles.iter().map(|s| no_nul(s)).collect::<Vec<_>>())
                .push_bind(text(&r.session))
                .push_bind(no_nul(&r.transport))
                .push_bind(no_nul(&r.method))
                .push_bind(text(&r.tool))
                .push_bind(text(&r.backend))
                .push_bind(text(&r.arguments))
                .push_bind(r.outcome.as_str())
                .push_bind(r.error_code)
                .push_bind(r.latency_ms)
                .push_bind(r.backend_latency_ms)
                .push_bind(stored_bytes(r.response_bytes));
        });
        b.push(" ON CONFLICT (id) DO NOTHING");
        b.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL `text` cannot hold U+0000, and a client can put one in a tool name it sends; a
/// record refused for it would block the spool forever, so it is stored as U+FFFD instead.
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(no_nul)
}

pub(super) async fn query(pool: &PgPool, q: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
    let mut b = QueryBuilder::<Postgres>::new(SELECT);
    b.push(" WHERE TRUE");
    if let Some(since) = q.since_ms {
        b.push(" AND ts >= ").push(TS_FROM_MS).push_bind(since).push(")");
    }
    if let Some(c) = &q.client {
        b.push(" AND client = ").push_bind(c.clone());
    }
    if let Some(t) = &q.tool {
        b.push(" AND tool = ").push_bind(t.clone());
    }
    if let Some(be) = &q.backend {
        b.push(" AND backend = ").push_bind(be.clone());
    }
    if let Some(o) = q.outcome {
        b.push(" AND outcome = ").push_bind(o.as_str());
    }
    match q.after_id {
        Some(after) => b.push(" AND id > ").push_bind(after).push(" ORDER BY id ASC"),
        None => b.push(" ORDER BY ts DESC, id DESC"),
    };
    b.push(" LIMIT ").push_bind(i64::try_from(q.limit).unwrap_or(i64::MAX));
    let rows = b.build().fetch_all(pool).await?;
    rows.iter().map(record).collect()
}

fn record(row: &PgRow) -> anyhow::Result<AuditRecord> {
    let outcome: String = row.try_get("outcome")?;
    let bytes: i64 = row.try_get("response_bytes")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        ts_ms: row.try_get("ts_ms")?,
        client: row.try_get("client")?,
        roles: row.try_get("roles")?,
        session: row.try_get("session")?,
        transport: row.try_get("transport")?,
        method: row.try_get("method")?,
        tool: row.try_get("tool")?,
        backend: row.try_get("backend")?,
        arguments: row.try_get("arguments")?,
        outcome: parse_outcome(&outcome)?,
        error_code: row.try_get("error_code")?,
        latency_ms: row.try_get("latency_ms")?,
        backend_latency_ms: row.try_get("backend_latency_ms")?,
        response_bytes: u64::try_from(bytes).unwrap_or(0),
    })
}

pub(super) async fn prune(pool: &PgPool, older_than_ms: i64) -> anyhow::Result<u64> {
    let sql = format!("DELETE FROM audit_records WHERE ts < {TS_FROM_MS}$1)");
    let done = sqlx::query(&sql).bind(older_than_ms).execute(pool).await?;
    Ok(done.rows_affected())
}
