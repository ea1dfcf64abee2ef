//! A backend's identity at its server: `credentials` (whose credential its header or env
//! templates take) and `instances` (one stdio child for everyone, or one per user).
//!
//! `{credential}` in a header value or an `env` value is where the caller's credential goes;
//! it is allowed only on a backend that has one per caller, and such a backend must use it
//! somewhere (a credential that goes nowhere is a mistake, not a mode).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::source::{Needs, Problem, Source};
use super::{BackendConfig, TransportConfig, key};

/// Where a backend's per-caller credential goes in its header and `env` values.
pub const CREDENTIAL_PLACEHOLDER: &str = "{credential}";

/// How long a per-user instance may stay unused before it is stopped, unless configured.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How many per-user instances of one backend may run at once, unless configured.
const DEFAULT_MAX_INSTANCES: usize = 50;

/// `credentials = ...` as written: a word, or a table naming a token exchange.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCredentialMode {
    /// `"per_user"` (or `"shared"`, the default).
    Word(String),
    /// `{ token_exchange = { ... } }`.
    Table {
        /// RFC 8693 settings.
        token_exchange: RawTokenExchange,
    },
}

/// `token_exchange = { ... }` as written.
#[derive(Debug, Deserialize)]
pub struct RawTokenExchange {
    pub token_url: String,
    pub client_id: String,
    pub client_secret_file: String,
    pub audience: Option<String>,
    pub scope: Option<String>,
}

/// Whose credential a backend's templates take.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CredentialMode {
    /// The operator's, written in the config (or none): the same for every caller.
    #[default]
    Shared,
    /// The caller's own, from the credential store (`sentinel credentials set`).
    PerUser,
    /// A token the identity provider issues for the caller in exchange for their verified JWT.
    TokenExchange(Arc<TokenExchangeConfig>),
}

impl CredentialMode {
    /// How the audit trail and metrics name the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialMode::Shared => "shared",
            CredentialMode::PerUser => "per_user",
            CredentialMode::TokenExchange(_) => "token_exchange",
        }
    }

    /// Whether each caller brings their own credential.
    pub fn is_per_caller(&self) -> bool {
        !matches!(self, CredentialMode::Shared)
    }
}

/// `token_exchange`, checked; the client secret is read at start (`read_secrets`).
#[derive(Clone, PartialEq)]
pub struct TokenExchangeConfig {
    /// The provider's token endpoint.
    pub token_url: reqwest::Url,
    /// Sentinel's client id there.
    pub client_id: String,
    /// Where Sentinel's client secret is.
    pub client_secret_file: PathBuf,
    /// The secret itself, once read (empty until then).
    pub client_secret: String,
    /// The `audience` asked for.
    pub audience: Option<String>,
    /// The `scope` asked for.
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenExchangeConfig {
    // Never the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeConfig")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// How many processes (or HTTP sessions) serve a backend's callers.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum InstanceMode {
    /// One, shared by every caller.
    #[default]
    Shared,
    /// One per caller, started on first use.
    PerUser {
        /// Stopped after this long without a call.
        idle_timeout: Duration,
        /// At most this many at once; the next caller gets -32014.
        max_instances: usize,
    },
}

/// The raw keys of one backend that this module reads.
pub struct RawIdentity {
    pub credentials: Option<RawCredentialMode>,
    pub instances: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_instances: Option<u64>,
    pub list_as: Option<String>,
}

/// Checks `credentials`, `instances` and the `{credential}` placeholders of backend `i`.
pub fn identity(
    src: &Source,
    i: usize,
    raw: RawIdentity,
    transport: &TransportConfig,
    problems: &mut Vec<Problem>,
) -> (CredentialMode, InstanceMode, Option<String>) {
    let at = |k: &str| key(&["backend", &i.to_string(), k]);
    let credentials = match raw.credentials {
        None => CredentialMode::Shared,
        Some(RawCredentialMode::Word(w)) if w == "shared" => CredentialMode::Shared,
        Some(RawCredentialMode::Word(w)) if w == "per_user" => CredentialMode::PerUser,
        Some(RawCredentialMode::Word(w)) => {
            problems.push(src.problem(
                &at("credentials"),
                format!("`{w}` is not a credential mode; write \"per_user\" or {{ token_exchange = {{ ... }} }}"),
            ));
            CredentialMode::Shared
        }
        Some(RawCredentialMode::Table { token_exchange: t }) => {
            let here = |k: &str| key(&["backend", &i.to_string(), "credentials", "token_exchange", k]);
            let url = match reqwest::Url::parse(&t.token_url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
                _ => {
                    problems.push(src.problem(&here("token_url"), format!("`{}` is not an http(s) URL", t.token_url)));
                    None
                }
            };
            if t.client_id.is_empty() {
                problems.push(src.problem(&here("client_id"), "must not be empty"));
            }
            if matches!(transport, TransportConfig::Stdio { .. }) {
                problems.push(src.problem(
                    &at("credentials"),
                    "token exchange is for HTTP backends (the token changes while a child's environment cannot)",
                ));
            }
            match url {
                Some(token_url) => CredentialMode::TokenExchange(Arc::new(TokenExchangeConfig {
                    token_url,
                    client_id: t.client_id,
                    client_secret_file: PathBuf::from(t.client_secret_file),
                    client_secret: String::new(),
                    audience: t.audience,
                    scope: t.scope,
                })),
                None => CredentialMode::Shared,
            }
        }
    };
    // An HTTP backend with a credential per caller keeps a connection (and backend session)
    // per caller: the same pool as per-user children, so the same two limits.
    let http_per_caller = credentials.is_per_caller() && matches!(transport, TransportConfig::Http { .. });
    let per_user = match raw.instances.as_deref() {
        None | Some("shared") => http_per_caller,
        Some("per_user") => {
            if matches!(transport, TransportConfig::Http { .. }) {
                problems.push(src.problem(
                    &at("instances"),
                    "is for stdio backends; an HTTP backend with `credentials` keeps one session per user already",
                ));
            }
            true
        }
        Some(other) => {
            problems
                .push(src.problem(&at("instances"), format!("`{other}` is not an instance mode; write \"per_user\"")));
            false
        }
    };
    let instances = if per_user {
        let idle_timeout =
            super::duration(src, &at("idle_timeout"), raw.idle_timeout.as_deref(), DEFAULT_IDLE_TIMEOUT, problems);
        let max_instances = match raw.max_instances {
            None => DEFAULT_MAX_INSTANCES,
            Some(0) => {
                problems.push(src.problem(&at("max_instances"), "must be at least 1"));
                1
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        InstanceMode::PerUser { idle_timeout, max_instances }
    } else {
        for (k, set) in [("idle_timeout", raw.idle_timeout.is_some()), ("max_instances", raw.max_instances.is_some())] {
            if set {
                problems.push(src.problem(&at(k), "applies only with `instances = \"per_user\"` or `credentials`"));
            }
        }
        InstanceMode::Shared
    };
    // Where the credential goes: header values over HTTP, env values over stdio.
    let templates: Vec<(Vec<String>, &str)> = match transport {
        TransportConfig::Http { headers, .. } => {
            headers.iter().map(|(k, v)| (key(&["backend", &i.to_string(), "http", "headers", k]), v.as_str())).collect()
        }
        TransportConfig::Stdio { env, .. } => {
            env.iter().map(|(k, v)| (key(&["backend", &i.to_string(), "stdio", "env", k]), v.as_str())).collect()
        }
    };
    let used = templates.iter().any(|(_, v)| v.contains(CREDENTIAL_PLACEHOLDER));
    if credentials.is_per_caller() {
        if !used {
            let example = match transport {
                TransportConfig::Http { .. } => {
                    "`http = { ..., headers = { Authorization = \"Bearer {credential}\" } }`"
                }
                TransportConfig::Stdio { .. } => "`stdio = { ..., env = { API_TOKEN = \"{credential}\" } }`",
            };
            problems.push(src.problem(
                &at("credentials"),
                format!("the caller's credential goes nowhere: put `{{credential}}` in a value, e.g. {example}"),
            ));
        }
        if matches!(transport, TransportConfig::Stdio { .. }) && instances == InstanceMode::Shared {
            problems.push(src.problem(
                &at("credentials"),
                "a stdio backend takes the credential in its environment, so each user needs a child of their own: \
                 add `instances = \"per_user\"`",
            ));
        }
    } else if used {
        for (path, _) in templates.iter().filter(|(_, v)| v.contains(CREDENTIAL_PLACEHOLDER)) {
            problems.push(src.problem(
                path,
                "`{credential}` is the caller's credential, and this backend has none per caller: add \
                 `credentials = \"per_user\"` (or a token exchange)",
            ));
        }
    }
    let list_as = match raw.list_as {
        Some(sub) if credentials != CredentialMode::PerUser => {
            problems.push(src.problem(
                &at("list_as"),
                format!("lists the backend with `{sub}`'s stored credential, and applies only with `credentials = \"per_user\"`"),
            ));
            None
        }
        Some(sub) if sub.is_empty() => {
            problems.push(src.problem(&at("list_as"), "must name a subject (a token's `sub`)"));
            None
        }
        other => other,
    };
    (credentials, instances, list_as)
}

/// Reads the client secret of every token exchange (a command that does not start backends
/// need not be able to read it).
pub fn read_secrets(
    src: &Source,
    backends: &mut [BackendConfig],
    needs: Needs,
    base: &Path,
    problems: &mut Vec<Problem>,
) {
    if !needs.covers("backend") {
        return;
    }
    for (i, b) in backends.iter_mut().enumerate() {
        let CredentialMode::TokenExchange(t) = &mut b.credentials else { continue };
        let t = Arc::make_mut(t);
        let path = if t.client_secret_file.is_absolute() {
            t.client_secret_file.clone()
        } else {
            base.join(&t.client_secret_file)
        };
        let at = key(&["backend", &i.to_string(), "credentials", "token_exchange", "client_secret_file"]);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => t.client_secret = s.trim().to_string(),
            Ok(_) => problems.push(src.problem(&at, format!("`{}` is empty", path.display()))),
            Err(e) => problems.push(src.problem(&at, format!("cannot read `{}`: {e}", path.display()))),
        }
    }
}

/// Per-user credentials are kept in the credential store, so they need its key; a token
/// exchange trades the caller's verified token, so it needs authentication on.
pub fn needs_store(src: &Source, config: &super::Config, has_store_key: bool, problems: &mut Vec<Problem>) {
    for (i, b) in config.backends.iter().enumerate() {
        let at = key(&["backend", &i.to_string(), "credentials"]);
        match &b.credentials {
            CredentialMode::PerUser if !has_store_key => problems.push(src.problem(
                &at,
                "per-user credentials are kept sealed in the credential store, which needs its key: add \
                 `[credentials] key_file = \"...\"` (see docs/credentials.md)",
            )),
            CredentialMode::TokenExchange(_) if matches!(config.auth, super::AuthConfig::Disabled) => {
                problems.push(src.problem(
                    &at,
                    "a token exchange trades the caller's verified token, and with `[auth] disabled = true` callers \
                     have none: turn authentication on",
                ));
            }
            _ => {}
        }
    }
}

/// `[credentials] admin_role`: the endpoint authenticates by the caller's token, so it needs
/// `[auth]` on, and a role name a token can carry.
pub fn admin_role(
    src: &Source,
    config: &super::Config,
    role: Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let role = role?;
    let at = key(&["credentials", "admin_role"]);
    if role.trim().is_empty() {
        problems.push(src.problem(&at, "must name a role"));
        return None;
    }
    if matches!(config.auth, super::AuthConfig::Disabled) {
        problems.push(src.problem(
            &at,
            "/admin/credentials admits a token with this role, and with `[auth] disabled = true` there are no \
             tokens: turn authentication on, or use `sentinel credentials` on the host",
        ));
        return None;
    }
    Some(role)
}
