//! The governance sections of the config — `[auth]`, `[roles]`, `[rate_limit]`,
//! `[kill_switch]`, `[validation]` — from raw TOML to typed, validated settings.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use super::source::{Problem, Source};
use super::{duration, key};
use crate::auth::AuthSettings;

#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    pub disabled: Option<bool>,
    pub hs256_secret: Option<String>,
    pub hs256_secret_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub role_claim: Option<String>,
    pub leeway: Option<String>,
    pub max_token_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRole {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub profiles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawQuota {
    pub per_minute: u32,
    pub burst: u32,
    pub per: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRateLimit {
    pub default: Option<RawQuota>,
    #[serde(default)]
    pub tools: IndexMap<String, RawQuota>,
    #[serde(default)]
    pub clients: IndexMap<String, RawQuota>,
    pub store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawKillSwitch {
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub backends: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawValidation {
    pub enabled: Option<bool>,
    pub schema_errors: Option<String>,
}

/// How callers are authenticated.
#[derive(Clone)]
pub enum AuthConfig {
    /// No authentication: every caller is trusted with every tool. Only on loopback.
    Disabled,
    /// Bearer JWTs, checked as these settings say.
    Jwt(AuthSettings),
}

impl std::fmt::Debug for AuthConfig {
    // `AuthSettings`' own Debug hides the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Disabled => f.write_str("Disabled"),
            AuthConfig::Jwt(j) => f.debug_tuple("Jwt").field(j).finish(),
        }
    }
}

/// One `[[role]]`: the names a token with this role may see and call.
#[derive(Debug, Clone)]
pub struct RoleConfig {
    /// The role's name, as tokens carry it.
    pub name: String,
    /// Globs over exposed names and resource URIs this role allows.
    pub allow: Vec<String>,
    /// Globs this role denies, whatever another role allows.
    pub deny: Vec<String>,
    /// The `[[profile]]`s where this role grants anything; `None`: everywhere, `/mcp` included.
    pub profiles: Option<Vec<String>>,
}

/// A rate: a sustained rate with room for a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Calls per minute, sustained.
    pub per_minute: NonZeroU32,
    /// Calls allowed at once on a full bucket.
    pub burst: NonZeroU32,
    /// One bucket per matched name (`"tool"`, the default), or one for all of them (`"glob"`).
    pub per: crate::rate_limit::Per,
}

/// `[rate_limit]`: quotas per client and name, first match wins.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    /// The quota of names no `tools` glob matches; `None`: unlimited.
    pub default: Option<QuotaConfig>,
    /// (glob over exposed tool names, quota), in file order: the first match applies.
    pub tools: Vec<(String, QuotaConfig)>,
    /// (client subject glob, quota): overrides the tool quotas for that client.
    pub clients: Vec<(String, QuotaConfig)>,
}

/// `[kill_switch]`: what the config switches off (the run-time list comes on top).
#[derive(Debug, Clone, Default)]
pub struct KillSwitchConfig {
    /// Globs over exposed tool (and prompt) names.
    pub tools: Vec<String>,
    /// Backends switched off whole, by name.
    pub backends: Vec<String>,
}

/// How a call whose arguments fail the schema is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaErrors {
    /// A tool result with `isError: true` listing every violation (the model can correct itself).
    Result,
    /// A JSON-RPC -32602 error with `data.violations`.
    JsonRpc,
}

/// `[validation]`: checking tool arguments against their `inputSchema`.
#[derive(Debug, Clone, Copy)]
pub struct ValidationConfig {
    /// Arguments are checked at all.
    pub enabled: bool,
    /// How a failed check is answered.
    pub schema_errors: SchemaErrors,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { enabled: true, schema_errors: SchemaErrors::Result }
    }
}

fn glob_ok(src: &Source, path: &[String], g: &str, problems: &mut Vec<Problem>) {
    if let Err(e) = globset::Glob::new(g) {
        problems.push(src.problem(path, format!("`{g}` is not a valid glob: {e}")));
    }
}

pub fn auth(src: &Source, raw: Option<RawAuth>, listen_is_loopback: bool, problems: &mut Vec<Problem>) -> AuthConfig {
    let Some(a) = raw else {
        problems.push(src.problem(
            &key(&["auth"]),
            "no `[auth]` section: set `hs256_secret = \"${SENTINEL_JWT_SECRET}\"` (or `jwks_url`/`jwks_file`), or `disabled = true` to run a loopback-only gateway without authentication",
        ));
        return AuthConfig::Disabled;
    };
    if a.disabled == Some(true) {
        if !listen_is_loopback {
            problems.push(src.problem(
                &key(&["auth", "disabled"]),
                "authentication can only be disabled on a loopback `listen` address; anyone who can reach the gateway could call every tool",
            ));
        }
        if a.hs256_secret.is_some() || a.jwks_url.is_some() || a.jwks_file.is_some() || a.hs256_secret_file.is_some() {
            problems.push(src.problem(
                &key(&["auth", "disabled"]),
                "`disabled = true` with keys configured: remove one or the other",
            ));
        }
        return AuthConfig::Disabled;
    }
    // Both set is one mistake, said once: not also "no key" (literal secrets are a check of
    // their own, in `checks`; the JWKS keys are checked there too, as the authenticator reads them).
    let both = a.hs256_secret.is_some() && a.hs256_secret_file.is_some();
    let secret = match (a.hs256_secret, a.hs256_secret_file) {
        (Some(_), Some(_)) => {
            problems.push(src.problem(
                &key(&["auth", "hs256_secret_file"]),
                "both `hs256_secret` and `hs256_secret_file` are set; keep one",
            ));
            None
        }
        (Some(s), None) => Some(s),
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) => {
                problems.push(src.problem(&key(&["auth", "hs256_secret_file"]), format!("cannot read `{f}`: {e}")));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(s) = &secret {
        if s.len() < 32 {
            problems.push(src.problem(
                &key(&["auth", "hs256_secret"]),
                "the HS256 secret is shorter than 32 bytes; generate one with `openssl rand -hex 32`",
            ));
        }
    }
    if !both && secret.is_none() && a.jwks_url.is_none() && a.jwks_file.is_none() {
        problems.push(src.problem(
            &key(&["auth"]),
            "`[auth]` needs a key: `hs256_secret` (or `hs256_secret_file`), `jwks_url` or `jwks_file` — or `disabled = true`",
        ));
    }
    let max_token_bytes = match a.max_token_bytes {
        None => 8192,
        Some(0) => {
            problems.push(src.problem(&key(&["auth", "max_token_bytes"]), "must be greater than zero"));
            1
        }
        Some(n) => n as usize,
    };
    AuthConfig::Jwt(AuthSettings {
        hs256_secret: secret,
        jwks_url: a.jwks_url,
        jwks_file: a.jwks_file.map(PathBuf::from),
        issuer: a.issuer,
        audience: a.audience,
        role_claim: a.role_claim.unwrap_or_else(|| "roles".into()),
        leeway: duration(src, &key(&["auth", "leeway"]), a.leeway.as_deref(), Duration::from_secs(30), problems),
        max_token_bytes,
    })
}

pub fn roles(src: &Source, raw: IndexMap<String, RawRole>, problems: &mut Vec<Problem>) -> Vec<RoleConfig> {
    raw.into_iter()
        .map(|(name, r)| {
            for (list, globs) in [("allow", &r.allow), ("deny", &r.deny)] {
                for (i, g) in globs.iter().enumerate() {
                    glob_ok(src, &key(&["roles", &name, list, &i.to_string()]), g, problems);
                }
            }
            RoleConfig { name, allow: r.allow, deny: r.deny, profiles: r.profiles }
        })
        .collect()
}

fn quota(src: &Source, path: &[String], q: RawQuota, problems: &mut Vec<Problem>) -> Option<QuotaConfig> {
    use crate::rate_limit::Per;
    let per = match q.per.as_deref() {
        None | Some("tool") => Per::Tool,
        Some("glob") => Per::Glob,
        Some(other) => {
            let mut at = path.to_vec();
            at.push("per".into());
            problems.push(src.problem(&at, format!("`{other}` is not one of \"tool\", \"glob\"")));
            Per::Tool
        }
    };
    match (NonZeroU32::new(q.per_minute), NonZeroU32::new(q.burst)) {
        (Some(per_minute), Some(burst)) => Some(QuotaConfig { per_minute, burst, per }),
        _ => {
            problems.push(src.problem(path, "`per_minute` and `burst` must both be at least 1"));
            None
        }
    }
}

pub fn rate_limit(src: &Source, raw: Option<RawRateLimit>, problems: &mut Vec<Problem>) -> RateLimitConfig {
    let Some(r) = raw else { return RateLimitConfig::default() };
    if r.store.is_some() {
        problems.push(src.problem(
            &key(&["rate_limit", "store"]),
            "is not a setting; remove `store` (limits are per process; replicas share theirs through `[cluster] redis`)",
        ));
    }
    let default = r.default.and_then(|q| quota(src, &key(&["rate_limit", "default"]), q, problems));
    let mut section = |name: &str, map: IndexMap<String, RawQuota>| -> Vec<(String, QuotaConfig)> {
        map.into_iter()
            .filter_map(|(g, q)| {
                let path = key(&["rate_limit", name, &g]);
                glob_ok(src, &path, &g, problems);
                quota(src, &path, q, problems).map(|q| (g, q))
            })
            .collect()
    };
    let tools = section("tools", r.tools);
    let clients = section("clients", r.clients);
    RateLimitConfig { default, tools, clients }
}

pub fn kill_switch(
    src: &Source,
    raw: Option<RawKillSwitch>,
    backends: &[String],
    problems: &mut Vec<Problem>,
) -> KillSwitchConfig {
    let Some(k) = raw else { return KillSwitchConfig::default() };
    for (i, g) in k.tools.iter().enumerate() {
        glob_ok(src, &key(&["kill_switch", "tools", &i.to_string()]), g, problems);
    }
    for (i, b) in k.backends.iter().enumerate() {
        if !backends.contains(b) {
            problems.push(src.problem(
                &key(&["kill_switch", "backends", &i.to_string()]),
                format!("no backend is named `{b}` (configured: {})", backends.join(", ")),
            ));
        }
    }
    KillSwitchConfig { tools: k.tools, backends: k.backends }
}

pub fn validation(src: &Source, raw: Option<RawValidation>, problems: &mut Vec<Problem>) -> ValidationConfig {
    let Some(v) = raw else { return ValidationConfig::default() };
    let schema_errors = match v.schema_errors.as_deref() {
        None | Some("result") => SchemaErrors::Result,
        Some("jsonrpc") => SchemaErrors::JsonRpc,
        Some(other) => {
            problems.push(src.problem(
                &key(&["validation", "schema_errors"]),
                format!("`{other}` is not one of \"result\", \"jsonrpc\""),
            ));
            SchemaErrors::Result
        }
    };
    ValidationConfig { enabled: v.enabled.unwrap_or(true), schema_errors }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudit {
    pub url: Option<String>,
    pub redact_keys: Option<Vec<String>>,
    pub on_audit_failure: Option<String>,
    pub spool_dir: Option<String>,
    pub retain: Option<String>,
    pub queue: Option<u64>,
    pub batch: Option<u64>,
    pub flush_interval: Option<String>,
    pub durability: Option<String>,
}

/// Where the audit trail goes and what happens when it cannot be written.
#[derive(Clone)]
pub struct AuditConfig {
    /// `sqlite:///absolute/path.db` or `postgres://...`; relative SQLite paths are resolved
    /// against the config file's folder (the working folder for the embedded default).
    pub url: String,
    /// Key patterns added to the built-in secret-looking ones: values of keys containing one
    /// (case, `-` and `_` ignored) are replaced by `"[redacted]"` at any depth.
    pub redact_keys: Vec<String>,
    /// When even the spool cannot be written: refuse calls (-32016), or go on and count it.
    pub fail_open: bool,
    /// The folder for the write-ahead spool and the dead-letter file.
    pub spool_dir: std::path::PathBuf,
    /// Records older than this are pruned in the background; `None` keeps them all.
    pub retain: Option<Duration>,
    /// How many records may wait for the spool writer.
    pub queue: usize,
    /// The most records in one spool append and one store insert.
    pub batch: usize,
    /// The longest the spool writer gathers a batch (and, with `durability = "write"`, the longest to its fsync).
    pub flush_interval: Duration,
    /// When a call's answer may go: once its record is written to the spool, or fsynced.
    pub durability: crate::audit::writer::Durability,
}

impl std::fmt::Debug for AuditConfig {
    // Hand-written: a PostgreSQL URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("url", &redact_url(&self.url))
            .field("redact_keys", &self.redact_keys)
            .field("fail_open", &self.fail_open)
            .field("spool_dir", &self.spool_dir)
            .field("retain", &self.retain)
            .field("durability", &self.durability)
            .finish()
    }
}

/// A database URL with its password hidden, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

pub fn audit(
    src: &Source,
    raw: Option<RawAudit>,
    base: &std::path::Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> AuditConfig {
    let a = raw.unwrap_or_default();
    if a.url.as_deref() == Some("none") {
        warnings.push(src.problem(
            &key(&["audit", "url"]),
            "no audit trail: calls leave only a log line, nothing durable (meant for benchmarks and development)",
        ));
    }
    let url = a.url.unwrap_or_else(|| "sqlite://sentinel-audit.db".into());
    let url = if let Some(path) = url.strip_prefix("sqlite://") {
        let p = std::path::Path::new(path);
        let abs = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        format!("sqlite://{}", abs.display())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") || url == "none" {
        url
    } else {
        problems.push(src.problem(
            &key(&["audit", "url"]),
            format!(
                "`{}` is not an audit store; write \"sqlite://path.db\" or \"postgres://user@host/db\"",
                redact_url(&url)
            ),
        ));
        url
    };
    let fail_open = match a.on_audit_failure.as_deref() {
        None | Some("fail_closed") => false,
        Some("fail_open") => true,
        Some(other) => {
            problems.push(src.problem(
                &key(&["audit", "on_audit_failure"]),
                format!("`{other}` is not one of \"fail_closed\", \"fail_open\""),
            ));
            false
        }
    };
    let durability = match a.durability.as_deref() {
        None | Some("write") => crate::audit::writer::Durability::Write,
        Some("fsync") => crate::audit::writer::Durability::Fsync,
        Some(other) => {
            problems.push(
                src.problem(&key(&["audit", "durability"]), format!("`{other}` is not one of \"write\", \"fsync\"")),
            );
            crate::audit::writer::Durability::Write
        }
    };
    let spool_dir = match a.spool_dir {
        Some(d) if std::path::Path::new(&d).is_absolute() => std::path::PathBuf::from(d),
        Some(d) => base.join(d),
        None => base.join("sentinel-audit-spool"),
    };
    let retain =
        a.retain.as_deref().map(|r| duration(src, &key(&["audit", "retain"]), Some(r), Duration::ZERO, problems));
    let count = |k: &str, v: Option<u64>, default: usize, problems: &mut Vec<Problem>| match v {
        None => default,
        Some(0) => {
            problems.push(src.problem(&key(&["audit", k]), "must be greater than zero"));
            default
        }
        Some(n) => n as usize,
    };
    AuditConfig {
        url,
        // Additions to the built-in patterns (`audit::redact::SECRET_KEY_PATTERNS`), never a replacement.
        redact_keys: a.redact_keys.unwrap_or_default(),
        fail_open,
        spool_dir,
        retain,
        queue: count("queue", a.queue, 10_000, problems),
        batch: count("batch", a.batch, 500, problems),
        flush_interval: duration(
            src,
            &key(&["audit", "flush_interval"]),
            a.flush_interval.as_deref(),
            Duration::from_millis(20),
            problems,
        ),
        durability,
    }
}

/// Why a reload must not take `new`'s authentication while the gateway listens on `in_force`
/// (the running listener's address: `listen` itself needs a restart, so the new file's
/// `listen` says nothing about who can reach the socket). `None` when the change is safe.
///
/// On a loopback listener anything goes (the file's own checks apply). On any other address a
/// reload may rotate keys, but may not turn authentication off, switch between a shared secret
/// and a JWKS (a change of mode, done by a restart that re-checks the whole file), or stop
/// checking an issuer or audience it checked before.
pub fn auth_downgrade(in_force: std::net::SocketAddr, old: &AuthConfig, new: &AuthConfig) -> Option<String> {
    if in_force.ip().is_loopback() {
        return None;
    }
    let why = match (old, new) {
        (_, AuthConfig::Disabled) => "turns authentication off".to_string(),
        (AuthConfig::Disabled, AuthConfig::Jwt(_)) => return None,
        (AuthConfig::Jwt(o), AuthConfig::Jwt(n)) => {
            let mode = |j: &AuthSettings| (j.hs256_secret.is_some(), j.jwks_url.is_some() || j.jwks_file.is_some());
            if mode(o) != mode(n) {
                "changes how tokens are verified (shared secret / JWKS)".to_string()
            } else if o.issuer.is_some() && n.issuer.is_none() {
                "stops requiring the issuer it required".to_string()
            } else if o.audience.is_some() && n.audience.is_none() {
                "stops requiring the audience it required".to_string()
            } else {
                return None;
            }
        }
    };
    Some(format!(
        "the new [auth] {why} while the gateway listens on {in_force}, which is not a loopback address \
         (`listen` changes only on a restart); restart `sentinel serve` to apply it"
    ))
}
