//! The checks a config must pass once every section is read: the ones that look across
//! sections, or at the files and keys a section names.
//!
//! This is the one list every command runs (through `Config::load`): `check`, `doctor`, the
//! pre-check of `reload`, SIGHUP, `serve` and `stdio`. A check added here refuses the same
//! configs with the same message everywhere, so `sentinel check` can never pass a file the
//! daemon then refuses. Each check returns what it found, located in the file.

use super::source::{Problem, Source};
use super::{AuthConfig, Config, NamingStyle, TransportConfig, key};

/// What a check found.
pub(super) enum Finding {
    /// The config is refused.
    Problem(Problem),
    /// Accepted, but worth changing. (No check in the list gives one yet; the section
    /// validators' warnings, such as `[audit] url = "none"`, come from there.)
    #[allow(dead_code)]
    Warning(Problem),
    /// Accepted with a warning from `check`; `doctor` fails it.
    LiteralSecret(Problem),
}

/// One named check.
pub(super) struct Check {
    #[allow(dead_code)] // read in tests, and by whoever debugs which check said what
    pub name: &'static str,
    pub run: fn(&Source, &Config) -> Vec<Finding>,
}

/// Every check, in the order its findings are reported.
pub(super) const CHECKS: &[Check] = &[
    Check { name: "auth keys", run: auth_keys },
    Check { name: "contextforge naming", run: contextforge_naming },
    Check { name: "literal secrets", run: literal_secrets },
];

/// Runs every check and sorts what they found into the config's lists.
pub(super) fn run(src: &Source, config: &mut Config, problems: &mut Vec<Problem>) {
    let found: Vec<Finding> = CHECKS.iter().flat_map(|c| (c.run)(src, config)).collect();
    for f in found {
        match f {
            Finding::Problem(p) => problems.push(p),
            Finding::Warning(p) => config.warnings.push(p),
            Finding::LiteralSecret(p) => config.literal_secrets.push(p),
        }
    }
}

/// The keys tokens are checked with, exactly as the authenticator will read them at start: a
/// JWKS URL it may fetch, a JWKS file it can load, a role claim it can follow.
fn auth_keys(src: &Source, config: &Config) -> Vec<Finding> {
    let AuthConfig::Jwt(j) = &config.auth else { return Vec::new() };
    let mut out = Vec::new();
    let mut problem = |k: &str, m: String| out.push(Finding::Problem(src.problem(&key(&["auth", k]), m)));
    if j.jwks_url.is_some() && j.jwks_file.is_some() {
        problem("jwks_file", "set `jwks_url` or `jwks_file`, not both".into());
    }
    if let Some(u) = &j.jwks_url
        && let Err(e) = crate::auth::jwks_url(u)
    {
        // The URL may carry a key in its query: only what the authenticator would show.
        problem("jwks_url", format!("`{}` {e}", u.split('?').next().unwrap_or_default()));
    }
    if let Some(f) = &j.jwks_file
        && let Err(e) = crate::auth::check_jwks_file(f)
    {
        problem("jwks_file", format!("cannot load the JWKS from `{}`: {e}", f.display()));
    }
    if let Err(e) = crate::auth::check_role_claim(&j.role_claim) {
        problem("role_claim", e.to_string());
    }
    out
}

/// In the `contextforge` style a name is ContextForge's `<backend-slug>-<tool-slug>`: a
/// `prefix` would change nothing, and a user who set one expects it to.
fn contextforge_naming(src: &Source, config: &Config) -> Vec<Finding> {
    if config.naming.style != NamingStyle::ContextForge {
        return Vec::new();
    }
    (0..config.backends.len())
        .filter(|i| src.raw_value_exists(&key(&["backend", &i.to_string(), "prefix"])))
        .map(|i| {
            Finding::Problem(src.problem(
                &key(&["backend", &i.to_string(), "prefix"]),
                "`prefix` has no effect with `[naming] style = \"contextforge\"`, where every name is \
                 <backend-slug><separator><tool-slug> as ContextForge made it; remove it (the backend's `name` \
                 gives the slug)",
            ))
        })
        .collect()
}

/// Secrets written in the file itself rather than `${VAR}` or a `*_file`: the HS256 secret,
/// credentials in backend headers and environments, a database password, a chat webhook URL.
fn literal_secrets(src: &Source, config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    // `{credential}` is the caller's credential, filled in per call: not a secret in the file.
    let literal = |path: &[String]| {
        src.raw_string(path)
            .is_some_and(|v| !v.is_empty() && !v.contains("${") && !v.contains(super::per_user::CREDENTIAL_PLACEHOLDER))
    };
    let mut flag = |path: Vec<String>, instead: &str| {
        out.push(Finding::LiteralSecret(
            src.problem(&path, format!("a secret is written in the file; {instead} so that it stays out of it")),
        ));
    };
    if literal(&key(&["auth", "hs256_secret"])) {
        flag(key(&["auth", "hs256_secret"]), "write \"${SENTINEL_JWT_SECRET}\" or use `hs256_secret_file`");
    }
    for (i, b) in config.backends.iter().enumerate() {
        let i = i.to_string();
        match &b.transport {
            TransportConfig::Http { headers, .. } => {
                for (name, _) in headers.iter().filter(|(n, _)| secret_like(n)) {
                    let path = key(&["backend", &i, "http", "headers", name]);
                    if literal(&path) {
                        flag(
                            path,
                            &format!(
                                "write the credential as \"${{VAR}}\" (e.g. \"Bearer ${{{}_TOKEN}}\")",
                                env_name(&b.name)
                            ),
                        );
                    }
                }
            }
            TransportConfig::Stdio { env, .. } => {
                for name in env.keys().filter(|n| secret_like(n)) {
                    let path = key(&["backend", &i, "stdio", "env", name]);
                    if literal(&path) {
                        flag(path, &format!("write \"${{{name}}}\" and export {name}"));
                    }
                }
            }
        }
    }
    let audit_url = key(&["audit", "url"]);
    if literal(&audit_url) && src.raw_string(&audit_url).is_some_and(|u| has_password(&u)) {
        flag(audit_url, "write the password as \"${PGPASSWORD}\" (e.g. postgres://sentinel:${PGPASSWORD}@host/db)");
    }
    let redis_url = key(&["cluster", "redis"]);
    if literal(&redis_url) && src.raw_string(&redis_url).is_some_and(|u| has_password(&u)) {
        flag(redis_url, "write the password as \"${REDIS_PASSWORD}\" (e.g. redis://:${REDIS_PASSWORD}@host:6379)");
    }
    for (i, w) in config.alerts.webhooks.iter().enumerate() {
        let path = key(&["alerts", "webhook", &i.to_string(), "url"]);
        // Discord and Slack webhook URLs are credentials: whoever has one can post.
        if w.format != crate::alerts::Format::Generic && literal(&path) {
            flag(path, "write \"${DISCORD_WEBHOOK}\" (or your variable's name)");
        }
    }
    out
}

/// Whether a header or variable name says it holds a credential.
fn secret_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let words = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    let word_is_secret = |w: &str| {
        matches!(w, "key" | "auth" | "pwd" | "cookie" | "credential" | "credentials" | "private" | "pat")
            || ["token", "secret", "password", "passwd", "apikey", "authorization"].iter().any(|s| w.contains(s))
    };
    words.clone().any(word_is_secret)
}

/// A backend name as an environment variable name (`my-server` → `MY_SERVER`).
fn env_name(backend: &str) -> String {
    backend.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn has_password(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.password().is_some_and(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_like_names() {
        for yes in
            ["Authorization", "X-Api-Key", "FIRECRAWL_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "apikey", "Cookie"]
        {
            assert!(secret_like(yes), "{yes}");
        }
        for no in ["NODE_ENV", "KEYBOARD", "Accept", "X-Region", "PATH", "LOG_LEVEL"] {
            assert!(!secret_like(no), "{no}");
        }
    }

    #[test]
    fn every_check_has_a_name() {
        assert!(CHECKS.iter().all(|c| !c.name.is_empty()));
    }
}
