//! The `kill_switch` table of the audit database. Both dialects take the same SQL (`$n`
//! placeholders bound in order, `ON CONFLICT ... DO UPDATE`).

use super::{Entry, Kind};
use crate::audit::store::{SqlStore, chain, on_pool};

/// Why the kill switch table could not be read or changed (the database's error in each).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading the entries failed.
    #[error("reading the kill switch failed: {}", chain(.0))]
    Read(sqlx::Error),
    /// Adding an entry failed.
    #[error("switching off failed: {}", chain(.0))]
    Add(sqlx::Error),
    /// Removing an entry failed.
    #[error("switching on again failed: {}", chain(.0))]
    Remove(sqlx::Error),
}

impl StoreError {
    /// Whether it says the table is not there yet (a store the audit writer has not migrated).
    pub fn is_missing_table(&self) -> bool {
        let (StoreError::Read(e) | StoreError::Add(e) | StoreError::Remove(e)) = self;
        let text = chain(e);
        text.contains("no such table") || text.contains("does not exist")
    }
}

/// Every entry, in a stable order (so that an unchanged table reads as an unchanged list).
pub async fn list(store: &SqlStore) -> Result<Vec<Entry>, StoreError> {
    let rows: Vec<(String, String, Option<String>, String, i64)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT kind, target, reason, added_by, added_ms FROM kill_switch ORDER BY kind, target",
    )
    .fetch_all(pool)
    .await)
    .map_err(StoreError::Read)?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, target, reason, added_by, added_ms)| {
            Some(Entry { kind: Kind::parse(&kind)?, target, reason, added_by, added_ms })
        })
        .collect())
}

/// Switches `e` off (or updates its reason); says whether it was already off.
pub async fn add(store: &SqlStore, e: &Entry) -> Result<bool, StoreError> {
    let before = list(store).await?;
    on_pool!(store, pool => sqlx::query(
        "INSERT INTO kill_switch (kind, target, reason, added_by, added_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, added_by = excluded.added_by, \
         added_ms = excluded.added_ms",
    )
    .bind(e.kind.as_str())
    .bind(&e.target)
    .bind(&e.reason)
    .bind(&e.added_by)
    .bind(e.added_ms)
    .execute(pool)
    .await
    .map(|_| ()))
    .map_err(StoreError::Add)?;
    Ok(before.iter().any(|b| b.kind == e.kind && b.target == e.target))
}

/// Switches `(kind, target)` on again; says whether it was off.
pub async fn remove(store: &SqlStore, kind: Kind, target: &str) -> Result<bool, StoreError> {
    let n = on_pool!(store, pool => sqlx::query("DELETE FROM kill_switch WHERE kind = $1 AND target = $2")
        .bind(kind.as_str())
        .bind(target)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .map_err(StoreError::Remove)?;
    Ok(n > 0)
}
