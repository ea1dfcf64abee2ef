//! The SQLite dialect of the audit store: one local file, times as integer milliseconds, ids
//! as hyphenated text, roles as a JSON array.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{AuditQuery, COLUMNS, ConnectError, RowError, WAIT, id_floor, parse_outcome, statements, stored_bytes};
use crate::audit::{AuditRecord, Outcome};

/// SQLite's limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
const MAX_PARAMS: usize = 32766;

const SELECT: &str = "SELECT id, ts_ms, client, roles, session, transport, method, tool, backend, arguments, \
     outcome, error_code, latency_ms, backend_latency_ms, response_bytes, trace_id, replica, profile, credential_mode FROM audit_records";

pub(super) async fn connect(path: &str) -> Result<SqlitePool, ConnectError> {
    let options = if path == ":memory:" {
        SqliteConnectOptions::from_str("sqlite::memory:")?
    } else {
        create_private(Path::new(path))?;
        // The path is taken literally (`filename`, not sqlx's URL parser), so a folder name
        // with `%` or `?` in it is not misread as escapes or parameters.
        SqliteConnectOptions::new().filename(path).create_if_missing(true)
    };
    // WAL lets `sentinel audit` read while the gateway writes. `synchronous` stays FULL (the
    // default): a batch the store accepted is deleted from the spool, so it must survive a
    // power cut too.
    let options =
        options.journal_mode(SqliteJournalMode::Wal).busy_timeout(WAIT).statement_cache_capacity(STATEMENT_CACHE);
    let pool = SqlitePoolOptions::new()
        // One file, one writer at a time: more connections only wait on each other.
        .max_connections(4)
        .acquire_timeout(WAIT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates a missing database file readable by its owner only: it holds who called what, with
/// which arguments. SQLite gives the `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> Result<(), ConnectError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(cause) => Err(ConnectError::Create { path: path.to_path_buf(), cause }),
    }
}

/// The row counts an INSERT statement is made for: a batch goes in as pieces of these sizes
/// (its length in binary), so every connection prepares at most these nine statements, once.
///
/// Why not one statement per batch: a multi-row `VALUES` list of a new length is a new
/// statement, which SQLite parses and plans again, growing its program (tens of kilobytes for a
/// few hundred rows) by repeated `realloc`. sqlx caches up to 100 of them per connection and
/// evicts the oldest, so a gateway whose batches vary in length (as they do under any real
/// load) allocates and frees big blocks of ever-new sizes on the connections' threads, and
/// glibc's per-thread arenas kept that memory: resident memory grew with call volume (11 to
/// 80 MB over 200k calls) while the live heap stayed near 14 MB (heaptrack, docs/audit.md).
const PIECE_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Most statements a connection keeps prepared: the nine INSERTs above plus the few that
/// `query`, `prune` and the migrations use. Each holds its compiled program (a 256-row INSERT's
/// is ~100 KB); the bound keeps a process reading with many filter combinations from growing.
const STATEMENT_CACHE: usize = 32;

pub(super) async fn insert(pool: &SqlitePool, batch: &[AuditRecord]) -> Result<(), sqlx::Error> {
    // One transaction for the whole batch: all or nothing, and one fsync instead of one per piece.
    let mut tx = pool.begin().await?;
    for part in statements(batch, MAX_PARAMS) {
        let mut rest = part;
        while !rest.is_empty() {
            let rows = PIECE_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
            let (piece, after) = rest.split_at(rows);
            insert_piece(piece).execute(&mut *tx).await?;
            rest = after;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One INSERT of `piece.len()` rows (one of `PIECE_ROWS`). Text is bound borrowed, not
/// copied: a batch's arguments may hold megabytes.
fn insert_piece(piece: &[AuditRecord]) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let mut q = sqlx::query(insert_sql(piece.len()));
    for r in piece {
        q = q
            .bind(r.id.hyphenated().to_string())
            .bind(r.ts_ms)
            .bind(r.client.as_deref())
            .bind(serde_json::to_string(&r.roles).unwrap_or_else(|_| "[]".into()))
            .bind(r.session.as_deref())
            .bind(r.transport.as_str())
            .bind(r.method.as_str())
            .bind(r.tool.as_deref())
            .bind(r.backend.as_deref())
            .bind(r.arguments.as_deref())
            .bind(r.outcome.as_str())
            .bind(r.error_code)
            .bind(r.latency_ms)
            .bind(r.backend_latency_ms)
            .bind(stored_bytes(r.response_bytes))
            .bind(r.trace_id.as_deref())
            .bind(r.replica.as_deref())
            .bind(r.profile.as_deref())
            .bind(r.credential_mode.as_deref());
    }
    q
}

/// The INSERT text for `rows` rows, made once per size for the life of the process.
fn insert_sql(rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let row = format!("({})", vec!["?"; COLUMNS].join(", "));
        PIECE_ROWS
            .iter()
            .map(|&n| {
                let values = vec![row.as_str(); n].join(", ");
                let sql = format!(
                    "INSERT INTO audit_records (id, ts_ms, client, roles, session, transport, method, tool, \
                     backend, arguments, outcome, error_code, latency_ms, backend_latency_ms, response_bytes, \
                     trace_id, replica, profile, credential_mode) VALUES {values} ON CONFLICT (id) DO NOTHING"
                );
                (n, sql)
            })
            .collect()
    });
    texts.iter().find(|(n, _)| *n == rows).map(|(_, sql)| sql.as_str()).expect("a size of PIECE_ROWS")
}

pub(super) async fn query(pool: &SqlitePool, q: &AuditQuery) -> Result<Vec<AuditRecord>, RowError> {
    let rows = select(q, "").build().fetch_all(pool).await?;
    rows.iter().map(record).collect()
}

/// The database's plan for `query(q)`, one line per row.
pub(super) async fn explain(pool: &SqlitePool, q: &AuditQuery) -> Result<Vec<String>, sqlx::Error> {
    let rows = select(q, "EXPLAIN QUERY PLAN ").build().fetch_all(pool).await?;
    rows.iter().map(|r| r.try_get("detail")).collect()
}

/// The statement `query` runs, after `prefix` (to explain it).
fn select<'a>(q: &'a AuditQuery, prefix: &str) -> QueryBuilder<'a, Sqlite> {
    let mut b = QueryBuilder::<Sqlite>::new(format!("{prefix}{SELECT}"));
    b.push(" WHERE 1 = 1");
    if let Some(since) = q.since_ms {
        // The id bound is what an index serves (the primary key, or the end of a filter's index).
        b.push(" AND ts_ms >= ").push_bind(since);
        b.push(" AND id >= ").push_bind(id_floor(since).hyphenated().to_string());
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
            // SQLite uses a partial index only when the query repeats its condition word for word.
            b.push(" AND outcome <> 'ok'");
        }
    }
    match q.after_id {
        Some(after) => b.push(" AND id > ").push_bind(after.hyphenated().to_string()).push(" ORDER BY id ASC"),
        None => b.push(" ORDER BY id DESC"),
    };
    b.push(" LIMIT ").push_bind(i64::try_from(q.limit).unwrap_or(i64::MAX));
    b
}

fn record(row: &SqliteRow) -> Result<AuditRecord, RowError> {
    let id: String = row.try_get("id")?;
    let roles: String = row.try_get("roles")?;
    let outcome: String = row.try_get("outcome")?;
    let bytes: i64 = row.try_get("response_bytes")?;
    Ok(AuditRecord {
        id: id.parse().map_err(|cause| RowError::MalformedId { id: id.clone(), cause })?,
        ts_ms: row.try_get("ts_ms")?,
        client: row.try_get("client")?,
        roles: serde_json::from_str(&roles).map_err(|cause| RowError::MalformedRoles { id: id.clone(), cause })?,
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
const PRUNE: &str = "DELETE FROM audit_records WHERE id < ? AND ts_ms < ?";

pub(super) async fn prune(pool: &SqlitePool, older_than_ms: i64) -> Result<u64, sqlx::Error> {
    let floor = id_floor(older_than_ms).hyphenated().to_string();
    let done = sqlx::query(PRUNE).bind(floor).bind(older_than_ms).execute(pool).await?;
    Ok(done.rows_affected())
}

/// The database's plan for `prune`, one line per row.
pub(super) async fn explain_prune(pool: &SqlitePool, older_than_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    let floor = id_floor(older_than_ms).hyphenated().to_string();
    let rows =
        sqlx::query(&format!("EXPLAIN QUERY PLAN {PRUNE}")).bind(floor).bind(older_than_ms).fetch_all(pool).await?;
    rows.iter().map(|r| r.try_get("detail")).collect()
}
