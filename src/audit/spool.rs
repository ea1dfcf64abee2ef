//! The audit spool: a local append-only write-ahead log of audit records.
//!
//! Every record is appended here (one JSON line each) before the call that produced it is
//! answered, and fsynced either before that answer or soon after (see `writer::Durability`);
//! the writer's drainer then moves records into the store and deletes the segments it has fully
//! stored. Segments are named `NNNNNNNNNN.jsonl` so their names sort in
//! write order. A segment is only ever appended to by the process that created it: after a
//! restart, new records go to a fresh segment and the old ones are replayed as they are.
//!
//! Hand-written rather than a WAL crate: the format is JSON lines so an operator can read (and
//! `jq`) a spool left behind by a store outage, and all we need is append, fsync, read, delete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::AuditRecord;

/// A segment is closed for appends once it has grown past this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

const SEGMENT_EXT: &str = "jsonl";

/// The append side of the spool. Owned by a single writer task.
pub struct Spool {
    dir: PathBuf,
    /// The segment being appended to; `None` until the first append and after a failed one
    /// (a segment that saw a failed write is never written again, so a partial line can only
    /// ever be its last).
    current: Option<OpenSegment>,
    /// The sequence number the next new segment gets; above every segment already on disk.
    next_seq: u64,
    max_segment_bytes: u64,
}

struct OpenSegment {
    seq: u64,
    file: File,
    len: u64,
    /// Whether bytes were written since the last `sync_data`.
    unsynced: bool,
}

/// Where one batch landed: bytes `start..end` of segment `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The segment's sequence number.
    pub seq: u64,
    /// Offset of the batch's first byte.
    pub start: u64,
    /// Offset just past its last byte.
    pub end: u64,
}

/// One segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its sequence number, from its file name: segments are replayed in this order.
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// The records of the complete lines read, in order.
    pub records: Vec<AuditRecord>,
    /// The byte offset just past the last complete line: where the next read should start.
    pub end: u64,
    /// Complete lines that did not parse as a record (skipped and logged, never retried).
    pub corrupt: usize,
    /// Whether the read reached the end of what the segment holds (rather than `max_records`).
    pub done: bool,
}

impl Spool {
    /// Opens (creating it with mode 0700 if needed) the spool directory. Segments already there
    /// are left for the caller to replay; appends go to a new segment created on first use.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Spool> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let next_seq = list_segments(&dir)?.last().map_or(1, |s| s.seq + 1);
        Ok(Spool { dir, current: None, next_seq, max_segment_bytes: DEFAULT_SEGMENT_BYTES })
    }

    /// Sets the size past which a segment is closed (tests use tiny segments).
    pub fn with_segment_limit(mut self, bytes: u64) -> Spool {
        self.max_segment_bytes = bytes.max(1);
        self
    }

    /// The spool's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every segment with a lower sequence number is complete: this spool will never append to
    /// it again, so a reader that reaches its end may delete it.
    pub fn sealed_below(&self) -> u64 {
        self.current.as_ref().map_or(self.next_seq, |c| c.seq)
    }

    /// Appends a batch as one write and makes it durable (`sync_data`) before returning: the
    /// group commit. On error nothing of the batch may be relied on.
    pub fn append(&mut self, batch: &[AuditRecord]) -> io::Result<Written> {
        let written = self.write(batch)?;
        self.sync()?;
        Ok(written)
    }

    /// Appends a batch as one `write(2)`, without waiting for the disk: once this returns, the
    /// batch is in the kernel and survives the death of this process (`kill -9`), though not a
    /// power loss until `sync`. A segment is synced before it is closed, so only the open one
    /// ever holds unsynced bytes. On error nothing of the batch may be relied on; the segment is
    /// abandoned (after trying to cut off what was partly written) and the next write starts a
    /// new one.
    pub fn write(&mut self, batch: &[AuditRecord]) -> io::Result<Written> {
        if batch.is_empty() {
            let end = self.current.as_ref().map_or(0, |c| c.len);
            return Ok(Written { seq: self.sealed_below(), start: end, end });
        }
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for record in batch {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
        }
        if self.segment_due() {
            // The full segment is synced before it is sealed, then never written again.
            self.sync()?;
            self.current = Some(self.create_segment()?);
        }
        let Some(seg) = self.current.as_mut() else { unreachable!("a segment was just opened") };
        match seg.file.write_all(&buf) {
            Ok(()) => {
                let start = seg.len;
                seg.len += buf.len() as u64;
                seg.unsynced = true;
                Ok(Written { seq: seg.seq, start, end: seg.len })
            }
            Err(e) => {
                let _ = seg.file.set_len(seg.len).and_then(|()| seg.file.sync_data());
                self.current = None;
                Err(e)
            }
        }
    }

    /// Makes everything written so far durable (`sync_data`): the group commit. On error the
    /// segment is abandoned (the next write starts a new one): after a failed fsync the kernel
    /// may have dropped the unsynced pages, so nothing more is trusted to that file.
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(seg) = self.current.as_mut() else { return Ok(()) };
        if !seg.unsynced {
            return Ok(());
        }
        match seg.file.sync_data() {
            Ok(()) => {
                seg.unsynced = false;
                Ok(())
            }
            Err(e) => {
                self.current = None;
                Err(e)
            }
        }
    }

    /// A handle on the open segment with unsynced bytes, to fsync them off the writer's path
    /// (`File::sync_data` on it) while writes go on: what was written before this call is
    /// durable once that returns. `None` when there is nothing to sync. Counts as synced from
    /// now on; if that fsync fails, call `abandon`.
    pub fn take_unsynced(&mut self) -> io::Result<Option<File>> {
        let Some(seg) = self.current.as_mut() else { return Ok(None) };
        if !seg.unsynced {
            return Ok(None);
        }
        let file = seg.file.try_clone()?;
        seg.unsynced = false;
        Ok(Some(file))
    }

    /// Stops writing to the open segment (after a failed fsync, nothing more is trusted to
    /// it); the next write starts a new one.
    pub fn abandon(&mut self) {
        self.current = None;
    }

    /// Whether the next write starts a new segment (and so syncs the full one first, and
    /// syncs the folder).
    pub fn segment_due(&self) -> bool {
        self.current.as_ref().is_none_or(|c| c.len >= self.max_segment_bytes)
    }

    /// Whether bytes were written that are not yet synced.
    pub fn unsynced(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.unsynced)
    }

    /// Checks that the spool directory can take a write right now (used to notice that a full
    /// or read-only disk has recovered while no records are arriving).
    pub fn probe(&self) -> io::Result<()> {
        // A spool folder removed at runtime comes back here (never while a file stands in
        // its place).
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let path = self.dir.join(".probe");
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&path)?;
        let written = file.write_all(b"probe\n").and_then(|()| file.sync_data());
        let _ = fs::remove_file(&path);
        written
    }

    /// The segments on disk, oldest first.
    pub fn segments(&self) -> io::Result<Vec<Segment>> {
        list_segments(&self.dir)
    }

    /// Deletes a segment whose records are all stored.
    pub fn remove(&self, segment: &Segment) -> io::Result<()> {
        segment.remove()
    }

    fn create_segment(&mut self) -> io::Result<OpenSegment> {
        let seq = self.next_seq;
        let path = self.dir.join(segment_name(seq));
        let file = OpenOptions::new().create_new(true).append(true).mode(0o600).open(&path)?;
        self.next_seq += 1;
        // The new directory entry must be durable too, or a power loss could lose the whole file.
        File::open(&self.dir)?.sync_all()?;
        Ok(OpenSegment { seq, file, len: 0, unsynced: false })
    }
}

impl Segment {
    /// Reads every record from byte `offset` on (see `read_some`).
    pub fn read_from(&self, offset: u64) -> io::Result<SegmentRead> {
        self.read_some(offset, usize::MAX)
    }

    /// Reads at most `max_records` records from byte `offset` on, line by line, so that
    /// catching up on a segment of several megabytes holds one batch in memory, not the segment.
    /// A final line without its newline is a write torn by a crash (or one still being made): it
    /// was never acknowledged, so it is left (and `end` stops before it). Complete lines are
    /// never left, except ones that do not parse, which are counted.
    pub fn read_some(&self, offset: u64, max_records: usize) -> io::Result<SegmentRead> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = io::BufReader::new(file);
        let mut read = SegmentRead { end: offset, ..SegmentRead::default() };
        let mut line = Vec::new();
        while read.records.len() < max_records {
            line.clear();
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                read.done = true;
                break;
            }
            read.end += n as u64;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(record) => read.records.push(record),
                Err(e) => {
                    tracing::error!(segment = %self.path.display(), error = %e, "corrupt audit spool line skipped");
                    read.corrupt += 1;
                }
            }
        }
        Ok(read)
    }

    /// How many complete, non-blank lines the segment holds: its records, without parsing them
    /// (a corrupt line is found, counted and skipped when it is read).
    pub fn count_lines(&self) -> io::Result<usize> {
        let mut reader = io::BufReader::new(File::open(&self.path)?);
        let (mut count, mut line) = (0, Vec::new());
        loop {
            line.clear();
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(count);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                count += 1;
            }
        }
    }

    /// Deletes the segment's file (once every record in it is stored).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_file(&self.path)
    }
}

/// The segments in `dir`, oldest first. Other files (`.probe`) are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let seq = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        if let Some(seq) = seq {
            segments.push(Segment { seq, path });
        }
    }
    segments.sort_by_key(|s| s.seq);
    Ok(segments)
}

fn segment_name(seq: u64) -> String {
    format!("{seq:010}.{SEGMENT_EXT}")
}

#[cfg(test)]
mod tests;

/// Several Sentinel processes may share one config (one `sentinel stdio` per desktop client,
/// beside `sentinel serve`), so each takes a folder of its own under the configured spool
/// folder, held by an exclusive lock for its lifetime and tagged (`.store`) with the identity
/// of the store its records are for (`store::identity`). Folders whose lock is free belong to
/// processes that are gone: those for the same store have their segments moved into the new
/// folder (in order, ahead of anything new) to be replayed, and are removed. Folders for another
/// store are left alone for a gateway of that store (see `foreign`): configs in one folder share
/// the default spool folder, and one deployment's records must never reach another's database.
/// Untagged segments, written by a build that did not tag its folders (in the base folder or a
/// folder of its own), are adopted as that build did.
pub fn claim(base: &Path, store: &str) -> io::Result<(PathBuf, std::fs::File)> {
    let mkdir = |p: &Path| fs::DirBuilder::new().recursive(true).mode(0o700).create(p);
    mkdir(base)?;
    // Made, tagged and locked under a name no other process looks at, then renamed into place:
    // nobody can take a folder for a dead one between its creation and its lock.
    let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let staging = base.join(format!(".new-{name}"));
    mkdir(&staging)?;
    write_tag(&staging, store)?;
    let lock = lock_file(&staging, true)?.ok_or_else(|| io::Error::other("cannot lock a new spool folder"))?;
    let own = base.join(&name);
    fs::rename(&staging, &own)?;
    let mut seq = 1u64;
    let mut adopt = |dir: &Path| -> io::Result<()> {
        for s in list_segments(dir)? {
            fs::rename(&s.path, own.join(format!("{seq:010}.jsonl")))?;
            seq += 1;
        }
        Ok(())
    };
    adopt(base)?;
    // Only folders this scheme made (`<pid>-<32 hex>` holding a `.lock`) are ever touched.
    let mut others: Vec<PathBuf> = fs::read_dir(base)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| *p != own && p.is_dir() && is_spool_folder(p))
        .collect();
    others.sort();
    for dir in others {
        let tag = read_tag(&dir);
        if tag.as_deref().is_some_and(|t| t != store) {
            continue;
        }
        // A held lock means a live process still writes there; a folder that vanished or
        // cannot be locked was taken by another process starting now: skip it.
        if let Ok(Some(_dead_owner)) = lock_file(&dir, false) {
            if tag.is_none() && !list_segments(&dir)?.is_empty() {
                tracing::warn!(dir = %dir.display(), "adopting an untagged audit spool folder (left by an older build)");
            }
            if adopt(&dir).is_ok() {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    // The adopted segments' new names must be durable before anything is stored from them.
    File::open(&own)?.sync_all()?;
    Ok((own, lock))
}

/// The name of the file in a process's spool folder that holds its store's identity.
const STORE_TAG: &str = ".store";

fn write_tag(dir: &Path, store: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create_new(true).write(true).mode(0o600).open(dir.join(STORE_TAG))?;
    f.write_all(format!("{store}\n").as_bytes())?;
    f.sync_all()
}

fn read_tag(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(STORE_TAG)).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// A spool folder that holds records for another store than this process's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForeignSpool {
    /// The folder.
    pub dir: PathBuf,
    /// The identity of the store its records are for.
    pub store: String,
    /// How many segment files it holds.
    pub segments: usize,
    /// Their total size.
    pub bytes: u64,
    /// Whether the process that made it still runs (judged by the pid in its name: a hint only).
    pub owner_running: bool,
}

/// The folders under `base` holding segments for another store than `store`: records waiting
/// for a gateway of that store to start with this spool folder. Read only: no lock is taken,
/// so a gateway starting meanwhile can still adopt its own.
pub fn foreign(base: &Path, store: &str) -> io::Result<Vec<ForeignSpool>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir() && is_spool_folder(p)) {
        let Some(tag) = read_tag(&dir).filter(|t| t != store) else { continue };
        let segments = list_segments(&dir)?;
        if segments.is_empty() {
            continue;
        }
        let bytes = segments.iter().filter_map(|s| fs::metadata(&s.path).ok()).map(|m| m.len()).sum();
        let pid = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next()).unwrap_or_default();
        let owner_running = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        out.push(ForeignSpool { dir, store: tag, segments: segments.len(), bytes, owner_running });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

fn is_spool_folder(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    let Some((pid, id)) = name.split_once('-') else { return false };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && p.join(".lock").is_file()
}

/// An exclusive, non-blocking `flock` on `dir/.lock`; `None` when another process holds it.
/// Hand-written over libc: the lock must be tied to this process's lifetime (released by the
/// kernel even on `kill -9`), which only a held file descriptor gives.
#[allow(unsafe_code)]
fn lock_file(dir: &Path, create: bool) -> io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new().create(create).truncate(false).write(true).open(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor we own; no memory is shared with the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 { Ok(Some(f)) } else { Ok(None) }
}
