//! The drainer: moves spooled records into the store, oldest first, in batches, and deletes
//! each segment once all of it is stored. While the store is down or slow it retries the same
//! batch with backoff, so the spool grows and nothing is reordered.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{RETRY_MAX, RETRY_MIN, STORE_TIMEOUT, Shared, blocking};
use crate::audit::spool::{Segment, SegmentRead, list_segments};
use crate::audit::{AuditRecord, AuditStore};

/// Why the drainer stopped early: its writer was dropped.
struct Stopped;

/// The drainer task: spool → store, oldest first.
pub(super) struct Drainer {
    pub(super) store: Arc<dyn AuditStore>,
    pub(super) dir: PathBuf,
    pub(super) shared: Arc<Shared>,
    pub(super) batch_max: usize,
    /// Segments below this were left by a previous run: what they hold counts as replayed.
    pub(super) first_live_seq: u64,
    /// (segment, byte offset) already stored in the segment still being written, so a pass
    /// does not insert its stored prefix again.
    pub(super) cursor: (u64, u64),
    /// Segments fully stored whose deletion failed; skipped until deleted.
    pub(super) stored_not_removed: Vec<u64>,
    pub(super) stop: CancellationToken,
}

impl Drainer {
    pub(super) async fn run(mut self) {
        loop {
            match self.pass().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Stopped) => return,
            }
            tokio::select! {
                () = self.shared.appended.notified() => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Stores what the spool holds, oldest first, up to the segment still being written.
    /// Returns whether anything changed (then another pass may find more).
    async fn pass(&mut self) -> Result<bool, Stopped> {
        let sealed_below = self.shared.sealed_below.load(Ordering::Acquire);
        let dir = self.dir.clone();
        let segments = match blocking(move || list_segments(&dir)).await {
            Ok(segments) => segments,
            Err(e) => return self.io_failed("listing", e).await,
        };
        let mut progressed = false;
        for segment in segments {
            let sealed = segment.seq < sealed_below;
            if self.stored_not_removed.contains(&segment.seq) {
                progressed |= self.remove(segment);
                continue;
            }
            let offset = if self.cursor.0 == segment.seq { self.cursor.1 } else { 0 };
            let reading = segment.clone();
            let read: SegmentRead = match blocking(move || reading.read_from(offset)).await {
                Ok(read) => read,
                Err(e) => return self.io_failed("reading", e).await,
            };
            let replay = segment.seq < self.first_live_seq;
            if read.corrupt > 0 {
                Shared::add(&self.shared.failed, read.corrupt);
                if !replay {
                    self.shared.take_backlog(read.corrupt);
                }
            }
            for chunk in read.records.chunks(self.batch_max) {
                self.insert(chunk).await?;
                Shared::add(if replay { &self.shared.replayed } else { &self.shared.written }, chunk.len());
                self.shared.take_backlog(chunk.len());
                self.shared.stored.notify_waiters();
                progressed = true;
            }
            if !sealed {
                // Still being written: later records go after these, in a later pass.
                self.cursor = (segment.seq, read.end);
                break;
            }
            self.cursor = (0, 0);
            self.stored_not_removed.push(segment.seq);
            progressed |= self.remove(segment);
        }
        Ok(progressed)
    }

    /// Inserts one batch, retrying with exponential backoff until it is stored. Hand-rolled (no
    /// jitter): one drainer per process retries one batch, so there is no herd to spread.
    async fn insert(&self, chunk: &[AuditRecord]) -> Result<(), Stopped> {
        let mut delay = RETRY_MIN;
        loop {
            let attempt = tokio::time::timeout(STORE_TIMEOUT, self.store.insert(chunk));
            let result = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(format!("insert timed out after {STORE_TIMEOUT:?}"))),
                () = self.stop.cancelled() => return Err(Stopped),
            };
            match result {
                Ok(()) => {
                    if !self.shared.store_up.swap(true, Ordering::Relaxed) {
                        tracing::warn!("audit store reachable again; draining the spool");
                    }
                    return Ok(());
                }
                Err(e) => {
                    if self.shared.store_up.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "audit store insert failed; records wait in the spool");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?delay, "audit store still failing");
                    }
                }
            }
            self.pause(delay).await?;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Deletes a fully stored segment; returns whether it is gone.
    fn remove(&mut self, segment: Segment) -> bool {
        match segment.remove() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(segment = %segment.path.display(), error = %e, "cannot delete a stored audit spool segment");
                return false;
            }
        }
        self.stored_not_removed.retain(|&seq| seq != segment.seq);
        true
    }

    async fn io_failed(&self, what: &str, e: io::Error) -> Result<bool, Stopped> {
        tracing::error!(dir = %self.dir.display(), error = %e, "{what} the audit spool failed");
        self.pause(Duration::from_secs(1)).await?;
        Ok(true)
    }

    async fn pause(&self, delay: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(Stopped),
        }
    }
}
