//! Token exchange (RFC 8693) through the real binary: an HTTP backend whose calls carry a
//! token a local token endpoint issued for the caller, in exchange for the caller's verified
//! JWT — cached per subject, refreshed before it expires without holding calls up, and a
//! provider's refusal turned into a clear -32018.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use common::governance::{ADMIN_ROLE, hs256_auth, secret_env, token};
use common::{Gateway, HttpClient, MockHttp, lit};
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "sentinel-client-s3cret";

/// What the token endpoint was asked, and how long the tokens it issues live.
#[derive(Default)]
struct Endpoint {
    issued: AtomicU64,
    expires_in: AtomicU64,
    /// Each request's form, in order.
    requests: Mutex<Vec<HashMap<String, String>>>,
    /// Each request's `Authorization` header.
    auth: Mutex<Vec<String>>,
}

impl Endpoint {
    fn requests_for(&self, sub: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|f| f.get("subject_token").is_some_and(|t| subject_of(t) == sub)).count()
    }
}

/// The `sub` of a JWT, read without checking it (the gateway checked it).
fn subject_of(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v["sub"].as_str().map(str::to_string)).unwrap_or_default()
}

/// RFC 8693 §2: a form POST with the grant type, the subject token and its type, the audience
/// asked for; client authentication by HTTP Basic. §2.2.1 answer, or §2.2.2 error.
async fn token_endpoint(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    e.requests.lock().unwrap().push(form.clone());
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    e.auth.lock().unwrap().push(auth.clone());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("sentinel:{CLIENT_SECRET}"));
    if auth != format!("Basic {basic}") {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})));
    }
    let ok = form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:token-exchange")
        && form.get("subject_token_type").map(String::as_str) == Some("urn:ietf:params:oauth:token-type:jwt");
    if !ok {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request"})));
    }
    let sub = subject_of(form.get("subject_token").map_or("", String::as_str));
    if sub == "mallory" || form.get("audience").map(String::as_str) != Some("gh-api") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_target", "error_description": format!("{sub} may not use gh-api")})),
        );
    }
    let n = e.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = json!({
        "access_token": format!("x-{sub}-{n}"),
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": e.expires_in.load(Ordering::SeqCst),
    });
    (StatusCode::OK, axum::Json(answer))
}

async fn start_endpoint() -> (Arc<Endpoint>, String) {
    let e = Arc::new(Endpoint { expires_in: AtomicU64::new(3600), ..Default::default() });
    let app = axum::Router::new().route("/token", axum::routing::post(token_endpoint)).with_state(e.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (e, url)
}

/// The `Authorization` the backend received for one call of `whoami`.
async fn backend_saw(c: &HttpClient) -> String {
    let v = c.call("gh__whoami", json!({})).await.json();
    assert!(v["error"].is_null(), "{v}");
    v["result"]["structuredContent"]["headers"]["authorization"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_carry_a_token_exchanged_for_the_caller() {
    let (endpoint, token_url) = start_endpoint().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client_secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let mock_dir = tempfile::tempdir().unwrap();
    let mock_log = mock_dir.path().join("mock.log");
    let mock = MockHttp::start(&["--log", mock_log.to_str().unwrap()]);
    let backend = format!(
        "[[backend]]\nname = \"gh\"\nhttp = {{ url = {}, headers = {{ Authorization = \"Bearer {{credential}}\" }} }}\n\
         credentials = {{ token_exchange = {{ token_url = {}, client_id = \"sentinel\", client_secret_file = {}, \
         audience = \"gh-api\", scope = \"repo\" }} }}\n",
        lit(&mock.url),
        lit(&token_url),
        lit(secret_file.to_string_lossy())
    );
    let gw = Gateway::start_with_env(&format!("{}{ADMIN_ROLE}\n{backend}", hs256_auth("")), &secret_env());
    let client = |sub: &str| HttpClient::new(&gw.url).with_token(&token(sub, &["admin"])).initialized(json!({}));
    let (alice, bob) = (client("alice").await, client("bob").await);

    // Exchanged once, then served from the cache until shortly before it expires.
    let first = backend_saw(&alice).await;
    assert!(first.starts_with("Bearer x-alice-"), "{first}");
    assert_eq!(backend_saw(&alice).await, first);
    assert_eq!(endpoint.requests_for("alice"), 1, "the second call used the cached token");
    let b = backend_saw(&bob).await;
    assert!(b.starts_with("Bearer x-bob-"), "{b}");
    // The request is RFC 8693's: grant type, the caller's own verified JWT as subject token,
    // its type, the audience and scope; the client authenticated with its secret.
    let form = endpoint.requests.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(form["subject_token"], alice.token.clone().unwrap());
    assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!((form["audience"].as_str(), form["scope"].as_str()), ("gh-api", "repo"));
    // The client's own token never reaches the backend.
    let backend_log = std::fs::read_to_string(&mock_log).unwrap();
    assert!(!backend_log.contains(alice.token.as_deref().unwrap()));

    // A token close to its end (60 s, used up to 30 s before): the next call still goes out
    // with it at once, and a new one is fetched meanwhile for the calls after.
    endpoint.expires_in.store(60, Ordering::SeqCst);
    let carol = client("carol").await;
    let old = backend_saw(&carol).await;
    assert_eq!(backend_saw(&carol).await, old, "the call did not wait for the refresh");
    // Waited on as a condition: the refresh runs beside the calls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = backend_saw(&carol).await;
        if now != old {
            assert!(now.starts_with("Bearer x-carol-"), "{now}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "carol's token was never refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(endpoint.requests_for("carol") >= 2, "refreshed by a second exchange");

    // The provider refuses: -32018 with its error summarised, and nothing sent to the backend.
    let before = backend_log_calls(&mock_log);
    let r = client("mallory").await.call("gh__whoami", json!({})).await.json();
    assert_eq!(r["error"]["code"], -32018, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "exchange_failed", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid_target (mallory may not use gh-api)"), "{message}");
    assert_eq!(backend_log_calls(&mock_log), before);

    let metrics = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sentinel_token_exchanges_total{backend="gh",result="error"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sentinel_credential_misses_total{backend="gh",reason="exchange_failed"} 1"#));
    let log = gw.log();
    assert!(!log.contains("x-alice-") && !log.contains(CLIENT_SECRET), "a token or the client secret in the log");
    assert!(!metrics.contains("x-alice-"));
}

fn backend_log_calls(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains("\"tools/call\"")).count()
}
