//! Per-user credentials for backends, kept in the audit database and sealed at rest.
//!
//! Each secret is sealed with AES-256-GCM under the operator's key (`[credentials] key_file`
//! or `key = "${ENV}"`, never written in the config) with a random nonce, and bound to its row:
//! the subject and backend are the additional authenticated data, so a sealed value copied
//! into another user's row does not open. Rows remember which key sealed them (a short id
//! derived from the key, not the key), so a gateway started with the wrong key says so at
//! start instead of sending garbage to a backend, and a key can be rotated by sealing every
//! row anew under the next one while both are configured (`previous_key_file`).
//!
//! The AEAD is aws-lc-rs's, already in the build through rustls.

pub mod cli;
pub mod exchange;
pub mod store;

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use base64::Engine;

/// A user's credential for one backend, opened: handed to the backend connection that uses
/// it and to nothing else. Its `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    /// The credential from its text.
    pub fn new(text: impl Into<std::sync::Arc<str>>) -> Secret {
        Secret(text.into())
    }

    /// The credential's text, for the one place it goes (a header or an environment variable).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The credential the connection that lists a per-user backend acts with: the stored one of
/// its `list_as` subject (a server that lists its tools only for an authenticated caller).
/// Without one (not stored, the store down) the connection starts without, and the log says why.
pub async fn listing_credential(
    config: &crate::config::Config,
    backend: &crate::config::BackendConfig,
) -> Option<Secret> {
    let subject = backend.list_as.as_deref()?;
    let keys = config.credentials.as_ref()?;
    let read = async {
        let db = crate::audit::store::SqlStore::connect(&config.audit.url).await.map_err(|e| e.to_string())?;
        let found = store::secret(&db, keys, subject, &backend.name).await.map_err(|e| e.to_string());
        db.close().await;
        found
    };
    let why = match tokio::time::timeout(START_CHECK_TIMEOUT, read).await {
        Ok(Ok(Some(plain))) => match String::from_utf8(plain) {
            Ok(s) => return Some(Secret::new(s)),
            Err(_) => "it is not UTF-8 text".to_string(),
        },
        Ok(Ok(None)) => {
            format!("none is stored; set it with `sentinel credentials set --sub {subject} --backend {}`", backend.name)
        }
        Ok(Err(e)) => e,
        Err(_) => format!("the store did not answer within {START_CHECK_TIMEOUT:?}"),
    };
    tracing::warn!(backend = %backend.name, list_as = subject, "listing without a credential: {why}");
    None
}

/// The longest credential accepted: far above any API token, small enough that a mistaken
/// file (a whole log) is refused rather than stored.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// How long start-up waits for the store to say which keys sealed its credentials.
const START_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses to start with a key that cannot open the stored credentials: a wrong key is an
/// error now, not garbage sent to a backend later. A store that does not answer yet does not
/// stop the start (the gateway starts while its database is down); it is only logged.
pub async fn check_at_start(config: &crate::config::Config) -> Result<(), store::StoreError> {
    let Some(keys) = &config.credentials else { return Ok(()) };
    let check = async {
        let store = crate::audit::store::SqlStore::connect(&config.audit.url).await?;
        store.migrate().await?;
        let verified = store::verify(&store, keys).await;
        store.close().await;
        Ok::<_, crate::audit::store::SqlError>(verified)
    };
    match tokio::time::timeout(START_CHECK_TIMEOUT, check).await {
        Ok(Ok(verified)) => verified,
        Ok(Err(e)) => {
            tracing::warn!("credential store not checked at start: {e:#}");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("credential store not checked at start: no answer within {START_CHECK_TIMEOUT:?}");
            Ok(())
        }
    }
}

/// A 256-bit key with the id rows name it by.
pub struct CredentialKey {
    aead: RandomizedNonceKey,
    id: String,
}

impl fmt::Debug for CredentialKey {
    // Only the id: the key itself never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey({})", self.id)
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key this gateway does not hold.
    #[error("sealed with key {0}, which is neither `key_file`'s nor `previous_key_file`'s")]
    UnknownKey(String),
    /// The right key, but the value does not open: changed in the database, or moved from
    /// another subject's or backend's row.
    #[error("does not open with its key (altered in the database, or copied from another row)")]
    Corrupt,
}

/// Why a text is not a credential key (the config check says it after the file or variable).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadKey {
    /// 64 characters that looked like hex but did not decode.
    #[error("{0}")]
    Hex(hex::FromHexError),
    /// Neither 64 hex digits nor base64.
    #[error("not base64 or 64 hex digits")]
    NotEncoded,
    /// Decoded, but not to 32 bytes (the length it has).
    #[error("a key is {KEY_BYTES} bytes, this one is {0}; make one with `openssl rand -base64 32`")]
    WrongLength(usize),
    /// aws-lc-rs refused the bytes as an AES-256 key.
    #[error("not a usable AES-256 key")]
    Unusable,
}

/// An AES-256 key's length.
const KEY_BYTES: usize = 32;

impl CredentialKey {
    /// The key from its text: 32 bytes in base64 (`openssl rand -base64 32`) or hex (64 digits),
    /// surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<CredentialKey, BadKey> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(BadKey::Hex)?
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).map_err(|_| BadKey::NotEncoded)?
        };
        if bytes.len() != KEY_BYTES {
            return Err(BadKey::WrongLength(bytes.len()));
        }
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &bytes).map_err(|_| BadKey::Unusable)?;
        // The id is a MAC of a fixed label under the key: it names the key without revealing it.
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &bytes), b"sentinel credential key id");
        let id = hex::encode(&tag.as_ref()[..8]);
        Ok(CredentialKey { aead, id })
    }

    /// The short id rows name this key by: a MAC of a fixed label, not the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `secret` sealed for (`subject`, `backend`): the nonce followed by ciphertext and tag.
    pub fn seal(&self, subject: &str, backend: &str, secret: &[u8]) -> Vec<u8> {
        let mut body = secret.to_vec();
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(aad(subject, backend)), &mut body)
            .expect("AES-GCM sealing only fails on inputs far above the size limit");
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        out
    }

    fn open(&self, subject: &str, backend: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Corrupt)?;
        let mut body = body.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad(subject, backend)), &mut body)
            .map_err(|_| OpenError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// The row a value is bound to. NUL cannot occur in either name (subjects and backend names
/// are JSON strings the config and tokens refuse NUL in), so the pair is unambiguous.
fn aad(subject: &str, backend: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(subject.len() + backend.len() + 24);
    v.extend_from_slice(b"sentinel credential\0");
    v.extend_from_slice(subject.as_bytes());
    v.push(0);
    v.extend_from_slice(backend.as_bytes());
    v
}

/// The keys a gateway holds: the one it seals with, and during a rotation the one before.
#[derive(Debug)]
pub struct Keys {
    /// The key new values are sealed with.
    pub current: CredentialKey,
    /// The key before a rotation, still able to open what it sealed.
    pub previous: Option<CredentialKey>,
}

impl Keys {
    /// Opens a value sealed under either key.
    pub fn open(&self, key_id: &str, subject: &str, backend: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_string()))?;
        key.open(subject, backend, sealed)
    }

    /// Whether a row sealed under `key_id` can be opened here.
    pub fn holds(&self, key_id: &str) -> bool {
        self.current.id == key_id || self.previous.as_ref().is_some_and(|p| p.id == key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const K2: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=";

    #[test]
    fn keys_parse_from_hex_or_base64_and_nothing_else() {
        assert!(CredentialKey::parse(K1).is_ok());
        assert!(CredentialKey::parse(&format!("  {K2}\n")).is_ok());
        let short = CredentialKey::parse("c2hvcnQ=").unwrap_err();
        assert_eq!(short, BadKey::WrongLength(5));
        assert_eq!(short.to_string(), "a key is 32 bytes, this one is 5; make one with `openssl rand -base64 32`");
        assert_eq!(CredentialKey::parse("not a key at all!").unwrap_err(), BadKey::NotEncoded);
        assert_ne!(CredentialKey::parse(K1).unwrap().id(), CredentialKey::parse(K2).unwrap().id());
        // The id is stable: rows sealed today are recognised after a restart.
        assert_eq!(CredentialKey::parse(K1).unwrap().id(), CredentialKey::parse(K1).unwrap().id());
        assert!(!format!("{:?}", CredentialKey::parse(K1).unwrap()).contains(K1));
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_row_under_its_own_key() {
        let keys = Keys { current: CredentialKey::parse(K1).unwrap(), previous: None };
        let id = keys.current.id().to_string();
        let sealed = keys.current.seal("alice", "github", b"ghp_secret");
        assert!(!sealed.windows(10).any(|w| w == b"ghp_secret"), "ciphertext only");
        assert_eq!(keys.open(&id, "alice", "github", &sealed).unwrap(), b"ghp_secret");
        assert_eq!(keys.open(&id, "bob", "github", &sealed), Err(OpenError::Corrupt));
        assert_eq!(keys.open(&id, "alice", "jira", &sealed), Err(OpenError::Corrupt));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(keys.open(&id, "alice", "github", &altered), Err(OpenError::Corrupt));
        assert_eq!(keys.open(&id, "alice", "github", &sealed[..5]), Err(OpenError::Corrupt));
        let other = CredentialKey::parse(K2).unwrap();
        assert!(matches!(keys.open(other.id(), "alice", "github", &sealed), Err(OpenError::UnknownKey(_))));
        // Two seals of one secret differ (random nonces): equal secrets cannot be spotted.
        assert_ne!(sealed, keys.current.seal("alice", "github", b"ghp_secret"));
    }

    #[test]
    fn during_a_rotation_both_keys_open() {
        let old = CredentialKey::parse(K1).unwrap();
        let sealed = old.seal("alice", "github", b"s");
        let old_id = old.id().to_string();
        let keys = Keys { current: CredentialKey::parse(K2).unwrap(), previous: Some(old) };
        assert!(keys.holds(&old_id));
        assert_eq!(keys.open(&old_id, "alice", "github", &sealed).unwrap(), b"s");
    }
}
