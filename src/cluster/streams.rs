//! The GET streams of shared sessions: each session has a channel of its own in Redis, which
//! only the replica holding the session's GET stream listens to. A replica with something for
//! that stream (a relayed request, a notification, a subscription change) publishes it there.
//! Redis answers how many replicas received it, so a session with no stream anywhere is known
//! at once (a relayed request is refused then, as on one replica, instead of waiting out the
//! call's timeout), no other replica reads what is not for it, and a replica that dies stops
//! listening with its connection.

use redis::AsyncCommands;

use super::{BusMessage, Cluster, Outage};

impl Cluster {
    fn stream_channel(&self, session: &str) -> String {
        format!("{}stream:{session}", self.config.key_prefix)
    }

    /// The channels of the streams held here, to listen to again after a reconnection.
    pub(super) fn held_channels(&self) -> Vec<String> {
        self.held.lock().expect("cluster lock").iter().map(|s| self.stream_channel(s)).collect()
    }

    fn sink(&self) -> Option<redis::aio::PubSubSink> {
        self.sink.lock().expect("cluster lock").clone()
    }

    /// Whether some replica listens to `session`'s channel: holds its GET stream.
    pub async fn stream_held(&self, session: &str) -> Result<bool, Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB").arg(self.stream_channel(session));
        let (_, listeners): (String, i64) = self.timed(numsub.query_async(&mut conn)).await?;
        Ok(listeners > 0)
    }

    /// Listens to `session`'s channel: this replica holds the session's GET stream now. Kept
    /// (and listened to again after a reconnection) until [`Cluster::release_stream`].
    pub async fn hold_stream(&self, session: &str) -> Result<(), Outage> {
        self.held.lock().expect("cluster lock").insert(session.to_string());
        // Not an outage of its own: the listener is (re)connecting, and subscribes it then.
        let Some(mut sink) = self.sink() else {
            return Err(Outage { reason: "not listening to Redis yet".into(), first: false });
        };
        self.timed(sink.subscribe(self.stream_channel(session))).await
    }

    /// Stops listening to `session`'s channel: its GET stream here closed.
    pub async fn release_stream(&self, session: &str) -> Result<(), Outage> {
        self.held.lock().expect("cluster lock").remove(session);
        // Not listening: the next connection will not subscribe it either.
        let Some(mut sink) = self.sink() else { return Ok(()) };
        self.timed(sink.unsubscribe(self.stream_channel(session))).await
    }

    /// Hands `message` to the replica holding its session's GET stream; whether one took it.
    pub async fn to_stream(&self, message: BusMessage) -> Result<bool, Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let channel = self.stream_channel(message.session());
        let receivers: i64 = self.timed(conn.publish(channel, self.encode(message))).await?;
        Ok(receivers > 0)
    }
}
