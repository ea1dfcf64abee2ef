use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::audit::spool::list_segments;

/// A store in memory, idempotent by id like the real ones, that can be taken down or slowed.
#[derive(Default)]
struct FakeStore {
    rows: Mutex<Vec<AuditRecord>>,
    /// Records inserted again although already stored (a real store ignores them).
    repeats: AtomicUsize,
    down: AtomicBool,
    delay: Mutex<Duration>,
    /// Refuses, for good, every batch holding a record of this tool (as a CHECK would).
    refuse_tool: Mutex<Option<String>>,
    /// `connect` fails while this is set.
    unreachable: AtomicBool,
}

impl FakeStore {
    fn down() -> Arc<FakeStore> {
        let store = Arc::new(FakeStore::default());
        store.down.store(true, Ordering::SeqCst);
        store
    }

    fn ids(&self) -> Vec<uuid::Uuid> {
        self.rows.lock().unwrap().iter().map(|r| r.id).collect()
    }
}

impl AuditStore for FakeStore {
    fn insert<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), crate::audit::StoreError>> {
        Box::pin(async move {
            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(crate::audit::StoreError::transient("connection refused"));
            }
            let refused = self.refuse_tool.lock().unwrap().clone();
            if batch.iter().any(|r| r.tool.is_some() && r.tool == refused) {
                let message = "new row violates check constraint".to_string();
                return Err(crate::audit::StoreError { permanent: true, message });
            }
            let mut rows = self.rows.lock().unwrap();
            let known: HashSet<_> = rows.iter().map(|r| r.id).collect();
            for record in batch {
                if known.contains(&record.id) {
                    self.repeats.fetch_add(1, Ordering::SeqCst);
                } else {
                    rows.push(record.clone());
                }
            }
            Ok(())
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), crate::audit::StoreError>> {
        Box::pin(async move {
            if self.unreachable.load(Ordering::SeqCst) {
                return Err(crate::audit::StoreError::transient("connection refused"));
            }
            Ok(())
        })
    }
}

fn settings(dir: &Path) -> AuditSettings {
    AuditSettings::new(dir.join("spool"))
}

fn record(i: usize) -> AuditRecord {
    let mut r = AuditRecord::start("tools/call", "http", Some("alice"), &["dev".into()], Some("s1"));
    r.tool = Some(format!("tool_{i}"));
    r
}

/// Waits for a condition, polling, and fails the test at a deadline.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records `n` calls one after the other, as a client would see them answered; returns the ids.
async fn record_n(writer: &AuditWriter, n: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = record(i);
        ids.push(r.id);
        writer.record(r).await.expect("durable");
    }
    ids
}

/// Puts a regular file where the spool directory is: creating a file in it then fails with
/// ENOTDIR, even for root (for whom a chmod'ed directory stays writable).
fn break_dir(dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    fs::write(dir, "not a directory").unwrap();
}

fn repair_dir(dir: &Path) {
    fs::remove_file(dir).unwrap();
    fs::create_dir(dir).unwrap();
}

#[tokio::test]
async fn records_reach_the_store_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeStore::default());
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();

    let ids = record_n(&writer, 50).await;
    // Concurrent callers share group commits (in no particular order among themselves).
    let batch: Vec<_> = (0..200).map(record).collect();
    let concurrent: HashSet<_> = batch.iter().map(|r| r.id).collect();
    let results = futures::future::join_all(batch.into_iter().map(|r| writer.record(r))).await;
    assert!(results.iter().all(Result::is_ok));
    writer.flush().await;

    let stored = store.ids();
    assert_eq!(stored.len(), 250);
    assert!(stored[..50] == ids[..], "sequential calls are stored in call order");
    assert!(stored[50..].iter().copied().collect::<HashSet<_>>() == concurrent);
    let stats = writer.stats();
    assert_eq!((stats.written, stats.spooled, stats.backlog, stats.failed), (250, 250, 0, 0));
    assert_eq!((stats.replayed, stats.queue_depth), (0, 0));
    assert_eq!(store.repeats.load(Ordering::SeqCst), 0, "the live segment's stored prefix is not re-inserted");
    assert!(writer.writable());
}

#[tokio::test]
async fn batches_just_written_are_stored_from_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeStore::default());
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();
    // The drainer's first scan of the spool may race the first writes and read some back from
    // disk (how many depends on how busy the machine is); once it has caught up, it must not.
    let mut ids = record_n(&writer, 20).await;
    writer.flush().await;
    let after_first_scan = writer.shared.read_back.load(Ordering::SeqCst);
    ids.extend(record_n(&writer, 300).await);
    writer.flush().await;
    assert!(store.ids() == ids);
    let read_back = writer.shared.read_back.load(Ordering::SeqCst) - after_first_scan;
    assert_eq!(read_back, 0, "{read_back} of 300 records read back from the spool in the steady state");
}

#[tokio::test]
async fn a_store_too_slow_for_memory_is_caught_up_from_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FakeStore::down();
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();
    // More than memory keeps: the oldest batches are dropped from it while the store is down.
    let ids = record_n(&writer, LIVE_RECORDS_MAX + 700).await;
    store.down.store(false, Ordering::SeqCst);
    eventually("all stored", || writer.stats().backlog == 0).await;
    assert!(store.ids() == ids, "every record, once, in order");
    assert_eq!(store.repeats.load(Ordering::SeqCst), 0);
    assert!(writer.shared.read_back.load(Ordering::SeqCst) >= 700, "what memory dropped was read from disk");
    assert_eq!(writer.stats().written, ids.len() as u64);
}

/// Batches larger than half of `batch_max` cannot share an insert: the drainer must store the
/// ones left in memory after the last write, with no later write to wake it.
#[tokio::test]
async fn the_last_batches_in_memory_are_stored_without_a_later_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.batch_max = 10;
    let store = Arc::new(FakeStore::default());
    *store.delay.lock().unwrap() = Duration::from_millis(100);
    let writer = AuditWriter::start(store.clone(), settings).unwrap();
    // Several batches of 6 queue up in memory behind the slow first insert.
    for round in 0..4 {
        let batch: Vec<_> = (0..6).map(|i| record(round * 6 + i)).collect();
        let results = futures::future::join_all(batch.into_iter().map(|r| writer.record(r))).await;
        assert!(results.iter().all(Result::is_ok));
    }
    // Less than the drainer's idle safety net (1 s) after the slow inserts: woken by nothing.
    let started = Instant::now();
    eventually("all stored", || writer.stats().written == 24).await;
    assert!(started.elapsed() < Duration::from_millis(900), "stored only by the safety net: {:?}", started.elapsed());
}

#[tokio::test]
async fn by_default_calls_are_answered_before_the_fsync_which_follows_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.flush_interval = Duration::from_secs(3600);
    let writer = AuditWriter::start(Arc::new(FakeStore::default()), settings).unwrap();
    record_n(&writer, 3).await;
    assert_eq!(writer.shared.fsyncs.load(Ordering::SeqCst), 0, "answered once written, not synced");
    writer.flush().await;
    assert_eq!(writer.shared.fsyncs.load(Ordering::SeqCst), 1, "a flush syncs what was written");

    // With a short interval the background fsync comes by itself, once per interval.
    let mut settings = self::settings(&tmp.path().join("b"));
    settings.flush_interval = Duration::from_millis(20);
    let writer = AuditWriter::start(Arc::new(FakeStore::default()), settings).unwrap();
    record_n(&writer, 3).await;
    eventually("the background fsync", || writer.shared.fsyncs.load(Ordering::SeqCst) >= 1).await;
}

#[tokio::test]
async fn with_durability_fsync_calls_are_answered_after_their_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.durability = Durability::Fsync;
    settings.flush_interval = Duration::from_secs(3600);
    let store = Arc::new(FakeStore::default());
    let writer = AuditWriter::start(store.clone(), settings).unwrap();
    let ids = record_n(&writer, 5).await;
    // One call at a time: one batch, so one fsync, each before its answer.
    assert_eq!(writer.shared.fsyncs.load(Ordering::SeqCst), 5);
    writer.flush().await;
    assert!(store.ids() == ids);
}

#[tokio::test]
async fn a_store_outage_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FakeStore::down();
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();

    // Calls are answered while the store is down: the spool holds their records.
    let ids = record_n(&writer, 100).await;
    let stats = writer.stats();
    assert_eq!((stats.spooled, stats.written, stats.backlog), (100, 0, 100));
    assert!(writer.writable(), "the spool is writable, so calls proceed");

    store.down.store(false, Ordering::SeqCst);
    eventually("backlog stored", || writer.stats().written == 100).await;
    assert!(store.ids() == ids, "every record, once, in order");
    assert_eq!(store.repeats.load(Ordering::SeqCst), 0);
    assert_eq!(writer.stats().backlog, 0);
}

/// Catching up on an outage's backlog grows the heap far beyond what the steady state needs;
/// once caught up the drainer gives it back (once), and the steady state never trims.
#[tokio::test]
async fn the_heap_is_given_back_once_after_catching_up_on_a_backlog() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FakeStore::down();
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();
    let n = drain::TRIM_AFTER_RECORDS + 500;
    let calls: Vec<_> = (0..8)
        .map(|k| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(8) {
                    writer.record(record(i)).await.expect("durable");
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(writer.shared.trims.load(Ordering::SeqCst), 0, "nothing to give back while the store is down");

    store.down.store(false, Ordering::SeqCst);
    eventually("backlog stored", || writer.stats().written == n as u64).await;
    eventually("heap trimmed after the catch-up", || writer.shared.trims.load(Ordering::SeqCst) == 1).await;

    // The steady state (from memory) does not trim again.
    record_n(&writer, 300).await;
    writer.flush().await;
    assert_eq!(writer.stats().written, n as u64 + 300);
    assert_eq!(writer.shared.trims.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_store_does_not_slow_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeStore::default());
    *store.delay.lock().unwrap() = Duration::from_secs(5);
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();

    let started = Instant::now();
    record_n(&writer, 20).await;
    assert!(started.elapsed() < Duration::from_secs(2), "record() waits for the spool only: {:?}", started.elapsed());
    assert_eq!(writer.stats().spooled, 20);
}

#[tokio::test]
async fn fail_closed_refuses_when_the_spool_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FakeStore::down();
    let settings = settings(tmp.path());
    let dir = settings.spool_dir.clone();
    let writer = AuditWriter::start(store.clone(), settings).unwrap();

    break_dir(&dir);
    let refused = writer.record(record(0)).await;
    assert!(refused.is_err(), "fail-closed: not durable is an error");
    assert!(!writer.writable());
    assert_eq!(writer.stats().failed, 1);

    // The spool comes back: a probe notices without any new record.
    repair_dir(&dir);
    eventually("spool writable again", || writer.writable()).await;
    store.down.store(false, Ordering::SeqCst);
    let ids = record_n(&writer, 1).await;
    writer.flush().await;
    assert_eq!(store.ids(), ids);
    assert_eq!(writer.stats().failed, 1);
}

#[tokio::test]
async fn fail_open_counts_and_proceeds_when_the_spool_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.fail_open = true;
    let dir = settings.spool_dir.clone();
    let writer = AuditWriter::start(FakeStore::down(), settings).unwrap();

    break_dir(&dir);
    writer.record(record(0)).await.expect("fail-open: the call proceeds");
    writer.record(record(1)).await.expect("fail-open: the call proceeds");
    assert!(!writer.writable());
    assert_eq!(writer.stats().failed, 2);
    assert_eq!(writer.stats().spooled, 0);
}

#[tokio::test]
async fn leftover_segments_are_replayed_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = settings(tmp.path());
    // A previous run's spool: several segments, the last torn by a crash mid-write.
    let mut ids = Vec::new();
    {
        let mut spool = Spool::open(&settings.spool_dir).unwrap().with_segment_limit(1);
        for chunk in 0..3 {
            let batch: Vec<_> = (0..10).map(|i| record(chunk * 10 + i)).collect();
            ids.extend(batch.iter().map(|r| r.id));
            spool.append(&batch).unwrap();
        }
        let last = spool.segments().unwrap().pop().unwrap();
        let mut file = fs::OpenOptions::new().append(true).open(&last.path).unwrap();
        std::io::Write::write_all(&mut file, b"{\"id\":\"0190").unwrap();
    }

    let store = Arc::new(FakeStore::default());
    let writer = AuditWriter::start(store.clone(), settings.clone()).unwrap();
    assert_eq!(writer.stats().backlog, 30);
    let new = record_n(&writer, 5).await;
    writer.flush().await;

    ids.extend(new);
    assert!(store.ids() == ids, "old records first, in order, then new ones");
    let stats = writer.stats();
    assert_eq!((stats.replayed, stats.written, stats.backlog), (30, 5, 0));
    assert_eq!(store.repeats.load(Ordering::SeqCst), 0);
    eventually("replayed segments deleted", || list_segments(&settings.spool_dir).unwrap().len() <= 1).await;
}

#[tokio::test]
async fn acknowledged_records_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = settings(tmp.path());
    // First run: the store is down; the writer is dropped without a flush, as by `kill -9`.
    let first = AuditWriter::start(FakeStore::down(), settings.clone()).unwrap();
    let ids = record_n(&first, 20).await;
    drop(first);

    let store = Arc::new(FakeStore::default());
    let second = AuditWriter::start(store.clone(), settings).unwrap();
    eventually("replayed", || second.stats().replayed == 20).await;
    assert_eq!(store.ids(), ids);
    assert_eq!(store.repeats.load(Ordering::SeqCst), 0);
}

/// Closing (shutdown) ends both tasks: what was acknowledged stays in the spool while the store
/// is down, a record after it is refused, and the next start stores what was spooled.
#[tokio::test]
async fn close_ends_both_tasks_and_keeps_what_was_spooled() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = settings(tmp.path());
    let first = AuditWriter::start(FakeStore::down(), settings.clone()).unwrap();
    let ids = record_n(&first, 5).await;
    assert!(first.close(Duration::from_secs(20)).await, "the spool writer and the drainer ended");
    let refused = first.record(record(9)).await.unwrap_err();
    assert!(refused.0.contains("stopped"), "{refused}");
    assert_eq!(first.stats().spooled, 5);
    drop(first);

    let store = Arc::new(FakeStore::default());
    let second = AuditWriter::start(store.clone(), settings).unwrap();
    eventually("replayed", || second.stats().replayed == 5).await;
    assert_eq!(store.ids(), ids);
}

#[tokio::test]
async fn flush_gives_up_on_a_dead_store_within_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = AuditWriter::start(FakeStore::down(), settings(tmp.path())).unwrap();
    record_n(&writer, 3).await;
    // Real time (5 s): the crate's tokio has no `test-util`, so the clock cannot be paused.
    let started = Instant::now();
    writer.flush().await;
    let waited = started.elapsed();
    assert!(waited >= FLUSH_STORE_TIMEOUT && waited < FLUSH_STORE_TIMEOUT + Duration::from_secs(1), "{waited:?}");
    assert_eq!(writer.stats().backlog, 3, "still in the spool, for the next start");
}

/// A record the store refuses for good goes to the dead-letter file with the reason; the
/// records around it, in the same batches, are stored.
#[tokio::test]
async fn a_record_refused_for_good_goes_to_the_dead_letter_file_and_the_rest_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeStore::default());
    *store.refuse_tool.lock().unwrap() = Some("tool_7".into());
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();
    let batch: Vec<_> = (0..40).map(|i| record(i % 20)).collect();
    let refused: Vec<_> = batch.iter().filter(|r| r.tool.as_deref() == Some("tool_7")).map(|r| r.id).collect();
    let results = futures::future::join_all(batch.iter().cloned().map(|r| writer.record(r))).await;
    assert!(results.iter().all(Result::is_ok));
    eventually("the spool drained", || writer.stats().backlog == 0).await;
    let stats = writer.stats();
    assert_eq!((stats.written, stats.dead_lettered), (38, 2), "{stats:?}");
    assert_eq!(store.ids().len(), 38);
    let (letters, corrupt) = crate::audit::dead_letter::read(&tmp.path().join("spool/dead-letter.jsonl")).unwrap();
    assert_eq!(corrupt, 0);
    assert_eq!(letters.iter().map(|l| l.record.id).collect::<Vec<_>>(), refused);
    assert!(letters.iter().all(|l| l.reason.contains("check constraint") && l.store == "test-store"));
    assert_eq!(writer.last_refusal().as_deref(), Some("new row violates check constraint"));
    // Later records flow as before.
    record_n(&writer, 5).await;
    eventually("later records stored", || store.ids().len() == 43).await;
}

/// A store that does not answer at start: records are taken into the spool, the store is
/// reported down, and everything is stored once it answers.
#[tokio::test]
async fn a_store_unreachable_at_start_is_connected_when_it_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeStore::default());
    store.unreachable.store(true, Ordering::SeqCst);
    let writer = AuditWriter::start(store.clone(), settings(tmp.path())).unwrap();
    let ids = record_n(&writer, 30).await;
    let stats = writer.stats();
    assert!(!stats.store_up && stats.store_down_for.is_some() && stats.backlog == 30, "{stats:?}");
    assert!(writer.writable(), "the spool takes records while the store is away");
    assert_eq!(writer.shared.live().records, 0, "nothing held in memory for a store that is down");
    store.unreachable.store(false, Ordering::SeqCst);
    eventually("stored once the store answers", || writer.stats().backlog == 0).await;
    assert!(store.ids() == ids);
    let stats = writer.stats();
    assert!(stats.store_up && stats.store_down_for.is_none(), "{stats:?}");
}

/// Two stores' gateways on one spool folder: a dead process's records are replayed only by a
/// writer for the same store; another store's writer leaves them and reports them.
#[tokio::test]
async fn spool_folders_are_replayed_only_into_their_own_store() {
    let tmp = tempfile::tempdir().unwrap();
    let mut for_a = settings(tmp.path());
    for_a.store_id = "postgres://a:5432/audit".into();
    let mut for_b = for_a.clone();
    for_b.store_id = "postgres://b:5432/audit".into();

    let store_a = FakeStore::down();
    let writer = AuditWriter::start(store_a.clone(), for_a.clone()).unwrap();
    let ids = record_n(&writer, 12).await;
    writer.flush().await;
    drop(writer);
    // Dropping the writer released its lock, as the death of its process would.

    let store_b = Arc::new(FakeStore::default());
    let writer_b = AuditWriter::start(store_b.clone(), for_b).unwrap();
    record_n(&writer_b, 3).await;
    writer_b.flush().await;
    assert_eq!(store_b.ids().len(), 3, "only b's own records");
    assert_eq!(writer_b.stats().replayed, 0);
    let foreign = writer_b.foreign_spools().unwrap();
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    assert_eq!((foreign[0].store.as_str(), foreign[0].owner_running), ("postgres://a:5432/audit", true));

    let store_a = Arc::new(FakeStore::default());
    let writer_a = AuditWriter::start(store_a.clone(), for_a).unwrap();
    eventually("a's records replayed into a", || store_a.ids().len() == 12).await;
    assert!(store_a.ids() == ids);
    assert!(writer_b.foreign_spools().unwrap().is_empty());
    drop(writer_a);
}
