//! RS256 / ES256 through a JWKS: from a file, from a URL, key selection, rotation and the refetch rate limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::tests::{RSA_PUBLIC_PEM, SECRET, authenticator, good_claims, raw_token};
use super::*;

const RSA_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt-test-rsa-private.test-pem");
const EC_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt-test-ec-private.test-pem");
const JWKS: &str = include_str!("../../tests/fixtures/jwt-test-jwks.json");

fn rs256(kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap()).unwrap()
}

fn es256(kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap()).unwrap()
}

/// The fixture's keys (`rsa-1`, `ec-1`), renamed and filtered: `keys(&[("rsa-1", "rsa-2")])` is a JWKS holding only
/// the RSA key, now under kid `rsa-2`.
fn keys(renames: &[(&str, &str)]) -> String {
    let fixture: Value = serde_json::from_str(JWKS).unwrap();
    let keys: Vec<Value> = renames
        .iter()
        .map(|(from, to)| {
            let mut key = fixture["keys"].as_array().unwrap().iter().find(|k| k["kid"] == *from).unwrap().clone();
            key["kid"] = json!(to);
            key
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn jwks_settings() -> AuthSettings {
    AuthSettings {
        jwks_file: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt-test-jwks.json"))),
        issuer: Some("sentinel".to_owned()),
        audience: Some("sentinel".to_owned()),
        ..AuthSettings::default()
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_a_jwks_file() {
    let auth = authenticator(jwks_settings()).await;
    assert_eq!(auth.authenticate(&rs256(Some("rsa-1"), &good_claims())).await.unwrap().subject, "alice");
    assert_eq!(auth.authenticate(&es256(Some("ec-1"), &good_claims())).await.unwrap().roles, ["dev", "ops"]);
    // Claims rules apply just the same.
    let expired = json!({ "sub": "alice", "exp": 1, "iss": "sentinel", "aud": "sentinel" });
    assert_eq!(auth.authenticate(&rs256(Some("rsa-1"), &expired)).await, Err(AuthError::Expired));
    // One signature character changed, for each algorithm.
    for token in [rs256(Some("rsa-1"), &good_claims()), es256(Some("ec-1"), &good_claims())] {
        let mut tampered = token.into_bytes();
        let i = tampered.len() - 10;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(auth.authenticate(&tampered).await, Err(AuthError::BadSignature));
    }
}

#[tokio::test]
async fn the_key_decides_the_algorithm() {
    let auth = authenticator(jwks_settings()).await;
    // An ES256 token naming the RSA key, and the reverse.
    for token in [es256(Some("rsa-1"), &good_claims()), rs256(Some("ec-1"), &good_claims())] {
        let e = auth.authenticate(&token).await.unwrap_err();
        assert!(matches!(e, AuthError::UnsupportedAlgorithm(_)), "{e:?}");
    }
    // HS256 is never checked against JWKS keys, whatever the token names.
    let header = json!({ "alg": "HS256", "kid": "rsa-1" }).to_string();
    let forged = raw_token(&header, &good_claims().to_string(), Some(RSA_PUBLIC_PEM.as_bytes()));
    assert!(matches!(auth.authenticate(&forged).await, Err(AuthError::UnsupportedAlgorithm(_))));
    // Both configured: HS256 uses the secret, RS256 the JWKS.
    let both = authenticator(AuthSettings { hs256_secret: Some(SECRET.to_owned()), ..jwks_settings() }).await;
    let hs = mint_hs256(SECRET, "carol", &[], Duration::from_secs(60), Some("sentinel"), Some("sentinel")).unwrap();
    assert_eq!(both.authenticate(&hs).await.unwrap().subject, "carol");
    assert!(both.authenticate(&rs256(Some("rsa-1"), &good_claims())).await.is_ok());
    assert_eq!(both.authenticate(&forged).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn a_missing_kid_is_accepted_only_when_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, keys(&[("rsa-1", "rsa-1"), ("ec-1", "ec-1")])).unwrap();
    let auth = authenticator(AuthSettings { jwks_file: Some(path.clone()), ..jwks_settings() }).await;
    assert!(auth.authenticate(&rs256(None, &good_claims())).await.is_ok(), "one RSA key");
    std::fs::write(&path, keys(&[("rsa-1", "rsa-1"), ("rsa-1", "rsa-other")])).unwrap();
    auth.refresh_keys().await.unwrap();
    assert!(matches!(auth.authenticate(&rs256(None, &good_claims())).await, Err(AuthError::UnknownKey(_))));
}

#[tokio::test]
async fn unusable_jwks_keys_are_skipped_and_an_unusable_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let mut rsa: Value = serde_json::from_str(&keys(&[("rsa-1", "rsa-1")])).unwrap();
    let enc = json!({ "kty": "RSA", "kid": "enc", "use": "enc", "n": rsa["keys"][0]["n"], "e": "AQAB" });
    let hmac = json!({ "kty": "oct", "kid": "oct", "k": "c2VjcmV0" });
    let odd = json!({ "kty": "RSA", "kid": "rs512", "alg": "RS512", "n": rsa["keys"][0]["n"], "e": "AQAB" });
    let junk = json!({ "kty": "nope" });
    rsa["keys"].as_array_mut().unwrap().extend([enc, hmac.clone(), odd, junk]);
    std::fs::write(&path, rsa.to_string()).unwrap();
    let auth = authenticator(AuthSettings { jwks_file: Some(path.clone()), ..jwks_settings() }).await;
    assert!(format!("{auth:?}").contains("jwks_keys: 1"), "{auth:?}");

    // An HS256 token naming the JWKS `oct` key: symmetric keys from a JWKS are never used.
    let header = json!({ "alg": "HS256", "kid": "oct" }).to_string();
    let token = raw_token(&header, &good_claims().to_string(), Some(b"secret"));
    assert!(matches!(auth.authenticate(&token).await, Err(AuthError::UnsupportedAlgorithm(_))));

    for unusable in [json!({ "keys": [hmac] }).to_string(), "{}".to_owned(), "not json".to_owned()] {
        std::fs::write(&path, unusable).unwrap();
        let settings = AuthSettings { jwks_file: Some(path.clone()), ..jwks_settings() };
        assert!(Authenticator::new(settings, reqwest::Client::new()).await.is_err());
    }
}

#[tokio::test]
async fn an_unknown_kid_rereads_the_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, keys(&[("rsa-1", "rsa-1")])).unwrap();
    let auth = authenticator(AuthSettings { jwks_file: Some(path.clone()), ..jwks_settings() }).await;
    let token = rs256(Some("rsa-2"), &good_claims());
    assert!(matches!(auth.authenticate_cached(&token), Err(AuthError::UnknownKey(_))), "the sync path does no I/O");
    std::fs::write(&path, keys(&[("rsa-1", "rsa-2")])).unwrap();
    assert!(auth.authenticate_cached(&token).is_err());
    assert_eq!(auth.authenticate(&token).await.unwrap().subject, "alice");
    assert!(auth.authenticate_cached(&token).is_ok(), "now cached");
}

/// A JWKS endpoint on loopback whose document the test can change, counting requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
}

type ServerState = (Arc<Mutex<(StatusCode, String)>>, Arc<AtomicUsize>);

impl JwksServer {
    async fn start(jwks: String) -> JwksServer {
        let body = Arc::new(Mutex::new((StatusCode::OK, jwks)));
        let hits = Arc::new(AtomicUsize::new(0));
        let serve = |State((body, hits)): State<ServerState>| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent misses overlap with the fetch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            body.lock().unwrap().clone()
        };
        let app =
            axum::Router::new().route("/jwks", axum::routing::get(serve)).with_state((body.clone(), hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks?token=query-secret", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, body, hits }
    }

    fn serve(&self, status: StatusCode, jwks: String) {
        *self.body.lock().unwrap() = (status, jwks);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn authenticator(&self) -> Authenticator {
        authenticator(AuthSettings { jwks_url: Some(self.url.clone()), jwks_file: None, ..jwks_settings() }).await
    }
}

#[tokio::test]
async fn rotation_is_picked_up_once_per_interval() {
    let server = JwksServer::start(keys(&[("rsa-1", "rsa-1")])).await;
    let auth = server.authenticator().await;
    assert_eq!(server.hits(), 1, "loaded once at start");
    let old = rs256(Some("rsa-1"), &good_claims());
    assert!(auth.authenticate(&old).await.is_ok());
    assert!(auth.authenticate(&old).await.is_ok(), "and again, remembered");
    assert_eq!(server.hits(), 1, "a known kid never fetches");

    // The issuer rotates: rsa-1 is retired, rsa-2 published.
    server.serve(StatusCode::OK, keys(&[("rsa-1", "rsa-2")]));
    assert!(auth.authenticate(&rs256(Some("rsa-2"), &good_claims())).await.is_ok());
    assert_eq!(server.hits(), 2, "the unknown kid triggered one refetch");
    assert!(
        matches!(auth.authenticate(&old).await, Err(AuthError::UnknownKey(_))),
        "the retired key is gone, and a token verified with it earlier is not remembered past the refetch"
    );

    // Another unknown kid within the interval is refused without a fetch.
    server.serve(StatusCode::OK, keys(&[("rsa-1", "rsa-3")]));
    assert!(matches!(auth.authenticate(&rs256(Some("rsa-3"), &good_claims())).await, Err(AuthError::UnknownKey(_))));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let server = JwksServer::start(keys(&[("rsa-1", "rsa-1")])).await;
    let auth = Arc::new(server.authenticator().await);
    server.serve(StatusCode::OK, keys(&[("rsa-1", "rsa-2")]));
    let token = rs256(Some("rsa-2"), &good_claims());
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move { auth.authenticate(&token).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 2, "one start, one refetch for all twenty");
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_old_keys() {
    let server = JwksServer::start(keys(&[("rsa-1", "rsa-1")])).await;
    let mut auth = server.authenticator().await;
    auth.set_refetch_interval(Duration::ZERO);
    for (status, body) in [(StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned()), (StatusCode::OK, "{}".to_owned())] {
        server.serve(status, body);
        let e = auth.authenticate(&rs256(Some("rsa-9"), &good_claims())).await.unwrap_err();
        assert_eq!(e.reason(), "keys_unavailable", "{e:?}");
        assert!(!e.to_string().contains("query-secret"), "{e}");
        assert!(auth.authenticate(&rs256(Some("rsa-1"), &good_claims())).await.is_ok(), "old keys still work");
    }
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn an_unreachable_or_bad_jwks_url_fails_at_start() {
    let server = JwksServer::start(String::new()).await;
    let settings = |url: &str| AuthSettings { jwks_url: Some(url.to_owned()), jwks_file: None, ..jwks_settings() };
    let too_big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    for (status, body) in [(StatusCode::NOT_FOUND, String::new()), (StatusCode::OK, too_big)] {
        server.serve(status, body);
        let e = Authenticator::new(settings(&server.url), reqwest::Client::new()).await.unwrap_err();
        assert!(matches!(e, AuthSetupError::Jwks { error: JwksError::Status(_) | JwksError::TooLarge, .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("loading the JWKS") && !e.contains("query-secret"), "{e}");
    }
    // Nothing listens on port 9 (discard) on loopback.
    assert!(Authenticator::new(settings("http://127.0.0.1:9/jwks"), reqwest::Client::new()).await.is_err());
    for refused in ["file:///etc/jwks", "http://idp.example/jwks", "http://10.0.0.1/jwks", "not a url"] {
        let e = Authenticator::new(settings(refused), reqwest::Client::new()).await.unwrap_err();
        assert!(e.to_string().contains("jwks_url"), "{refused}: {e}");
    }
}

/// A token verified against the old keys while a rotation cleared the cache is not cached
/// after the clear: once the keys are gone, the token is refused.
#[tokio::test]
async fn a_verification_overtaken_by_a_rotation_is_not_cached() {
    let auth = authenticator(jwks_settings()).await;
    let token = rs256(Some("rsa-1"), &good_claims());
    *auth.between_verify_and_insert.lock().unwrap() = Some(Box::new(|auth: &Authenticator| {
        // The issuer dropped `rsa-1` (only the EC key is left) and the keys were reloaded.
        auth.install_keys(KeySet::parse(keys(&[("ec-1", "ec-1")]).as_bytes()).unwrap());
    }));
    assert_eq!(auth.authenticate_cached(&token).unwrap().subject, "alice", "it verified before the rotation");
    assert!(auth.verified.get(token.as_str()).is_none(), "not cached after the clear");
    assert!(matches!(auth.authenticate_cached(&token), Err(AuthError::UnknownKey(_))), "the old key no longer works");
}
