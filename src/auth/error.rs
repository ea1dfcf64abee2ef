//! Why a token was refused: one variant per refusal, each with a stable machine word.

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
