//! The drainer: moves spooled records into the store, oldest first, in batches, and deletes
//! each segment once all of it is stored. It starts by connecting to the store, retrying with
//! backoff until it answers. While the store is down or slow it retries the same batch with
//! backoff, so the spool grows and nothing is reordered. A batch the store refuses for what it
//! holds (`StoreError::permanent`) is split in halves until the records it refuses are found
//! alone; those go to the dead-letter file with the reason, and the rest are stored.
//!
//! In the steady state it takes the batches the spool writer just wrote from memory
//! (`RecentBatches`), as long as each starts exactly where the stored prefix of the live segment ends; anything
//! else (records left by a previous run, a batch dropped from memory while the store was slow,
//! a new segment) sends it back to reading the spool from disk, which is always right.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{RETRY_MAX, RETRY_MIN, STORE_GATHER, STORE_TIMEOUT, Shared, blocking};
use crate::audit::dead_letter::{self, DeadLetter};
use crate::audit::spool::{Segment, SegmentRead, list_segments};
use crate::audit::{AuditRecord, AuditStore, StoreError};

/// How often an idle drainer looks again without being woken.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Records read back from disk (a catch-up after an outage, a restart or a slow store) after
/// which the drainer, once caught up, gives the freed heap back to the kernel (`crate::heap`).
/// Catching up allocates far more at once than the steady state does; a few thousand records
/// (a few seconds of busy traffic) is where what the allocator keeps becomes megabytes.
pub(super) const TRIM_AFTER_RECORDS: usize = 5_000;

/// Why the drainer stopped early: its writer was dropped.
struct Stopped;

/// What the batches in memory offer the drainer.
enum FromMemory {
    /// Records to store, the cursor once they are, and whether memory holds more.
    Batch(Vec<AuditRecord>, (u64, u64), bool),
    /// Nothing written that is not stored.
    Idle,
    /// Something was written that memory does not hold in order: read the spool.
    Behind,
}

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
    /// Whether the spool on disk must be read before batches from memory can be trusted to
    /// follow the cursor: at start (left-overs) and after any trouble reading it.
    pub(super) rescan: bool,
    /// Segments fully stored whose deletion failed; skipped until deleted.
    pub(super) stored_not_removed: Vec<u64>,
    /// Records read back from disk since the heap was last trimmed (see `caught_up`).
    pub(super) read_from_disk: usize,
    /// The dead-letter file (beside the spool folders), and the store's identity its lines name.
    pub(super) dead_letters: PathBuf,
    pub(super) store_id: String,
    pub(super) stop: CancellationToken,
}

impl Drainer {
    pub(super) async fn run(mut self) {
        if self.connect().await.is_err() {
            return;
        }
        loop {
            match self.pass().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Stopped) => return,
            }
            tokio::select! {
                () = self.shared.appended.notified() => {}
                // A safety net: nothing written is left waiting for a wake-up that never comes.
                () = tokio::time::sleep(IDLE_LOOK) => {}
                () = self.stop.cancelled() => return,
            }
            if self.gather().await.is_err() {
                return;
            }
        }
    }

    /// Lets records gather in memory for `STORE_GATHER` before the next insert. The store is
    /// off the call path, so this delays only when records appear in it; in exchange the
    /// database commits a few large batches instead of one small one per spool write, which
    /// costs it (and the gateway) far less per record. A plain sleep, not woken by each write:
    /// every wake-up is a context switch the calls pay for. Past `batch_max` records, `pass`
    /// inserts full batches back to back without gathering.
    async fn gather(&self) -> Result<(), Stopped> {
        self.pause(STORE_GATHER).await
    }

    /// Stores what the spool holds, oldest first: from memory when it can, else from disk.
    /// Returns whether anything changed (then another pass may find more).
    async fn pass(&mut self) -> Result<bool, Stopped> {
        if !self.rescan {
            match self.take_live() {
                FromMemory::Batch(records, end, more) => {
                    let refused = self.insert(&records).await?;
                    self.cursor = end;
                    Shared::add(&self.shared.written, records.len() - refused);
                    self.shared.take_backlog(records.len());
                    self.shared.stored.notify_waiters();
                    drop(records);
                    if !more {
                        self.caught_up().await;
                    }
                    // What memory still holds is not gathered for.
                    return Ok(more);
                }
                FromMemory::Idle => {
                    self.caught_up().await;
                    return Ok(false);
                }
                FromMemory::Behind => {}
            }
        }
        // A scan that reaches the live segment's end lets memory take over, unless it failed
        // (`io_failed`) or a stored segment still waits to be deleted, which only a scan retries.
        self.rescan = false;
        let progressed = self.scan().await?;
        self.rescan |= !self.stored_not_removed.is_empty();
        Ok(progressed)
    }

    /// The batches in memory that continue the live segment exactly where the cursor stands,
    /// up to `batch_max` records (at least one batch), and where they end.
    fn take_live(&self) -> FromMemory {
        let mut live = self.shared.live();
        let (seq, offset) = self.cursor;
        // Already stored from disk (a scan ran while they were being written).
        while live.batches.front().is_some_and(|b| b.at.seq < seq || (b.at.seq == seq && b.at.end <= offset)) {
            let stale = live.batches.pop_front().map_or(0, |b| b.records.len());
            live.records -= stale;
        }
        let mut records = Vec::new();
        let mut end = self.cursor;
        while let Some(b) = live.batches.front() {
            let continues = b.at.seq == end.0 && b.at.start == end.1;
            if !continues || (!records.is_empty() && records.len() + b.records.len() > self.batch_max) {
                break;
            }
            let Some(b) = live.batches.pop_front() else { break };
            live.records -= b.records.len();
            end = (b.at.seq, b.at.end);
            records.extend(b.records);
        }
        // Whatever is left (cut at `batch_max`, or not continuing: a new segment) is looked at
        // at once rather than after the next write, which may never come.
        let more = !live.batches.is_empty();
        if !records.is_empty() {
            FromMemory::Batch(records, end, more)
        } else if live.batches.is_empty() && live.written_to.is_none_or(|w| w == self.cursor) {
            FromMemory::Idle
        } else {
            FromMemory::Behind
        }
    }

    /// Stores what the spool on disk holds, oldest first, up to the segment still being
    /// written. Returns whether anything changed.
    async fn scan(&mut self) -> Result<bool, Stopped> {
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
            let mut offset = if self.cursor.0 == segment.seq { self.cursor.1 } else { 0 };
            let replay = segment.seq < self.first_live_seq;
            // A batch at a time: a long outage's backlog is never all in memory at once.
            loop {
                let reading = segment.clone();
                let batch_max = self.batch_max;
                let read: SegmentRead = match blocking(move || reading.read_some(offset, batch_max)).await {
                    Ok(read) => read,
                    Err(e) => return self.io_failed("reading", e).await,
                };
                Shared::add(&self.shared.read_back, read.records.len());
                self.read_from_disk += read.records.len();
                if read.corrupt > 0 {
                    Shared::add(&self.shared.failed, read.corrupt);
                    self.shared.take_backlog(read.corrupt);
                }
                if !read.records.is_empty() {
                    let refused = self.insert(&read.records).await?;
                    let stored = read.records.len() - refused;
                    Shared::add(if replay { &self.shared.replayed } else { &self.shared.written }, stored);
                    self.shared.take_backlog(read.records.len());
                    self.shared.stored.notify_waiters();
                    progressed = true;
                }
                offset = read.end;
                if !sealed {
                    self.cursor = (segment.seq, offset);
                }
                if read.done {
                    break;
                }
            }
            if !sealed {
                // Still being written: later records go after these, in a later pass.
                return Ok(progressed);
            }
            self.cursor = (0, 0);
            self.stored_not_removed.push(segment.seq);
            progressed |= self.remove(segment);
        }
        // Every segment is stored: the writer's next one starts at its beginning, so batches
        // from memory can follow on at once.
        self.cursor = (sealed_below, 0);
        Ok(progressed)
    }

    /// Called when memory holds nothing more to store: if a catch-up from disk led here, the
    /// heap it grew is given back (`crate::heap`), on a blocking thread since a trim takes the
    /// allocator's locks for a few milliseconds. Under steady traffic this point is reached
    /// after every pass, so the count of records read from disk decides, not the moment.
    async fn caught_up(&mut self) {
        if self.read_from_disk < TRIM_AFTER_RECORDS {
            return;
        }
        self.read_from_disk = 0;
        let _ = blocking(|| {
            crate::heap::release_free_memory();
            Ok(())
        })
        .await;
        Shared::add(&self.shared.trims, 1);
    }

    /// Connects to the store (and migrates it), retrying with exponential backoff and jitter
    /// for as long as it takes; the spool takes the records meanwhile.
    async fn connect(&self) -> Result<(), Stopped> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times();
        let mut told = false;
        let attempt = (|| self.store.connect()).retry(backoff).notify(|e: &StoreError, next: Duration| {
            if !std::mem::replace(&mut told, true) {
                tracing::error!(error = %e, "audit store unreachable; records wait in the spool until it answers");
            } else {
                tracing::debug!(error = %e, retry_in = ?next, "audit store still unreachable");
            }
        });
        tokio::select! {
            r = attempt => {
                if r.is_ok() {
                    self.shared.store_answered(true);
                    if told {
                        tracing::warn!("audit store reachable again; connected, draining the spool");
                    } else {
                        tracing::info!("audit store connected");
                    }
                }
                Ok(())
            }
            () = self.stop.cancelled() => Err(Stopped),
        }
    }

    /// Stores one batch: retries while the store is down or slow; when it refuses records for
    /// good, splits the batch until each refused record is alone and moves those to the
    /// dead-letter file. Returns how many went there.
    async fn insert(&self, batch: &[AuditRecord]) -> Result<usize, Stopped> {
        let mut refused = 0;
        let mut pending = vec![batch];
        while let Some(part) = pending.pop() {
            let Some(e) = self.try_insert(part).await? else { continue };
            if let [record] = part {
                self.dead_letter(record, &e).await?;
                refused += 1;
            } else {
                // Halves, first half on top: stored in the spool's order.
                let (first, second) = part.split_at(part.len() / 2);
                pending.push(second);
                pending.push(first);
            }
        }
        Ok(refused)
    }

    /// Inserts `chunk`, retrying with exponential backoff until the store takes it (`None`) or
    /// refuses it for what it holds (the error). Hand-rolled (no jitter): one drainer per
    /// process retries one batch, so there is no herd to spread.
    async fn try_insert(&self, chunk: &[AuditRecord]) -> Result<Option<StoreError>, Stopped> {
        let mut delay = RETRY_MIN;
        loop {
            let attempt = tokio::time::timeout(STORE_TIMEOUT, self.store.insert(chunk));
            let result = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(StoreError::transient(format!("insert timed out after {STORE_TIMEOUT:?}")))),
                () = self.stop.cancelled() => return Err(Stopped),
            };
            match result {
                Ok(()) => {
                    if !self.shared.store_up.load(Ordering::Relaxed) {
                        tracing::warn!("audit store reachable again; draining the spool");
                    }
                    self.shared.store_answered(true);
                    return Ok(None);
                }
                Err(e) if e.permanent => {
                    self.shared.store_answered(true);
                    return Ok(Some(e));
                }
                Err(e) => {
                    if self.shared.store_up.load(Ordering::Relaxed) {
                        tracing::error!(error = %e, "audit store insert failed; records wait in the spool");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?delay, "audit store still failing");
                    }
                    self.shared.store_answered(false);
                }
            }
            self.pause(delay).await?;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Moves a record the store refused for good to the dead-letter file (synced), retrying
    /// while that file cannot be written: the record stays in the spool until it is there.
    async fn dead_letter(&self, record: &AuditRecord, e: &StoreError) -> Result<(), Stopped> {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let letter =
            DeadLetter { at_ms, store: self.store_id.clone(), reason: e.message.clone(), record: record.clone() };
        loop {
            let (file, letter) = (self.dead_letters.clone(), letter.clone());
            match blocking(move || dead_letter::append(&file, std::slice::from_ref(&letter))).await {
                Ok(()) => break,
                Err(io) => {
                    tracing::error!(file = %self.dead_letters.display(), error = %io, "cannot write the audit dead-letter file; the record stays in the spool");
                    self.pause(Duration::from_secs(1)).await?;
                }
            }
        }
        Shared::add(&self.shared.dead_lettered, 1);
        *self.shared.last_refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.message.clone());
        tracing::error!(id = %record.id, reason = %e, file = %self.dead_letters.display(), "audit store refused a record for good; moved to the dead-letter file");
        Ok(())
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

    async fn io_failed(&mut self, what: &str, e: io::Error) -> Result<bool, Stopped> {
        self.rescan = true;
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
