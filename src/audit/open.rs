//! Opening the audit trail a config asks for: the writer and its spool at once, the store
//! whenever it answers (the writer connects and migrates it in the background, so a gateway
//! starts while its database is down), and retention once it is connected.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::store::{ConnectingStore, identity};
use super::writer::{AuditSettings, AuditWriter};
use crate::config::AuditConfig;

/// How often old records are pruned when `retain` is set.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often retention looks whether the store is connected yet.
const CONNECTED_LOOK: Duration = Duration::from_secs(10);

/// The audit spool folder could not be made or locked.
#[derive(Debug, thiserror::Error)]
#[error("audit spool {}: {cause}", .dir.display())]
pub struct SpoolError {
    /// The configured spool folder.
    pub dir: std::path::PathBuf,
    /// Why.
    pub cause: std::io::Error,
}

/// Starts the audit writer for `c` (inside a tokio runtime); `None` for `url = "none"`. Fails
/// only when the spool folder cannot be made or locked.
pub fn open(c: &AuditConfig) -> Result<Option<Arc<AuditWriter>>, SpoolError> {
    if c.url == "none" {
        tracing::warn!("[audit] url = \"none\": calls leave no durable audit record");
        return Ok(None);
    }
    let store = Arc::new(ConnectingStore::new(&c.url));
    let settings = AuditSettings {
        spool_dir: c.spool_dir.clone(),
        store_id: identity(&c.url),
        fail_open: c.fail_open,
        queue_capacity: c.queue,
        batch_max: c.batch,
        flush_interval: c.flush_interval,
        durability: c.durability,
    };
    let writer =
        AuditWriter::start(store.clone(), settings).map_err(|cause| SpoolError { dir: c.spool_dir.clone(), cause })?;
    if let Some(retain) = c.retain {
        writer.spawn(prune(Arc::downgrade(&store), retain));
    }
    Ok(Some(writer))
}

/// Deletes records older than `retain` once the store is connected, then every hour.
async fn prune(store: std::sync::Weak<ConnectingStore>, retain: Duration) {
    loop {
        let Some(store) = store.upgrade() else { return };
        let Some(db) = store.get().cloned() else {
            drop(store);
            tokio::time::sleep(CONNECTED_LOOK).await;
            continue;
        };
        drop(store);
        let cutoff = SystemTime::now()
            .checked_sub(retain)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        match db.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "audit retention: pruned old records"),
            Err(e) => tracing::warn!("audit retention: prune failed: {e:#}"),
        }
        drop(db);
        tokio::time::sleep(PRUNE_INTERVAL).await;
    }
}
