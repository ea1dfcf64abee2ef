//! Sealing what the gateway hands out and reads back later, possibly on another replica: a
//! stateless client's `requestState` for a bridged input round, and with `[cluster]
//! secret_file` the session records in Redis and the messages replicas exchange. A sealed value
//! is AES-256-GCM under a key only the gateway (its replicas) holds, with a random nonce and
//! its purpose as the additional data, so it can be neither read nor altered nor used for
//! another purpose, and it opens on every replica that holds the same secret.
//!
//! The AEAD is aws-lc-rs's, already in the build through rustls (as for the credential store).

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The shortest secret accepted: 32 characters (what `openssl rand -base64 32` prints is 44).
pub const MIN_SECRET_BYTES: usize = 32;

/// The AES-256-GCM tag's length.
const TAG_LEN: usize = 16;

/// A sealing key: the cluster's (derived from its shared secret) or this process's own.
pub struct Sealer {
    key: RandomizedNonceKey,
    /// Names things without revealing them (`tag`): a key of its own, derived likewise.
    mac: hmac::Key,
    shared: bool,
    /// Names the key without revealing it (a MAC of a label): a reload tells a changed secret
    /// by it.
    id: [u8; 8],
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Sealer) -> bool {
        self.id == other.id && self.shared == other.shared
    }
}

impl std::fmt::Debug for Sealer {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", if self.shared { "shared" } else { "this process" })
    }
}

/// Why a secret cannot seal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadSecret {
    /// Too short to be a secret worth the name.
    #[error("the secret is {0} characters; use at least {MIN_SECRET_BYTES} (make one with `openssl rand -base64 32`)")]
    TooShort(usize),
}

/// Why a sealed value does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unsealed {
    /// Not something this gateway sealed: malformed, altered, sealed for another purpose, or
    /// under another key (another deployment, or a replica without the same `secret_file`).
    #[error("it was not sealed by this gateway (altered, or sealed under another key)")]
    Foreign,
}

impl Sealer {
    /// The key every replica derives from the same secret (surrounding whitespace ignored):
    /// an HMAC of a fixed label under the secret, so any text of enough length will do.
    pub fn from_secret(text: &str) -> Result<Sealer, BadSecret> {
        let secret = text.trim();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(BadSecret::TooShort(secret.len()));
        }
        let mac = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let derived = hmac::sign(&mac, b"sentinel seal v1");
        let tags = hmac::sign(&mac, b"sentinel tag v1");
        Ok(Sealer::with_key(
            derived.as_ref(),
            tags.as_ref(),
            true,
            &hmac::sign(&mac, b"sentinel seal id").as_ref()[..8],
        ))
    }

    /// A key of this process alone: what it seals only it can open.
    pub fn ephemeral() -> Sealer {
        let (mut key, mut tags, mut id) = ([0u8; 32], [0u8; 32], [0u8; 8]);
        for buf in [&mut key[..], &mut tags[..], &mut id[..]] {
            aws_lc_rs::rand::fill(buf).expect("the system's random source");
        }
        Sealer::with_key(&key, &tags, false, &id)
    }

    fn with_key(bytes: &[u8], tags: &[u8], shared: bool, id: &[u8]) -> Sealer {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        let mac = hmac::Key::new(hmac::HMAC_SHA256, tags);
        Sealer { key, mac, shared, id: id.try_into().expect("an 8-byte id") }
    }

    /// Whether other replicas hold the same key (`[cluster] secret_file`).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// A name for `data` that reveals nothing of it (hex of an HMAC under the secret): the same
    /// on every replica, so a sealed value can be found by it.
    pub fn tag(&self, data: &str) -> String {
        hex::encode(&hmac::sign(&self.mac, data.as_bytes()).as_ref()[..16])
    }

    /// `plain` sealed for `purpose`: URL-safe base64 of nonce, ciphertext and tag.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> String {
        let mut body = plain.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(purpose.as_bytes()), &mut body)
            .expect("AES-GCM sealing only fails on inputs of gigabytes");
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What [`seal`](Sealer::seal) sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, Unsealed> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.as_bytes()).map_err(|_| Unsealed::Foreign)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(Unsealed::Foreign);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::Foreign)?;
        let mut body = body.to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body).map_err(|_| Unsealed::Foreign)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn what_one_replica_seals_another_with_the_same_secret_opens() {
        let (a, b) = (Sealer::from_secret(SECRET).unwrap(), Sealer::from_secret(&format!("{SECRET}\n")).unwrap());
        let sealed = a.seal("state", b"hello");
        assert_eq!(b.open("state", &sealed).unwrap(), b"hello");
        assert!(a.is_shared());
    }

    #[test]
    fn another_key_purpose_or_a_changed_byte_does_not_open() {
        let a = Sealer::from_secret(SECRET).unwrap();
        let sealed = a.seal("state", b"hello");
        assert_eq!(
            Sealer::from_secret(&SECRET.replace('0', "1")).unwrap().open("state", &sealed),
            Err(Unsealed::Foreign)
        );
        assert_eq!(Sealer::ephemeral().open("state", &sealed), Err(Unsealed::Foreign));
        assert_eq!(a.open("session", &sealed), Err(Unsealed::Foreign));
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(a.open("state", &URL_SAFE_NO_PAD.encode(bytes)), Err(Unsealed::Foreign));
        assert_eq!(a.open("state", "not base64!"), Err(Unsealed::Foreign));
        assert_eq!(a.open("state", "AAAA"), Err(Unsealed::Foreign));
    }

    #[test]
    fn each_seal_differs_and_short_secrets_are_refused() {
        let a = Sealer::ephemeral();
        assert_ne!(a.seal("p", b"x"), a.seal("p", b"x"));
        assert!(!a.is_shared());
        assert_eq!(Sealer::from_secret("  short  ").unwrap_err(), BadSecret::TooShort(5));
    }
}
