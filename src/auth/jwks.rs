//! The RS256 / ES256 verification keys: parsing a JWKS, choosing a key for a token, and loading the set from a file
//! or a URL with a timeout and a size limit.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{AuthError, printable};

/// A JWKS larger than this is refused; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The JOSE header fields we act on. `jku`, `jwk`, `x5u` and `x5c` are deliberately ignored: keys come only from
/// our configuration, never from the token.
#[derive(Deserialize)]
pub(super) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl Header {
    pub fn parse(json: &[u8]) -> Result<Header, AuthError> {
        let text = std::str::from_utf8(json).map_err(|_| malformed("header is not UTF-8"))?;
        crate::strict_json::check_unique_keys(text)
            .map_err(|_| malformed("header is not a JSON object with unique keys"))?;
        let header: Header = serde_json::from_str(text).map_err(|_| malformed("header has no string `alg`"))?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood; we understand none.
        if header.crit.is_some() {
            return Err(malformed("critical header extensions are not supported"));
        }
        Ok(header)
    }
}

fn malformed(why: &str) -> AuthError {
    AuthError::Malformed(why.to_owned())
}

/// Why a JWKS could not be loaded: from the file, from the URL, or what was read. The texts are
/// the causes only; the authenticator says where from (`auth: loading the JWKS from ...`).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be opened.
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// More than 1 MiB: no real JWKS is that large.
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// No answer from the URL (the error without the URL, whose query may hold a secret).
    #[error("request failed: {}", crate::net_error::causes(.0))]
    Request(reqwest::Error),
    /// The URL answered with a status other than success.
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    /// The answer broke off (the error without the URL).
    #[error("reading failed: {}", crate::net_error::causes(.0))]
    Body(reqwest::Error),
    /// Not JSON, or no `keys` array.
    #[error("not a JWKS (a JSON object with a `keys` array): {0}")]
    NotJwks(serde_json::Error),
    /// Every key was skipped: none is an RS256 or ES256 (P-256) signature key.
    #[error("the JWKS holds no RS256 or ES256 (P-256) signature key")]
    NoSigningKey,
}

/// Why one key of a JWKS was skipped (logged; the rest of the set is still used).
#[derive(Debug, thiserror::Error)]
enum UnreadableKey {
    #[error("{0}")]
    NotAJwk(serde_json::Error),
    #[error("invalid key material")]
    Material(#[source] jsonwebtoken::errors::Error),
}

/// One usable key: its algorithm is fixed when the JWKS is read, from the key's own type.
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Reads a JWKS, keeping the RS256 and ES256 (P-256) signature keys and skipping (with a warning) any other
    /// key, so that one exotic key does not make the whole set unusable.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(json).map_err(JwksError::NotJwks)?;
        let mut keys = Vec::new();
        for (index, value) in raw.keys.into_iter().enumerate() {
            match serde_json::from_value::<Jwk>(value).map_err(UnreadableKey::NotAJwk).and_then(usable) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => tracing::debug!(index, "auth: skipping a JWKS key that is not an RS256/ES256 signing key"),
                Err(e) => tracing::warn!(index, error = %e, "auth: skipping an unreadable JWKS key"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoSigningKey);
        }
        Ok(KeySet { keys })
    }

    /// The key for a token's `kid` and header `alg`. Without a `kid`, only an unambiguous set (one key of that
    /// algorithm) is accepted.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<(&DecodingKey, Algorithm), AuthError> {
        let Some(kid) = kid else {
            let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
            return match (candidates.next(), candidates.next()) {
                (Some(only), None) => Ok((&only.key, alg)),
                _ => Err(AuthError::UnknownKey("token has no kid and no single key matches".to_owned())),
            };
        };
        let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
        if named.peek().is_none() {
            return Err(AuthError::UnknownKey(printable(kid)));
        }
        match named.find(|k| k.alg == alg) {
            Some(found) => Ok((&found.key, alg)),
            None => Err(AuthError::UnsupportedAlgorithm(format!("{alg:?} does not match key {}", printable(kid)))),
        }
    }
}

/// The key's algorithm comes from its own type; an `alg` member may only confirm it.
fn usable(jwk: Jwk) -> Result<Option<VerifyingKey>, UnreadableKey> {
    let common = &jwk.common;
    if matches!(common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Ok(None);
    }
    if let Some(ops) = &common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Ok(None);
    }
    let alg = match (&jwk.algorithm, &common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return Ok(None),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(UnreadableKey::Material)?;
    Ok(Some(VerifyingKey { kid: common.key_id.clone(), alg, key }))
}

/// Where the JWKS is read from.
pub(super) enum JwksSource {
    Url { url: reqwest::Url, http: reqwest::Client },
    File(PathBuf),
}

impl JwksSource {
    pub fn url(url: &str, http: reqwest::Client) -> Result<JwksSource, BadJwksUrl> {
        Ok(JwksSource::Url { url: jwks_url(url)?, http })
    }

    pub async fn load(&self) -> Result<KeySet, JwksError> {
        let bytes = match self {
            JwksSource::Url { url, http } => fetch(http, url).await?,
            JwksSource::File(path) => read_file(path).await?,
        };
        KeySet::parse(&bytes)
    }
}

/// Why a JWKS URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum BadJwksUrl {
    /// Not a URL at all (the parser's reason).
    #[error("is not a valid URL: {0}")]
    NotAUrl(<reqwest::Url as std::str::FromStr>::Err),
    /// Keys fetched in clear text could be swapped by anyone on the path.
    #[error("must use https:// (plain http:// only for a loopback address)")]
    NotHttps,
}

/// A URL keys may be fetched from. The config check and the authenticator both ask this, so that
/// `sentinel check` refuses exactly what `serve` would.
pub fn jwks_url(url: &str) -> Result<reqwest::Url, BadJwksUrl> {
    let parsed = reqwest::Url::parse(url).map_err(BadJwksUrl::NotAUrl)?;
    // Keys fetched in clear text could be swapped by anyone on the path: plain http only on this machine.
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(BadJwksUrl::NotHttps),
    }
}

/// Reads a JWKS file now, as the authenticator will at start: the config check's way to refuse
/// a missing or unusable key file before `serve` does.
pub fn check_jwks_file(path: &std::path::Path) -> Result<(), JwksError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(JwksError::Open)?;
    let mut body = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).map_err(JwksError::Read)?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    KeySet::parse(&body).map(|_| ())
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksSource::Url { url, .. } => f.write_str(&display_url(url.as_str())),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A URL fit for logs: without credentials, query or fragment, which may carry secrets.
pub(super) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path()),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

async fn fetch(http: &reqwest::Client, url: &reqwest::Url) -> Result<Vec<u8>, JwksError> {
    // `without_url`: reqwest puts the full URL in its errors, and the query may hold a secret.
    let mut response = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| JwksError::Request(e.without_url()))?;
    if !response.status().is_success() {
        return Err(JwksError::Status(response.status()));
    }
    if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
        return Err(JwksError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| JwksError::Body(e.without_url()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_file(path: &PathBuf) -> Result<Vec<u8>, JwksError> {
    let file = tokio::fs::File::open(path).await.map_err(JwksError::Open)?;
    let mut body = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).await.map_err(JwksError::Read)?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    Ok(body)
}
