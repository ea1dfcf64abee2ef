//! HS256 tokens and claim rules: what is accepted, and every way a token is refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::claims::ClaimRules;
use super::*;

pub(super) const SECRET: &str = "test-only-secret-0123456789-abcdefghij";
pub(super) const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt-test-rsa-public.test-pem");

pub(super) fn now() -> u64 {
    unix_now()
}

fn settings() -> AuthSettings {
    AuthSettings {
        hs256_secret: Some(SECRET.to_owned()),
        issuer: Some("sentinel".to_owned()),
        audience: Some("sentinel".to_owned()),
        ..AuthSettings::default()
    }
}

pub(super) async fn authenticator(settings: AuthSettings) -> Authenticator {
    Authenticator::new(settings, reqwest::Client::new()).await.expect("authenticator")
}

/// Claims that pass `settings()`; tests change one thing at a time.
pub(super) fn good_claims() -> Value {
    json!({ "sub": "alice", "roles": ["dev", "ops"], "exp": now() + 300, "iss": "sentinel", "aud": "sentinel" })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token from raw header and payload text, HMAC-signed with `secret` (or with an empty signature), for shapes
/// that a well-behaved encoder would never produce.
pub(super) fn raw_token(header: &str, payload: &str, secret: Option<&[u8]>) -> String {
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature = match secret {
        Some(secret) => {
            jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256).unwrap()
        }
        None => String::new(),
    };
    format!("{message}.{signature}")
}

async fn check(claims: Value) -> Result<Identity, AuthError> {
    authenticator(settings()).await.authenticate(&hs256(SECRET.as_bytes(), &claims)).await
}

#[tokio::test]
async fn a_valid_hs256_token_yields_the_identity() {
    // One set of claims: a second call could fall in the next second and carry another `exp`.
    let claims = good_claims();
    let identity = check(claims.clone()).await.unwrap();
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.roles, ["dev", "ops"]);
    assert_eq!(identity.expires_at, claims["exp"].as_u64());
}

#[tokio::test]
async fn minted_tokens_round_trip() {
    let roles = vec!["admin".to_owned()];
    let token = mint_hs256(SECRET, "bob", &roles, Duration::from_secs(60), Some("sentinel"), Some("sentinel")).unwrap();
    let auth = authenticator(settings()).await;
    let identity = auth.authenticate_cached(&token).unwrap();
    assert_eq!((identity.subject.as_str(), identity.roles), ("bob", roles));
    // The whole Authorization value (any case, stray whitespace) is accepted too.
    assert!(auth.authenticate(&format!("bearer  {token}\n")).await.is_ok());
    let mint = |secret, sub, ttl| mint_hs256(secret, sub, &[], ttl, None, None).unwrap_err();
    assert!(matches!(mint("short", "bob", Duration::from_secs(60)), MintError::ShortSecret(_)));
    assert!(matches!(mint(SECRET, "", Duration::from_secs(60)), MintError::NoSubject));
    assert!(matches!(mint(SECRET, "bob", Duration::ZERO), MintError::ZeroLifetime));
    assert!(matches!(mint(SECRET, "bob", Duration::MAX), MintError::LifetimeTooLong));
}

#[tokio::test]
async fn missing_and_garbage_tokens_are_refused() {
    let auth = authenticator(settings()).await;
    for missing in ["", "   ", "Bearer ", "Bearer"] {
        // "Bearer" alone has no token after it but is also not a token: either refusal is fine, never success.
        let e = auth.authenticate(missing).await.unwrap_err();
        assert!(matches!(e, AuthError::Missing | AuthError::Malformed(_)), "{missing:?}: {e:?}");
    }
    assert_eq!(auth.authenticate("").await, Err(AuthError::Missing));
    let good = hs256(SECRET.as_bytes(), &good_claims());
    for garbage in [
        "abc".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "!!!.e30.sig".to_owned(),
        format!("{good}.extra"),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("not json"), URL_SAFE_NO_PAD.encode("{}"), "c2ln"),
        raw_token(r#"{"typ":"JWT"}"#, "{}", Some(SECRET.as_bytes())),
        raw_token(r#"{"alg":"HS256","alg":"HS256"}"#, "{}", Some(SECRET.as_bytes())),
        raw_token(r#"{"alg":"HS256"}"#, "not json", Some(SECRET.as_bytes())),
        raw_token(r#"{"alg":"HS256"}"#, "[1]", Some(SECRET.as_bytes())),
        good.replace('.', ".=").to_owned(),
    ] {
        let e = auth.authenticate(&garbage).await.unwrap_err();
        assert!(matches!(e, AuthError::Malformed(_)), "{garbage}: {e:?}");
        assert!(!e.to_string().contains(&garbage), "errors never echo the token");
    }
}

#[tokio::test]
async fn expiry_is_required_and_enforced_with_leeway() {
    assert_eq!(check(with(good_claims(), "exp", json!(now() - 100))).await, Err(AuthError::Expired));
    assert!(check(with(good_claims(), "exp", json!(now() - 10))).await.is_ok(), "within the 30 s leeway");
    assert!(matches!(check(without(good_claims(), "exp")).await, Err(AuthError::Malformed(_))));
    assert!(matches!(check(with(good_claims(), "exp", json!("soon"))).await, Err(AuthError::Malformed(_))));
    assert!(matches!(check(with(good_claims(), "exp", json!(-1))).await, Err(AuthError::Malformed(_))));
    assert!(check(with(good_claims(), "exp", json!(now() as f64 + 60.5))).await.is_ok(), "fractional NumericDate");
}

#[tokio::test]
async fn not_before_is_honoured_with_leeway() {
    assert_eq!(check(with(good_claims(), "nbf", json!(now() + 300))).await, Err(AuthError::NotYetValid));
    assert!(check(with(good_claims(), "nbf", json!(now() + 10))).await.is_ok(), "within the 30 s leeway");
    assert!(matches!(check(with(good_claims(), "nbf", json!("later"))).await, Err(AuthError::Malformed(_))));
}

#[test]
fn the_leeway_edges_are_exact() {
    let rules = ClaimRules::new(None, None, "roles", Duration::from_secs(30)).unwrap();
    let at = |exp: u64, nbf: u64, now: u64| {
        rules.check(json!({ "sub": "s", "exp": exp, "nbf": nbf }).to_string().as_bytes(), now)
    };
    assert!(at(1000, 0, 1029).is_ok());
    assert_eq!(at(1000, 0, 1030), Err(AuthError::Expired));
    assert!(at(5000, 1000, 970).is_ok());
    assert_eq!(at(5000, 1000, 969), Err(AuthError::NotYetValid));
}

#[test]
fn a_remembered_token_is_checked_against_the_clock_again() {
    let rules = ClaimRules::new(None, None, "roles", Duration::from_secs(30)).unwrap();
    let identity = rules.check(json!({ "sub": "s", "exp": 1000, "nbf": 900 }).to_string().as_bytes(), 950).unwrap();
    assert_eq!(identity.not_before, Some(900));
    assert!(identity.check_time(1029).is_ok());
    assert_eq!(identity.check_time(1030), Err(AuthError::Expired));
    assert_eq!(identity.check_time(869), Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn a_token_reused_after_it_expires_is_refused() {
    // No leeway, and an `exp` one second ahead: the first use verifies (and is remembered), a use after expiry
    // must be refused even though the signature was already checked.
    let auth = authenticator(AuthSettings { leeway: Duration::ZERO, ..settings() }).await;
    let token = hs256(SECRET.as_bytes(), &with(good_claims(), "exp", json!(now() + 1)));
    assert_eq!(auth.authenticate(&token).await.unwrap().subject, "alice");
    assert_eq!(auth.authenticate(&token).await.unwrap().roles, ["dev", "ops"], "the remembered identity is whole");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(auth.authenticate(&token).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn a_forged_variant_of_a_remembered_token_is_still_refused() {
    let auth = authenticator(settings()).await;
    let token = hs256(SECRET.as_bytes(), &good_claims());
    assert!(auth.authenticate(&token).await.is_ok());
    // Same header and payload, another signature; and the same token with the payload swapped.
    let (signed, _) = token.rsplit_once('.').unwrap();
    assert_eq!(auth.authenticate(&format!("{signed}.AAAA")).await, Err(AuthError::BadSignature));
    let mut parts = token.split('.');
    let (header, _, signature) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let payload = URL_SAFE_NO_PAD.encode(with(good_claims(), "roles", json!(["admin"])).to_string());
    assert_eq!(auth.authenticate(&format!("{header}.{payload}.{signature}")).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn the_issuer_must_match() {
    assert_eq!(check(with(good_claims(), "iss", json!("someone-else"))).await, Err(AuthError::WrongIssuer));
    assert_eq!(check(without(good_claims(), "iss")).await, Err(AuthError::WrongIssuer));
    assert_eq!(check(with(good_claims(), "iss", json!(["sentinel"]))).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn the_audience_must_match() {
    assert_eq!(check(with(good_claims(), "aud", json!("someone-else"))).await, Err(AuthError::WrongAudience));
    assert_eq!(check(without(good_claims(), "aud")).await, Err(AuthError::WrongAudience));
    assert_eq!(check(with(good_claims(), "aud", json!(["a", "b"]))).await, Err(AuthError::WrongAudience));
    assert!(check(with(good_claims(), "aud", json!(["a", "sentinel"]))).await.is_ok());
    // Without a configured audience, a token addressed to some audience is not for us.
    let open = AuthSettings { audience: None, ..settings() };
    let auth = authenticator(open).await;
    assert_eq!(auth.authenticate(&hs256(SECRET.as_bytes(), &good_claims())).await, Err(AuthError::WrongAudience));
    assert!(auth.authenticate(&hs256(SECRET.as_bytes(), &without(good_claims(), "aud"))).await.is_ok());
}

#[tokio::test]
async fn a_subject_is_required() {
    for claims in
        [without(good_claims(), "sub"), with(good_claims(), "sub", json!("")), with(good_claims(), "sub", json!(7))]
    {
        assert_eq!(check(claims).await, Err(AuthError::MissingSubject));
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let auth = authenticator(settings()).await;
    let other = hs256(b"another-secret-that-is-long-enough-1234", &good_claims());
    assert_eq!(auth.authenticate(&other).await, Err(AuthError::BadSignature));
    // Claims swapped under a valid signature.
    let good = hs256(SECRET.as_bytes(), &good_claims());
    let forged = hs256(b"x", &with(good_claims(), "roles", json!(["admin"])));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = forged.split('.').nth(1).unwrap();
    assert_eq!(auth.authenticate(&parts.join(".")).await, Err(AuthError::BadSignature));
    // A truncated signature.
    assert_eq!(
        auth.authenticate(&good[..good.len() - 3]).await,
        Err(AuthError::BadSignature),
        "40 of 43 chars: still base64"
    );
}

#[tokio::test]
async fn alg_none_and_other_algorithms_are_refused() {
    let auth = authenticator(settings()).await;
    let payload = good_claims().to_string();
    for alg in ["none", "None", "NONE", "HS384", "HS512", "PS256", "EdDSA", "hs256"] {
        let header = json!({ "alg": alg, "typ": "JWT" }).to_string();
        for secret in [None, Some(SECRET.as_bytes())] {
            let e = auth.authenticate(&raw_token(&header, &payload, secret)).await.unwrap_err();
            assert!(matches!(e, AuthError::UnsupportedAlgorithm(_)), "{alg}: {e:?}");
        }
    }
    // RS256 / ES256 with no JWKS configured.
    let header = json!({ "alg": "RS256" }).to_string();
    let e = auth.authenticate(&raw_token(&header, &payload, None)).await.unwrap_err();
    assert!(matches!(e, AuthError::UnsupportedAlgorithm(_)), "{e:?}");
}

#[tokio::test]
async fn a_header_with_critical_extensions_is_refused() {
    let auth = authenticator(settings()).await;
    let header = json!({ "alg": "HS256", "crit": ["exp"], "exp": 1 }).to_string();
    let token = raw_token(&header, &good_claims().to_string(), Some(SECRET.as_bytes()));
    assert!(matches!(auth.authenticate(&token).await, Err(AuthError::Malformed(_))));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the public key PEM used as an HMAC secret.
    let forged = hs256(RSA_PUBLIC_PEM.as_bytes(), &good_claims());
    assert_eq!(check_forged(&forged, true).await, Err(AuthError::BadSignature), "checked with the real secret");
    let e = check_forged(&forged, false).await.unwrap_err();
    assert!(matches!(e, AuthError::UnsupportedAlgorithm(_)), "no secret: HS256 is not accepted at all: {e:?}");
    // Also when the forged token names the RSA key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let named =
        jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes())).unwrap();
    assert_eq!(check_forged(&named, true).await, Err(AuthError::BadSignature));
    assert!(matches!(check_forged(&named, false).await, Err(AuthError::UnsupportedAlgorithm(_))));
}

async fn check_forged(token: &str, with_secret: bool) -> Result<Identity, AuthError> {
    let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt-test-jwks.json");
    let settings = AuthSettings {
        hs256_secret: with_secret.then(|| SECRET.to_owned()),
        jwks_file: Some(jwks.into()),
        ..settings()
    };
    authenticator(settings).await.authenticate(token).await
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_parsing() {
    let auth = authenticator(AuthSettings { max_token_bytes: 100, ..settings() }).await;
    assert_eq!(auth.authenticate(&"x".repeat(101)).await, Err(AuthError::TooLarge));
    let big = with(good_claims(), "pad", json!("p".repeat(9000)));
    assert_eq!(check(big).await, Err(AuthError::TooLarge), "default limit: 8192 bytes");
}

#[tokio::test]
async fn roles_come_from_a_string_an_array_or_a_nested_path() {
    assert_eq!(check(with(good_claims(), "roles", json!("admin"))).await.unwrap().roles, ["admin"]);
    assert_eq!(check(with(good_claims(), "roles", json!(["a", "b"]))).await.unwrap().roles, ["a", "b"]);
    assert!(check(without(good_claims(), "roles")).await.unwrap().roles.is_empty());
    for bad in [json!(7), json!(["a", 7]), json!({ "a": 1 })] {
        assert!(matches!(check(with(good_claims(), "roles", bad)).await, Err(AuthError::Malformed(_))));
    }

    let nested = AuthSettings { role_claim: "realm_access.roles".to_owned(), ..settings() };
    let auth = authenticator(nested).await;
    let claims = with(good_claims(), "realm_access", json!({ "roles": ["researcher"] }));
    assert_eq!(auth.authenticate(&hs256(SECRET.as_bytes(), &claims)).await.unwrap().roles, ["researcher"]);

    // A claim literally named with dots (namespaced claims) wins over the path.
    let namespaced = AuthSettings { role_claim: "https://example.com/roles".to_owned(), ..settings() };
    let auth = authenticator(namespaced).await;
    let claims = with(good_claims(), "https://example.com/roles", json!("auditor"));
    assert_eq!(auth.authenticate(&hs256(SECRET.as_bytes(), &claims)).await.unwrap().roles, ["auditor"]);
}

#[tokio::test]
async fn duplicate_claims_are_refused() {
    // Two `roles`: a parser keeping the first and one keeping the last would disagree on who this is.
    let payload = format!(
        r#"{{"sub":"alice","exp":{},"iss":"sentinel","aud":"sentinel","roles":["dev"],"roles":["admin"]}}"#,
        now() + 60
    );
    let token = raw_token(r#"{"alg":"HS256"}"#, &payload, Some(SECRET.as_bytes()));
    assert!(matches!(authenticator(settings()).await.authenticate(&token).await, Err(AuthError::Malformed(_))));
}

#[tokio::test]
async fn unsafe_settings_are_refused_at_start() {
    let http = reqwest::Client::new;
    let short = AuthSettings { hs256_secret: Some("s3cret".to_owned()), ..settings() };
    let e = Authenticator::new(short, http()).await.unwrap_err().to_string();
    assert!(e.contains("at least 32 bytes") && !e.contains("s3cret"), "{e}");
    assert!(matches!(Authenticator::new(AuthSettings::default(), http()).await, Err(AuthSetupError::NoKey)));
    let both = AuthSettings {
        jwks_url: Some("https://idp.example/jwks".to_owned()),
        jwks_file: Some("jwks.json".into()),
        ..settings()
    };
    assert!(matches!(Authenticator::new(both, http()).await, Err(AuthSetupError::TwoJwksSources)));
    let bad_claim = AuthSettings { role_claim: "a..b".to_owned(), ..settings() };
    let e = Authenticator::new(bad_claim, http()).await.unwrap_err();
    assert_eq!(e.to_string(), "auth: role_claim `a..b` is not a claim name or dotted path");
    let debug = format!("{:?}", settings());
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn reasons_are_stable_words() {
    let all = [
        (AuthError::Missing, "missing"),
        (AuthError::Malformed(String::new()), "malformed"),
        (AuthError::TooLarge, "too_large"),
        (AuthError::BadSignature, "bad_signature"),
        (AuthError::UnsupportedAlgorithm(String::new()), "unsupported_algorithm"),
        (AuthError::UnknownKey(String::new()), "unknown_key"),
        (AuthError::Expired, "expired"),
        (AuthError::NotYetValid, "not_yet_valid"),
        (AuthError::WrongIssuer, "wrong_issuer"),
        (AuthError::WrongAudience, "wrong_audience"),
        (AuthError::MissingSubject, "missing_subject"),
        (AuthError::KeysUnavailable(String::new()), "keys_unavailable"),
    ];
    for (error, reason) in all {
        assert_eq!(error.reason(), reason);
    }
}
