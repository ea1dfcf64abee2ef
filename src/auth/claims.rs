//! The claims of a verified token: expiry, issuer, audience, subject and roles — and minting HS256 tokens.
//!
//! Hand-written rather than jsonwebtoken's `Validation`: that one lets a token without `iss` through when an issuer
//! is configured (unless also listed as required) and reads the system clock itself; here every rule is explicit,
//! each failure has its own reason, and `now` is a parameter so the edges are testable.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{AuthError, Identity, MintError, check_secret, unix_now};

pub(super) struct ClaimRules {
    issuer: Option<String>,
    audience: Option<String>,
    role_claim: String,
    leeway: u64,
}

impl ClaimRules {
    pub fn new(
        issuer: Option<String>,
        audience: Option<String>,
        role_claim: &str,
        leeway: Duration,
    ) -> Result<ClaimRules, BadRoleClaim> {
        check_role_claim(role_claim)?;
        Ok(ClaimRules { issuer, audience, role_claim: role_claim.to_owned(), leeway: leeway.as_secs() })
    }

    /// Checks the (already signature-verified) payload at time `now` (seconds since the Unix epoch). The identity
    /// keeps `exp`, `nbf` and the leeway, so that every later use checks the time the same way.
    pub fn check(&self, payload: &[u8], now: u64) -> Result<Identity, AuthError> {
        let text = std::str::from_utf8(payload).map_err(|_| malformed("payload is not UTF-8"))?;
        // One reading of the claims for everyone: no `roles` that another parser would read differently.
        crate::strict_json::check_unique_keys(text).map_err(|_| malformed("claims are not JSON with unique keys"))?;
        let claims: Map<String, Value> =
            serde_json::from_str(text).map_err(|_| malformed("claims are not a JSON object"))?;

        let exp = match claims.get("exp") {
            None => return Err(malformed("no `exp` claim (tokens must expire)")),
            Some(exp) => numeric_date(exp).ok_or_else(|| malformed("`exp` is not a NumericDate"))?,
        };
        let nbf = match claims.get("nbf") {
            None => None,
            Some(nbf) => Some(numeric_date(nbf).ok_or_else(|| malformed("`nbf` is not a NumericDate"))?),
        };
        let times = Identity {
            subject: String::new(),
            roles: Vec::new(),
            expires_at: Some(exp),
            not_before: nbf,
            leeway: self.leeway,
            token: None,
        };
        times.check_time(now)?;
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer)
        {
            return Err(AuthError::WrongIssuer);
        }
        if !audience_ok(claims.get("aud"), self.audience.as_deref()) {
            return Err(AuthError::WrongAudience);
        }
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => sub.to_owned(),
            _ => return Err(AuthError::MissingSubject),
        };
        let roles = roles(&claims, &self.role_claim)?;
        Ok(Identity { subject, roles, ..times })
    }
}

/// A `role_claim` that names no claim.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a claim name or dotted path")]
pub struct BadRoleClaim(pub String);

/// A role claim is a claim name or a dotted path of them.
pub fn check_role_claim(role_claim: &str) -> Result<(), BadRoleClaim> {
    if role_claim.is_empty() || role_claim.split('.').any(str::is_empty) {
        return Err(BadRoleClaim(role_claim.to_string()));
    }
    Ok(())
}

fn malformed(why: &str) -> AuthError {
    AuthError::Malformed(why.to_owned())
}

/// RFC 7519 NumericDate: seconds since the epoch, possibly fractional (truncated here).
fn numeric_date(value: &Value) -> Option<u64> {
    match value.as_u64() {
        Some(secs) => Some(secs),
        None => value.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64),
    }
}

/// With an audience configured, `aud` must name it (as a string or within an array). Without one, a token that
/// names any audience is for someone else (RFC 7519 §4.1.3).
fn audience_ok(aud: Option<&Value>, expected: Option<&str>) -> bool {
    match (aud, expected) {
        (None, None) => true,
        (Some(Value::Array(auds)), None) => auds.is_empty(),
        (Some(_), None) | (None, Some(_)) => false,
        (Some(Value::String(aud)), Some(expected)) => aud == expected,
        (Some(Value::Array(auds)), Some(expected)) => auds.iter().any(|a| a.as_str() == Some(expected)),
        (Some(_), Some(_)) => false,
    }
}

/// The role claim: a claim with exactly that name, else the dotted path through nested objects (so that a URL-like
/// claim name such as `https://example.com/roles` still works). Absent means no roles.
fn roles(claims: &Map<String, Value>, role_claim: &str) -> Result<Vec<String>, AuthError> {
    let found = claims.get(role_claim).or_else(|| {
        let mut path = role_claim.split('.');
        let first = claims.get(path.next()?)?;
        path.try_fold(first, |value, segment| value.as_object()?.get(segment))
    });
    let not_roles = || malformed("the role claim is not a string or an array of strings");
    match found {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(role)) => Ok(vec![role.clone()]),
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(not_roles)).collect()
        }
        Some(_) => Err(not_roles()),
    }
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token (for `sentinel token` and tests). Roles go in the `roles` claim.
pub fn mint_hs256(
    secret: &str,
    subject: &str,
    roles: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, MintError> {
    check_secret(secret)?;
    if subject.is_empty() {
        return Err(MintError::NoSubject);
    }
    if ttl.as_secs() == 0 {
        return Err(MintError::ZeroLifetime);
    }
    let iat = unix_now();
    let exp = iat.checked_add(ttl.as_secs()).ok_or(MintError::LifetimeTooLong)?;
    let claims = MintedClaims { sub: subject, roles, iat, exp, iss: issuer, aud: audience };
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(MintError::Signing)
}
