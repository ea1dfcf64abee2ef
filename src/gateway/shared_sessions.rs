//! Sessions of session-based clients shared by every replica (`[cluster]`): a session opened
//! on one replica is found on any other (`find_session`), still bound to its subject; ending
//! it on one ends it on all; a client's answer or cancellation that reaches a replica other
//! than the one holding the call is passed on to it, and what another replica has for a GET
//! stream held here is written to it (`on_bus`; see `streams.rs`). Without `[cluster]` each of
//! these is the local operation alone.

use std::sync::Arc;

use super::Gateway;
use crate::backend::Reply;
use crate::cluster::{BusMessage, SharedSession};
use crate::protocol::{self, Generation};
use crate::session::Session;

impl Gateway {
    /// The session `id`, if `subject` may use it: this replica's, or one another replica
    /// opened (taken into this replica's table).
    pub async fn find_session(&self, id: &str, subject: Option<&str>) -> Option<Arc<Session>> {
        if let Some(s) = self.sessions.get(id) {
            if s.subject.as_deref() != subject {
                return None;
            }
            self.refresh_shared(&s);
            return Some(s);
        }
        let cluster = self.cluster.as_ref()?;
        let ttl = self.config().server.session_idle_timeout;
        let record = cluster.load_session(id, ttl).await.ok()??;
        if record.subject.as_deref() != subject {
            return None;
        }
        let version = protocol::known_session_based(&record.version)?;
        let s = Arc::new(Session::new(id.to_string(), "http", subject));
        let client = record.client_info.get("name").and_then(serde_json::Value::as_str).unwrap_or("-").to_string();
        s.initialize(Generation::SessionBased(version), record.capabilities, record.client_info);
        // Its subscriptions stay with the replica holding its GET stream (`streams.rs`).
        if let Some(level) = record.log_level {
            s.set_log_level(level);
        }
        let _ = s.refresh_due(std::time::Duration::ZERO);
        // Another request of the session may have taken it in meanwhile.
        if let Some(existing) = self.sessions.get(id) {
            return Some(existing);
        }
        let admitted = self.sessions.insert(&s, self.config().server.max_sessions_per_subject)?;
        self.metrics.sessions("http", admitted.open as i64);
        if let Some(old) = admitted.evicted {
            self.close_session(&old);
        }
        tracing::debug!(session = %id, %client, "a session another replica opened is served here");
        Some(s)
    }

    /// Shares a session once `initialize` settled it, before the client is answered: its next
    /// request may reach another replica at once. Bounded by the Redis call timeout; a session
    /// Redis did not take is served here only.
    pub async fn share_session(&self, s: &Session) {
        let (Some(cluster), Some(Generation::SessionBased(version))) = (self.sharing(s).cloned(), s.generation())
        else {
            return;
        };
        let record = SharedSession {
            subject: s.subject.clone(),
            version: version.to_string(),
            capabilities: s.capabilities(),
            client_info: s.client_info(),
            log_level: s.log_level(),
            subscriptions: Vec::new(),
        };
        let (id, ttl) = (s.id.clone(), self.config().server.session_idle_timeout);
        let _ = s.refresh_due(std::time::Duration::ZERO);
        if let Err(o) = cluster.save_session(&id, &record, ttl).await {
            tracing::debug!(session = %id, "the session is not shared with other replicas: {}", o.reason);
        }
    }

    /// Shares the log level a client set (`logging/setLevel`) before it is answered.
    pub(super) async fn share_log_level(&self, s: &Session, rank: u8) {
        let Some(cluster) = self.sharing(s) else { return };
        let ttl = self.config().server.session_idle_timeout;
        if let Err(o) = cluster.share_log_level(&s.id, rank, ttl).await {
            tracing::debug!(session = %s.id, "the log level is not shared with other replicas: {}", o.reason);
        }
    }

    /// Keeps a shared session's record alive while it is used here (at most a few times per
    /// idle timeout, in the background).
    fn refresh_shared(&self, s: &Session) {
        let Some(cluster) = self.cluster.clone() else { return };
        let ttl = self.config().server.session_idle_timeout;
        if s.transport != "http" || s.generation().is_none() || !s.refresh_due(ttl / 4) {
            return;
        }
        let id = s.id.clone();
        self.tasks.spawn(async move {
            let _ = cluster.touch_session(&id, ttl).await;
        });
    }

    /// Ends a session on every replica (the client's DELETE); whether it was found here.
    pub async fn end_session_everywhere(&self, id: &str) -> bool {
        let here = self.end_session(id);
        if let Some(cluster) = &self.cluster {
            let _ = cluster.delete_session(id).await;
            let _ = cluster.publish(BusMessage::Ended { session: id.to_string() }).await;
        }
        here
    }

    /// A client's answer to a relayed request that nobody here waits for: passed on to the
    /// other replicas (one of them may). Whether it went anywhere.
    pub(super) async fn pass_on_reply(&self, session: &Session, id: String, reply: Reply) -> bool {
        let Some(cluster) = &self.cluster else { return false };
        let (result, error) = match reply {
            Reply::Result(r) => (Some(r), None),
            Reply::Error(e) => (None, Some(e)),
            Reply::Streamed(_) => return false,
        };
        let message = BusMessage::Answer { session: session.id.clone(), id, result, error };
        cluster.publish(message).await.is_ok()
    }

    /// A cancellation for a call not running here: passed on to the other replicas.
    pub(super) async fn pass_on_cancel(&self, session: &Session, request: &str) {
        if let Some(cluster) = &self.cluster {
            let message = BusMessage::Cancel { session: session.id.clone(), request: request.to_string() };
            let _ = cluster.publish(message).await;
        }
    }

    /// What another replica said.
    pub(super) fn on_bus(&self, message: BusMessage) {
        match message {
            BusMessage::Ended { session } => {
                self.end_session(&session);
            }
            BusMessage::Answer { session, id, result, error } => {
                let reply = match (result, error) {
                    (Some(r), _) => Reply::Result(r),
                    (_, Some(e)) => Reply::Error(e),
                    _ => return,
                };
                if let Some(s) = self.sessions.get(&session) {
                    s.deliver_reply(&id, reply);
                }
            }
            BusMessage::Cancel { session, request } => {
                if let Some(s) = self.sessions.get(&session) {
                    s.cancel_call(&request);
                }
            }
            BusMessage::Resume { replica, bridge, ticket, responses } => {
                let Some(cluster) = self.cluster.clone() else { return };
                if replica == crate::replica::id() {
                    // Bounded by the longest backend timeout: the parked call's own ends sooner.
                    let timeout = self.config().backends.iter().map(|b| b.timeout).max().unwrap_or_default();
                    self.bridges.on_resume(&self.tasks, cluster, bridge, ticket, &responses, timeout);
                }
            }
            BusMessage::Resumed { ticket, round } => self.bridges.on_resumed(ticket, round),
            // The session's GET stream is here (only its holder listens to its channel).
            BusMessage::Deliver { session, line } => {
                if let Some(out) = self.sessions.get(&session).and_then(|s| s.outbound()) {
                    let _ = out.send(line.get().to_string());
                }
            }
            BusMessage::Subscribed { session, uri } => {
                // Not once the stream closed: its subscriptions went with it.
                if let Some(s) = self.sessions.get(&session).filter(|s| s.outbound().is_some()) {
                    self.subscribe_here(&s, uri);
                }
            }
            BusMessage::Unsubscribed { session, uri } => {
                if let Some(s) = self.sessions.get(&session) {
                    self.unsubscribe_here(&s, &uri);
                }
            }
        }
    }

    /// The id of a request relayed to a client: unique across replicas, so that the client's
    /// answer finds its call whichever replica it reaches.
    pub(super) fn relayed_id(&self) -> String {
        match &self.cluster {
            Some(_) => format!("\"sentinel-{}-{}\"", crate::replica::id(), self.next_seq()),
            None => format!("\"sentinel-{}\"", self.next_seq()),
        }
    }
}
