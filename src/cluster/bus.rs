//! What one replica tells the others (`[cluster]`), through Redis pub/sub: on the bus, one
//! channel every replica listens to, a session ended and a client's answer or cancellation that
//! reached a replica other than the one holding the call; on a session's own channel, what is
//! for the replica holding that session's GET stream (`streams.rs`). Each replica listens in a
//! task of its own (reconnected when Redis comes back) and hands what it hears to the gateway.
//! A message lost while Redis is away costs what the same loss costs on one replica: the
//! waiting call times out, or the session lingers until its idle timeout. With `secret_file`
//! every message is sealed (src/seal.rs), so one published by anyone who can only reach Redis
//! (a forged answer to another user's sampling request, say) is ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Cluster, Outage};

/// What replicas tell each other. Externally tagged (serde's default): an internally tagged or
/// flattened enum is buffered before it is read, and the raw answers it carries cannot be.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusMessage {
    /// The client ended the session (DELETE on some replica): every replica drops its copy.
    Ended {
        /// The session's id.
        session: String,
    },
    /// A client's answer to a request the gateway relayed to it, for whichever replica waits.
    Answer {
        /// The session the answer came in.
        session: String,
        /// The relayed request's id, raw (as the client sent it back).
        id: String,
        /// The answer's `result`, byte for byte…
        result: Option<Box<RawValue>>,
        /// …or its `error`.
        error: Option<Box<RawValue>>,
    },
    /// `notifications/cancelled` for a call that may run on another replica.
    Cancel {
        /// The session the notification came in.
        session: String,
        /// The cancelled request's id, raw.
        request: String,
    },
    /// A message for the session's GET stream (a notification, a relayed request), to the
    /// replica holding it. On the session's channel.
    Deliver {
        /// The session whose stream it is for.
        session: String,
        /// The JSON-RPC message, raw (carried as JSON, not as a string of it).
        line: Box<RawValue>,
    },
    /// The client subscribed to a resource through a replica that does not hold its GET stream:
    /// the one that does subscribes its backend. On the session's channel.
    Subscribed {
        /// The session that subscribed.
        session: String,
        /// The resource's URI.
        uri: String,
    },
    /// The client unsubscribed through a replica that does not hold its GET stream. On the
    /// session's channel.
    Unsubscribed {
        /// The session that unsubscribed.
        session: String,
        /// The resource's URI.
        uri: String,
    },
    /// A stateless client's retry of a call parked on `replica` (its `requestState` says
    /// which): the client's answers, for that replica to hand to the backend.
    Resume {
        /// The replica holding the parked call; the others ignore the message.
        replica: String,
        /// The parked call.
        bridge: uuid::Uuid,
        /// Names the round's outcome when it comes back.
        ticket: uuid::Uuid,
        /// The retry's `inputResponses`, raw.
        responses: Box<RawValue>,
    },
    /// What the backend did next in a round another replica asked for.
    Resumed {
        /// The `ticket` of the `Resume` this answers.
        ticket: uuid::Uuid,
        /// The round's outcome.
        round: BridgeRound,
    },
}

/// How one round of a parked call ended (`gateway/bridge.rs`), as the retry is answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeRound {
    /// The backend's result (its answer, or another `input_required` round), raw.
    Result(Box<RawValue>),
    /// The backend's JSON-RPC error, raw.
    Error(Box<RawValue>),
    /// The backend did not answer within its timeout.
    Timeout,
    /// The backend (or the replica holding the call) cannot be reached.
    Unavailable(String),
    /// No such parked call any more: it ended, expired, or its replica stopped.
    Gone,
}

impl BusMessage {
    /// The session the message is about (none for a parked call's round: those are not for a
    /// session's channel).
    pub fn session(&self) -> &str {
        match self {
            BusMessage::Ended { session }
            | BusMessage::Answer { session, .. }
            | BusMessage::Cancel { session, .. }
            | BusMessage::Deliver { session, .. }
            | BusMessage::Subscribed { session, .. }
            | BusMessage::Unsubscribed { session, .. } => session,
            BusMessage::Resume { .. } | BusMessage::Resumed { .. } => "",
        }
    }

    /// The message with its sender, as JSON (before any sealing).
    fn envelope(self) -> String {
        serde_json::to_string(&Envelope { from: crate::replica::id().to_string(), message: self })
            .expect("a bus message serializes")
    }
}

/// What bus messages are sealed for (with `secret_file`): a session record cannot pass for one.
const BUS_PURPOSE: &str = "bus";

/// A message with its sender, so that a replica ignores its own (not flattened: see above).
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    message: BusMessage,
}

/// How long a replica waits to (re)subscribe before trying again.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

impl Cluster {
    fn channel(&self) -> String {
        format!("{}bus", self.config.key_prefix)
    }

    /// A message as published: its envelope, sealed when the replicas share a secret.
    pub(super) fn encode(&self, message: BusMessage) -> String {
        let text = message.envelope();
        match &self.config.secret {
            Some(sealer) => sealer.seal(BUS_PURPOSE, text.as_bytes()),
            None => text,
        }
    }

    /// A published message read back; `None` (logged) when it does not open or read.
    fn decode(&self, text: String) -> Option<Envelope> {
        let text = match &self.config.secret {
            Some(sealer) => match sealer.open(BUS_PURPOSE, &text) {
                Ok(plain) => String::from_utf8(plain).ok()?,
                Err(e) => {
                    tracing::warn!(
                        "[cluster]: a message from Redis is ignored: {e} (do all replicas have the same secret_file?)"
                    );
                    return None;
                }
            },
            None => text,
        };
        match serde_json::from_str::<Envelope>(&text) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("[cluster]: an unreadable message from another replica: {e}");
                None
            }
        }
    }

    /// Tells every other replica.
    pub async fn publish(&self, message: BusMessage) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let publish = conn.publish::<_, _, ()>(self.channel(), self.encode(message));
        self.timed(publish).await
    }

    /// Listens to the other replicas until `stop`, in a task owned by `tasks`: what they say on
    /// the bus, and on the channels of the sessions whose GET stream this replica holds
    /// (`streams.rs`; listened to again after a reconnection), arrives on the returned channel.
    pub fn listen(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> mpsc::UnboundedReceiver<BusMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = self.clone();
        tasks.spawn(async move {
            let Ok(client) = redis::Client::open(cluster.config.redis.as_str()) else { return };
            let channel = cluster.channel();
            let me = crate::replica::id();
            loop {
                let subscribed = async {
                    let (mut sink, messages) = client.get_async_pubsub().await?.split();
                    sink.subscribe(&channel).await?;
                    redis::RedisResult::Ok((sink, messages))
                };
                match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
                    Ok(Ok((sink, mut messages))) => {
                        // Published before the held streams are read: a stream held from now on
                        // subscribes through it itself, one held before is subscribed here.
                        *cluster.sink.lock().expect("cluster lock") = Some(sink.clone());
                        let held = cluster.held_channels();
                        if !held.is_empty() {
                            let mut sink = sink;
                            if let Err(e) = cluster.timed(sink.subscribe(&held)).await {
                                tracing::debug!("[cluster]: cannot listen for the GET streams held here: {}", e.reason);
                            }
                        }
                        loop {
                            let msg = tokio::select! {
                                m = messages.next() => m,
                                _ = stop.cancelled() => return,
                            };
                            // The connection ended: subscribe again.
                            let Some(msg) = msg else { break };
                            let Ok(text) = msg.get_payload::<String>() else { continue };
                            let Some(e) = cluster.decode(text) else { continue };
                            // A replica's own bus messages are not for it; what it sends a
                            // session's channel is (it may hold the stream by now).
                            if e.from == me && msg.get_channel_name() == channel {
                                continue;
                            }
                            if tx.send(e.message).is_err() {
                                return;
                            }
                        }
                        *cluster.sink.lock().expect("cluster lock") = None;
                    }
                    Ok(Err(e)) => tracing::debug!("[cluster]: cannot listen to the other replicas yet: {e}"),
                    Err(_) => tracing::debug!("[cluster]: cannot listen to the other replicas yet: no answer"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESUBSCRIBE) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message reads back as written, raw answers included (byte for byte).
    #[test]
    fn messages_round_trip() {
        let raw = |s: &str| Some(RawValue::from_string(s.into()).unwrap());
        let sent = [
            BusMessage::Ended { session: "s".into() },
            BusMessage::Answer {
                session: "s".into(),
                id: "\"sentinel-r-1\"".into(),
                result: raw(r#"{"a": 1.50}"#),
                error: None,
            },
            BusMessage::Cancel { session: "s".into(), request: "7".into() },
            BusMessage::Deliver {
                session: "s".into(),
                line: RawValue::from_string(
                    r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"x":1.50}}"#.into(),
                )
                .unwrap(),
            },
            BusMessage::Subscribed { session: "s".into(), uri: "file:///a b".into() },
            BusMessage::Unsubscribed { session: "s".into(), uri: "test://x".into() },
            BusMessage::Resume {
                replica: "r".into(),
                bridge: uuid::Uuid::nil(),
                ticket: uuid::Uuid::max(),
                responses: raw(r#"{"k": {"action": "accept"}}"#).unwrap(),
            },
            BusMessage::Resumed {
                ticket: uuid::Uuid::nil(),
                round: BridgeRound::Result(raw(r#"{"x": 1e3}"#).unwrap()),
            },
            BusMessage::Resumed { ticket: uuid::Uuid::nil(), round: BridgeRound::Unavailable("down".into()) },
            BusMessage::Resumed { ticket: uuid::Uuid::nil(), round: BridgeRound::Gone },
        ];
        for message in sent {
            let before = format!("{message:?}");
            let text = message.envelope();
            let back: Envelope = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((back.from.as_str(), format!("{:?}", back.message)), (crate::replica::id(), before));
        }
    }
}
