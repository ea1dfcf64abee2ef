//! Session-based clients' sessions shared by every replica (`[cluster]`): what a session
//! carries (its subject, negotiated version, client capabilities, log level) kept in Redis
//! under its id, so that a request of the session reaching any replica is served there. The
//! record expires after the session's idle timeout; each use refreshes it. With `secret_file`
//! the record is sealed for its session id (src/seal.rs): Redis holds nothing readable, and a
//! record written or moved there by anyone else does not open.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Cluster, Outage};
use crate::rate_limit::shared::CALL_TIMEOUT;

/// What another replica needs to serve a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedSession {
    /// The token's subject that opened it: only it may use the id, on any replica.
    pub subject: Option<String>,
    /// The negotiated protocol version.
    pub version: String,
    /// The client's capabilities, as it declared them in `initialize`.
    pub capabilities: serde_json::Value,
    /// `logging/setLevel`, as a rank; `None` until the client sets one.
    pub log_level: Option<u8>,
}

impl Cluster {
    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.config.key_prefix)
    }

    /// Stores (or replaces) a session's record, expiring after `ttl` without use.
    pub async fn save_session(&self, id: &str, s: &SharedSession, ttl: std::time::Duration) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let json = serde_json::to_string(s).expect("a session record serializes");
        let json = match &self.config.secret {
            Some(sealer) => sealer.seal(&format!("session:{id}"), json.as_bytes()),
            None => json,
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set = conn.pset_ex::<_, _, ()>(self.session_key(id), json, ms);
        self.timed(set).await
    }

    /// A session's record, if some replica stored it and it has not expired; refreshes its
    /// expiry. Ids that are not a UUID (the form the gateway gives them) are never looked up.
    pub async fn load_session(&self, id: &str, ttl: std::time::Duration) -> Result<Option<SharedSession>, Outage> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let key = self.session_key(id);
        let get = async {
            let text: Option<String> = conn.get(&key).await?;
            if text.is_some() {
                let _: bool = conn.pexpire(&key, ms).await?;
            }
            Ok(text)
        };
        let text: Option<String> = self.timed(get).await?;
        Ok(text.and_then(|t| self.read_session(id, &t)))
    }

    /// A record as stored: sealed for its id when the replicas share a secret (one that does
    /// not open, or is not sealed, was not written by a replica of this cluster and is not
    /// trusted), plain JSON otherwise.
    fn read_session(&self, id: &str, text: &str) -> Option<SharedSession> {
        match &self.config.secret {
            Some(sealer) => match sealer.open(&format!("session:{id}"), text) {
                Ok(json) => serde_json::from_slice(&json).ok(),
                Err(e) => {
                    tracing::warn!(session = %id, "[cluster]: a session record in Redis is refused: {e}");
                    None
                }
            },
            None => serde_json::from_str(text).ok(),
        }
    }

    /// Keeps a session's record alive (a use on this replica).
    pub async fn touch_session(&self, id: &str, ttl: std::time::Duration) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let expire = conn.pexpire::<_, bool>(self.session_key(id), ms);
        self.timed(expire).await.map(|_| ())
    }

    /// Removes a session's record (the client ended it).
    pub async fn delete_session(&self, id: &str) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let del = conn.del::<_, ()>(self.session_key(id));
        self.timed(del).await
    }

    /// Runs one Redis exchange bounded by the call timeout, counting a failure as an outage.
    pub(super) async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Outage> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.answered();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }
}
