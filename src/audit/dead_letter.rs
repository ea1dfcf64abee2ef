//! The dead-letter file: records the store refused for good (a constraint, a trigger, row-level
//! security, a value it cannot hold), moved out of the spool with the reason so that the
//! records behind them are stored. One JSON line each, beside the spool folders
//! (`<spool_dir>/dead-letter.jsonl`), so that it outlives the process folder it came from; each
//! line names the store that refused it, since several stores' gateways may share a spool
//! folder. `sentinel audit --dead-letter` shows a config's own.

use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AuditRecord;

/// The dead-letter file's name in the spool folder: one JSON line per refused record.
pub const FILE: &str = "dead-letter.jsonl";

/// A dead-letter file line is read only up to this size (a record with megabytes of
/// arguments is still shown; a corrupt file cannot make `sentinel audit` read without end).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// A record the store refused for good, with when and why it was moved aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was moved aside, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The identity of the store that refused it (`store::identity`).
    pub store: String,
    /// The store's error.
    pub reason: String,
    /// The record as it would have been stored.
    pub record: AuditRecord,
}

/// Where the dead letters of a configured spool folder go.
pub fn path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(FILE)
}

/// Appends letters as one write and syncs them: a record moved here is deleted from the spool
/// once this returns, so it must be on disk first. Created readable by its owner only.
pub fn append(file: &Path, letters: &[DeadLetter]) -> io::Result<()> {
    let mut buf = Vec::new();
    for letter in letters {
        serde_json::to_writer(&mut buf, letter)?;
        buf.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    f.write_all(&buf)?;
    f.sync_data()
}

/// Every letter in the file, oldest first, and how many lines did not parse.
pub fn read(file: &Path) -> io::Result<(Vec<DeadLetter>, usize)> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = io::BufReader::new(f);
    let (mut letters, mut corrupt) = (Vec::new(), 0);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = io::Read::take(&mut reader, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(letter) => letters.push(letter),
            Err(_) => corrupt += 1,
        }
    }
    Ok((letters, corrupt))
}

/// `sentinel audit --dead-letter`: the letters the config's store refused, newest `limit`, as a
/// table with the reason under each row, or as JSON lines (the letter objects).
pub fn run(spool_dir: &Path, url: &str, limit: usize, json: bool) -> Result<(), super::query::ShowError> {
    let file = path(spool_dir);
    let (letters, corrupt) = read(&file)?;
    let store = super::store::identity(url);
    let (ours, others): (Vec<_>, Vec<_>) = letters.into_iter().partition(|l| l.store == store);
    let shown = &ours[ours.len().saturating_sub(limit)..];
    let mut out = io::stdout().lock();
    if !json && !shown.is_empty() {
        writeln!(out, "{}", super::query::header())?;
    }
    for letter in shown {
        if json {
            writeln!(out, "{}", serde_json::to_string(letter)?)?;
        } else {
            writeln!(out, "{}", super::query::row(&letter.record))?;
            writeln!(out, "    refused: {}", super::query::fit(&letter.reason, 200))?;
        }
    }
    out.flush()?;
    if ours.is_empty() && !json {
        eprintln!("no dead letters for {store} in {}", file.display());
    }
    if !others.is_empty() {
        eprintln!("({} dead letters in {} are for other stores)", others.len(), file.display());
    }
    if corrupt > 0 {
        eprintln!("({corrupt} lines of {} could not be read)", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_and_a_torn_line_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let file = path(tmp.path());
        assert_eq!(read(&file).unwrap().0, vec![]);
        let letter = |reason: &str| DeadLetter {
            at_ms: 1,
            store: "postgres://h:5432/d".into(),
            reason: reason.into(),
            record: AuditRecord::start("tools/call", "http", Some("ann"), &[], None),
        };
        append(&file, &[letter("a"), letter("b")]).unwrap();
        append(&file, &[letter("c")]).unwrap();
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"{\"torn").unwrap();
        let (letters, corrupt) = read(&file).unwrap();
        assert_eq!(letters.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(corrupt, 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
