//! The RS256 / ES256 verification keys: parsing a JWKS, choosing a key for a token, and loading the set from a file
//! or a URL with a timeout and a size limit.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
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
    pub fn parse(json: &[u8]) -> anyhow::Result<KeySet> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(json).context("not a JWKS (a JSON object with a `keys` array)")?;
        let mut keys = Vec::new();
        for (index, value) in raw.keys.into_iter().enumerate() {
            match serde_json::from_value::<Jwk>(value).map_err(anyhow::Error::from).and_then(usable) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => tracing::debug!(index, "auth: skipping a JWKS key that is not an RS256/ES256 signing key"),
                Err(e) => tracing::warn!(index, error = %e, "auth: skipping an unreadable JWKS key"),
            }
        }
        if keys.is_empty() {
            bail!("the JWKS holds no RS256 or ES256 (P-256) signature key");
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
fn usable(jwk: Jwk) -> anyhow::Result<Option<VerifyingKey>> {
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
    let key = DecodingKey::from_jwk(&jwk).context("invalid key material")?;
    Ok(Some(VerifyingKey { kid: common.key_id.clone(), alg, key }))
}

/// Where the JWKS is read from.
pub(super) enum JwksSource {
    Url { url: reqwest::Url, http: reqwest::Client },
    File(PathBuf),
}

impl JwksSource {
    pub fn url(url: &str, http: reqwest::Client) -> anyhow::Result<JwksSource> {
        let parsed = jwks_url(url).map_err(|e| anyhow::anyhow!("auth: jwks_url {e}"))?;
        Ok(JwksSource::Url { url: parsed, http })
    }

    pub async fn load(&self) -> anyhow::Result<KeySet> {
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
pub fn check_jwks_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    let read = || -> anyhow::Result<Vec<u8>> {
        let file = std::fs::File::open(path).context("cannot open")?;
        let mut body = Vec::new();
        file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).context("cannot read")?;
        if body.len() > MAX_JWKS_BYTES {
            bail!("larger than {MAX_JWKS_BYTES} bytes");
        }
        Ok(body)
    };
    read().and_then(|body| KeySet::parse(&body)).map(|_| ()).map_err(|e| format!("{e:#}"))
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

async fn fetch(http: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
    // `without_url`: reqwest puts the full URL in its errors, and the query may hold a secret.
    let mut response = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("request failed: {}", crate::net_error::chain(e)))?;
    if !response.status().is_success() {
        bail!("HTTP status {}", response.status());
    }
    if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
        bail!("larger than {MAX_JWKS_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| anyhow::anyhow!("reading failed: {}", crate::net_error::chain(e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            bail!("larger than {MAX_JWKS_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await.context("cannot open")?;
    let mut body = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).await.context("cannot read")?;
    if body.len() > MAX_JWKS_BYTES {
        bail!("larger than {MAX_JWKS_BYTES} bytes");
    }
    Ok(body)
}
