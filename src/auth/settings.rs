//! What the `[auth]` section resolves to: the settings an [`Authenticator`](super::Authenticator) is built from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How tokens are checked; secrets are already resolved (from env or `*_file`) by config.
#[derive(Clone)]
pub struct AuthSettings {
    /// The shared HS256 secret (at least 32 bytes).
    pub hs256_secret: Option<String>,
    /// RS256 / ES256 keys fetched over HTTP(S).
    pub jwks_url: Option<String>,
    /// RS256 / ES256 keys read from a file, re-read on reload.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` (string or array claim) when set. When unset, a token that names an audience is refused
    /// (RFC 7519 §4.1.3: a recipient not named in a present `aud` must reject the token).
    pub audience: Option<String>,
    /// Claim holding the roles: a string or an array of strings. A dotted path (`realm_access.roles`) is followed
    /// through nested objects when no top-level claim has that exact name.
    pub role_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Larger tokens are refused before any parsing.
    pub max_token_bytes: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            hs256_secret: None,
            jwks_url: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            role_claim: "roles".to_owned(),
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
        }
    }
}

// Hand-written so that the secret never reaches a log line.
impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "[redacted]"))
            .field("jwks_url", &self.jwks_url.as_deref().map(super::jwks::display_url))
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("role_claim", &self.role_claim)
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}
