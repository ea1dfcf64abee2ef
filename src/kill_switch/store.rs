//! The `kill_switch` table of the audit database. Both dialects take the same SQL (`$n`
//! placeholders bound in order, `ON CONFLICT ... DO UPDATE`).

use anyhow::Context;

use super::{Entry, Kind};
use crate::audit::store::{SqlStore, on_pool};

/// Every entry, in a stable order (so that an unchanged table reads as an unchanged list).
pub async fn list(store: &SqlStore) -> anyhow::Result<Vec<Entry>> {
    let rows: Vec<(String, String, Option<String>, String, i64)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT kind, target, reason, added_by, added_ms FROM kill_switch ORDER BY kind, target",
    )
    .fetch_all(pool)
    .await)
    .context("reading the kill switch failed")?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, target, reason, added_by, added_ms)| {
            Some(Entry { kind: Kind::parse(&kind)?, target, reason, added_by, added_ms })
        })
        .collect())
}

/// Switches `e` off (or updates its reason); says whether it was already off.
pub async fn add(store: &SqlStore, e: &Entry) -> anyhow::Result<bool> {
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
    .context("switching off failed")?;
    Ok(before.iter().any(|b| b.kind == e.kind && b.target == e.target))
}

/// Switches `(kind, target)` on again; says whether it was off.
pub async fn remove(store: &SqlStore, kind: Kind, target: &str) -> anyhow::Result<bool> {
    let n = on_pool!(store, pool => sqlx::query("DELETE FROM kill_switch WHERE kind = $1 AND target = $2")
        .bind(kind.as_str())
        .bind(target)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .context("switching on again failed")?;
    Ok(n > 0)
}

/// Whether `e` says the table is not there yet (a store the audit writer has not migrated).
pub fn missing_table(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("no such table") || text.contains("does not exist")
}
