//! Why a token was refused: one variant per refusal, each with a stable machine word. And why
//! an authenticator could not be built, or a token minted.

use super::{BadJwksUrl, BadRoleClaim, JwksError, MIN_SECRET_BYTES};

/// Why a token was refused. All of them mean "not authenticated" (-32010); [`AuthError::reason`] is the stable word
/// for `data.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token is too large")]
    TooLarge,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm not accepted: {0}")]
    UnsupportedAlgorithm(String),
    #[error("token signed with an unknown key: {0}")]
    UnknownKey(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token audience not accepted")]
    WrongAudience,
    #[error("token has no subject")]
    MissingSubject,
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// Why an authenticator could not be built from its settings (at start or on reload): the texts
/// are the operator's, each naming the `[auth]` key at fault.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    ShortSecret(#[from] ShortSecret),
    #[error("auth: set only one of jwks_url and jwks_file")]
    TwoJwksSources,
    #[error("auth: no key to check tokens with; set hs256_secret, jwks_url or jwks_file")]
    NoKey,
    #[error("auth: max_token_bytes must be positive")]
    ZeroMaxTokenBytes,
    #[error("auth: role_claim {0}")]
    RoleClaim(BadRoleClaim),
    #[error("auth: jwks_url {0}")]
    JwksUrl(BadJwksUrl),
    /// The JWKS (from `from`, as logs show it) could not be loaded at start.
    #[error("auth: loading the JWKS from {from}: {error}")]
    Jwks { from: String, error: JwksError },
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
    #[error(transparent)]
    ShortSecret(#[from] ShortSecret),
    #[error("a token needs a subject")]
    NoSubject,
    #[error("a token's lifetime must be at least one second")]
    ZeroLifetime,
    /// Expiry past the end of time (`u64` seconds).
    #[error("token lifetime too long")]
    LifetimeTooLong,
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
