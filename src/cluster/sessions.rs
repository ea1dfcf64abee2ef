//! Session-based clients' sessions shared by every replica (`[cluster]`): what a session
//! carries kept in Redis under its id, so that a request of the session reaching any replica is
//! served there. One hash per session:
//!
//! - `record`: what `initialize` settled (subject, version, client capabilities and info), as
//!   JSON, written once;
//! - `log_level`: `logging/setLevel`'s rank, once the client set one;
//! - `sub:<uri>`: one field per resource the client subscribed to.
//!
//! What changes during a session is written field by field, so that a replica's older copy of
//! the session never overwrites a change another replica made. The hash expires after the
//! session's idle timeout; each use refreshes it.
//!
//! With `secret_file` every value is sealed for its session and field (src/seal.rs), and a
//! subscription's field is named by a tag of its URI (the URI sealed in its value): Redis holds
//! nothing readable of a session, and a field written or moved there by anyone else does not
//! open (the session is then not served, and the refusal logged).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Cluster, Outage};
use crate::rate_limit::shared::CALL_TIMEOUT;

/// What another replica needs to serve a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSession {
    /// The token's subject that opened it: only it may use the id, on any replica.
    pub subject: Option<String>,
    /// The negotiated protocol version.
    pub version: String,
    /// The client's capabilities, as it declared them in `initialize`.
    pub capabilities: serde_json::Value,
    /// The client's `clientInfo`, as it declared it in `initialize` (`null` when it sent none).
    pub client_info: serde_json::Value,
    /// `logging/setLevel`, as a rank; `None` until the client sets one.
    pub log_level: Option<u8>,
    /// The resources the client subscribed to (`resources/subscribe`), on any replica.
    pub subscriptions: Vec<String>,
}

/// The `record` field: what `initialize` settled.
#[derive(Serialize, Deserialize)]
struct Settled {
    subject: Option<String>,
    version: String,
    capabilities: serde_json::Value,
    client_info: serde_json::Value,
}

const RECORD: &str = "record";
const LOG_LEVEL: &str = "log_level";
const SUBSCRIPTION: &str = "sub:";

/// Sets (`ARGV[2]` = "set") or deletes one field of a session's hash and refreshes its expiry,
/// only while the session exists: a write racing the session's end must not leave a hash
/// without a record, nor one without an expiry. Returns whether the session exists.
static SET_FIELD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        if ARGV[2] == 'set' then
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        else
            redis.call('HDEL', KEYS[1], ARGV[1])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return 1
        ",
    )
});

impl SharedSession {
    /// The hash's fields.
    fn to_fields(&self) -> Vec<(String, String)> {
        let settled = Settled {
            subject: self.subject.clone(),
            version: self.version.clone(),
            capabilities: self.capabilities.clone(),
            client_info: self.client_info.clone(),
        };
        let mut fields = vec![(RECORD.to_string(), serde_json::to_string(&settled).expect("a record serializes"))];
        if let Some(rank) = self.log_level {
            fields.push((LOG_LEVEL.to_string(), rank.to_string()));
        }
        fields.extend(self.subscriptions.iter().map(|uri| (format!("{SUBSCRIPTION}{uri}"), String::new())));
        fields
    }

    /// The session the hash's fields describe; `None` without a readable record.
    fn from_fields(fields: HashMap<String, String>) -> Option<SharedSession> {
        let settled: Settled = serde_json::from_str(fields.get(RECORD)?).ok()?;
        let mut subscriptions: Vec<String> =
            fields.keys().filter_map(|k| k.strip_prefix(SUBSCRIPTION)).map(str::to_string).collect();
        subscriptions.sort();
        Some(SharedSession {
            subject: settled.subject,
            version: settled.version,
            capabilities: settled.capabilities,
            client_info: settled.client_info,
            log_level: fields.get(LOG_LEVEL).and_then(|l| l.parse().ok()),
            subscriptions,
        })
    }
}

fn millis(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Cluster {
    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.config.key_prefix)
    }

    /// A field as stored: sealed for the session and field when the replicas share a secret
    /// (a subscription's URI moves into its sealed value, its name becomes a tag of it).
    fn seal_field(&self, id: &str, name: &str, value: &str) -> (String, String) {
        let Some(sealer) = &self.config.secret else { return (name.to_string(), value.to_string()) };
        match name.strip_prefix(SUBSCRIPTION) {
            Some(uri) => (
                format!("{SUBSCRIPTION}{}", sealer.tag(&format!("{id}\0{uri}"))),
                sealer.seal(&format!("session:{id}:{SUBSCRIPTION}"), uri.as_bytes()),
            ),
            None => (name.to_string(), sealer.seal(&format!("session:{id}:{name}"), value.as_bytes())),
        }
    }

    /// The fields as written before sealing; `None` (logged) when one does not open.
    fn open_fields(&self, id: &str, fields: HashMap<String, String>) -> Option<HashMap<String, String>> {
        let Some(sealer) = &self.config.secret else { return Some(fields) };
        let mut plain = HashMap::with_capacity(fields.len());
        for (name, value) in fields {
            let (purpose, is_sub) = match name.strip_prefix(SUBSCRIPTION) {
                Some(_) => (format!("session:{id}:{SUBSCRIPTION}"), true),
                None => (format!("session:{id}:{name}"), false),
            };
            let opened = sealer.open(&purpose, &value).ok().and_then(|v| String::from_utf8(v).ok());
            let Some(opened) = opened else {
                tracing::warn!(session = %id, field = %name, "[cluster]: a session record in Redis is refused: it was not sealed by this cluster (altered, or written without the shared secret)");
                return None;
            };
            if is_sub {
                plain.insert(format!("{SUBSCRIPTION}{opened}"), String::new());
            } else {
                plain.insert(name, opened);
            }
        }
        Some(plain)
    }

    /// Stores (or replaces) a session's record, expiring after `ttl` without use.
    pub async fn save_session(&self, id: &str, s: &SharedSession, ttl: std::time::Duration) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let key = self.session_key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &s.to_fields().iter().map(|(n, v)| self.seal_field(id, n, v)).collect::<Vec<_>>())
            .ignore()
            .pexpire(&key, millis(ttl))
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// A session's record, if some replica stored it and it has not expired; refreshes its
    /// expiry. Ids that are not a UUID (the form the gateway gives them) are never looked up.
    pub async fn load_session(&self, id: &str, ttl: std::time::Duration) -> Result<Option<SharedSession>, Outage> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let key = self.session_key(id);
        let mut pipe = redis::pipe();
        pipe.atomic().hgetall(&key).pexpire(&key, millis(ttl)).ignore();
        let (fields,): (HashMap<String, String>,) = self.timed(pipe.query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(self.open_fields(id, fields).and_then(SharedSession::from_fields))
    }

    /// Records the client's log level for a session (`logging/setLevel`); false when the
    /// session is no longer in Redis.
    pub async fn share_log_level(&self, id: &str, rank: u8, ttl: std::time::Duration) -> Result<bool, Outage> {
        self.set_field(id, LOG_LEVEL, Some(&rank.to_string()), ttl).await
    }

    /// Records that a session subscribed to `uri` (or no longer does); false when the
    /// session is no longer in Redis.
    pub async fn share_subscription(
        &self,
        id: &str,
        uri: &str,
        subscribed: bool,
        ttl: std::time::Duration,
    ) -> Result<bool, Outage> {
        self.set_field(id, &format!("{SUBSCRIPTION}{uri}"), subscribed.then_some(""), ttl).await
    }

    async fn set_field(
        &self,
        id: &str,
        field: &str,
        value: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<bool, Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let (field, value) = match value {
            Some(v) => {
                let (f, v) = self.seal_field(id, field, v);
                (f, Some(v))
            }
            // Deleted by its stored name (a subscription's is a tag of its URI).
            None => (self.seal_field(id, field, "").0, None),
        };
        let mut invocation = SET_FIELD.key(self.session_key(id));
        invocation
            .arg(field)
            .arg(if value.is_some() { "set" } else { "del" })
            .arg(value.unwrap_or_default())
            .arg(millis(ttl));
        let exists: i64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(exists == 1)
    }

    /// Keeps a session's record alive (a use on this replica).
    pub async fn touch_session(&self, id: &str, ttl: std::time::Duration) -> Result<(), Outage> {
        let Some(mut conn) = self.connection() else { return Err(self.failed("not connected yet".into())) };
        let expire = conn.pexpire::<_, bool>(self.session_key(id), millis(ttl));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SharedSession {
        SharedSession {
            subject: Some("alice".into()),
            version: "2025-11-25".into(),
            capabilities: serde_json::json!({"sampling": {}}),
            client_info: serde_json::json!({"name": "claude-code", "version": "2.0"}),
            log_level: Some(3),
            subscriptions: vec!["file:///a b".into(), "test://sub:colon".into()],
        }
    }

    /// A session reads back from its hash fields as written: subscriptions with odd URIs and
    /// the log level included.
    #[test]
    fn a_session_round_trips_through_its_fields() {
        let s = session();
        let fields: HashMap<String, String> = s.to_fields().into_iter().collect();
        assert_eq!(SharedSession::from_fields(fields), Some(s));
        let bare =
            SharedSession { log_level: None, subscriptions: vec![], client_info: serde_json::Value::Null, ..session() };
        let fields: HashMap<String, String> = bare.to_fields().into_iter().collect();
        assert_eq!(fields.len(), 1, "only the record: {fields:?}");
        assert_eq!(SharedSession::from_fields(fields), Some(bare));
    }

    /// Fields without a readable record are no session: nothing a replica could serve.
    #[test]
    fn fields_without_a_record_are_no_session() {
        let fields = HashMap::from([(LOG_LEVEL.to_string(), "2".to_string()), ("sub:x".to_string(), String::new())]);
        assert_eq!(SharedSession::from_fields(fields), None);
        let unreadable = HashMap::from([(RECORD.to_string(), "{".to_string())]);
        assert_eq!(SharedSession::from_fields(unreadable), None);
    }
}
