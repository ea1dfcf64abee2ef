//! Who is calling: verifies a bearer JWT and turns it into an [`Identity`] (subject and roles).
//!
//! The accepted algorithm is decided by the key, never by the token: HS256 only with the configured shared secret,
//! RS256 / ES256 only with a JWKS key whose own type (and `alg`, when it names one) says so. A header that asks for
//! anything else — `none`, HS256 when only JWKS is configured, ES256 against an RSA key — is refused before any
//! signature check, which is what defeats algorithm confusion. Claims are read only after the signature verifies.
//!
//! Error messages never contain the token; the few header values they echo (`alg`, `kid`) are length-capped and
//! printable-only.

mod claims;
mod error;
mod jwks;
#[cfg(test)]
mod jwks_tests;
mod settings;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use claims::ClaimRules;
pub use claims::{BadRoleClaim, check_role_claim, mint_hs256};
pub use error::{AuthError, AuthSetupError, MintError, ShortSecret};
pub use jwks::{BadJwksUrl, JwksError, check_jwks_file, jwks_url};
use jwks::{JwksSource, KeySet};
pub use settings::AuthSettings;

/// RFC 7518 §3.2: an HS256 key MUST be at least as long as the hash output (256 bits).
const MIN_SECRET_BYTES: usize = 32;
/// An unknown `kid` triggers at most one JWKS refetch per this interval, so random kids cannot make us hammer the
/// issuer (or stall callers behind fetches).
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How many verified tokens are remembered. A client sends the same token on every call; past this many distinct
/// live tokens the least useful are evicted and simply verified again.
const VERIFIED_CAPACITY: usize = 4096;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// The roles from the configured `role_claim` (empty when the token has none).
    pub roles: Vec<String>,
    /// `exp`, in seconds since the Unix epoch (always present: tokens without `exp` are refused).
    pub expires_at: Option<u64>,
    /// `nbf`, when the token has one.
    pub not_before: Option<u64>,
    /// The clock skew tolerated on both (`[auth] leeway`), in seconds.
    pub leeway: u64,
    /// The token itself, as verified: what a token exchange trades for a backend's token
    /// (src/credentials/exchange.rs). It is never forwarded to a backend as it is.
    pub token: Option<VerifiedToken>,
}

/// A caller's verified token. Its `Debug` shows no part of it, so an identity can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedToken(Arc<str>);

impl VerifiedToken {
    /// The token's text (without `Bearer `).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifiedToken(..)")
    }
}

impl Identity {
    /// The one check of the token's times, with the configured leeway: when the token is first
    /// verified, when a remembered token is used again, and on every request of a caller
    /// authenticated earlier (a stdio client, a long session).
    pub fn check_time(&self, now: u64) -> Result<(), AuthError> {
        // Every verified identity has an `exp` (a token without one is refused).
        if now >= self.expires_at.unwrap_or(0).saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        if self.not_before.is_some_and(|nbf| now.saturating_add(self.leeway) < nbf) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// [`check_time`](Self::check_time) against the system clock.
    pub fn check_time_now(&self) -> Result<(), AuthError> {
        self.check_time(unix_now())
    }
}

/// Checks bearer tokens against the configured secret and JWKS. Cheap to share behind an `Arc`.
pub struct Authenticator {
    /// The HS256 shared secret, if configured; the only key HS256 tokens are ever checked with.
    secret: Option<DecodingKey>,
    rules: ClaimRules,
    max_token_bytes: usize,
    /// The JWKS keys, swapped whole after a refetch so that the hot path reads them without taking a lock.
    keys: ArcSwap<KeySet>,
    /// Where the JWKS comes from; `None` when only HS256 is configured.
    source: Option<JwksSource>,
    /// When the last refetch started. Held across the fetch on purpose: concurrent misses queue here, and the first
    /// one fetches for all of them (the others find the new keys, or the rate limit, when their turn comes).
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
    /// Tokens whose signature and claims already passed, by their exact text: the profile showed the signature
    /// check and the claims parsing at ~7% of the gateway's CPU per call, paid again for the same token on every
    /// call. Only what cannot change is remembered (subject, roles, `exp`, `nbf`); the time checks run on every
    /// use. Emptied whenever the keys change, so a key the issuer removed stops working at once. A lookup hashes
    /// the whole token with a per-process random seed before comparing, so it reveals nothing about a cached
    /// token to someone timing forged ones.
    verified: quick_cache::sync::Cache<Box<str>, Arc<Verified>>,
    /// The key-set generation, bumped when the keys change. A verification reads it before it
    /// loads the keys and inserts into `verified` under the read lock only if it is unchanged;
    /// a key change swaps the keys and clears the cache under the write lock. So a token checked
    /// against keys that were replaced meanwhile is never cached after the clear.
    generation: std::sync::RwLock<u64>,
    /// Runs once between a token's verification and its insertion into the cache: where a
    /// test puts a key rotation, to check that the race is closed without timing anything.
    #[cfg(test)]
    between_verify_and_insert: std::sync::Mutex<Option<TestHook>>,
}

#[cfg(test)]
type TestHook = Box<dyn FnOnce(&Authenticator) + Send>;

/// A token that passed every check once.
struct Verified {
    identity: Identity,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.secret.is_some())
            .field("jwks_keys", &self.keys.load().len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Validates the settings and loads the JWKS (file or URL) once; a JWKS that cannot be loaded is an error here.
    pub async fn new(settings: AuthSettings, http: reqwest::Client) -> Result<Authenticator, AuthSetupError> {
        let secret = match &settings.hs256_secret {
            Some(secret) => {
                check_secret(secret)?;
                Some(DecodingKey::from_secret(secret.as_bytes()))
            }
            None => None,
        };
        let source = match (settings.jwks_url, settings.jwks_file) {
            (Some(_), Some(_)) => return Err(AuthSetupError::TwoJwksSources),
            (Some(url), None) => Some(JwksSource::url(&url, http).map_err(AuthSetupError::JwksUrl)?),
            (None, Some(path)) => Some(JwksSource::File(path)),
            (None, None) => None,
        };
        if secret.is_none() && source.is_none() {
            return Err(AuthSetupError::NoKey);
        }
        if settings.max_token_bytes == 0 {
            return Err(AuthSetupError::ZeroMaxTokenBytes);
        }
        let rules = ClaimRules::new(settings.issuer, settings.audience, &settings.role_claim, settings.leeway)
            .map_err(AuthSetupError::RoleClaim)?;
        let keys = match &source {
            Some(source) => {
                source.load().await.map_err(|error| AuthSetupError::Jwks { from: source.to_string(), error })?
            }
            None => KeySet::default(),
        };
        Ok(Authenticator {
            secret,
            rules,
            max_token_bytes: settings.max_token_bytes,
            keys: ArcSwap::from_pointee(keys),
            source,
            last_refetch: tokio::sync::Mutex::new(None),
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
            generation: std::sync::RwLock::new(0),
            #[cfg(test)]
            between_verify_and_insert: std::sync::Mutex::new(None),
        })
    }

    /// How often an unknown `kid` may trigger a JWKS refetch (30 s by default).
    #[cfg(test)]
    pub(crate) fn set_refetch_interval(&mut self, interval: Duration) {
        self.refetch_interval = interval;
    }

    /// Checks a token (with or without its `Bearer ` prefix). A `kid` missing from the cached JWKS triggers one
    /// rate-limited refetch; a known `kid` never waits on the network.
    pub async fn authenticate(&self, bearer: &str) -> Result<Identity, AuthError> {
        match self.authenticate_cached(bearer) {
            Err(AuthError::UnknownKey(_)) if self.source.is_some() => {}
            done => return done,
        }
        let mut last_refetch = self.last_refetch.lock().await;
        // Someone else may have refetched while we queued.
        let miss = match self.authenticate_cached(bearer) {
            Err(miss @ AuthError::UnknownKey(_)) => miss,
            done => return done,
        };
        if last_refetch.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return Err(miss);
        }
        *last_refetch = Some(Instant::now());
        self.reload_keys().await.map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        drop(last_refetch);
        self.authenticate_cached(bearer)
    }

    /// Checks a token against the keys already cached, without any I/O: an unknown `kid` is refused as
    /// [`AuthError::UnknownKey`] rather than refetched.
    pub fn authenticate_cached(&self, bearer: &str) -> Result<Identity, AuthError> {
        // Before any parsing, trimming included.
        if bearer.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let token = strip_bearer(bearer);
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(v) = self.verified.get(token) {
            return v.identity.check_time_now().map(|()| v.identity.clone());
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not a signed JWT (header.payload.signature)".to_owned()));
        };
        let header = jwks::Header::parse(&decode_part(header_b64, "header")?)?;
        let generation = self.generation();
        let keys = self.keys.load();
        let (key, alg) = match header.alg.as_str() {
            "HS256" => match &self.secret {
                Some(secret) => (secret, Algorithm::HS256),
                None => return Err(AuthError::UnsupportedAlgorithm("HS256 (no shared secret configured)".to_owned())),
            },
            "RS256" | "ES256" if self.source.is_none() => {
                return Err(AuthError::UnsupportedAlgorithm(format!("{} (no JWKS configured)", header.alg)));
            }
            "RS256" => keys.select(header.kid.as_deref(), Algorithm::RS256)?,
            "ES256" => keys.select(header.kid.as_deref(), Algorithm::ES256)?,
            other => return Err(AuthError::UnsupportedAlgorithm(printable(other))),
        };
        // The signature covers `header.payload` exactly as sent.
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(signature, signed.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::Base64(_)) => {
                return Err(AuthError::Malformed("signature is not base64url".to_owned()));
            }
            Err(_) => return Err(AuthError::BadSignature),
        }
        let mut identity = self.rules.check(&decode_part(payload_b64, "payload")?, unix_now())?;
        identity.token = Some(VerifiedToken(token.into()));
        #[cfg(test)]
        if let Some(hook) = self.between_verify_and_insert.lock().expect("hook lock").take() {
            hook(self);
        }
        self.remember(token, Verified { identity: identity.clone() }, generation);
        Ok(identity)
    }

    fn generation(&self) -> u64 {
        *self.generation.read().expect("generation lock")
    }

    /// Caches a verified token, unless the keys changed since `generation` was read (the cache
    /// was cleared after this verification started; caching it would undo that).
    fn remember(&self, token: &str, verified: Verified, generation: u64) {
        let current = self.generation.read().expect("generation lock");
        if *current == generation {
            self.verified.insert(token.into(), Arc::new(verified));
        }
    }

    /// Puts new keys in force and forgets every token verified with the old ones.
    fn install_keys(&self, keys: KeySet) {
        let mut generation = self.generation.write().expect("generation lock");
        self.keys.store(Arc::new(keys));
        *generation += 1;
        // A token verified with a key that is gone must not keep working from the cache.
        self.verified.clear();
    }

    /// Re-reads the JWKS now, regardless of the refetch rate limit: for an owner that refreshes on a timer or on
    /// reload, so that keys the issuer removed stop being accepted. A failure keeps the old keys.
    pub async fn refresh_keys(&self) -> Result<(), AuthError> {
        if self.source.is_none() {
            return Ok(());
        }
        let mut last_refetch = self.last_refetch.lock().await;
        *last_refetch = Some(Instant::now());
        self.reload_keys().await.map_err(|e| AuthError::KeysUnavailable(e.to_string()))
    }

    async fn reload_keys(&self) -> Result<(), JwksError> {
        let Some(source) = &self.source else { return Ok(()) };
        match source.load().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), %source, "auth: JWKS reloaded");
                self.install_keys(keys);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, %source, "auth: JWKS reload failed; keeping the previous keys");
                Err(e)
            }
        }
    }
}

fn check_secret(secret: &str) -> Result<(), ShortSecret> {
    if secret.len() < MIN_SECRET_BYTES { Err(ShortSecret) } else { Ok(()) }
}

/// Accepts the bare token or a whole `Authorization` value, and forgives surrounding whitespace (a token read from
/// a file or an environment variable often ends in a newline).
fn strip_bearer(bearer: &str) -> &str {
    let bearer = bearer.trim();
    match bearer.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => bearer[7..].trim_start(),
        _ => bearer,
    }
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))
}

/// Header values we echo in errors come from an unauthenticated token: cap them and keep them printable.
fn printable(value: &str) -> String {
    if value.len() <= 64 && value.chars().all(|c| c.is_ascii_graphic()) {
        value.to_owned()
    } else {
        "(unprintable)".to_owned()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Fuzzing entry (see `crate::fuzz`): reads `data` as a JWKS, as a fetched or file JWKS is read.
#[doc(hidden)]
pub fn fuzz_jwks(data: &[u8]) {
    let _ = jwks::KeySet::parse(data);
}
