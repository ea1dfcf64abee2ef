//! A client's session with the gateway: its generation, capabilities, log level, the
//! channel for server-initiated messages, and the calls and relayed requests in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backend::Reply;
use crate::protocol::Generation;

/// One client's session: who opened it, what it negotiated, and its calls in flight. Shared behind an `Arc`.
pub struct Session {
    /// `Mcp-Session-Id` for HTTP sessions; a fixed label for stdio and stateless requests.
    pub id: String,
    /// `http` or `stdio`, as the audit trail and the `sentinel_sessions` gauge name it.
    pub transport: &'static str,
    /// The authenticated subject that opened the session: only it may use the session's id.
    pub subject: Option<String>,
    /// Its calls' event streams, kept for a resume (src/replay.rs).
    pub replay: crate::replay::Streams,
    state: Mutex<State>,
    /// Taken while a GET stream of the session opens or closes: a stream closing here must not
    /// let go of what a new one opened meanwhile holds (`[cluster]`: the session's channel and
    /// its subscriptions).
    stream_turn: tokio::sync::Mutex<()>,
}

/// A call in the session's table: which registration of the id it is, and how to cancel it.
struct CallEntry {
    seq: u64,
    token: CancellationToken,
}

#[derive(Default)]
struct State {
    generation: Option<Generation>,
    capabilities: serde_json::Value,
    /// The client's `clientInfo` (`null` when it sent none).
    client_info: serde_json::Value,
    /// Minimum log level rank (`logging/setLevel`); `None` forwards everything.
    log_level: Option<u8>,
    /// Where server-initiated messages go: the GET stream (HTTP) or stdout (stdio).
    outbound: Option<mpsc::UnboundedSender<String>>,
    /// Requests relayed to this client, awaiting its answer, by the id the gateway gave them.
    relayed: HashMap<String, oneshot::Sender<Reply>>,
    /// Calls in flight by the client's raw JSON-RPC id, so `notifications/cancelled` can stop them.
    in_flight: HashMap<String, CallEntry>,
    /// Ids cancelled before their call was registered (the cancellation overtook the request).
    cancelled_early: VecDeque<String>,
    next_call: u64,
    subscriptions: HashSet<String>,
    last_used: Option<Instant>,
    /// When this replica last refreshed the session's shared record (`[cluster]`).
    shared_refresh: Option<Instant>,
}

impl Session {
    /// A session of `subject` (if authenticated) over `transport`, just used.
    pub fn new(id: String, transport: &'static str, subject: Option<&str>) -> Session {
        Session {
            id,
            transport,
            subject: subject.map(str::to_string),
            replay: crate::replay::Streams::default(),
            state: Mutex::new(State { last_used: Some(Instant::now()), ..Default::default() }),
            stream_turn: tokio::sync::Mutex::new(()),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("session lock")
    }

    /// Records what `initialize` settled: the generation, the client's capabilities and info.
    pub fn initialize(&self, generation: Generation, capabilities: serde_json::Value, client_info: serde_json::Value) {
        let mut s = self.st();
        s.generation = Some(generation);
        s.capabilities = capabilities;
        s.client_info = client_info;
    }

    /// The generation `initialize` settled; `None` before it.
    pub fn generation(&self) -> Option<Generation> {
        self.st().generation
    }

    /// The capabilities the client declared.
    pub fn capabilities(&self) -> serde_json::Value {
        self.st().capabilities.clone()
    }

    /// The `clientInfo` the client declared (`null` when none).
    pub fn client_info(&self) -> serde_json::Value {
        self.st().client_info.clone()
    }

    /// Forwards only log messages of this rank and above (`logging/setLevel`).
    pub fn set_log_level(&self, rank: u8) {
        self.st().log_level = Some(rank);
    }

    /// The minimum log rank the client asked for; `None`: everything.
    pub fn log_level(&self) -> Option<u8> {
        self.st().log_level
    }

    /// Marks the session used now (idle sessions are ended).
    pub fn touch(&self) {
        self.st().last_used = Some(Instant::now());
    }

    /// Whether the session's shared record is due for a refresh (at most once per `every`),
    /// marking it refreshed now if so.
    pub fn refresh_due(&self, every: std::time::Duration) -> bool {
        let mut s = self.st();
        let due = s.shared_refresh.is_none_or(|t| t.elapsed() >= every);
        if due {
            s.shared_refresh = Some(Instant::now());
        }
        due
    }

    /// How long since the session was last used.
    pub fn idle_for(&self) -> std::time::Duration {
        self.st().last_used.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Sets the stream for server-initiated messages; returns false if one is already open.
    pub fn open_outbound(&self, tx: mpsc::UnboundedSender<String>) -> bool {
        let mut s = self.st();
        if s.outbound.as_ref().is_some_and(|o| !o.is_closed()) {
            return false;
        }
        s.outbound = Some(tx);
        true
    }

    /// The open stream for server-initiated messages, if any.
    pub fn outbound(&self) -> Option<mpsc::UnboundedSender<String>> {
        self.st().outbound.clone().filter(|o| !o.is_closed())
    }

    /// Waits for the session's GET stream to be its caller's to open or close (see `stream_turn`).
    pub async fn stream_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.stream_turn.lock().await
    }

    /// Registers a request relayed to the client, awaiting its answer. The entry is removed
    /// when the guard drops, so a relayed request whose call was aborted does not keep the
    /// session busy.
    pub fn expect_reply_guarded(self: &Arc<Self>, id: String, tx: oneshot::Sender<Reply>) -> Relayed {
        self.st().relayed.insert(id.clone(), tx);
        Relayed { session: self.clone(), id }
    }

    /// Hands `reply` to the relayed request `id` waits for; gives it back when nothing here
    /// waits for it (another replica may: `[cluster]`).
    pub fn take_reply(&self, id: &str, reply: Reply) -> Option<Reply> {
        let waiter = self.st().relayed.remove(id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply);
                None
            }
            None => Some(reply),
        }
    }

    /// Hands `reply` to the relayed request `id` waits for; whether one did.
    pub fn deliver_reply(&self, id: &str, reply: Reply) -> bool {
        match self.st().relayed.remove(id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Registers a call; `None` when a call with this id is already in flight (ids must be
    /// unique among a client's outstanding requests). The call is unregistered when the
    /// returned guard drops, however its future ends (answered, or aborted because the client
    /// went away): a leftover entry would keep the session busy and never reaped.
    pub fn start_call(self: &Arc<Self>, id: &str) -> Option<RegisteredCall> {
        let mut s = self.st();
        if s.in_flight.contains_key(id) {
            return None;
        }
        s.next_call += 1;
        let token = CancellationToken::new();
        if let Some(pos) = s.cancelled_early.iter().position(|c| c == id) {
            s.cancelled_early.remove(pos);
            token.cancel();
        }
        let seq = s.next_call;
        s.in_flight.insert(id.to_string(), CallEntry { seq, token: token.clone() });
        Some(RegisteredCall { session: self.clone(), id: id.to_string(), seq, token })
    }

    /// Cancels the call with the client's id `id`; false when none is in flight (the id is then
    /// remembered, bounded, in case the call is still on its way).
    pub fn cancel_call(&self, id: &str) -> bool {
        let mut s = self.st();
        match s.in_flight.remove(id) {
            Some(call) => {
                call.token.cancel();
                true
            }
            None => {
                // Remember a few, bounded: a client cannot grow this without limit.
                if s.cancelled_early.len() >= 64 {
                    s.cancelled_early.pop_front();
                }
                s.cancelled_early.push_back(id.to_string());
                false
            }
        }
    }

    /// Whether any call or relayed request is outstanding (an idle session is not reaped then).
    pub fn is_busy(&self) -> bool {
        let s = self.st();
        !s.in_flight.is_empty() || !s.relayed.is_empty() || s.outbound.as_ref().is_some_and(|o| !o.is_closed())
    }

    /// Whether a call or a relayed request is outstanding (an open GET stream alone is not
    /// work: a subject at its session limit may lose such a session).
    pub fn has_calls(&self) -> bool {
        let s = self.st();
        !s.in_flight.is_empty() || !s.relayed.is_empty()
    }

    /// Returns whether this is a new subscription for the session.
    pub fn subscribe(&self, uri: String) -> bool {
        self.st().subscriptions.insert(uri)
    }

    /// Returns whether the session was subscribed.
    pub fn unsubscribe(&self, uri: &str) -> bool {
        self.st().subscriptions.remove(uri)
    }

    /// Ends every subscription, returning their URIs.
    pub fn take_subscriptions(&self) -> Vec<String> {
        self.st().subscriptions.drain().collect()
    }

    /// Whether the session is subscribed to `uri`.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.st().subscriptions.contains(uri)
    }

    /// Cancels everything in flight (session ended).
    pub fn close(&self) {
        let mut s = self.st();
        for (_, call) in s.in_flight.drain() {
            call.token.cancel();
        }
        s.relayed.clear();
        s.outbound = None;
    }
}

/// A registered call: its cancellation token, and a sequence number that tells it apart from
/// a later call reusing the same id. Dropping it unregisters the call, like the backends'
/// in-flight guards.
pub struct RegisteredCall {
    session: Arc<Session>,
    id: String,
    seq: u64,
    /// Cancelled when the client cancels the call or the session ends.
    pub token: CancellationToken,
}

impl Drop for RegisteredCall {
    fn drop(&mut self) {
        let mut s = self.session.st();
        // Unless the id was since reused by another call (this one was cancelled and removed).
        if s.in_flight.get(&self.id).is_some_and(|call| call.seq == self.seq) {
            s.in_flight.remove(&self.id);
        }
    }
}

/// A request relayed to the client and awaiting its answer; the entry goes when this drops.
pub struct Relayed {
    session: Arc<Session>,
    id: String,
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.session.st().relayed.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::Session;
    use std::sync::Arc;

    #[test]
    fn a_dropped_call_leaves_the_session_idle() {
        let s = Arc::new(Session::new("s".into(), "http", None));
        let call = s.start_call("1").expect("registered");
        assert!(s.is_busy());
        assert!(s.start_call("1").is_none(), "the id is in flight");
        drop(call);
        assert!(!s.is_busy(), "an aborted call must not keep the session busy");
        assert!(s.start_call("1").is_some(), "the id is free again");
    }

    #[test]
    fn a_reused_id_is_not_unregistered_by_the_old_guard() {
        let s = Arc::new(Session::new("s".into(), "http", None));
        let old = s.start_call("1").expect("registered");
        assert!(s.cancel_call("1"));
        let new = s.start_call("1").expect("the id is free after cancellation");
        drop(old);
        assert!(s.is_busy(), "the new call is still in flight");
        drop(new);
        assert!(!s.is_busy());
    }

    #[test]
    fn a_dropped_relay_leaves_the_session_idle() {
        let s = Arc::new(Session::new("s".into(), "http", None));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let relayed = s.expect_reply_guarded("\"r1\"".into(), tx);
        assert!(s.is_busy());
        drop(relayed);
        assert!(!s.is_busy());
    }
}
