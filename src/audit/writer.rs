//! `AuditWriter`: the durable `AuditSink`. The request path waits on the local spool, never on
//! the database.
//!
//! Two tasks own the work. The spool writer takes records from a bounded queue, appends what is
//! queued as one batch to the spool, then acknowledges each record: once written (default), an
//! acknowledged record survives `kill -9`; with `Durability::Fsync` it is acknowledged only after
//! the batch's fsync (group commit) and survives power loss too. The drainer moves spooled
//! records into the store in order, in batches, retrying with backoff while the store is down or
//! slow, and deletes each segment once all of it is stored. The batches just written are handed
//! to it in memory, so it reads the spool back from disk only to catch up (after an outage, a
//! restart, or when it fell behind). On start, segments left by a previous run are drained
//! first; the store's idempotence by id makes this at-least-once delivery store each record
//! exactly once.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::spool::{Spool, Written};
use super::{AuditRecord, AuditSink, AuditStore, AuditUnavailable, BoxFuture};
use crate::tasks::Tasks;
use drain::Drainer;

/// How long `record()` waits for room in a full queue before giving up on the record.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// The longest a call waits for its record to be written (or synced) to the spool.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// How often an unwritable spool is probed while no records arrive to retry it.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A store insert that takes longer is abandoned and retried (inserts are idempotent).
const STORE_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How long the drainer lets records gather in memory before an insert (see `Drainer::gather`).
const STORE_GATHER: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long `flush()` waits for the queue to reach the spool, then for the drainer.
const FLUSH_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
const FLUSH_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most records kept in memory for the drainer; past it, the oldest are dropped and the
/// drainer reads them back from the spool instead (a slow or unreachable store).
const LIVE_RECORDS_MAX: usize = 5_000;

/// How durable a record is before the call that produced it is answered (`[audit] durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the spool file (`write(2)` done, so in the kernel's page cache): survives
    /// `kill -9` and any crash of the process. The spool is fsynced in the background at most
    /// `flush_interval` after a write, so a power loss or kernel crash can lose the records
    /// answered in about the last `flush_interval` (plus one fsync).
    #[default]
    Write,
    /// Fsynced: survives power loss too, at the cost of waiting for one fsync (group commit)
    /// in every call's latency.
    Fsync,
}
/// Runtime settings of the audit writer.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The configured spool folder (this store's records go in a subfolder tagged with its identity).
    pub spool_dir: PathBuf,
    /// The identity of the store (`store::identity`): the spool folder is tagged with it, only
    /// folders with the same tag are replayed, and dead letters name it.
    pub store_id: String,
    /// `on_audit_failure = "fail_open"`: a record that cannot be made durable is counted and
    /// logged, and `record()` still resolves `Ok`.
    pub fail_open: bool,
    /// Records waiting for the spool writer; `record()` waits at most a second for room.
    pub queue_capacity: usize,
    /// The most records in one spool append and one store insert.
    pub batch_max: usize,
    /// The longest the spool writer spends gathering one batch. It only takes what is already
    /// queued and never waits for more on an empty queue, so an idle gateway pays no latency:
    /// batches grow by themselves while the previous write runs. With `Durability::Write`, also
    /// the longest a written record waits for its background fsync.
    pub flush_interval: Duration,
    /// Whether `record()` waits for the fsync or only for the write.
    pub durability: Durability,
}

impl AuditSettings {
    /// Settings for tests and benchmarks: a store named `test-store`, fail-closed, write durability.
    pub fn new(spool_dir: impl Into<PathBuf>) -> AuditSettings {
        AuditSettings {
            spool_dir: spool_dir.into(),
            store_id: "test-store".into(),
            fail_open: false,
            queue_capacity: 10_000,
            batch_max: 500,
            flush_interval: Duration::from_millis(50),
            durability: Durability::Write,
        }
    }
}

/// The writer's counters, for `/metrics` and `/ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records queued for the spool writer.
    pub queue_depth: usize,
    /// Records of this run stored in the store.
    pub written: u64,
    /// Records appended to the spool.
    pub spooled: u64,
    /// Records left in the spool by a previous run, stored by this one.
    pub replayed: u64,
    /// Records that could not be made durable (spool unwritable, queue full) or were found
    /// corrupt in the spool.
    pub failed: u64,
    /// Records in the spool not yet stored: grows while the store is down.
    pub backlog: u64,
    /// Records the store refused for good, moved to the dead-letter file.
    pub dead_lettered: u64,
    /// Whether the store is connected and its last insert went through (or refused records
    /// for what they hold, which it can only do while it is up).
    pub store_up: bool,
    /// How long the store has been down (or not yet connected), while it is.
    pub store_down_for: Option<Duration>,
}

// Nearly every message is a record, so boxing it would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(AuditRecord, oneshot::Sender<Result<(), AuditUnavailable>>),
    /// Answered once everything queued before it is in the spool.
    Flush(oneshot::Sender<()>),
}

/// State shared by the handle and its two tasks.
#[derive(Default)]
struct Shared {
    /// False from a failed spool append until an append or probe succeeds.
    writable: AtomicBool,
    /// Whether the store is connected and its last insert succeeded.
    store_up: AtomicBool,
    /// Since when the store is down (or not yet connected); `None` while it is up.
    store_down_since: std::sync::Mutex<Option<Instant>>,
    dead_lettered: AtomicU64,
    /// The store's reason for the latest dead letter, for the alert.
    last_refusal: std::sync::Mutex<Option<String>>,
    written: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    failed: AtomicU64,
    backlog: AtomicU64,
    /// Published by the spool writer: segments below this sequence number will never be
    /// appended to again, so the drainer may delete them once read to the end.
    sealed_below: AtomicU64,
    /// Wakes the drainer: new records are in the spool (or `flush()` wants a pass).
    appended: Notify,
    /// Wakes `flush()`: the drainer stored something.
    stored: Notify,
    /// Records the drainer read back from the spool on disk (not from memory), and fsyncs of
    /// the spool: for tests.
    read_back: AtomicU64,
    fsyncs: AtomicU64,
    /// Times the drainer gave the heap back after a catch-up: for tests.
    trims: AtomicU64,
    /// The batches just written, handed from the spool writer to the drainer.
    live: std::sync::Mutex<RecentBatches>,
}

/// The spool's newest batches, still in memory: the drainer stores them from here instead of
/// reading back what was just written. Locked only briefly, never across an `.await`.
#[derive(Default)]
struct RecentBatches {
    batches: VecDeque<RecentBatch>,
    records: usize,
    /// Where the spool writer's last successful write ended (segment, byte offset).
    written_to: Option<(u64, u64)>,
}

struct RecentBatch {
    at: Written,
    records: Vec<AuditRecord>,
}

impl RecentBatches {
    /// Keeps a batch just written for the drainer, unless `keep` is false (the store is down:
    /// the drainer will read the spool back anyway once the store answers, so holding batches
    /// until the oldest are dropped would only fill memory).
    fn push(&mut self, at: Written, records: Vec<AuditRecord>, keep: bool) {
        self.written_to = Some((at.seq, at.end));
        if !keep {
            self.batches.clear();
            self.records = 0;
            return;
        }
        self.records += records.len();
        self.batches.push_back(RecentBatch { at, records });
        while self.records > LIVE_RECORDS_MAX {
            let Some(dropped) = self.batches.pop_front() else { break };
            self.records -= dropped.records.len();
        }
    }
}

impl Shared {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn live(&self) -> std::sync::MutexGuard<'_, RecentBatches> {
        // The lock guards plain data only: a panic elsewhere cannot leave it half-updated.
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records whether the store answered: logs a change, and keeps when it went down.
    fn store_answered(&self, up: bool) {
        if self.store_up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        let mut since = self.store_down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *since = if up { None } else { Some(Instant::now()) };
    }

    fn take_backlog(&self, n: usize) {
        let _ = self.backlog.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n as u64)));
    }
}

/// The durable audit sink: spool first, store behind it. `close()` (or dropping it) stops its
/// tasks: what is queued is written to the spool and synced, and records not yet stored stay
/// in the spool for the next start; call `flush()` first on shutdown.
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    fail_open: bool,
    /// The configured spool folder (this process's folder is under it), and the store's
    /// identity: for reporting other stores' folders (`foreign_spools`).
    base: PathBuf,
    store_id: String,
    /// The spool writer, the drainer and retention (`open`): both of the first watch its
    /// token and end in their own way (see `close`).
    tasks: Tasks,
    /// Holds this process's spool folder (see `spool::claim`).
    _lock: std::fs::File,
}

impl AuditWriter {
    /// Opens the spool and starts the spool writer and the drainer (must run inside a tokio
    /// runtime). The drainer first connects to the store (retrying with backoff for as long as
    /// it takes; records wait in the spool meanwhile). Segments left by processes that are gone
    /// and were writing for the same store are drained before new records; processes sharing
    /// one configured spool folder each write in a folder of their own.
    pub fn start(store: Arc<dyn AuditStore>, settings: AuditSettings) -> io::Result<Arc<AuditWriter>> {
        let base = settings.spool_dir.clone();
        let (own, lock) = crate::audit::spool::claim(&base, &settings.store_id)?;
        let settings = AuditSettings { spool_dir: own, ..settings };
        let spool = Spool::open(&settings.spool_dir)?;
        let mut leftover = 0;
        for segment in spool.segments()? {
            leftover += segment.count_lines()?;
        }
        if leftover > 0 {
            tracing::warn!(records = leftover, dir = %settings.spool_dir.display(), "replaying audit records left in the spool");
        }
        let shared = Arc::new(Shared::default());
        shared.writable.store(true, Ordering::Relaxed);
        *shared.store_down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        shared.backlog.store(leftover as u64, Ordering::Relaxed);
        shared.sealed_below.store(spool.sealed_below(), Ordering::Release);

        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let tasks = Tasks::new();
        let stop = tasks.token();
        let drainer = Drainer {
            store,
            dir: settings.spool_dir.clone(),
            shared: shared.clone(),
            batch_max: settings.batch_max.max(1),
            first_live_seq: spool.sealed_below(),
            cursor: (0, 0),
            rescan: true,
            stored_not_removed: Vec::new(),
            read_from_disk: 0,
            dead_letters: crate::audit::dead_letter::path(&base),
            store_id: settings.store_id.clone(),
            stop: stop.clone(),
        };
        let spool_writer = SpoolWriter {
            spool: Arc::new(std::sync::Mutex::new(spool)),
            dir: settings.spool_dir.clone(),
            rx,
            shared: shared.clone(),
            batch_max: settings.batch_max.max(1),
            window: settings.flush_interval,
            fail_open: settings.fail_open,
            durability: settings.durability,
            unsynced_since: None,
            syncing: None,
            many_threads: tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread,
            stop,
        };
        tasks.spawn_to_completion(spool_writer.run());
        tasks.spawn_to_completion(drainer.run());
        Ok(Arc::new(AuditWriter {
            tx,
            shared,
            fail_open: settings.fail_open,
            base,
            store_id: settings.store_id,
            tasks,
            _lock: lock,
        }))
    }

    /// Runs `task` beside the writer's own until the writer stops (retention: `open`).
    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Stops the writer's tasks and waits up to `grace` for them (shutdown, after `flush()`):
    /// the spool writer takes no more records (later ones are refused as by a stopped
    /// writer), writes and syncs those already queued, and ends; the drainer ends between
    /// inserts (what it had not stored stays in the spool, for the next start). False if they
    /// had not ended within `grace`.
    pub async fn close(&self, grace: Duration) -> bool {
        self.tasks.stop("audit writer", grace).await
    }

    /// The store's reason for the latest record moved to the dead-letter file.
    pub fn last_refusal(&self) -> Option<String> {
        self.shared.last_refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Folders in the configured spool folder that hold records for other stores, waiting for
    /// a gateway of theirs (see `spool::claim`).
    pub fn foreign_spools(&self) -> io::Result<Vec<crate::audit::spool::ForeignSpool>> {
        crate::audit::spool::foreign(&self.base, &self.store_id)
    }

    /// A snapshot of the writer's counters: queue, spool backlog, store, dead letters.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            queue_depth: self.tx.max_capacity() - self.tx.capacity(),
            written: s.written.load(Ordering::Relaxed),
            spooled: s.spooled.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            backlog: s.backlog.load(Ordering::Relaxed),
            dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
            store_up: s.store_up.load(Ordering::Relaxed),
            store_down_for: s
                .store_down_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .map(|t| t.elapsed()),
        }
    }

    async fn make_durable(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let (ack, durable) = oneshot::channel();
        let refused = match self.tx.send_timeout(Msg::Record(record, ack), QUEUE_WAIT).await {
            Ok(()) => {
                // The spool writer counts and logs its own failures.
                // A spool stuck in a write or fsync (a failing disk) must not hang every call: after a bound
                // it counts as unavailable, and fail-closed/fail-open decide.
                return match tokio::time::timeout(DURABLE_WAIT, durable).await {
                    Ok(r) => r.unwrap_or_else(|_| Err(AuditUnavailable("audit writer stopped".into()))),
                    Err(_) => Err(AuditUnavailable(format!("the spool did not take it within {DURABLE_WAIT:?}"))),
                };
            }
            Err(SendTimeoutError::Timeout(_)) => AuditUnavailable(format!("audit queue full for {QUEUE_WAIT:?}")),
            Err(SendTimeoutError::Closed(_)) => AuditUnavailable("audit writer stopped".into()),
        };
        Shared::add(&self.shared.failed, 1);
        tracing::error!(error = %refused, fail_open = self.fail_open, "audit record not durable");
        Err(refused)
    }
}

impl AuditSink for AuditWriter {
    fn record(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), AuditUnavailable>> {
        Box::pin(async move {
            match self.make_durable(record).await {
                Err(_) if self.fail_open => Ok(()),
                result => result,
            }
        })
    }

    fn writable(&self) -> bool {
        self.shared.writable.load(Ordering::Relaxed)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, synced) = oneshot::channel();
            let _ = tokio::time::timeout(FLUSH_QUEUE_TIMEOUT, async {
                if self.tx.send(Msg::Flush(done)).await.is_ok() {
                    let _ = synced.await;
                }
            })
            .await;
            let deadline = Instant::now() + FLUSH_STORE_TIMEOUT;
            loop {
                let stored = self.shared.stored.notified();
                tokio::pin!(stored);
                stored.as_mut().enable();
                let backlog = self.shared.backlog.load(Ordering::Relaxed);
                if backlog == 0 {
                    return;
                }
                self.shared.appended.notify_one();
                if tokio::time::timeout_at(deadline, stored).await.is_err() {
                    tracing::warn!(backlog, "audit flush: records remain in the spool; they are stored after restart");
                    return;
                }
            }
        })
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// The spool writer task: queue → spool, one write per batch, and one fsync per batch (before
/// its acknowledgements with `Durability::Fsync`, in the background otherwise). Ends when the
/// writer is closed or dropped, once what was queued is written and synced.
struct SpoolWriter {
    /// Locked only inside `spawn_blocking` by this task alone: the mutex just lets the blocking
    /// closure borrow the spool.
    spool: Arc<std::sync::Mutex<Spool>>,
    dir: PathBuf,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    batch_max: usize,
    window: Duration,
    fail_open: bool,
    durability: Durability,
    /// When the oldest write not yet fsynced was made (`Durability::Write`).
    unsynced_since: Option<Instant>,
    /// The background fsync in flight, if any (`Durability::Write`).
    syncing: Option<tokio::task::JoinHandle<io::Result<()>>>,
    /// Whether the runtime has more than one worker thread (see `commit`).
    many_threads: bool,
    /// Cancelled by `close` (or the handle's drop): the queue is closed to new records.
    stop: CancellationToken,
}

impl SpoolWriter {
    async fn run(mut self) {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        loop {
            // Far enough never to fire when nothing waits for an fsync.
            let sync_due = self.unsynced_since.map_or_else(|| Instant::now() + RETRY_MAX, |t| t + self.window);
            let writable = self.shared.writable.load(Ordering::Relaxed);
            let first = tokio::select! {
                msg = self.rx.recv() => msg,
                done = async { self.syncing.as_mut().expect("checked").await }, if self.syncing.is_some() => {
                    self.syncing = None;
                    self.synced(done.unwrap_or_else(|e| Err(io::Error::other(e))));
                    continue;
                }
                () = tokio::time::sleep_until(sync_due), if self.unsynced_since.is_some() && self.syncing.is_none() => {
                    self.start_sync();
                    continue;
                }
                () = tokio::time::sleep(PROBE_INTERVAL), if !writable => {
                    self.probe().await;
                    continue;
                }
                // The records already queued are still received (and acknowledged) after this.
                () = self.stop.cancelled(), if !self.rx.is_closed() => {
                    self.rx.close();
                    continue;
                }
            };
            let Some(first) = first else {
                // Closed, or the handle is gone: what was written is synced, as on a flush.
                self.sync().await;
                return;
            };
            let window_end = Instant::now() + self.window;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(record, ack) => {
                        batch.push(record);
                        acks.push(ack);
                    }
                    Msg::Flush(done) => {
                        flushes.push(done);
                        break;
                    }
                }
                if batch.len() >= self.batch_max || Instant::now() >= window_end {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.commit(std::mem::take(&mut batch), &mut acks).await;
            if !flushes.is_empty() {
                self.sync().await;
            } else if self.syncing.is_none() && self.unsynced_since.is_some_and(|t| t.elapsed() >= self.window) {
                self.start_sync();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Appends one batch (and fsyncs it with `Durability::Fsync`), then acknowledges every
    /// record in it and hands the batch to the drainer.
    async fn commit(&mut self, batch: Vec<AuditRecord>, acks: &mut Vec<oneshot::Sender<Result<(), AuditUnavailable>>>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        // Counted before the append: the drainer may store these records before this task
        // runs again, and the backlog must not dip below what is really pending.
        Shared::add(&self.shared.backlog, n);
        let fsync = self.durability == Durability::Fsync;
        let write = move |spool: &mut Spool| {
            let result = if fsync { spool.append(&batch) } else { spool.write(&batch) };
            Ok((result.map(|at| (at, batch)), spool.sealed_below()))
        };
        // A plain write(2) into the page cache takes microseconds: less than handing it to a
        // blocking thread and back, which would add two context switches to every batch. What
        // can wait on the disk (an fsync, a new segment and its folder sync) goes to a
        // blocking thread. So does everything on a runtime of one thread (`sentinel stdio`):
        // there a write stuck on a failing disk would stop every call and the timer that bounds
        // their wait (`DURABLE_WAIT`).
        let inline = !fsync && self.many_threads && self.spool.lock().is_ok_and(|spool| !spool.segment_due());
        let result = if inline {
            self.spool.lock().map_err(|_| io::Error::other("spool writer panicked")).and_then(|mut s| write(&mut s))
        } else {
            self.with_spool(write).await
        };
        let result = result.and_then(|(result, sealed_below)| {
            self.shared.sealed_below.store(sealed_below, Ordering::Release);
            result
        });
        let ack = match result {
            Ok((at, batch)) => {
                Shared::add(&self.shared.spooled, n);
                if fsync {
                    Shared::add(&self.shared.fsyncs, 1);
                }
                if !self.shared.writable.swap(true, Ordering::Relaxed) {
                    tracing::warn!("audit spool writable again");
                }
                if !fsync && self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
                let keep = self.shared.store_up.load(Ordering::Relaxed);
                self.shared.live().push(at, batch, keep);
                self.shared.appended.notify_one();
                Ok(())
            }
            Err(e) => {
                self.shared.writable.store(false, Ordering::Relaxed);
                self.shared.take_backlog(n);
                Shared::add(&self.shared.failed, n);
                let policy =
                    if self.fail_open { "fail_open: calls proceed unaudited" } else { "fail_closed: calls refused" };
                tracing::error!(records = n, dir = %self.dir.display(), error = %e, policy, "audit spool append failed; records are not durable");
                Err(AuditUnavailable(format!("audit spool {}: {e}", self.dir.display())))
            }
        };
        for tx in acks.drain(..) {
            let _ = tx.send(ack.clone());
        }
    }

    /// The background group commit of `Durability::Write`: fsyncs what was written since the
    /// last one on a blocking thread while this task goes on writing (a busy disk can take
    /// milliseconds per fsync, which calls must not wait for).
    fn start_sync(&mut self) {
        self.unsynced_since = None;
        let file = match self.spool.lock() {
            Ok(mut spool) => spool.take_unsynced(),
            Err(_) => Err(io::Error::other("spool writer panicked")),
        };
        match file {
            Ok(Some(file)) => self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data())),
            Ok(None) => {}
            Err(e) => self.synced(Err(e)),
        }
    }

    /// Waits for the fsync in flight, then fsyncs whatever is still unsynced: a flush, and
    /// shutdown, leave nothing unsynced.
    async fn sync(&mut self) {
        if let Some(in_flight) = self.syncing.take() {
            self.synced(in_flight.await.unwrap_or_else(|e| Err(io::Error::other(e))));
        }
        if self.unsynced_since.take().is_some() {
            let done = self.with_spool(super::spool::Spool::sync).await;
            self.synced(done);
        }
    }

    /// The calls were answered already: a failed fsync is logged, its segment abandoned, and
    /// the spool counts as unwritable until a probe succeeds (fail-closed then refuses calls).
    fn synced(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => Shared::add(&self.shared.fsyncs, 1),
            Err(e) => {
                if let Ok(mut spool) = self.spool.lock() {
                    spool.abandon();
                }
                self.shared.writable.store(false, Ordering::Relaxed);
                tracing::error!(dir = %self.dir.display(), error = %e, "audit spool fsync failed; records written since the last fsync may not survive a power loss");
            }
        }
    }

    async fn probe(&mut self) {
        if self.with_spool(|spool| spool.probe()).await.is_ok() {
            self.shared.writable.store(true, Ordering::Relaxed);
            tracing::warn!("audit spool writable again");
        }
    }

    /// Runs blocking spool I/O (write + fsync) off the async workers.
    async fn with_spool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let spool = self.spool.clone();
        blocking(move || {
            let mut spool = spool.lock().map_err(|_| io::Error::other("spool writer panicked"))?;
            f(&mut spool)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

mod drain;
#[cfg(test)]
mod tests;
