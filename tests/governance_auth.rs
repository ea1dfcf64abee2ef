//! Authentication through the real binary: every way a bearer token is refused over HTTP
//! (-32010, 401 with a `WWW-Authenticate: Bearer` challenge, `data.reason`, an audit record),
//! algorithm confusion against a JWKS, key rotation at a `jwks_url`, sessions bound to their
//! subject, the client's credentials kept from backends, and `sentinel stdio`'s token check.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::governance::*;
use common::*;
use serde_json::{Value, json};

fn initialize_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name":"sentinel-tests","version":"1"}}})
    .to_string()
}

/// Sends `initialize` with this token (or none) and checks the full shape of a refusal.
async fn assert_refused(url: &str, token: Option<&str>, reason: &str) -> Reply {
    let mut c = HttpClient::new(url);
    c.token = token.map(str::to_string);
    let r = c.post_raw(&initialize_body(), &[]).await;
    assert_eq!(r.status, 401, "{reason}: {r:?}");
    let challenge = r.headers.get("www-authenticate").unwrap_or_else(|| panic!("{reason}: no challenge: {r:?}"));
    let challenge = challenge.to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{reason}: {challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{reason}: {challenge}");
    let v = r.json();
    assert_eq!(v["id"], json!(1), "{reason}: {v}");
    assert_eq!(v["error"]["code"], json!(-32010), "{reason}: {v}");
    assert_eq!(v["error"]["data"]["reason"], json!(reason), "{v}");
    assert!(r.headers.get("mcp-session-id").is_none(), "{reason}: a refused caller got a session");
    if let Some(t) = token.filter(|t| t.len() > 20) {
        assert!(!r.body.contains(t) && !challenge.contains(t), "{reason}: the token is echoed back");
    }
    r
}

/// Waits until the log holds exactly `n` audit records with this outcome.
async fn assert_audited(gw: &Gateway, outcome: &str, n: usize) {
    eventually(&format!("{n} audit records with outcome={outcome}"), || async {
        audited(&gw.log(), outcome).len() >= n
    })
    .await;
    let records = audited(&gw.log(), outcome);
    assert_eq!(records.len(), n, "{records:?}");
}

#[tokio::test]
async fn each_refused_token_gets_401_with_its_reason_and_is_audited() {
    let config = format!("{}{ADMIN_ROLE}{}", hs256_auth("max_token_bytes = 1024"), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&config, &secret_env());

    // A valid token opens a session and calls a tool.
    let c = HttpClient::new(&gw.url).with_token(&token("alice", &["admin"])).initialized(json!({})).await;
    let ok = c.call("m__echo", json!({"x": 1})).await;
    assert_eq!(ok.json()["result"]["structuredContent"], json!({"x": 1}), "{ok:?}");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut claims = good_claims("mallory");
        f(&mut claims);
        sign_hs256(&claims, SECRET.as_bytes())
    };
    let expired = with(&|c| {
        c["iat"] = json!(now() - 7200);
        c["exp"] = json!(now() - 3600);
    });
    let not_yet_valid = with(&|c| c["nbf"] = json!(now() + 3600));
    let wrong_issuer = with(&|c| c["iss"] = json!("someone-else"));
    let wrong_audience = with(&|c| c["aud"] = json!("another-service"));
    let oversized = with(&|c| c["pad"] = json!("x".repeat(2000)));
    let other_secret = sign_hs256(&good_claims("mallory"), b"another-secret-of-at-least-32-bytes!!");
    // A valid token whose payload is swapped for one granting more: the signature no longer matches.
    let tampered = {
        let valid = token("mallory", &["reader"]);
        let parts: Vec<&str> = valid.split('.').collect();
        let forged = unsigned(&good_claims("mallory"));
        format!("{}.{}.{}", parts[0], forged.split('.').nth(1).unwrap(), parts[2])
    };
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some(expired), "expired"),
        (Some(not_yet_valid), "not_yet_valid"),
        (Some(wrong_issuer), "wrong_issuer"),
        (Some(wrong_audience), "wrong_audience"),
        (Some(other_secret), "bad_signature"),
        (Some(tampered), "bad_signature"),
        (Some(unsigned(&good_claims("mallory"))), "unsupported_algorithm"),
        (Some(oversized), "too_large"),
        (Some("not-a-jwt".into()), "malformed"),
    ];
    for (token, reason) in &cases {
        assert_refused(&gw.url, token.as_deref(), reason).await;
    }
    // A stateless request is refused alike.
    let r = HttpClient::modern(&gw.url).request("tools/list", json!({})).await;
    assert_eq!((r.status, r.error_code()), (401, Some(-32010)), "{r:?}");
    assert_eq!(r.json()["error"]["data"]["reason"], json!("missing"));
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer "));
    // A refused caller cannot use a valid session either.
    let stolen = HttpClient { token: Some(unsigned(&good_claims("alice"))), ..c.clone() };
    let r = stolen.request("tools/list", json!({})).await;
    assert_eq!((r.status, r.error_code()), (401, Some(-32010)), "{r:?}");

    assert_audited(&gw, "denied_auth", cases.len() + 2).await;
    let ok_records = audited(&gw.log(), "ok");
    assert!(ok_records.iter().any(|r| r["client"] == "alice" && r["tool"] == "m__echo"), "{ok_records:?}");
}

#[tokio::test]
async fn protected_resource_metadata_is_where_the_challenge_points() {
    let gw = Gateway::start_with_env(&hs256_auth(""), &secret_env());
    let r = assert_refused(&gw.url, None, "missing").await;
    let challenge = r.headers["www-authenticate"].to_str().unwrap().to_string();
    let at = challenge.split("resource_metadata=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert_eq!(at, format!("{}/.well-known/oauth-protected-resource", gw.base()));

    let resp = reqwest::get(at).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let meta: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(meta["resource"], json!(gw.url), "{meta}");
}

#[tokio::test]
async fn a_session_belongs_to_the_subject_that_opened_it() {
    let config = format!("{}{ADMIN_ROLE}{}", hs256_auth(""), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let alice = HttpClient::new(&gw.url).with_token(&token("alice", &["admin"])).initialized(json!({})).await;
    let bob = HttpClient { token: Some(token("bob", &["admin"])), ..alice.clone() };

    let r = bob.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "bob used alice's session: {r:?}");
    let r = bob.call("m__echo", json!({})).await;
    assert_eq!(r.status, 404, "bob called through alice's session: {r:?}");
    let mut get = reqwest::Client::new()
        .get(&gw.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", alice.session.as_deref().unwrap())
        .bearer_auth(bob.token.as_deref().unwrap());
    assert_eq!(get.try_clone().unwrap().send().await.unwrap().status(), 404, "bob opened alice's GET stream");
    get = reqwest::Client::new()
        .delete(&gw.url)
        .header("mcp-session-id", alice.session.as_deref().unwrap())
        .bearer_auth(bob.token.as_deref().unwrap());
    assert_eq!(get.send().await.unwrap().status(), 404, "bob ended alice's session");

    let r = alice.request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "alice's session still works: {r:?}");
}

#[tokio::test]
async fn the_clients_authorization_never_reaches_an_http_backend() {
    let backend = MockHttp::start(&[]);
    let config = format!("{}{ADMIN_ROLE}{}", hs256_auth(""), http_backend("h", None, &backend.url));
    let gw = Gateway::start_with_env(&config, &secret_env());
    let t = token("alice", &["admin"]);
    for c in [HttpClient::new(&gw.url).with_token(&t).initialized(json!({})).await, {
        let mut m = HttpClient::modern(&gw.url);
        m.token = Some(t.clone());
        m
    }] {
        let r = c.call("h__whoami", json!({})).await;
        let headers = &r.json()["result"]["structuredContent"]["headers"];
        assert!(headers.get("content-type").is_some(), "whoami reports the headers it got: {r:?}");
        assert!(headers.get("authorization").is_none(), "the client's token reached the backend: {headers}");
        let secret = &t[t.len() - 20..];
        assert!(!headers.to_string().contains(secret), "{headers}");
    }
}

/// With only a JWKS configured, an HS256 token whose HMAC key is the RSA public key (the
/// classic algorithm confusion) is refused, while RS256 and ES256 tokens from the JWKS work.
#[tokio::test]
async fn algorithm_confusion_against_a_jwks_is_refused() {
    let auth = format!(
        "[auth]\njwks_file = {}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
        lit(fixture("jwt-test-jwks.json").to_string_lossy())
    );
    let gw = Gateway::start(&auth);
    let claims = good_claims("alice");
    for t in [
        sign_rs256(&claims, "jwt-test-rsa-private.test-pem", "rsa-1"),
        sign_es256(&claims, "jwt-test-ec-private.test-pem", "ec-1"),
    ] {
        HttpClient::new(&gw.url).with_token(&t).initialized(json!({})).await;
    }
    let public_pem = std::fs::read(fixture("jwt-test-rsa-public.test-pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let with_kid =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&public_pem)).unwrap();
    for t in [with_kid, sign_hs256(&claims, &public_pem)] {
        assert_refused(&gw.url, Some(&t), "unsupported_algorithm").await;
    }
    // The right kid but another key's signature.
    assert_refused(&gw.url, Some(&sign_rs256(&claims, "jwt-test-rsa-b-private.test-pem", "rsa-1")), "bad_signature")
        .await;
    assert_audited(&gw, "denied_auth", 3).await;
}

/// A local issuer serving a JWKS that the test can swap, counting fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Vec<u8>>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Runs on its own thread and runtime, so that the blocking `Gateway::start` (which waits
    /// for a gateway that fetches the JWKS at start) cannot starve it.
    fn start(jwks: &str) -> JwksServer {
        let body = Arc::new(Mutex::new(std::fs::read(fixture(jwks)).unwrap()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (b, f) = (body.clone(), fetches.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/jwks.json",
                    axum::routing::get(move || {
                        let (b, f) = (b.clone(), f.clone());
                        async move {
                            f.fetch_add(1, Ordering::SeqCst);
                            let body = b.lock().unwrap().clone();
                            ([(http::header::CONTENT_TYPE, "application/json")], body)
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        JwksServer { url: format!("http://{addr}/jwks.json"), body, fetches }
    }

    fn serve(&self, jwks: &str) {
        *self.body.lock().unwrap() = std::fs::read(fixture(jwks)).unwrap();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_rotated_jwks_is_picked_up_without_a_restart() {
    let issuer = JwksServer::start("jwt-test-jwks.json");
    let auth = format!("[auth]\njwks_url = {}\naudience = \"{AUDIENCE}\"\n", lit(&issuer.url));
    let gw = Gateway::start(&format!("{auth}{ADMIN_ROLE}{}", mock_stdio_backend("m", None, &[])));
    assert_eq!(issuer.fetches(), 1, "the JWKS is loaded at start");
    let claims = good_claims("alice");
    let token_a = sign_rs256(&claims, "jwt-test-rsa-private.test-pem", "rsa-1");
    let token_b = sign_rs256(&claims, "jwt-test-rsa-b-private.test-pem", "rsa-b");

    let a = HttpClient::new(&gw.url).with_token(&token_a).initialized(json!({})).await;
    assert_eq!(a.call("m__echo", json!({})).await.status, 200);
    assert_eq!(issuer.fetches(), 1, "a known kid never waits on the network");

    issuer.serve("jwt-test-jwks-b.json");
    let b = HttpClient::new(&gw.url).with_token(&token_b).initialized(json!({})).await;
    let r = b.call("m__echo", json!({"rotated": true})).await;
    assert_eq!(r.json()["result"]["structuredContent"], json!({"rotated": true}), "{r:?}");
    assert_eq!(issuer.fetches(), 2, "the unknown kid triggered one refetch");

    // The new set replaced the old one: key A is gone, and another unknown kid does not make
    // the gateway refetch at once (the issuer is not hammered).
    assert_refused(&gw.url, Some(&token_a), "unknown_key").await;
    assert_refused(&gw.url, Some(&sign_rs256(&claims, "jwt-test-rsa-b-private.test-pem", "rsa-x")), "unknown_key")
        .await;
    assert_eq!(issuer.fetches(), 2);
    assert_eq!(b.call("m__echo", json!({})).await.status, 200);
}

/// `sentinel stdio` with a config of its own; the backend logs what it receives.
struct StdioSetup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    backend_log: std::path::PathBuf,
}

fn stdio_setup() -> StdioSetup {
    let dir = tempfile::tempdir().unwrap();
    let backend_log = dir.path().join("backend.log");
    let config = dir.path().join("sentinel.toml");
    let body = format!(
        "{}[roles.reader]\nallow = [\"m__echo\", \"m__whoami\"]\n\n{}",
        hs256_auth(""),
        mock_stdio_backend("m", None, &["--log", backend_log.to_str().unwrap()])
    );
    std::fs::write(&config, body).unwrap();
    StdioSetup { dir, config, backend_log }
}

/// Runs `sentinel stdio` with this token (or none) and an `initialize` on stdin.
fn run_stdio(s: &StdioSetup, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(sentinel_bin());
    cmd.args(["stdio", "-c"])
        .arg(&s.config)
        .current_dir(s.dir.path())
        .env_remove("SENTINEL_TOKEN")
        .env_remove("SENTINEL_LOG")
        .env("SENTINEL_JWT_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("SENTINEL_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The process may already have exited; a broken pipe is fine.
    let _ = writeln!(stdin, "{}", initialize_body());
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn stdio_without_a_valid_token_exits_with_one_line() {
    let s = stdio_setup();
    let expired = {
        let mut c = good_claims("alice");
        c["exp"] = json!(now() - 3600);
        sign_hs256(&c, SECRET.as_bytes())
    };
    let cases: [(Option<&str>, &str); 4] = [
        (None, "SENTINEL_TOKEN is not set"),
        (Some(&expired), "expired"),
        (Some("garbage"), "malformed"),
        (Some(&unsigned(&good_claims("alice"))), "algorithm"),
    ];
    for (token, says) in cases {
        let out = run_stdio(&s, token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{says}: exited {:?}", out.status);
        assert!(out.stdout.is_empty(), "{says}: MCP traffic on stdout: {}", String::from_utf8_lossy(&out.stdout));
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{says}: not one line: {stderr}");
        assert!(lines[0].contains("SENTINEL_TOKEN") && lines[0].contains(says), "{says}: {stderr}");
        assert!(token.is_none_or(|t| t.len() < 20 || !stderr.contains(t)), "the token is echoed: {stderr}");
    }
    assert!(mock_log(&s.backend_log).is_empty(), "a backend was started before the token was checked");
}

#[tokio::test]
async fn stdio_with_a_valid_token_serves_what_its_roles_allow() {
    let s = stdio_setup();
    let t = token("alice", &["reader"]);
    let mut c = StdioClient::spawn_with_env(
        &sentinel_bin(),
        &["stdio", "-c", s.config.to_str().unwrap()],
        Some(s.dir.path()),
        &[("SENTINEL_TOKEN", &t), ("SENTINEL_JWT_SECRET", SECRET)],
    );
    let init: Value = serde_json::from_str(&c.initialize().await).unwrap();
    assert!(init["result"]["protocolVersion"].is_string(), "{init}");
    let list: Value = serde_json::from_str(&c.request(json!(2), "tools/list", json!({})).await).unwrap();
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["m__echo", "m__whoami"], "{list}");
    let r: Value = serde_json::from_str(
        &c.request(json!(3), "tools/call", json!({"name": "m__echo", "arguments": {"via": "stdio"}})).await,
    )
    .unwrap();
    assert_eq!(r["result"]["structuredContent"], json!({"via": "stdio"}), "{r}");
    let r: Value = serde_json::from_str(
        &c.request(json!(4), "tools/call", json!({"name": "m__test_simple_text", "arguments": {}})).await,
    )
    .unwrap();
    assert_eq!(r["error"]["code"], json!(-32011), "{r}");
    assert_eq!(r["error"]["data"]["roles"], json!(["reader"]), "{r}");
}

/// A token whose `exp` passed a second ago, or whose `nbf` is ten seconds ahead, is within the
/// default 30 s leeway: accepted at authentication and on every request after it (the check
/// that runs on each request is the same one, with the same leeway). One a minute past `exp`
/// is not.
fn tokens_at_the_leeway_edges() -> [(String, &'static str); 2] {
    let claims = || {
        let mut c = good_claims("alice");
        // `admin` for the HTTP gateway's config, `reader` for the stdio one's.
        c["roles"] = json!(["admin", "reader"]);
        c
    };
    let mut expired_just_now = claims();
    expired_just_now["exp"] = json!(now() - 1);
    let mut not_yet_valid = claims();
    not_yet_valid["nbf"] = json!(now() + 10);
    [
        (sign_hs256(&expired_just_now, SECRET.as_bytes()), "exp one second ago"),
        (sign_hs256(&not_yet_valid, SECRET.as_bytes()), "nbf ten seconds ahead"),
    ]
}

#[tokio::test]
async fn the_leeway_applies_to_exp_and_nbf_at_the_http_front() {
    let config = format!("{}{ADMIN_ROLE}{}", hs256_auth(""), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&config, &secret_env());
    for (t, what) in tokens_at_the_leeway_edges() {
        let stateless = HttpClient::modern(&gw.url).with_token(&t);
        let r = stateless.call("m__echo", json!({"via": what})).await;
        assert_eq!((r.status, r.error_code()), (200, None), "{what}: {r:?}");
        let session = HttpClient::new(&gw.url).with_token(&t).initialized(json!({})).await;
        let r = session.call("m__echo", json!({"via": what})).await;
        assert_eq!((r.status, r.json()["result"]["structuredContent"]["via"].clone()), (200, json!(what)), "{r:?}");
    }
    let mut long_expired = good_claims("alice");
    long_expired["exp"] = json!(now() - 60);
    assert_refused(&gw.url, Some(&sign_hs256(&long_expired, SECRET.as_bytes())), "expired").await;
}

#[tokio::test]
async fn the_leeway_applies_to_exp_and_nbf_over_stdio() {
    let s = stdio_setup();
    for (t, what) in tokens_at_the_leeway_edges() {
        let mut c = StdioClient::spawn_with_env(
            &sentinel_bin(),
            &["stdio", "-c", s.config.to_str().unwrap()],
            Some(s.dir.path()),
            &[("SENTINEL_TOKEN", &t), ("SENTINEL_JWT_SECRET", SECRET)],
        );
        let r: Value = serde_json::from_str(
            &c.request_modern(json!(1), "tools/call", json!({"name": "m__echo", "arguments": {"via": what}})).await,
        )
        .unwrap();
        assert_eq!(r["result"]["structuredContent"], json!({"via": what}), "{what}: {r}");
    }
}
