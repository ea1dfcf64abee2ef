//! The `tool_pins` and `tool_pin_changes` tables of the audit database. Both dialects take the
//! same SQL (`$n` placeholders bound in order, `ON CONFLICT ... DO ...`).

use super::{Seen, Write};
use crate::audit::store::{SqlStore, chain, on_pool};

/// Why a pins table could not be read or changed (the database's error in each).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading failed.
    #[error("reading the pins failed: {}", chain(.0))]
    Read(sqlx::Error),
    /// Writing a pin or a change failed.
    #[error("recording a pin failed: {}", chain(.0))]
    Write(sqlx::Error),
}

impl StoreError {
    /// Whether it says the tables are not there yet (a store the audit writer has not migrated).
    pub fn is_missing_table(&self) -> bool {
        let (StoreError::Read(e) | StoreError::Write(e)) = self;
        let text = chain(e);
        text.contains("no such table") || text.contains("does not exist")
    }
}

/// One pinned tool and, if its backend served something else since, the latest such change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pin {
    /// The backend's name in the config.
    pub backend: String,
    /// The tool's own name at the backend.
    pub tool: String,
    /// The name clients knew it by when it was pinned.
    pub exposed: String,
    /// SHA-256 of the pinned definition.
    pub hash: String,
    /// The pinned definition (canonical JSON).
    pub definition: String,
    /// ms since the Unix epoch.
    pub pinned_ms: i64,
    /// Who pinned it: a replica (first sight) or `user@host` (an approval).
    pub pinned_by: String,
    /// The latest definition served that differs from the pin, if any.
    pub pending: Option<Change>,
}

/// A definition a backend served that differs from the pin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// SHA-256 of the pin it differed from when seen.
    pub old_hash: String,
    /// The pinned definition it differed from.
    pub old_definition: String,
    /// SHA-256 of what was served.
    pub new_hash: String,
    /// What was served (canonical JSON).
    pub new_definition: String,
    /// ms since the Unix epoch, last time seen.
    pub seen_ms: i64,
    /// The replica that saw it.
    pub seen_by: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Pins many tools seen for the first time in one statement per 500 (a gateway's start pins
/// its whole catalog: one statement, not one commit per tool).
pub async fn pin_new(store: &SqlStore, seen: &[&Seen], by: &str) -> Result<(), StoreError> {
    for part in seen.chunks(500) {
        let rows: Vec<String> = (0..part.len())
            .map(|i| {
                let n = i * 7;
                format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7)
            })
            .collect();
        let sql = format!(
            "INSERT INTO tool_pins (backend, tool, exposed, hash, definition, pinned_ms, pinned_by) VALUES {} \
             ON CONFLICT (backend, tool) DO NOTHING",
            rows.join(", ")
        );
        let now = now_ms();
        on_pool!(store, pool => {
            let mut q = sqlx::query(&sql);
            for s in part {
                q = q.bind(&s.backend).bind(&s.tool).bind(&s.exposed).bind(&s.definition.hash)
                    .bind(&s.definition.json).bind(now).bind(by);
            }
            q.execute(pool).await.map(|_| ())
        })
        .map_err(StoreError::Write)?;
    }
    Ok(())
}

/// Writes one queued pin or change. A pin another replica stored first stays (the poll then
/// brings it here); a change seen again updates its time.
pub async fn write(store: &SqlStore, w: &Write, by: &str) -> Result<(), StoreError> {
    match w {
        Write::Pin(s) => pin(store, s, by, false).await,
        Write::Change(s) => on_pool!(store, pool => sqlx::query(
                "INSERT INTO tool_pin_changes (backend, tool, exposed, old_hash, old_definition, new_hash, \
                 new_definition, seen_ms, seen_by) \
                 SELECT backend, tool, $3, hash, definition, $4, $5, $6, $7 FROM tool_pins \
                 WHERE backend = $1 AND tool = $2 \
                 ON CONFLICT (backend, tool, new_hash) DO UPDATE SET seen_ms = excluded.seen_ms, \
                 seen_by = excluded.seen_by, old_hash = excluded.old_hash, old_definition = excluded.old_definition",
            )
            .bind(&s.backend)
            .bind(&s.tool)
            .bind(&s.exposed)
            .bind(&s.definition.hash)
            .bind(&s.definition.json)
            .bind(now_ms())
            .bind(by)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StoreError::Write),
    }
}

/// Pins `s`: on first sight only where nothing is pinned yet; on approval (`replace`) over
/// what was.
async fn pin(store: &SqlStore, s: &Seen, by: &str, replace: bool) -> Result<(), StoreError> {
    let conflict = if replace {
        "DO UPDATE SET exposed = excluded.exposed, hash = excluded.hash, definition = excluded.definition, \
         pinned_ms = excluded.pinned_ms, pinned_by = excluded.pinned_by"
    } else {
        "DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO tool_pins (backend, tool, exposed, hash, definition, pinned_ms, pinned_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (backend, tool) {conflict}"
    );
    on_pool!(store, pool => sqlx::query(&sql)
        .bind(&s.backend)
        .bind(&s.tool)
        .bind(&s.exposed)
        .bind(&s.definition.hash)
        .bind(&s.definition.json)
        .bind(now_ms())
        .bind(by)
        .execute(pool)
        .await
        .map(|_| ()))
    .map_err(StoreError::Write)
}

/// Every pin's (backend, tool, hash): what the gateways poll.
pub async fn hashes(store: &SqlStore) -> Result<Vec<(String, String, String)>, StoreError> {
    on_pool!(store, pool => sqlx::query_as("SELECT backend, tool, hash FROM tool_pins ORDER BY backend, tool")
        .fetch_all(pool)
        .await)
    .map_err(StoreError::Read)
}

type PinRow = (String, String, String, String, String, i64, String);
type ChangeRow = (String, String, String, String, String, String, i64, String);

/// Every pin with its latest pending change, by backend then tool.
pub async fn list(store: &SqlStore) -> Result<Vec<Pin>, StoreError> {
    let pins: Vec<PinRow> = on_pool!(store, pool => sqlx::query_as(
        "SELECT backend, tool, exposed, hash, definition, pinned_ms, pinned_by FROM tool_pins ORDER BY backend, tool",
    )
    .fetch_all(pool)
    .await)
    .map_err(StoreError::Read)?;
    // Changes whose definition is not the pin now, newest first: the first per tool is pending.
    let changes: Vec<ChangeRow> = on_pool!(store, pool => sqlx::query_as(
        "SELECT c.backend, c.tool, c.old_hash, c.old_definition, c.new_hash, c.new_definition, c.seen_ms, c.seen_by \
         FROM tool_pin_changes c JOIN tool_pins p ON p.backend = c.backend AND p.tool = c.tool \
         WHERE c.new_hash <> p.hash AND c.seen_ms >= p.pinned_ms ORDER BY c.seen_ms DESC",
    )
    .fetch_all(pool)
    .await)
    .map_err(StoreError::Read)?;
    Ok(pins
        .into_iter()
        .map(|(backend, tool, exposed, hash, definition, pinned_ms, pinned_by)| {
            let pending = changes.iter().find(|c| c.0 == backend && c.1 == tool).map(|c| Change {
                old_hash: c.2.clone(),
                old_definition: c.3.clone(),
                new_hash: c.4.clone(),
                new_definition: c.5.clone(),
                seen_ms: c.6,
                seen_by: c.7.clone(),
            });
            Pin { backend, tool, exposed, hash, definition, pinned_ms, pinned_by, pending }
        })
        .collect())
}

/// Makes `p`'s pending definition its pin; says whether there was one.
pub async fn approve(store: &SqlStore, p: &Pin, by: &str) -> Result<bool, StoreError> {
    let Some(c) = &p.pending else { return Ok(false) };
    let seen = Seen {
        backend: p.backend.clone(),
        tool: p.tool.clone(),
        exposed: p.exposed.clone(),
        definition: super::Definition { json: c.new_definition.clone(), hash: c.new_hash.clone() },
    };
    pin(store, &seen, by, true).await?;
    Ok(true)
}
