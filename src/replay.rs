//! Resumable event streams for session-based clients (MCP 2025-11-25 Streamable HTTP,
//! "Resumability and Redelivery"). A call answered as an event stream records its events here,
//! each with an id `<stream>-<n>`; the connection only reads them. If the connection drops (a
//! network blip, a proxy's timeout, or the gateway closing a long call's connection on purpose,
//! `server.stream_reconnect_after`), the call goes on, and the client's `GET` with
//! `Last-Event-ID` replays what it missed and follows the rest, the response included.
//!
//! Hand-written: what is needed is a small bounded log per stream inside a session, which no
//! SSE crate keeps (they frame events; replay is the server's business).
//!
//! Bounds: a stream keeps at most [`MAX_EVENTS`] events and [`MAX_BYTES`] bytes (the oldest go
//! first: a resume from before them replays what is left), a session at most [`MAX_STREAMS`]
//! streams, and a finished stream is kept for [`KEEP_FINISHED`] for a late resume.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Events a stream keeps for a resume.
pub const MAX_EVENTS: usize = 1024;
/// Bytes a stream keeps for a resume.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Streams a session keeps; the oldest finished (then oldest) goes first.
pub const MAX_STREAMS: usize = 64;
/// How long a finished stream can still be resumed.
pub const KEEP_FINISHED: Duration = Duration::from_secs(60);

/// One event as sent: its id and its data (a JSON-RPC message).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// `<stream>-<n>`.
    pub id: String,
    /// The message, shared with the stream's log (not copied per reader).
    pub data: std::sync::Arc<str>,
}

/// A session's resumable streams.
#[derive(Default)]
pub struct Streams {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    logs: HashMap<u64, Log>,
}

struct Log {
    events: VecDeque<(u64, std::sync::Arc<str>)>,
    bytes: usize,
    next_seq: u64,
    /// The connection reading the stream now, if any.
    live: Option<mpsc::UnboundedSender<Sent>>,
    opened: Instant,
    finished: Option<Instant>,
}

/// What a resume gets: the events after the client's last one, and the rest as they come
/// (`None` once the stream has finished: the replay is all there is).
pub struct Resumed {
    /// Missed events, in order.
    pub replay: Vec<Sent>,
    /// The events still to come.
    pub live: Option<mpsc::UnboundedReceiver<Sent>>,
}

impl Streams {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("replay lock")
    }

    /// Opens a stream: its number (its priming event's id is `<number>-0`) and the channel its
    /// events reach the first connection on.
    pub fn open(&self) -> (u64, mpsc::UnboundedReceiver<Sent>) {
        let mut inner = self.inner();
        inner.prune();
        inner.next += 1;
        let no = inner.next;
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Log {
            events: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            live: Some(tx),
            opened: Instant::now(),
            finished: None,
        };
        inner.logs.insert(no, log);
        (no, rx)
    }

    /// Records the stream's next event and passes it to the connection reading it, if any. An
    /// event larger than [`MAX_BYTES`] (a large result) is passed on but not kept: holding it for
    /// a resume would hold its size per stream for up to [`KEEP_FINISHED`].
    pub fn push(&self, stream: u64, data: String) {
        let mut inner = self.inner();
        let Some(log) = inner.logs.get_mut(&stream) else { return };
        let seq = log.next_seq;
        log.next_seq += 1;
        let data: std::sync::Arc<str> = data.into();
        let sent = Sent { id: format!("{stream}-{seq}"), data: data.clone() };
        if log.live.as_ref().is_some_and(|l| l.send(sent).is_err()) {
            log.live = None;
        }
        if data.len() > MAX_BYTES {
            return;
        }
        log.bytes += data.len();
        log.events.push_back((seq, data));
        while log.events.len() > MAX_EVENTS || log.bytes > MAX_BYTES {
            if let Some((_, old)) = log.events.pop_front() {
                log.bytes -= old.len();
            }
        }
    }

    /// The stream's last event has been pushed: its connection ends after it.
    pub fn finish(&self, stream: u64) {
        if let Some(log) = self.inner().logs.get_mut(&stream) {
            log.finished = Some(Instant::now());
            log.live = None;
        }
    }

    /// Resumes after `last_event_id` (`<stream>-<n>`), if that stream is known: what came after
    /// it, and what is still to come on a new connection (which replaces any earlier one).
    pub fn resume(&self, last_event_id: &str) -> Option<Resumed> {
        let (stream, seq) = parse_id(last_event_id)?;
        let mut inner = self.inner();
        let log = inner.logs.get_mut(&stream)?;
        let replay = log
            .events
            .iter()
            .filter(|(s, _)| *s > seq)
            .map(|(s, data)| Sent { id: format!("{stream}-{s}"), data: data.clone() })
            .collect();
        let live = if log.finished.is_some() {
            None
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            log.live = Some(tx);
            Some(rx)
        };
        Some(Resumed { replay, live })
    }
}

impl Inner {
    /// Drops finished streams past `KEEP_FINISHED`, then the oldest ones beyond `MAX_STREAMS`
    /// (finished first).
    fn prune(&mut self) {
        self.logs.retain(|_, l| l.finished.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
        while self.logs.len() >= MAX_STREAMS {
            let oldest = self
                .logs
                .iter()
                .min_by_key(|(_, l)| (l.finished.is_none(), l.opened))
                .map(|(no, _)| *no)
                .expect("not empty");
            self.logs.remove(&oldest);
        }
    }
}

/// `<stream>-<n>` as two numbers.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Sent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s.id);
        }
        out
    }

    #[test]
    fn a_resume_replays_what_came_after_the_last_event_and_follows_the_rest() {
        let s = Streams::default();
        let (no, mut first) = s.open();
        s.push(no, "a".into());
        s.push(no, "b".into());
        assert_eq!(drain(&mut first), [format!("{no}-1"), format!("{no}-2")]);
        drop(first); // the connection drops
        s.push(no, "c".into());
        let r = s.resume(&format!("{no}-1")).expect("known stream");
        let replayed: Vec<&str> = r.replay.iter().map(|e| &*e.data).collect();
        assert_eq!(replayed, ["b", "c"]);
        let mut live = r.live.expect("still running");
        s.push(no, "d".into());
        s.finish(no);
        assert_eq!(drain(&mut live), [format!("{no}-4")]);
        assert!(live.try_recv().is_err(), "ends when the stream finishes");
        let after = s.resume(&format!("{no}-4")).expect("kept after it finished");
        assert!(after.replay.is_empty() && after.live.is_none());
        assert!(s.resume("99-0").is_none() && s.resume("junk").is_none());
    }

    #[test]
    fn a_stream_keeps_a_bounded_tail_and_a_session_a_bounded_number_of_streams() {
        let s = Streams::default();
        let (no, _rx) = s.open();
        for i in 0..(MAX_EVENTS + 10) {
            s.push(no, i.to_string());
        }
        let r = s.resume(&format!("{no}-0")).unwrap();
        assert_eq!(r.replay.len(), MAX_EVENTS);
        assert_eq!(&*r.replay[0].data, "10", "the oldest went first");
        // An event above MAX_BYTES reaches its reader but is not kept.
        let (big, mut rx) = s.open();
        s.push(big, "x".repeat(MAX_BYTES + 1));
        assert_eq!(drain(&mut rx).len(), 1);
        assert!(s.resume(&format!("{big}-0")).unwrap().replay.is_empty());
        for _ in 0..(MAX_STREAMS + 5) {
            let (n, _) = s.open();
            s.finish(n);
        }
        assert!(s.inner().logs.len() <= MAX_STREAMS);
    }
}
