//! Helpers for the governance tests: an `[auth]` section and tokens for it (valid ones minted
//! by the library, bad ones crafted by hand), the audit lines of a gateway's log, SIGHUP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The HS256 secret of the test gateways, passed as `SENTINEL_JWT_SECRET`.
pub const SECRET: &str = "governance-test-secret-0123456789abcdef";
pub const ISSUER: &str = "sentinel-tests";
pub const AUDIENCE: &str = "sentinel-gw";

/// `[auth]` with the HS256 secret from the environment, an issuer and an audience, and
/// `extra` lines.
pub fn hs256_auth(extra: &str) -> String {
    format!(
        "[auth]\nhs256_secret = \"${{SENTINEL_JWT_SECRET}}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}\n"
    )
}

/// A role that may use everything.
pub const ADMIN_ROLE: &str = "[roles.admin]\nallow = [\"*\"]\n";

/// The environment `hs256_auth` needs.
pub fn secret_env() -> [(&'static str, &'static str); 1] {
    [("SENTINEL_JWT_SECRET", SECRET)]
}

/// A valid token for `sub` with these roles, minted by the library as `sentinel token` does.
pub fn token(sub: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(std::string::ToString::to_string).collect();
    sentinel::auth::mint_hs256(SECRET, sub, &roles, Duration::from_secs(3600), Some(ISSUER), Some(AUDIENCE))
        .expect("mint")
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims that pass every check of `hs256_auth`, to be spoiled one at a time.
pub fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600})
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// Signs `claims` with RS256 and the PEM private key of a fixture, naming `kid`.
pub fn sign_rs256(claims: &Value, private_pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture(private_pem)).unwrap()).expect("RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Signs `claims` with ES256 and the PEM private key of a fixture, naming `kid`.
pub fn sign_es256(claims: &Value, private_pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture(private_pem)).unwrap()).expect("EC key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// An unsigned token (`alg: none`, empty signature), built by hand: no library mints one.
pub fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", part(&json!({"alg": "none", "typ": "JWT"})), part(claims))
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The audit records in a gateway's log: the fields of each `audit` line, values unquoted.
pub fn audit_records(log: &str) -> Vec<HashMap<String, String>> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains(" audit: "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

/// The audit records with this outcome.
pub fn audited(log: &str, outcome: &str) -> Vec<HashMap<String, String>> {
    audit_records(log).into_iter().filter(|r| r.get("outcome").map(String::as_str) == Some(outcome)).collect()
}

/// The log without terminal colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends SIGHUP to a process, as `kill -HUP PID` does.
pub fn sighup(pid: u32) {
    let status = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -HUP {pid} failed");
}
