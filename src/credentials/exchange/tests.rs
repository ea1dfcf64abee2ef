//! Against a local token endpoint that speaks RFC 8693's request and response.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::*;

/// What the endpoint answers, and what it was asked.
#[derive(Default)]
struct Endpoint {
    calls: AtomicU64,
    /// `expires_in` of the tokens it issues.
    expires_in: AtomicU64,
    /// Answer with this error instead, when set.
    error: Mutex<Option<(StatusCode, String)>>,
    /// How long each answer takes, in ms.
    delay_ms: AtomicU64,
    last_form: Mutex<Vec<(String, String)>>,
    last_auth: Mutex<Option<String>>,
}

async fn token(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: String) -> axum::response::Response {
    let n = ep.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    *ep.last_form.lock().unwrap() = form.clone();
    *ep.last_auth.lock().unwrap() = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    tokio::time::sleep(Duration::from_millis(ep.delay_ms.load(Ordering::SeqCst))).await;
    if let Some((status, body)) = ep.error.lock().unwrap().clone() {
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let issued = format!("backend-token-{}-{}-{n}", get("subject_token"), get("audience"));
    axum::Json(serde_json::json!({
        "access_token": issued,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": ep.expires_in.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn start(expires_in: u64) -> (Arc<Endpoint>, TokenExchange) {
    let ep = Arc::new(Endpoint::default());
    ep.expires_in.store(expires_in, Ordering::SeqCst);
    let app = axum::Router::new().route("/token", axum::routing::post(token)).with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let settings = ExchangeSettings {
        token_url: format!("http://{addr}/token").parse().unwrap(),
        client_id: "sentinel".into(),
        client_secret: "s3cret".into(),
        audience: Some("github".into()),
        scope: Some("repo read:org".into()),
    };
    (ep, TokenExchange::new(settings, reqwest::Client::new()))
}

#[tokio::test]
async fn the_request_is_rfc_8693s_and_tokens_are_cached_per_subject() {
    let (ep, x) = start(3600).await;
    let t = x.token_for("alice", "alice.jwt").await.unwrap();
    assert_eq!(&*t, "backend-token-alice.jwt-github-1");
    let form = ep.last_form.lock().unwrap().clone();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("").to_string();
    assert_eq!(get("grant_type"), "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(get("subject_token"), "alice.jwt");
    assert_eq!(get("subject_token_type"), "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(get("audience"), "github");
    assert_eq!(get("scope"), "repo read:org");
    // The client authenticates with HTTP Basic (RFC 6749 §2.3.1).
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("sentinel:s3cret");
    assert_eq!(ep.last_auth.lock().unwrap().clone(), Some(format!("Basic {basic}")));

    // Cached: no second exchange for alice; bob gets his own.
    assert_eq!(&*x.token_for("alice", "alice.jwt").await.unwrap(), "backend-token-alice.jwt-github-1");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
    assert_eq!(&*x.token_for("bob", "bob.jwt").await.unwrap(), "backend-token-bob.jwt-github-2");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_callers_without_a_token_share_one_exchange() {
    let (ep, x) = start(3600).await;
    ep.delay_ms.store(200, Ordering::SeqCst);
    let x = Arc::new(x);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let x = x.clone();
            tokio::spawn(async move { x.token_for("alice", "alice.jwt").await })
        })
        .collect();
    for c in calls {
        assert_eq!(&*c.await.unwrap().unwrap(), "backend-token-alice.jwt-github-1");
    }
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_near_its_end_is_refreshed_without_stalling_callers() {
    // 30 s of margin + 60 s of refresh-ahead: a 80 s token is in its refresh window at once.
    let (ep, x) = start(80).await;
    assert_eq!(&*x.token_for("alice", "a").await.unwrap(), "backend-token-a-github-1");
    ep.delay_ms.store(500, Ordering::SeqCst);
    let started = Instant::now();
    // The refresh runs in the background; the caller gets the token it had, at once.
    assert_eq!(&*x.token_for("alice", "a").await.unwrap(), "backend-token-a-github-1");
    assert!(started.elapsed() < Duration::from_millis(400), "a caller waited for the refresh");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ep.calls.load(Ordering::SeqCst), 2, "one refresh, however many callers");
    assert_eq!(&*x.token_for("alice", "a").await.unwrap(), "backend-token-a-github-2");
}

#[tokio::test]
async fn an_expired_token_is_exchanged_again() {
    // Shorter than the margin: never usable beyond its exchange, so every call exchanges.
    let (ep, x) = start(10).await;
    x.token_for("alice", "a").await.unwrap();
    x.token_for("alice", "a").await.unwrap();
    assert_eq!(ep.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failures_say_what_the_provider_said_and_are_not_cached() {
    let (ep, x) = start(3600).await;
    *ep.error.lock().unwrap() = Some((
        StatusCode::BAD_REQUEST,
        r#"{"error":"invalid_target","error_description":"audience github is not allowed for alice"}"#.into(),
    ));
    let e = x.token_for("alice", "a").await.unwrap_err();
    assert_eq!(e.reason, "invalid_target (audience github is not allowed for alice)");
    assert!(e.to_string().contains("/token"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    *ep.error.lock().unwrap() = Some((StatusCode::BAD_GATEWAY, format!("<html>{}</html>", "x".repeat(5000))));
    let e = x.token_for("alice", "a").await.unwrap_err();
    assert!(e.reason.starts_with("HTTP 502"), "{}", e.reason);
    assert!(e.reason.len() < 400, "a provider's page is clipped: {} bytes", e.reason.len());
    *ep.error.lock().unwrap() = Some((StatusCode::OK, r#"{"token":"x"}"#.into()));
    let e = x.token_for("alice", "a").await.unwrap_err();
    assert!(e.reason.contains("not a token response"), "{}", e.reason);
    // The provider recovers: the next call exchanges (failures were not cached).
    *ep.error.lock().unwrap() = None;
    assert!(x.token_for("alice", "a").await.is_ok());
    assert_eq!(ep.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_clear_error() {
    let settings = ExchangeSettings {
        token_url: "http://127.0.0.1:9/token".parse().unwrap(),
        client_id: "c".into(),
        client_secret: "s".into(),
        audience: None,
        scope: None,
    };
    let x = TokenExchange::new(settings, reqwest::Client::new());
    let e = x.token_for("alice", "a").await.unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    assert!(!format!("{:?}", x.settings).contains("\"s\""), "Debug leaves the secret out");
}
