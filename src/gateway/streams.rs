//! Where server-initiated messages for a session go, and its GET stream opened and closed.
//! Without `[cluster]`, and for the sessions the gateway does not share (stdio, stateless
//! requests), that is a stream here or nowhere, as on one replica. A shared session's GET
//! stream may be on another replica: a message for it is then handed to that replica through
//! Redis (`cluster/streams.rs`), and only then, so that a session whose stream is here costs
//! Redis nothing.
//!
//! The replica holding a shared session's GET stream is also the one whose backends are
//! subscribed to the session's resources (see docs/scaling.md): it subscribes them, from the
//! session's record, when the stream opens, and lets go of them when it closes. Its backend's
//! `notifications/resources/updated` then reaches the stream without crossing Redis.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::Gateway;
use crate::cluster::{BusMessage, Cluster};
use crate::protocol::Generation;
use crate::session::Session;

/// Where a session's server-initiated messages go.
pub(super) enum Outbound {
    /// A stream here: the session's GET stream, stdout, or the call's own SSE response.
    Here(mpsc::UnboundedSender<String>),
    /// A shared session with no stream here: the replica holding its GET stream, if one does.
    Elsewhere { cluster: Arc<Cluster>, session: String },
}

/// Why a message did not reach the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum Undelivered {
    #[error("the client's stream closed")]
    StreamClosed,
    #[error(
        "the client has no open stream to receive this request (send Accept: text/event-stream or open the GET stream)"
    )]
    NoStream,
    #[error("the client's GET stream may be on another replica, which cannot be reached now: {0}")]
    Unreachable(String),
}

impl Outbound {
    /// Sends one JSON-RPC message to the client; bounded by the Redis call timeout when it
    /// goes to another replica.
    pub(super) async fn send(&self, line: String) -> Result<(), Undelivered> {
        match self {
            Outbound::Here(tx) => tx.send(line).map_err(|_| Undelivered::StreamClosed),
            Outbound::Elsewhere { cluster, session } => {
                let line = RawValue::from_string(line).map_err(|e| Undelivered::Unreachable(e.to_string()))?;
                match cluster.to_stream(BusMessage::Deliver { session: session.clone(), line }).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Undelivered::NoStream),
                    Err(o) => Err(Undelivered::Unreachable(o.reason)),
                }
            }
        }
    }

    /// Whether the message crosses Redis.
    pub(super) fn is_elsewhere(&self) -> bool {
        matches!(self, Outbound::Elsewhere { .. })
    }
}

/// A session's GET stream, open here. Dropping it (the stream ended) lets go of what it held.
pub struct OpenStream {
    gw: Arc<Gateway>,
    session: Arc<Session>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.gw.sharing(&self.session).is_none() {
            return;
        }
        let (gw, session) = (self.gw.clone(), self.session.clone());
        self.gw.tasks.spawn(async move { gw.stream_closed(&session).await });
    }
}

impl Gateway {
    /// The cluster a session is shared through: with `[cluster]`, an HTTP session of a
    /// session-based client.
    pub(super) fn sharing(&self, s: &Session) -> Option<&Arc<Cluster>> {
        let cluster = self.cluster.as_ref()?;
        (s.transport == "http" && matches!(s.generation(), Some(Generation::SessionBased(_)))).then_some(cluster)
    }

    /// Where server-initiated messages for `session` go outside a call's own stream: its
    /// stream here, or (shared) whichever replica holds its GET stream.
    pub(super) fn outbound(&self, session: &Session) -> Option<Outbound> {
        if let Some(tx) = session.outbound() {
            return Some(Outbound::Here(tx));
        }
        let cluster = self.sharing(session)?.clone();
        Some(Outbound::Elsewhere { cluster, session: session.id.clone() })
    }

    /// Opens `session`'s GET stream here, its messages sent on `tx`; `None` when the session
    /// has one open already, here or (shared) on another replica. A shared session's stream
    /// takes in what other replicas send it and subscribes this replica's backends to the
    /// session's resources. Redis away: the stream opens, for what this replica sends it.
    pub async fn open_stream(
        self: &Arc<Self>,
        session: &Arc<Session>,
        tx: mpsc::UnboundedSender<String>,
    ) -> Option<OpenStream> {
        let _turn = session.stream_turn().await;
        if session.outbound().is_some() {
            return None;
        }
        let cluster = self.sharing(session).cloned();
        if let Some(c) = &cluster {
            if c.stream_held(&session.id).await.unwrap_or(false) {
                return None;
            }
        }
        if !session.open_outbound(tx) {
            return None;
        }
        if let Some(c) = cluster {
            // Listening before reading the record: a subscription another replica takes
            // meanwhile is either in what is read or heard.
            if let Err(o) = c.hold_stream(&session.id).await {
                tracing::debug!(session = %session.id, "other replicas cannot reach this GET stream: {}", o.reason);
            }
            let ttl = self.config().server.session_idle_timeout;
            if let Ok(Some(record)) = c.load_session(&session.id, ttl).await {
                for uri in record.subscriptions {
                    self.subscribe_here(session, uri);
                }
            }
        }
        Some(OpenStream { gw: self.clone(), session: session.clone() })
    }

    /// A shared session's GET stream closed here: other replicas' messages for it no longer
    /// come here, and this replica's backends let go of its subscriptions (the next stream,
    /// on any replica, takes them up from the record).
    async fn stream_closed(&self, session: &Session) {
        let Some(cluster) = self.sharing(session).cloned() else { return };
        let _turn = session.stream_turn().await;
        // A new stream opened here meanwhile: it holds the channel and subscriptions now.
        if session.outbound().is_some() {
            return;
        }
        if let Err(o) = cluster.release_stream(&session.id).await {
            tracing::debug!(session = %session.id, "a closed GET stream is still listened for: {}", o.reason);
        }
        for uri in session.take_subscriptions() {
            self.count_subscription(&uri, false);
        }
    }

    /// Subscribes the session to `uri` at this replica's backend (counted with the others).
    pub(super) fn subscribe_here(&self, session: &Session, uri: String) {
        if session.subscribe(uri.clone()) {
            self.count_subscription(&uri, true);
        }
    }

    /// Ends the session's subscription to `uri` at this replica's backend, if it has one here.
    pub(super) fn unsubscribe_here(&self, session: &Session, uri: &str) {
        if session.unsubscribe(uri) {
            self.count_subscription(uri, false);
        }
    }

    /// A shared session's `resources/subscribe` or `unsubscribe`: recorded with the session
    /// and, when its GET stream is not here, handed to the replica holding it (whose backends
    /// hold the session's subscriptions). Whether that settled it; false when the change is
    /// this replica's to make, as on one replica: the stream is here, the session is not
    /// shared, or Redis is away. An unsubscribe always goes on here too, for a subscription
    /// this replica took while Redis was away.
    pub(super) async fn share_subscription(&self, session: &Session, uri: &str, subscribe: bool) -> bool {
        let Some(cluster) = self.sharing(session) else { return false };
        let ttl = self.config().server.session_idle_timeout;
        match cluster.share_subscription(&session.id, uri, subscribe, ttl).await {
            Ok(true) => {}
            // Redis no longer has the session: this replica's copy is all there is.
            Ok(false) => return false,
            Err(o) => {
                tracing::debug!(session = %session.id, "a subscription is kept by this replica only: {}", o.reason);
                return false;
            }
        }
        if session.outbound().is_some() {
            return false;
        }
        let (id, uri) = (session.id.clone(), uri.to_string());
        let message = if subscribe {
            BusMessage::Subscribed { session: id, uri }
        } else {
            BusMessage::Unsubscribed { session: id, uri }
        };
        // No stream anywhere: the next one takes the subscription up from the record.
        let _ = cluster.to_stream(message).await;
        subscribe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn gateway() -> Arc<Gateway> {
        let text = "[auth]\ndisabled = true\n[audit]\nurl = \"none\"\n";
        let config = crate::config::Config::parse("t.toml", text, None, &|_| None).expect("valid config");
        Gateway::start(config).await.expect("starts")
    }

    /// Without `[cluster]` a session's messages go to its stream here or nowhere, and it has
    /// one GET stream at a time, as on one replica.
    #[tokio::test]
    async fn without_a_cluster_messages_go_to_the_stream_here_or_nowhere() {
        let gw = gateway().await;
        let s = gw.new_session("http", None).expect("room");
        s.initialize(Generation::SessionBased("2025-11-25"), serde_json::json!({}), serde_json::Value::Null);
        assert!(gw.sharing(&s).is_none());
        assert!(gw.outbound(&s).is_none(), "no stream: nowhere");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let open = gw.open_stream(&s, tx).await.expect("opens");
        let (again, _rx2) = mpsc::unbounded_channel();
        assert!(gw.open_stream(&s, again).await.is_none(), "one GET stream at a time");
        let out = gw.outbound(&s).expect("the stream here");
        assert!(!out.is_elsewhere());
        out.send("{}".into()).await.expect("sent");
        assert_eq!(rx.recv().await.as_deref(), Some("{}"));
        drop((open, rx));
        assert!(matches!(out.send("{}".into()).await, Err(Undelivered::StreamClosed)));
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(gw.open_stream(&s, tx).await.is_some(), "a new stream once the first closed");
        gw.stop_tasks(std::time::Duration::from_secs(1)).await;
    }
}
