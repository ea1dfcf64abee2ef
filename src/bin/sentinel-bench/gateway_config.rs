//! The `sentinel.toml` of each scenario, and the tokens its clients present.
//!
//! Governance off is the bare proxy: no authentication, no audit store, no validation.
//! Governance on turns every stage of the pipeline on, each doing real work on every call:
//! an HS256 JWT, a role whose allow and deny globs are both evaluated, a kill switch with an
//! entry, a rate limit sized never to trigger, argument validation against the `bench` tool's
//! inputSchema, and an audit record per call in PostgreSQL.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

pub const ISSUER: &str = "sentinel-bench";
pub const AUDIENCE: &str = "sentinel";
const ROLE: &str = "bench";
/// The environment variable the gateway reads its HS256 secret from.
pub const SECRET_ENV: &str = "SENTINEL_JWT_SECRET";

/// How Sentinel reaches a backend.
pub enum BackendSpec<'a> {
    Http(&'a str),
    /// `mcp-mock` over stdio.
    Stdio(&'a Path),
}

/// Governance on: the secret tokens are signed with, where audit records go, and where
/// traced scenarios export their spans.
pub struct Governed {
    pub secret: String,
    pub audit_url: String,
    pub otlp_url: Option<String>,
    /// `[telemetry] sample_ratio` of traced scenarios.
    pub sample_ratio: f64,
    /// `[cluster] redis` of cluster scenarios, and the run's own key prefix there.
    pub redis_url: String,
    pub key_prefix: String,
}

impl Governed {
    pub fn new(audit_url: &str) -> Governed {
        // 64 hex digits of randomness, per run.
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let key_prefix = format!("sentinel-bench-{}:", uuid::Uuid::new_v4().simple());
        Governed {
            secret,
            audit_url: audit_url.to_string(),
            otlp_url: None,
            sample_ratio: 1.0,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix,
        }
    }

    /// A token for `sub` with the bench role, as `sentinel token` mints them.
    pub fn token(&self, sub: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims =
            json!({"sub": sub, "roles": [ROLE], "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 24 * 3600});
        let key = jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes());
        Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key)?)
    }
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The whole config: loopback on a free port, the governance sections, then the backends
/// (each `required`, so that `/ready` means they answer). `audit: false` keeps the rest of
/// governance but no audit store; `traced` adds `[telemetry]` (every trace exported), and
/// `cluster` `[cluster]` (rate limits in Redis).
pub fn config(
    backends: &[(&str, BackendSpec)],
    governed: Option<&Governed>,
    audit: bool,
    traced: bool,
    cluster: bool,
) -> String {
    let mut c = String::from("[server]\nlisten = \"127.0.0.1:0\"\n\n");
    match governed {
        None => c.push_str("[auth]\ndisabled = true\n\n[audit]\nurl = \"none\"\n\n[validation]\nenabled = false\n\n"),
        Some(g) => {
            c.push_str(&format!(
                "[auth]\nhs256_secret = \"${{{SECRET_ENV}}}\"\nissuer = {}\naudience = {}\n\n",
                lit(ISSUER),
                lit(AUDIENCE)
            ));
            // Deny globs that never match a called tool still have to be evaluated on each call.
            c.push_str(&format!(
                "[roles.{ROLE}]\nallow = [\"*__bench\", \"*__echo\"]\ndeny = [\"*__crash\", \"*__add_tool\"]\n\n"
            ));
            // 60 million a minute with a burst of a million: never reached, always counted.
            c.push_str("[rate_limit]\ndefault = { per_minute = 60000000, burst = 1000000 }\n\n");
            c.push_str("[kill_switch]\ntools = [\"*__garbage\"]\n\n");
            let store = if audit { g.audit_url.as_str() } else { "none" };
            c.push_str(&format!("[audit]\nurl = {}\n\n[validation]\nenabled = true\n\n", lit(store)));
            if let (true, Some(otlp)) = (traced, &g.otlp_url) {
                c.push_str(&format!(
                    "[telemetry]\notlp_endpoint = {}\nsample_ratio = {:?}\n\n",
                    lit(otlp),
                    g.sample_ratio
                ));
            }
            if cluster {
                c.push_str(&format!(
                    "[cluster]\nredis = {}\nkey_prefix = {}\n\n",
                    lit(&g.redis_url),
                    lit(&g.key_prefix)
                ));
            }
        }
    }
    for (name, spec) in backends {
        c.push_str(&format!("[[backend]]\nname = {}\nrequired = true\n", lit(name)));
        match spec {
            BackendSpec::Http(url) => c.push_str(&format!("http = {{ url = {} }}\n\n", lit(url))),
            BackendSpec::Stdio(mock) => {
                c.push_str(&format!("stdio = {{ command = {} }}\n\n", lit(&mock.to_string_lossy())));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_configs_are_toml_with_the_sections_they_promise() {
        let mock = Path::new("/bin/mcp-mock");
        let off: toml::Table = config(&[("mock", BackendSpec::Stdio(mock))], None, true, false, false).parse().unwrap();
        assert_eq!(off["auth"]["disabled"].as_bool(), Some(true));
        assert_eq!(off["audit"]["url"].as_str(), Some("none"));
        let mut g = Governed::new("postgres://postgres@127.0.0.1/x");
        let on: toml::Table =
            config(&[("mock", BackendSpec::Http("http://127.0.0.1:1/mcp"))], Some(&g), true, false, false)
                .parse()
                .unwrap();
        for section in ["auth", "roles", "rate_limit", "kill_switch", "audit", "validation"] {
            assert!(on.contains_key(section), "{section}");
        }
        assert_eq!(on["validation"]["enabled"].as_bool(), Some(true));
        assert!(!on.contains_key("telemetry"));
        g.otlp_url = Some("http://127.0.0.1:4318".into());
        let traced: toml::Table =
            config(&[("mock", BackendSpec::Http("http://127.0.0.1:1/mcp"))], Some(&g), true, true, false)
                .parse()
                .unwrap();
        assert_eq!(traced["telemetry"]["otlp_endpoint"].as_str(), Some("http://127.0.0.1:4318"));
        assert_eq!(traced["telemetry"]["sample_ratio"].as_float(), Some(1.0));
        assert!(!traced.contains_key("cluster"));
        let cluster: toml::Table =
            config(&[("mock", BackendSpec::Http("http://127.0.0.1:1/mcp"))], Some(&g), true, false, true)
                .parse()
                .unwrap();
        assert_eq!(cluster["cluster"]["redis"].as_str(), Some("redis://127.0.0.1:6379"));
        assert!(cluster["cluster"]["key_prefix"].as_str().is_some_and(|p| p.starts_with("sentinel-bench-")));
    }
}
