//! A client's session with the gateway: its generation, capabilities, log level, the
//! channel for server-initiated messages, and the calls and relayed requests in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backend::Reply;
use crate::protocol::Generation;

pub struct Session {
    /// `Mcp-Session-Id` for HTTP sessions; a fixed label for stdio and stateless requests.
    pub id: String,
    pub transport: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: Option<Generation>,
    capabilities: serde_json::Value,
    /// Minimum log level rank (`logging/setLevel`); `None` forwards everything.
    log_level: Option<u8>,
    /// Where server-initiated messages go: the GET stream (HTTP) or stdout (stdio).
    outbound: Option<mpsc::UnboundedSender<String>>,
    /// Requests relayed to this client, awaiting its answer, by the id the gateway gave them.
    relayed: HashMap<String, oneshot::Sender<Reply>>,
    /// Calls in flight by the client's raw JSON-RPC id, so `notifications/cancelled` can stop them.
    in_flight: HashMap<String, CancellationToken>,
    subscriptions: HashSet<String>,
    last_used: Option<Instant>,
}

impl Session {
    pub fn new(id: String, transport: &'static str) -> Session {
        Session { id, transport, state: Mutex::new(State { last_used: Some(Instant::now()), ..Default::default() }) }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("session lock")
    }

    pub fn initialize(&self, generation: Generation, capabilities: serde_json::Value) {
        let mut s = self.st();
        s.generation = Some(generation);
        s.capabilities = capabilities;
    }

    pub fn generation(&self) -> Option<Generation> {
        self.st().generation
    }

    pub fn capabilities(&self) -> serde_json::Value {
        self.st().capabilities.clone()
    }

    pub fn set_log_level(&self, rank: u8) {
        self.st().log_level = Some(rank);
    }

    pub fn log_level(&self) -> Option<u8> {
        self.st().log_level
    }

    pub fn touch(&self) {
        self.st().last_used = Some(Instant::now());
    }

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

    pub fn outbound(&self) -> Option<mpsc::UnboundedSender<String>> {
        self.st().outbound.clone().filter(|o| !o.is_closed())
    }

    pub fn expect_reply(&self, id: String, tx: oneshot::Sender<Reply>) {
        self.st().relayed.insert(id, tx);
    }

    pub fn forget_reply(&self, id: &str) {
        self.st().relayed.remove(id);
    }

    /// Delivers the client's answer to a relayed request; false if nobody waits for it.
    pub fn deliver_reply(&self, id: &str, reply: Reply) -> bool {
        match self.st().relayed.remove(id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    pub fn start_call(&self, id: &str) -> CancellationToken {
        let t = CancellationToken::new();
        self.st().in_flight.insert(id.to_string(), t.clone());
        t
    }

    pub fn end_call(&self, id: &str) {
        self.st().in_flight.remove(id);
    }

    pub fn cancel_call(&self, id: &str) -> bool {
        match self.st().in_flight.remove(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Returns whether this is a new subscription for the session.
    pub fn subscribe(&self, uri: String) -> bool {
        self.st().subscriptions.insert(uri)
    }

    /// Returns whether the session was subscribed.
    pub fn unsubscribe(&self, uri: &str) -> bool {
        self.st().subscriptions.remove(uri)
    }

    pub fn take_subscriptions(&self) -> Vec<String> {
        self.st().subscriptions.drain().collect()
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.st().subscriptions.contains(uri)
    }

    /// Cancels everything in flight (session ended).
    pub fn close(&self) {
        let mut s = self.st();
        for (_, t) in s.in_flight.drain() {
            t.cancel();
        }
        s.relayed.clear();
        s.outbound = None;
    }
}
