//! The `credentials` table of the audit database: one sealed secret per (subject, backend).
//!
//! Both dialects take the same SQL: `$n` placeholders are PostgreSQL's and, bound in order,
//! SQLite's too; `ON CONFLICT ... DO UPDATE` is in both.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Keys, OpenError};
use crate::audit::store::{SqlStore, chain, on_pool};

/// Why the credential table could not be read or changed, or a credential not opened. Each
/// variant's text includes its cause's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Storing a credential failed.
    #[error("storing the credential failed: {}", chain(.0))]
    Set(sqlx::Error),
    /// Removing a credential failed.
    #[error("removing the credential failed: {}", chain(.0))]
    Remove(sqlx::Error),
    /// Reading a credential failed.
    #[error("reading the credential failed: {}", chain(.0))]
    Get(sqlx::Error),
    /// Listing credentials failed.
    #[error("listing credentials failed: {}", chain(.0))]
    List(sqlx::Error),
    /// Reading which keys sealed the credentials failed.
    #[error("reading the credential store's keys failed: {}", chain(.0))]
    KeyIds(sqlx::Error),
    /// Resealing failed in the database (nothing was resealed: it is one transaction).
    #[error("{}", chain(.0))]
    Reseal(sqlx::Error),
    /// A stored credential does not open with the keys this gateway holds.
    #[error("the credential of `{subject}` at `{backend}` {cause}{}", if *.resealing { "; nothing was resealed" } else { "" })]
    Open {
        /// Whose it is.
        subject: String,
        /// The backend it is for.
        backend: String,
        /// Why it does not open.
        cause: OpenError,
        /// Whether a reseal found it (and so resealed nothing).
        resealing: bool,
    },
    /// Some credentials were sealed with keys this gateway does not hold.
    #[error(
        "the credential store holds credentials this key cannot open ({foreign}); `[credentials]` key is {current}{}. \
         Point `key_file` at the key they were stored with (or, during a rotation, `previous_key_file`), or remove \
         them with `sentinel credentials remove`",
        .previous.as_ref().map(|p| format!(" and the previous key is {p}")).unwrap_or_default()
    )]
    ForeignKeys {
        /// How many each foreign key sealed (`N sealed with key ID`, comma-separated).
        foreign: String,
        /// The current key's id.
        current: String,
        /// The previous key's id, if one is configured.
        previous: Option<String>,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Reseal(e)
    }
}

/// What `list` shows of a stored credential: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Whose it is: the token's `sub`.
    pub subject: String,
    /// The backend it is for.
    pub backend: String,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// When it was last set, in ms since the Unix epoch.
    pub updated_ms: i64,
}

/// A sealed secret as read back for a call.
#[derive(Debug)]
pub struct Sealed {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Nonce, ciphertext and tag.
    pub sealed: Vec<u8>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Stores `secret` for (`subject`, `backend`), sealed with the current key; says whether one
/// was there before (and is now replaced).
pub async fn set(
    store: &SqlStore,
    keys: &Keys,
    subject: &str,
    backend: &str,
    secret: &[u8],
) -> Result<bool, StoreError> {
    let sealed = keys.current.seal(subject, backend, secret);
    let existed = get(store, subject, backend).await?.is_some();
    on_pool!(store, pool => sqlx::query(
        "INSERT INTO credentials (subject, backend, key_id, sealed, updated_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (subject, backend) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, \
         updated_ms = excluded.updated_ms",
    )
    .bind(subject)
    .bind(backend)
    .bind(keys.current.id())
    .bind(&sealed)
    .bind(now_ms())
    .execute(pool)
    .await
    .map(|_| ()))
    .map_err(StoreError::Set)?;
    Ok(existed)
}

/// Removes the credential of (`subject`, `backend`); says whether there was one.
pub async fn remove(store: &SqlStore, subject: &str, backend: &str) -> Result<bool, StoreError> {
    let n = on_pool!(store, pool => sqlx::query("DELETE FROM credentials WHERE subject = $1 AND backend = $2")
        .bind(subject)
        .bind(backend)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .map_err(StoreError::Remove)?;
    Ok(n > 0)
}

/// The sealed credential of (`subject`, `backend`), if there is one.
pub async fn get(store: &SqlStore, subject: &str, backend: &str) -> Result<Option<Sealed>, StoreError> {
    let row: Option<(String, Vec<u8>)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT key_id, sealed FROM credentials WHERE subject = $1 AND backend = $2",
    )
    .bind(subject)
    .bind(backend)
    .fetch_optional(pool)
    .await)
    .map_err(StoreError::Get)?;
    Ok(row.map(|(key_id, sealed)| Sealed { key_id, sealed }))
}

/// The credential of (`subject`, `backend`) opened, if there is one.
pub async fn secret(
    store: &SqlStore,
    keys: &Keys,
    subject: &str,
    backend: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(s) = get(store, subject, backend).await? else { return Ok(None) };
    keys.open(&s.key_id, subject, backend, &s.sealed).map(Some).map_err(|cause| StoreError::Open {
        subject: subject.to_string(),
        backend: backend.to_string(),
        cause,
        resealing: false,
    })
}

/// Every stored credential matching the filters, by backend then subject.
pub async fn list(store: &SqlStore, subject: Option<&str>, backend: Option<&str>) -> Result<Vec<Entry>, StoreError> {
    let rows: Vec<(String, String, String, i64)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT subject, backend, key_id, updated_ms FROM credentials \
         WHERE ($1 IS NULL OR subject = $1) AND ($2 IS NULL OR backend = $2) ORDER BY backend, subject",
    )
    .bind(subject)
    .bind(backend)
    .fetch_all(pool)
    .await)
    .map_err(StoreError::List)?;
    Ok(rows
        .into_iter()
        .map(|(subject, backend, key_id, updated_ms)| Entry { subject, backend, key_id, updated_ms })
        .collect())
}

/// How many credentials each key has sealed.
pub async fn key_ids(store: &SqlStore) -> Result<Vec<(String, i64)>, StoreError> {
    on_pool!(store, pool => sqlx::query_as("SELECT key_id, COUNT(*) FROM credentials GROUP BY key_id ORDER BY key_id")
        .fetch_all(pool)
        .await)
    .map_err(StoreError::KeyIds)
}

/// Fails, saying what to do, when some credential was sealed with a key this gateway does not
/// hold: started with the wrong key, it would otherwise find out call by call.
pub async fn verify(store: &SqlStore, keys: &Keys) -> Result<(), StoreError> {
    let foreign: Vec<String> = key_ids(store)
        .await?
        .into_iter()
        .filter(|(id, _)| !keys.holds(id))
        .map(|(id, n)| format!("{n} sealed with key {id}"))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(StoreError::ForeignKeys {
        foreign: foreign.join(", "),
        current: keys.current.id().to_string(),
        previous: keys.previous.as_ref().map(|p| p.id().to_string()),
    })
}

/// Seals every credential not under the current key anew under it, in one transaction: after
/// it, `previous_key_file` can go. Returns how many were resealed.
pub async fn reseal(store: &SqlStore, keys: &Keys) -> Result<u64, StoreError> {
    verify(store, keys).await?;
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String, String, Vec<u8>)> =
            sqlx::query_as("SELECT subject, backend, key_id, sealed FROM credentials WHERE key_id <> $1")
                .bind(keys.current.id())
                .fetch_all(&mut *tx)
                .await?;
        let mut n = 0;
        for (subject, backend, key_id, sealed) in rows {
            let plain = keys.open(&key_id, &subject, &backend, &sealed).map_err(|cause: OpenError| {
                StoreError::Open { subject: subject.clone(), backend: backend.clone(), cause, resealing: true }
            })?;
            sqlx::query("UPDATE credentials SET key_id = $1, sealed = $2 WHERE subject = $3 AND backend = $4")
                .bind(keys.current.id())
                .bind(keys.current.seal(&subject, &backend, &plain))
                .bind(&subject)
                .bind(&backend)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    })
}
