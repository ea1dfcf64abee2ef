//! The durable audit store: SQLite or PostgreSQL through sqlx, chosen by the URL.
//!
//! Writes are batched multi-row inserts, idempotent by record id (a batch replayed from the
//! spool after a crash stores nothing twice). Reads serve `sentinel audit`; `prune` serves
//! retention. Each dialect's SQL lives in its own file; this one holds what they share.

mod classify;
mod identity;
mod postgres;
mod sqlite;

pub use identity::identity;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::{AuditRecord, AuditStore, BoxFuture, Outcome, StoreError};
use crate::config::redact_url;

/// How long a connection may wait for a busy SQLite database or a free pool slot. Long enough
/// to ride out another writer's transaction, short enough that `sentinel audit` against a dead
/// PostgreSQL says so instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// A statement's bound values are kept under this many bytes (on top of the parameter-count
/// limit), so a batch full of 1 MB argument texts becomes several statements, not one huge one.
const MAX_STATEMENT_BYTES: usize = 16 * 1024 * 1024;

/// Columns bound per record by `insert`.
const COLUMNS: usize = 19;

/// Runs the same code on whichever pool a `SqlStore` has (the two pools are different types),
/// for the small tables beside the audit records that take one SQL text in both dialects.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::audit::store::SqlStore::Sqlite($pool) => $body,
            $crate::audit::store::SqlStore::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Why the audit database failed. The text of each variant includes its cause's (and that
/// cause's causes'), and none is given as `source()`: a caller printing `{e:#}` sees it once.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The URL names no store this build knows (shown with its password hidden).
    #[error("`{0}` is not an audit store URL; write \"sqlite://path.db\" or \"postgres://user@host/db\"")]
    NotAStoreUrl(String),
    /// The SQLite file could not be opened or created.
    #[error("cannot open the audit store {url}: {cause}")]
    Open {
        /// The URL, its password hidden.
        url: String,
        /// Why.
        cause: ConnectError,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error("cannot connect to the audit store {url}: {cause}")]
    Connect {
        /// The URL, its password hidden.
        url: String,
        /// Why.
        cause: ConnectError,
    },
    /// Bringing the schema up to date failed.
    #[error("audit store migration failed: {}", chain(.0))]
    Migrate(MigrateError),
    /// Reading records failed, or a stored record could not be read back.
    #[error("audit query failed: {0}")]
    Query(RowError),
    /// Deleting old records failed.
    #[error("audit retention (prune) failed: {}", chain(.0))]
    Prune(sqlx::Error),
    /// A statement failed (an insert, a count, a plan): the database's own error, which
    /// `classify` reads to tell a refused record from a store that is down.
    #[error("{}", chain(.0))]
    Database(sqlx::Error),
}

/// Why a connection to the audit database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The SQLite file did not exist and could not be created.
    #[error("cannot create {}: {}", .path.display(), chain(.cause))]
    Create {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The driver's error (a bad URL, a refused connection, a failed login, ...).
    #[error("{}", chain(.0))]
    Database(sqlx::Error),
}

/// Why stored records could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The statement failed.
    #[error("{}", chain(.0))]
    Database(sqlx::Error),
    /// A stored id is not a UUID.
    #[error("the store holds a malformed id `{id}`: {}", chain(.cause))]
    MalformedId {
        /// The id as stored.
        id: String,
        /// Why it does not parse.
        cause: uuid::Error,
    },
    /// A record's roles are not a JSON array of strings.
    #[error("record {id} has malformed roles: {}", chain(.cause))]
    MalformedRoles {
        /// The record's id.
        id: String,
        /// Why they do not parse.
        cause: serde_json::Error,
    },
    /// A stored outcome is not one this build knows.
    #[error("the store holds an unknown outcome `{0}`")]
    UnknownOutcome(String),
}

impl From<sqlx::Error> for RowError {
    fn from(e: sqlx::Error) -> Self {
        RowError::Database(e)
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        SqlError::Database(e)
    }
}

impl From<sqlx::Error> for ConnectError {
    fn from(e: sqlx::Error) -> Self {
        ConnectError::Database(e)
    }
}

/// An error and its causes, `: `-separated, as `anyhow` printed them with `{:#}`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An open audit database: the pool of whichever driver its URL names.
#[derive(Clone)]
pub enum SqlStore {
    /// `sqlite://...` (the default, a file beside the config).
    Sqlite(sqlx::SqlitePool),
    /// `postgres://...`.
    Postgres(sqlx::PgPool),
}

/// What `query` selects. `None` filters match everything.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    /// Only records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only this subject.
    pub client: Option<String>,
    /// Only names matching this glob.
    pub tool: Option<String>,
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// At most this many records.
    pub limit: usize,
    /// For `--follow`: only records whose id sorts after this one, **oldest first**. Without
    /// it, the newest `limit` records, **newest first**. Either way in id order: ids are UUIDv7,
    /// so that is arrival-time order, and every index the queries use ends in `id`.
    pub after_id: Option<uuid::Uuid>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery { since_ms: None, client: None, tool: None, backend: None, outcome: None, limit: 50, after_id: None }
    }
}

impl SqlStore {
    /// Opens `sqlite://PATH` (created if missing, WAL) or `postgres://...`. Errors name the
    /// URL with its password hidden.
    pub async fn connect(url: &str) -> Result<SqlStore, SqlError> {
        let shown = redact_url(url);
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let pool = sqlite::connect(path).await.map_err(|cause| SqlError::Open { url: shown, cause })?;
            Ok(SqlStore::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = postgres::connect(url).await.map_err(|cause| SqlError::Connect { url: shown, cause })?;
            Ok(SqlStore::Postgres(pool))
        } else {
            Err(SqlError::NotAStoreUrl(shown))
        }
    }

    /// For a loop that polls the store (the kill switch, the pins): the store, connected on
    /// first need; a failure is warned of once (`what`: whose loop, and what stays in force
    /// meanwhile), and tried again on the next round (`None`).
    pub async fn connected<'a>(
        db: &'a mut Option<SqlStore>,
        url: &str,
        warned: &mut bool,
        what: (&str, &str),
    ) -> Option<&'a SqlStore> {
        if db.is_none() {
            match SqlStore::connect(url).await {
                Ok(s) => *db = Some(s),
                Err(e) => {
                    if !std::mem::replace(warned, true) {
                        tracing::warn!("{}: the store is not reachable ({e:#}); {}", what.0, what.1);
                    }
                    return None;
                }
            }
        }
        db.as_ref()
    }

    /// Brings the schema up to date with the migrations embedded in the binary. Safe to run
    /// at every start and from several processes at once: on PostgreSQL sqlx takes an advisory
    /// lock; SQLite has none, so a migration that fails is tried again (see below).
    pub async fn migrate(&self) -> Result<(), SqlError> {
        let run = || async {
            match self {
                SqlStore::Sqlite(pool) => Migrator::new(SQLITE_MIGRATIONS).await?.run(pool).await,
                SqlStore::Postgres(pool) => Migrator::new(POSTGRES_MIGRATIONS).await?.run(pool).await,
            }
        };
        // Two processes migrating one SQLite file (a gateway starting while `sentinel
        // kill-switch` or `credentials` opens the same store) both read the applied list, then
        // the second one's CREATE fails on the first one's table ("already exists") or on its
        // lock. Each migration commits with its record, so a second run sees it applied and goes
        // on from there. A migration that is itself broken fails every time and is reported.
        let mut attempt = 0;
        loop {
            match run().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < SQLITE_MIGRATE_RETRIES && matches!(self, SqlStore::Sqlite(_)) => {
                    attempt += 1;
                    tracing::debug!(
                        "audit store migration failed ({e}); trying again, another process may be migrating"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(SqlError::Migrate(e)),
            }
        }
    }

    /// Stores a batch, skipping records already stored (by id), all or nothing.
    pub async fn insert_batch(&self, batch: &[AuditRecord]) -> Result<(), SqlError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            SqlStore::Sqlite(pool) => sqlite::insert(pool, batch).await,
            SqlStore::Postgres(pool) => postgres::insert(pool, batch).await,
        }
        .map_err(SqlError::Database)
    }

    /// The records `q` selects, in the order its `after_id` says.
    pub async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, SqlError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        match self {
            SqlStore::Sqlite(pool) => sqlite::query(pool, q).await,
            SqlStore::Postgres(pool) => postgres::query(pool, q).await,
        }
        .map_err(SqlError::Query)
    }

    /// Deletes the records older than this time (ms since the Unix epoch); returns how many.
    pub async fn prune(&self, older_than_ms: i64) -> Result<u64, SqlError> {
        match self {
            SqlStore::Sqlite(pool) => sqlite::prune(pool, older_than_ms).await,
            SqlStore::Postgres(pool) => postgres::prune(pool, older_than_ms).await,
        }
        .map_err(SqlError::Prune)
    }

    /// The database's plan for `query(q)` (PostgreSQL's `EXPLAIN`, SQLite's `EXPLAIN QUERY
    /// PLAN`), one line per row: the tests check that every filter is served by an index.
    pub async fn explain(&self, q: &AuditQuery) -> Result<Vec<String>, SqlError> {
        match self {
            SqlStore::Sqlite(pool) => sqlite::explain(pool, q).await,
            SqlStore::Postgres(pool) => postgres::explain(pool, q).await,
        }
        .map_err(SqlError::Database)
    }

    /// The database's plan for `prune(older_than_ms)`, as `explain` gives it.
    pub async fn explain_prune(&self, older_than_ms: i64) -> Result<Vec<String>, SqlError> {
        match self {
            SqlStore::Sqlite(pool) => sqlite::explain_prune(pool, older_than_ms).await,
            SqlStore::Postgres(pool) => postgres::explain_prune(pool, older_than_ms).await,
        }
        .map_err(SqlError::Database)
    }

    /// How many records the store holds (tests and benchmarks).
    pub async fn count(&self) -> Result<u64, SqlError> {
        let n: i64 = match self {
            SqlStore::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM audit_records").fetch_one(pool).await?,
            SqlStore::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM audit_records").fetch_one(pool).await?
            }
        };
        Ok(n as u64)
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        match self {
            SqlStore::Sqlite(pool) => pool.close().await,
            SqlStore::Postgres(pool) => pool.close().await,
        }
    }
}

impl AuditStore for SqlStore {
    fn insert<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.insert_batch(batch).await.map_err(store_error) })
    }
}

fn store_error(e: SqlError) -> StoreError {
    StoreError { permanent: classify::is_permanent(&e), message: e.to_string() }
}

/// The gateway's store: connected and migrated once the database answers, which need not be
/// at start (a host that boots PostgreSQL after the gateway, a maintenance window). Until then
/// every insert fails as transient, and records wait in the spool.
pub struct ConnectingStore {
    url: String,
    store: tokio::sync::OnceCell<SqlStore>,
}

impl ConnectingStore {
    /// A store for `url`, not connected yet.
    pub fn new(url: &str) -> ConnectingStore {
        ConnectingStore { url: url.to_string(), store: tokio::sync::OnceCell::new() }
    }

    /// The store, once connected.
    pub fn get(&self) -> Option<&SqlStore> {
        self.store.get()
    }
}

impl AuditStore for ConnectingStore {
    fn insert<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.store.get() {
                Some(store) => store.insert(batch).await,
                None => Err(StoreError::transient("the audit store is not connected yet")),
            }
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let shown = redact_url(&self.url);
            self.store
                .get_or_try_init(|| async {
                    let store = SqlStore::connect(&self.url).await?;
                    if let Err(e) = store.migrate().await {
                        store.close().await;
                        return Err(e);
                    }
                    Ok(store)
                })
                .await
                .map(|_| ())
                .map_err(|e: SqlError| StoreError::transient(format!("audit store {shown}: {e}")))
        })
    }
}

/// Splits a batch into the slices that each become one INSERT: under `max_params` bound
/// values (the dialect's limit) and about `MAX_STATEMENT_BYTES` of text; never empty.
fn statements(batch: &[AuditRecord], max_params: usize) -> Vec<&[AuditRecord]> {
    let max_rows = (max_params / COLUMNS).max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in batch.iter().enumerate() {
        let size = record_bytes(r);
        if i > start && (i - start == max_rows || bytes + size > MAX_STATEMENT_BYTES) {
            out.push(&batch[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < batch.len() {
        out.push(&batch[start..]);
    }
    out
}

fn record_bytes(r: &AuditRecord) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    128 + opt(&r.client)
        + r.roles.iter().map(|s| s.len() + 4).sum::<usize>()
        + opt(&r.session)
        + r.transport.len()
        + r.method.len()
        + opt(&r.tool)
        + opt(&r.backend)
        + opt(&r.arguments)
}

/// The smallest UUIDv7 of a millisecond: every id made at or after it sorts after it. A
/// record's `ts_ms` is its id's time (`AuditRecord::start`), so `ts_ms >= ms` implies
/// `id >= id_floor(ms)`: the queries add that bound so the primary key serves a time window,
/// and the stores need no index on the time.
pub fn id_floor(ms: i64) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.clamp(0, (1 << 48) - 1).to_be_bytes()[2..]);
    uuid::Uuid::from_bytes(bytes)
}

fn parse_outcome(s: &str) -> Result<Outcome, RowError> {
    Outcome::parse(s).ok_or_else(|| RowError::UnknownOutcome(s.to_string()))
}

/// The byte count as the stores keep it (a signed 64-bit integer).
fn stored_bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How many times a failed SQLite migration is run again (100, 200, … ms apart).
const SQLITE_MIGRATE_RETRIES: u32 = 5;

/// Migrations compiled into the binary, one folder per dialect. Hand-listed rather than
/// `sqlx::migrate!()`: that macro needs sqlx's proc-macro crate, which builds both drivers and
/// SQLite's C source a second time, for one `include_str!` per file. The checksums are the same
/// as the macro's, so `sqlx-cli` sees the same history.
#[derive(Debug, Clone, Copy)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

const SQLITE_MIGRATIONS: Embedded = Embedded(&[
    (1, "audit records", include_str!("../../migrations/sqlite/0001_audit_records.sql")),
    (2, "cheaper indexes", include_str!("../../migrations/sqlite/0002_cheaper_indexes.sql")),
    (3, "credentials", include_str!("../../migrations/sqlite/0003_credentials.sql")),
    (4, "kill switch", include_str!("../../migrations/sqlite/0004_kill_switch.sql")),
    (5, "trace id", include_str!("../../migrations/sqlite/0005_trace_id.sql")),
    (6, "replica", include_str!("../../migrations/sqlite/0006_replica.sql")),
    (7, "catalog", include_str!("../../migrations/sqlite/0007_catalog.sql")),
    (8, "credential mode", include_str!("../../migrations/sqlite/0008_credential_mode.sql")),
]);

const POSTGRES_MIGRATIONS: Embedded = Embedded(&[
    (1, "audit records", include_str!("../../migrations/postgres/0001_audit_records.sql")),
    (2, "cheaper indexes", include_str!("../../migrations/postgres/0002_cheaper_indexes.sql")),
    (3, "credentials", include_str!("../../migrations/postgres/0003_credentials.sql")),
    (4, "kill switch", include_str!("../../migrations/postgres/0004_kill_switch.sql")),
    (5, "trace id", include_str!("../../migrations/postgres/0005_trace_id.sql")),
    (6, "replica", include_str!("../../migrations/postgres/0006_replica.sql")),
    (7, "catalog", include_str!("../../migrations/postgres/0007_catalog.sql")),
    (8, "credential mode", include_str!("../../migrations/postgres/0008_credential_mode.sql")),
]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two connections (as two processes would be) migrating one new SQLite file at once both
    /// succeed, and the schema is whole: CI saw `sentinel kill-switch add` fail with "table
    /// credentials already exists" while its gateway was still migrating the same file.
    #[tokio::test]
    async fn concurrent_sqlite_migrations_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let url = format!("sqlite://{}", dir.path().join(format!("a{i}.db")).display());
            let (a, b) = (SqlStore::connect(&url).await.unwrap(), SqlStore::connect(&url).await.unwrap());
            let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
            assert!(ra.is_ok() && rb.is_ok(), "round {i}: {ra:?} / {rb:?}");
            let SqlStore::Sqlite(pool) = &a else { unreachable!("a SQLite URL") };
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(applied as usize, SQLITE_MIGRATIONS.0.len(), "round {i}");
            a.close().await;
            b.close().await;
        }
    }

    fn record(arguments_len: usize) -> AuditRecord {
        let mut r = AuditRecord::start("tools/call", "http", Some("c"), &[], None);
        r.arguments = Some("x".repeat(arguments_len));
        r
    }

    #[test]
    fn statements_respect_the_parameter_limit() {
        let batch: Vec<_> = (0..100).map(|_| record(0)).collect();
        let parts = statements(&batch, COLUMNS * 30);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [30, 30, 30, 10]);
        assert_eq!(statements(&batch[..1], 1).len(), 1);
        assert!(statements(&[], 100).is_empty());
    }

    #[test]
    fn statements_respect_the_size_limit() {
        let batch: Vec<_> = (0..40).map(|_| record(1024 * 1024)).collect();
        let parts = statements(&batch, 65535);
        assert!(parts.len() >= 3, "{} statements", parts.len());
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 40);
        // A single record larger than the limit still goes alone, never dropped.
        let huge = [record(MAX_STATEMENT_BYTES + 1), record(1)];
        assert_eq!(statements(&huge, 65535).iter().map(|p| p.len()).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn id_floor_sorts_before_every_id_of_its_millisecond() {
        let ms = 1_700_000_000_123;
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, (ms / 1000) as u64, ((ms % 1000) * 1_000_000) as u32);
        let id = uuid::Uuid::new_v7(ts);
        assert!(id_floor(ms) < id && id < id_floor(ms + 1));
        assert_eq!(id_floor(-5), uuid::Uuid::nil());
    }

    #[test]
    fn a_records_time_is_its_ids_time() {
        for _ in 0..10_000 {
            let r = AuditRecord::start("tools/call", "http", None, &[], None);
            assert!(id_floor(r.ts_ms) <= r.id && r.id < id_floor(r.ts_ms + 1), "{} at {}", r.id, r.ts_ms);
        }
    }

    #[test]
    fn embedded_migrations_are_numbered_in_order() {
        for m in [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS] {
            let versions: Vec<i64> = m.0.iter().map(|v| v.0).collect();
            assert!(versions.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
