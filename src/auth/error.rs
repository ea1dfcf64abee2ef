//! Why a token was refused: one variant per refusal, each with a stable machine word. And why
//! an authenticator could not be built, or a token minted.

use super::{BadJwksUrl, BadRoleClaim, JwksError, MIN_SECRET_BYTES};

/// Why a token was refused. All of them mean "not authenticated" (-32010); [`AuthError::reason`] is the stable word
/// for `data.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or an empty one.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT of the accepted shape (the reason, without the token).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Longer than `max_token_bytes`: refused before any parsing.
    #[error("token is too large")]
    TooLarge,
    /// The signature does not verify with the key.
    #[error("token signature is invalid")]
    BadSignature,
    /// The header's `alg` is not one the configuration or the chosen key accepts.
    #[error("token algorithm not accepted: {0}")]
    UnsupportedAlgorithm(String),
    /// No configured key fits the token's `kid` (or, without one, no single key fits).
    #[error("token signed with an unknown key: {0}")]
    UnknownKey(String),
    /// Past `exp` (plus the leeway).
    #[error("token has expired")]
    Expired,
    /// Before `nbf` (minus the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// No `sub`, or an empty one.
    #[error("token has no subject")]
    MissingSubject,
    /// The JWKS could not be loaded again when its keys were needed.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// Why an authenticator could not be built from its settings (at start or on reload): the texts
/// are the operator's, each naming the `[auth]` key at fault.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `hs256_secret` too short.
    #[error(transparent)]
    ShortSecret(#[from] ShortSecret),
    /// Both `jwks_url` and `jwks_file` are set.
    #[error("auth: set only one of jwks_url and jwks_file")]
    TwoJwksSources,
    /// None of `hs256_secret`, `jwks_url` and `jwks_file` is set.
    #[error("auth: no key to check tokens with; set hs256_secret, jwks_url or jwks_file")]
    NoKey,
    /// `max_token_bytes = 0` would refuse every token.
    #[error("auth: max_token_bytes must be positive")]
    ZeroMaxTokenBytes,
    /// `role_claim` names no claim.
    #[error("auth: role_claim {0}")]
    RoleClaim(BadRoleClaim),
    /// `jwks_url` is not a URL keys may be fetched from.
    #[error("auth: jwks_url {0}")]
    JwksUrl(BadJwksUrl),
    /// The JWKS (from `from`, as logs show it) could not be loaded at start.
    #[error("auth: loading the JWKS from {from}: {error}")]
    Jwks {
        /// The file or the URL (without credentials, query or fragment).
        from: String,
        /// What went wrong.
        error: JwksError,
    },
}

/// An HS256 secret too short to be safe (RFC 7518 §3.2: at least as long as the hash output).
#[derive(Debug, thiserror::Error)]
#[error(
    "auth: hs256_secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2); \
     generate one with `openssl rand -base64 32`"
)]
pub struct ShortSecret;

/// Why `sentinel token` could not mint a token.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The secret is too short to sign with.
    #[error(transparent)]
    ShortSecret(#[from] ShortSecret),
    /// An empty subject.
    #[error("a token needs a subject")]
    NoSubject,
    /// A lifetime under one second.
    #[error("a token's lifetime must be at least one second")]
    ZeroLifetime,
    /// Expiry past the end of time (`u64` seconds).
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// jsonwebtoken could not sign the claims.
    #[error("signing the token: {0}")]
    Signing(jsonwebtoken::errors::Error),
}

impl AuthError {
    /// A stable machine word for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::TooLarge => "too_large",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingSubject => "missing_subject",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}
