use std::io::Write;

use super::*;
use crate::audit::AuditRecord;

fn records(n: usize) -> Vec<AuditRecord> {
    (0..n)
        .map(|i| {
            let mut r = AuditRecord::start("tools/call", "http", Some("alice"), &["dev".to_string()], None);
            r.tool = Some(format!("tool_{i}"));
            r
        })
        .collect()
}

fn read_all(spool: &Spool) -> Vec<AuditRecord> {
    spool.segments().unwrap().iter().flat_map(|s| s.read_from(0).unwrap().records).collect()
}

#[test]
fn append_then_read_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path().join("spool")).unwrap();
    let batch = records(3);
    spool.append(&batch).unwrap();
    spool.append(&[]).unwrap();
    let more = records(2);
    spool.append(&more).unwrap();

    let segments = spool.segments().unwrap();
    assert_eq!(segments.len(), 1);
    let read = segments[0].read_from(0).unwrap();
    assert_eq!(read.records, [batch, more].concat());
    assert_eq!(read.corrupt, 0);
    assert_eq!(read.end, fs::metadata(&segments[0].path).unwrap().len());
    // Reading on from `end` finds nothing new.
    assert!(segments[0].read_from(read.end).unwrap().records.is_empty());
}

#[test]
fn spool_dir_and_segments_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/spool");
    let mut spool = Spool::open(&dir).unwrap();
    spool.append(&records(1)).unwrap();
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let seg = &spool.segments().unwrap()[0];
    assert_eq!(fs::metadata(&seg.path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_torn_last_line_is_ignored_but_complete_lines_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path()).unwrap();
    let batch = records(2);
    spool.append(&batch).unwrap();
    let seg = spool.segments().unwrap().remove(0);
    let complete_len = fs::metadata(&seg.path).unwrap().len();
    // A crash in the middle of the next write leaves half a line.
    let half = serde_json::to_string(&records(1)[0]).unwrap();
    let mut file = OpenOptions::new().append(true).open(&seg.path).unwrap();
    file.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();

    let read = seg.read_from(0).unwrap();
    assert_eq!(read.records, batch);
    assert_eq!(read.end, complete_len);
    assert_eq!(read.corrupt, 0);

    // A complete final line (newline written) is kept even though nothing follows it.
    file.set_len(complete_len).unwrap();
    let last = records(1);
    writeln!(file, "{}", serde_json::to_string(&last[0]).unwrap()).unwrap();
    assert_eq!(seg.read_from(0).unwrap().records, [batch, last].concat());
}

#[test]
fn a_corrupt_complete_line_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path()).unwrap();
    spool.append(&records(1)).unwrap();
    let seg = spool.segments().unwrap().remove(0);
    OpenOptions::new().append(true).open(&seg.path).unwrap().write_all(b"{not json}\n").unwrap();
    spool.append(&records(1)).unwrap();
    let read = seg.read_from(0).unwrap();
    assert_eq!(read.records.len(), 2);
    assert_eq!(read.corrupt, 1);
}

#[test]
fn segments_rotate_and_list_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path()).unwrap().with_segment_limit(1);
    let mut all = Vec::new();
    // Enough segments that names must sort numerically, not just by the last digit.
    for _ in 0..12 {
        let batch = records(2);
        spool.append(&batch).unwrap();
        all.extend(batch);
    }
    let segments = spool.segments().unwrap();
    assert_eq!(segments.len(), 12);
    assert_eq!(segments.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert_eq!(read_all(&spool), all);
    assert_eq!(spool.sealed_below(), 12, "only the last segment is still open");

    spool.remove(&segments[0]).unwrap();
    assert_eq!(spool.segments().unwrap().first().map(|s| s.seq), Some(2));
}

#[test]
fn reopening_never_appends_to_an_old_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let first = records(2);
    {
        let mut spool = Spool::open(tmp.path()).unwrap();
        spool.append(&first).unwrap();
    }
    let mut spool = Spool::open(tmp.path()).unwrap();
    assert_eq!(spool.sealed_below(), 2, "the leftover segment is sealed");
    let second = records(1);
    spool.append(&second).unwrap();
    let segments = spool.segments().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].read_from(0).unwrap().records, first);
    assert_eq!(segments[1].read_from(0).unwrap().records, second);
    // Unrelated files are not segments.
    fs::write(tmp.path().join("notes.txt"), "x").unwrap();
    assert_eq!(spool.segments().unwrap().len(), 2);
}

#[test]
fn a_failed_append_errs_and_the_spool_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut spool = Spool::open(&dir).unwrap();
    // A regular file where the directory was: creating a segment fails even for root.
    fs::remove_dir(&dir).unwrap();
    fs::write(&dir, "not a directory").unwrap();
    assert!(spool.append(&records(1)).is_err());
    assert!(spool.probe().is_err());

    fs::remove_file(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    spool.probe().unwrap();
    let batch = records(1);
    spool.append(&batch).unwrap();
    assert_eq!(read_all(&spool), batch);
}

#[test]
fn write_leaves_the_batch_unsynced_until_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path()).unwrap().with_segment_limit(1);
    assert!(!spool.unsynced());
    let first = spool.write(&records(2)).unwrap();
    assert_eq!((first.start, first.seq), (0, spool.sealed_below()));
    assert!(spool.unsynced(), "written, not yet synced");
    // Readable at once: in the kernel, whatever the disk holds.
    assert_eq!(spool.segments().unwrap()[0].read_from(0).unwrap().records.len(), 2);
    spool.sync().unwrap();
    assert!(!spool.unsynced());

    // Every segment is full after one write (limit 1 byte): each write starts a new one.
    assert!(spool.segment_due());
    let second = spool.write(&records(1)).unwrap();
    assert_eq!((second.seq, second.start), (first.seq + 1, 0), "a new segment");
    assert!(spool.unsynced());
    let third = spool.write(&records(1)).unwrap();
    assert_eq!(third.seq, first.seq + 2);
    assert!(spool.unsynced(), "the new segment's write is unsynced");
    let fourth = spool.append(&records(1)).unwrap();
    assert_eq!(fourth.seq, first.seq + 3);
    assert!(!spool.unsynced(), "append syncs");
}

#[test]
fn a_segment_is_read_a_batch_at_a_time_up_to_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(tmp.path()).unwrap();
    let all = records(7);
    spool.append(&all).unwrap();
    let seg = spool.segments().unwrap().remove(0);
    let half = serde_json::to_string(&records(1)[0]).unwrap();
    OpenOptions::new().append(true).open(&seg.path).unwrap().write_all(&half.as_bytes()[..10]).unwrap();
    assert_eq!(seg.count_lines().unwrap(), 7);

    let (mut offset, mut got, mut reads) = (0, Vec::new(), 0);
    loop {
        let read = seg.read_some(offset, 3).unwrap();
        assert!(read.records.len() <= 3);
        got.extend(read.records);
        offset = read.end;
        reads += 1;
        if read.done {
            break;
        }
    }
    assert_eq!(got, all);
    assert_eq!(reads, 3, "3 + 3 + 1 records, the last read ending at the torn line");
    assert_eq!(offset, seg.read_from(0).unwrap().end);
}
