//! The PostgreSQL dialect of the audit store: `timestamptz` times, `uuid` ids, `text[]` roles.

mod copy;

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};

use super::{AuditQuery, ConnectError, RowError, WAIT, id_floor, parse_outcome, statements, stored_bytes};
use crate::audit::{AuditRecord, Outcome};

/// Milliseconds since the epoch as `timestamptz`, exactly (`to_timestamp` goes through a
/// float of seconds); the bound value follows.
const TS_FROM_MS: &str = "(TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * ";

const SELECT: &str = "SELECT id, (EXTRACT(EPOCH FROM ts) * 1000)::bigint AS ts_ms, client, roles, session, \
     transport, method, tool, backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, \
     response_bytes, trace_id, replica, profile, credential_mode FROM audit_records";

pub(super) async fn connect(url: &str) -> Result<PgPool, ConnectError> {
    let options = PgConnectOptions::from_str(url)?.application_name("sentinel");
    // One plain attempt first: the pool would retry a refused connection until its timeout,
    // and a server that is down should be reported at once.
    let first = tokio::time::timeout(WAIT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| ConnectError::NoAnswer(WAIT))??;
    first.close().await?;
    Ok(PgPoolOptions::new().max_connections(4).acquire_timeout(WAIT).connect_lazy_with(options))
}

/// Stores a batch with one COPY (see `copy`), or, when some of it is stored already (a replay
/// after a crash between storing a batch and the spool learning so), with `INSERT_SKIPPING`.
pub(super) async fn insert(pool: &PgPool, batch: &[AuditRecord]) -> Result<(), sqlx::Error> {
    match copy::copy(pool, batch).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            tracing::debug!("an audit batch holds records already stored (a replay); storing the rest");
            insert_skipping_stored(pool, batch).await
        }
        Err(e) => Err(e),
    }
}

/// One statement per batch whatever its size: each column goes as one array parameter and
/// `UNNEST` turns them back into rows. Its text never changes, so every connection prepares it
/// once, where a multi-row `VALUES` list is parsed and planned again for every batch size.
/// `ON CONFLICT` makes it skip the ids already stored, which is all it is used for: the check
/// costs every row more than COPY does.
const INSERT_SKIPPING: &str = "INSERT INTO audit_records (id, ts, client, roles, session, transport, method, tool, \
     backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, response_bytes, trace_id, \
     replica, profile, credential_mode) \
     SELECT id, TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * ts_ms, client, roles::text[], session, \
     transport, method, tool, backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, \
     response_bytes, trace_id, replica, profile, credential_mode \
     FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::float8[], $14::float8[], \
     $15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[]) AS r(id, ts_ms, client, roles, session, \
     transport, method, tool, backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, response_bytes, \
     trace_id, replica, profile, credential_mode) \
     ON CONFLICT (id) DO NOTHING";

async fn insert_skipping_stored(pool: &PgPool, batch: &[AuditRecord]) -> Result<(), sqlx::Error> {
    // Only the size limit applies: the parameter count does not grow with the batch.
    let parts = statements(batch, usize::MAX);
    if let [part] = parts[..] {
        // One statement is atomic by itself: no BEGIN and COMMIT round trips.
        insert_part(pool, part).await?;
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for part in parts {
        insert_part(&mut *tx, part).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_part<'c>(db: impl sqlx::PgExecutor<'c>, part: &[AuditRecord]) -> Result<(), sqlx::Error> {
    let opt =
        |f: fn(&AuditRecord) -> &Option<String>| part.iter().map(|r| f(r).as_deref().map(no_nul)).collect::<Vec<_>>();
    let req = |f: fn(&AuditRecord) -> &str| part.iter().map(|r| no_nul(f(r))).collect::<Vec<_>>();
    sqlx::query(INSERT_SKIPPING)
        .bind(part.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(part.iter().map(|r| r.ts_ms).collect::<Vec<_>>())
        .bind(opt(|r| &r.client))
        .bind(part.iter().map(|r| roles_literal(&r.roles)).collect::<Vec<_>>())
        .bind(opt(|r| &r.session))
        .bind(req(|r| &r.transport))
        .bind(req(|r| &r.method))
        .bind(opt(|r| &r.tool))
        .bind(opt(|r| &r.backend))
        .bind(opt(|r| &r.arguments))
        .bind(part.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
        .bind(part.iter().map(|r| r.error_code).collect::<Vec<_>>())
        .bind(part.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
        .bind(part.iter().map(|r| r.backend_latency_ms).collect::<Vec<_>>())
        .bind(part.iter().map(|r| stored_bytes(r.response_bytes)).collect::<Vec<_>>())
        .bind(opt(|r| &r.trace_id))
        .bind(opt(|r| &r.replica))
        .bind(opt(|r| &r.profile))
        .bind(opt(|r| &r.credential_mode))
        .execute(db)
        .await?;
    Ok(())
}

/// A record's roles as one PostgreSQL array literal (`{"a","b"}`): `UNNEST` of a `text[][]`
/// would flatten the rows' arrays into one, so each row's array travels as text and is cast
/// back by the statement.
fn roles_literal(roles: &[String]) -> String {
    let mut out = String::from("{");
    for (i, role) in roles.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in role.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\0' => out.push('\u{FFFD}'),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// PostgreSQL `text` cannot hold U+0000, and a client can put one in a tool name it sends; a
/// record refused for it would block the spool forever, so it is stored as U+FFFD instead.
fn no_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

pub(super) async fn query(pool: &PgPool, q: &AuditQuery) -> Result<Vec<AuditRecord>, RowError> {
    let rows = select(q, "").build().fetch_all(pool).await?;
    rows.iter().map(record).collect()
}

/// The database's plan for `query(q)`, one line per row.
pub(super) async fn explain(pool: &PgPool, q: &AuditQuery) -> Result<Vec<String>, sqlx::Error> {
    let rows = select(q, "EXPLAIN ").build().fetch_all(pool).await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// The statement `query` runs, after `prefix` (to explain it).
fn select<'a>(q: &'a AuditQuery, prefix: &str) -> QueryBuilder<'a, Postgres> {
    let mut b = QueryBuilder::<Postgres>::new(format!("{prefix}{SELECT}"));
    b.push(" WHERE TRUE");
    if let Some(since) = q.since_ms {
        // The id bound is what an index serves (the primary key, or the end of a filter's index).
        b.push(" AND ts >= ").push(TS_FROM_MS).push_bind(since).push(")");
        b.push(" AND id >= ").push_bind(id_floor(since));
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
        if o != Outcome::Ok {
            // The outcome index holds only these rows; its condition, written out, lets a
            // prepared statement's generic plan use it too (a bound value proves nothing).
            b.push(" AND outcome <> 'ok'");
        }
    }
    match q.after_id {
        Some(after) => b.push(" AND id > ").push_bind(after).push(" ORDER BY id ASC"),
        None => b.push(" ORDER BY id DESC"),
    };
    b.push(" LIMIT ").push_bind(i64::try_from(q.limit).unwrap_or(i64::MAX));
    b
}

fn record(row: &PgRow) -> Result<AuditRecord, RowError> {
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
        trace_id: row.try_get("trace_id")?,
        replica: row.try_get("replica")?,
        profile: row.try_get("profile")?,
        credential_mode: row.try_get("credential_mode")?,
    })
}

/// Retention. The id bound finds the rows through the primary key; the time test keeps it exact.
const PRUNE: &str =
    "DELETE FROM audit_records WHERE id < $1 AND ts < (TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * $2)";

pub(super) async fn prune(pool: &PgPool, older_than_ms: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(PRUNE).bind(id_floor(older_than_ms)).bind(older_than_ms).execute(pool).await?;
    Ok(done.rows_affected())
}

/// The database's plan for `prune`, one line per row.
pub(super) async fn explain_prune(pool: &PgPool, older_than_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(&format!("EXPLAIN {PRUNE}"))
        .bind(id_floor(older_than_ms))
        .bind(older_than_ms)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
