//! Configuration: the TOML file (or the embedded default) turned into a typed, validated
//! `Config`. Validation collects every problem so `sentinel check` can list them all.

mod alerts;
mod telemetry;
pub use per_user::{CREDENTIAL_PLACEHOLDER, CredentialMode, InstanceMode, TokenExchangeConfig};
pub use telemetry::TelemetryConfig;
mod cluster;
pub use cluster::{ClusterConfig, OnRedisFailure};
mod catalog;
pub use catalog::{Discovery, PinMode, PinningConfig, ProfileConfig, ToolOverride};
mod checks;
mod credentials;
mod governance;
mod per_user;
mod raw;
mod source;
mod state;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use governance::{
    AuditConfig, AuthConfig, KillSwitchConfig, QuotaConfig, RateLimitConfig, RoleConfig, SchemaErrors, ValidationConfig,
};
pub use governance::{auth_downgrade, redact_url};
pub use source::{ExpandError, Needs, Problem, expand};
pub use state::{DEV_SECRET_FILE, StateError, state_dir};

use raw::{RawBackend, RawConfig};
use source::{Interpolation, Source};

/// The embedded default used when no config file exists: loopback, no backends.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// The settings read once at start: a reload leaves them as they were, says so in its log line,
/// and sets `sentinel_config_restart_pending{setting}` for those the file changes.
pub const RESTART_ONLY: [&str; 10] = [
    "server.listen",
    "server.max_body_bytes",
    "audit.url",
    "audit.on_audit_failure",
    "audit.durability",
    "audit.spool_dir",
    "audit.retain",
    "audit.queue/batch/flush_interval",
    "telemetry",
    "cluster",
];

/// Default file name looked up in the working directory.
pub const DEFAULT_FILE: &str = "sentinel.toml";

/// A validated config: what the gateway runs on, with `Duration`s, resolved secrets and checked globs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where this config came from: a file, or `None` for the embedded default.
    pub path: Option<PathBuf>,
    /// `[server]`: where and how clients connect.
    pub server: ServerConfig,
    /// How exposed names are made from the backends' own.
    pub naming: Naming,
    /// Every `[[backend]]`, in file order.
    pub backends: Vec<BackendConfig>,
    /// `[auth]`: how callers are authenticated.
    pub auth: AuthConfig,
    /// Every `[[role]]`.
    pub roles: Vec<RoleConfig>,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitConfig,
    /// `[kill_switch]`.
    pub kill_switch: KillSwitchConfig,
    /// `[validation]`.
    pub validation: ValidationConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// Webhooks told of backend and audit trouble; none configured means no alerts.
    pub alerts: crate::alerts::AlertsConfig,
    /// The keys sealing per-user credentials (`[credentials]`); `None` without the section or
    /// when the command does not use the credential store.
    pub credentials: Option<std::sync::Arc<crate::credentials::Keys>>,
    /// The token role that may set, remove and list credentials at `/admin/credentials`
    /// (`[credentials] admin_role`); `None`: the endpoint is off.
    pub credentials_admin_role: Option<String>,
    /// Where traces are exported; `None` (no `[telemetry]`): no tracing at all.
    pub telemetry: Option<TelemetryConfig>,
    /// State shared by replicas through Redis; `None` (no `[cluster]`): one process, no Redis.
    pub cluster: Option<ClusterConfig>,
    /// Every `[[profile]]`, in file order.
    pub profiles: Vec<ProfileConfig>,
    /// `[tool_overrides]`, by the exposed name they change.
    pub tool_overrides: indexmap::IndexMap<String, ToolOverride>,
    /// `[pinning]`.
    pub pinning: PinningConfig,
    /// Things accepted but worth changing (e.g. `[audit] url = "none"`).
    pub warnings: Vec<Problem>,
    /// Secrets written in the file itself (the HS256 secret, a backend's `Authorization`
    /// header, a secret-named `env` value, a database password): accepted with a warning from
    /// `check`, a failure for `doctor`.
    pub literal_secrets: Vec<Problem>,
    /// Every `${VAR}` the file refers to, once each, in file order.
    pub variables: Vec<String>,
    /// On the embedded default, the file holding its development secret (in the state
    /// directory): `serve` prints a token made with it, and `stdio` and `token` use it too.
    pub dev_secret_file: Option<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The address the HTTP front door binds.
    pub listen: SocketAddr,
    /// A non-loopback `listen` was asked for knowingly (it is refused otherwise).
    pub allow_public: bool,
    /// Origins (scheme://host[:port]) allowed besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Host names allowed in the `Host` header besides loopback names.
    pub allowed_hosts: Vec<String>,
    /// Largest request body (HTTP) or line (stdio) accepted from a client.
    pub max_body_bytes: usize,
    /// A session-based client session unused this long is ended.
    pub session_idle_timeout: Duration,
    /// Most session-based sessions one subject may hold; its oldest idle one makes way.
    pub max_sessions_per_subject: usize,
    /// A session-based client's call answered as an event stream has its connection closed
    /// after this long (with a `retry` hint), the call going on: the client resumes with
    /// `GET` and `Last-Event-ID` (src/replay.rs). `None` (default): connections stay open.
    pub stream_reconnect_after: Option<Duration>,
    /// The bearer token `/metrics` asks for; `None`: it answers without one.
    pub metrics_token: Option<MetricsToken>,
    /// What `tools/list` holds at `/mcp` (and for profiles that do not say).
    pub discovery: Discovery,
}

/// The `/metrics` bearer token: a secret, so its Debug form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken(pub String);

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken([redacted])")
    }
}

/// How exposed names are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamingStyle {
    /// `<prefix><separator><tool>`, prefix defaulting to the backend name.
    Prefixed,
    /// ContextForge's `<backend-slug>-<tool-slug>`, so migrating users keep every name.
    ContextForge,
}

/// `[naming]`: the style and, for `prefixed`, what joins prefix and name.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    /// Prefixed, or ContextForge's.
    pub style: NamingStyle,
    /// What goes between prefix and name (`__`).
    pub separator: String,
}

/// One `[[backend]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Its unique name: in logs, metrics, the audit trail and (by default) its tools' prefix.
    pub name: String,
    /// Effective prefix; empty keeps the backend's own names.
    pub prefix: String,
    /// How it is reached.
    pub transport: TransportConfig,
    /// Longest a call may take before the client gets -32015.
    pub timeout: Duration,
    /// How long the `server/discover` probe waits before assuming a session-based server.
    pub probe_timeout: Duration,
    /// `/ready` answers 503 while this backend is down or its circuit is open.
    pub required: bool,
    /// When the backend counts as failing, and for how long calls are then refused fast.
    pub circuit: crate::backend::breaker::BreakerSettings,
    /// Largest single message accepted from the backend.
    pub max_message_bytes: usize,
    /// Whose credential its `{credential}` templates take (`credentials`).
    pub credentials: CredentialMode,
    /// One process (or HTTP session) for every caller, or one per caller (`instances`).
    pub instances: InstanceMode,
    /// The subject whose stored credential the connection that lists a per-user backend's
    /// tools acts with (`list_as`); `None`: it has none.
    pub list_as: Option<String>,
    /// The answer to the backend's own `roots/list` when no client call can take the question
    /// (asked at start, on the GET stream, or of a client that cannot answer it): the result's
    /// JSON, `{"roots":[...]}` from `roots` (empty by default).
    pub roots: std::sync::Arc<str>,
    /// Which protocol generation to speak to the backend: probe (`Auto`), or one forced.
    pub generation: BackendGeneration,
}

/// `generation` on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendGeneration {
    /// Probe with `server/discover`, fall back to `initialize` (and a dual HTTP backend gets a
    /// session of its own for session-based clients).
    Auto,
    /// `server/discover` only: a backend that does not answer it does not start.
    Stateless,
    /// `initialize` only, never probed: for a dual-generation stdio server whose tools ask the
    /// client the session-based way (which it cannot do statelessly, and a stdio process speaks
    /// one generation).
    SessionBased,
}

/// How a backend is reached.
#[derive(Clone, PartialEq)]
pub enum TransportConfig {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Variables set for it (besides the safe defaults passed on).
        env: BTreeMap<String, String>,
        /// Variables passed on from Sentinel's environment besides the safe defaults.
        inherit_env: Vec<String>,
        /// Its working folder; `None`: Sentinel's.
        cwd: Option<PathBuf>,
    },
    /// A Streamable HTTP server.
    Http {
        /// Its MCP endpoint.
        url: String,
        /// Headers sent with every request (an `Authorization` for the backend, say).
        headers: Vec<(String, String)>,
    },
}

impl fmt::Debug for TransportConfig {
    // Hand-written so that secrets in env values and headers never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportConfig::Stdio { command, args, env, inherit_env, cwd } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .field("inherit_env", inherit_env)
                .field("cwd", cwd)
                .finish(),
            TransportConfig::Http { url, headers } => f
                .debug_struct("Http")
                // A query string may carry a key.
                .field("url", &url.split('?').next().unwrap_or_default())
                .field("headers", &headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Why a config could not be loaded: the list of every problem found.
#[derive(Debug)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Which file to read: an explicit `-c FILE`, else `sentinel.toml` if present, else the
/// embedded default (`None`).
pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = PathBuf::from(DEFAULT_FILE);
            p.exists().then_some(p)
        }
    }
}

impl Config {
    /// Loads a config file, or the embedded default for `None`, reading `${ENV}` from the
    /// process environment; every variable must be set. What every command that runs a gateway
    /// or judges a config (`serve`, `stdio`, `check`, `doctor`, `reload`) calls: one validation.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(path, Needs::All)
    }

    /// [`load`](Config::load) for a command that needs only some sections' variables (`token`
    /// needs the `[auth]` secret, `audit` the `[audit]` URL, not a backend's API key). The file
    /// is validated all the same.
    pub fn load_with(path: Option<&Path>, needs: Needs) -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        match path {
            None => {
                let dir =
                    state::state_dir().map_err(|e| ConfigError(vec![Problem::whole(EMBEDDED_NAME, e.to_string())]))?;
                Config::embedded(&dir)
            }
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError(vec![Problem::whole(&p.display().to_string(), format!("cannot read config file: {e}"))])
                })?;
                let name = p.display().to_string();
                let base = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                Config::parse_in(&name, &text, Some(p), base, &env, needs)
            }
        }
    }

    /// The embedded default, keeping its development secret, audit database and spool in the
    /// state directory `dir` (created if needed), so that every process on it agrees.
    pub fn embedded(dir: &Path) -> Result<Config, ConfigError> {
        let secret =
            state::dev_secret(dir).map_err(|e| ConfigError(vec![Problem::whole(EMBEDDED_NAME, e.to_string())]))?;
        let env = |k: &str| if k == "SENTINEL_DEV_SECRET" { Some(secret.clone()) } else { std::env::var(k).ok() };
        let mut c = Config::parse_in(EMBEDDED_NAME, EMBEDDED_DEFAULT, None, dir, &env, Needs::All)?;
        c.dev_secret_file = Some(dir.join(DEV_SECRET_FILE));
        Ok(c)
    }

    /// Parses and validates config text; `env` resolves `${NAME}`, and every variable must be
    /// set. Relative paths are resolved beside `path`.
    pub fn parse(
        name: &str,
        text: &str,
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let base = path.and_then(Path::parent).filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::parse_in(name, text, path, base, env, Needs::All)
    }

    fn parse_in(
        name: &str,
        text: &str,
        path: Option<&Path>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        needs: Needs,
    ) -> Result<Config, ConfigError> {
        let src = Source::new(name, text);
        let mut problems = Vec::new();
        let mut found = Interpolation::default();
        let Some(mut raw) = src.deserialize::<RawConfig>(env, needs, &mut found, &mut problems) else {
            problems.append(&mut found.problems);
            return Err(ConfigError(in_file_order(problems)));
        };
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let raw_credentials = raw.credentials.take();
        let has_store_key = raw_credentials.is_some();
        let admin_role = raw_credentials.as_ref().and_then(|c| c.admin_role.clone());
        let mut config = validate(&src, raw, path, &base, &mut problems);
        config.credentials =
            credentials::credentials(&src, raw_credentials, needs, &base, &config.audit, &mut problems);
        per_user::read_secrets(&src, &mut config.backends, needs, &base, &mut problems);
        per_user::needs_store(&src, &config, has_store_key, &mut problems);
        config.credentials_admin_role = per_user::admin_role(&src, &config, admin_role, &mut problems);
        if let Some(c) = config.cluster.as_mut() {
            cluster::secret(&src, c, needs, &base, &mut problems);
        }
        config.variables = std::mem::take(&mut found.variables);
        checks::run(&src, &mut config, &mut problems);
        // A value that could not be filled in is reported once, as unset, and judged no further.
        problems.retain(|p| !found.covers(&p.key));
        config.warnings.retain(|p| !found.covers(&p.key));
        problems.append(&mut found.problems);
        if problems.is_empty() {
            config.warnings.sort_by_key(line_of);
            config.literal_secrets.sort_by_key(line_of);
            return Ok(config);
        }
        Err(ConfigError(in_file_order(problems)))
    }
}

/// The line a problem points at (0 for the whole file).
fn line_of(p: &Problem) -> usize {
    p.location.rsplit_once(':').and_then(|(_, l)| l.parse::<usize>().ok()).unwrap_or(0)
}

/// In file order, so the list reads top to bottom like the file.
fn in_file_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(line_of);
    problems
}

pub(super) fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(std::string::ToString::to_string).collect()
}

fn duration(
    src: &Source,
    path: &[String],
    v: Option<&str>,
    default: Duration,
    problems: &mut Vec<Problem>,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push(src.problem(path, "must be longer than zero"));
                default
            }
            Err(e) => {
                problems.push(
                    src.problem(path, format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"5m\"")),
                );
                default
            }
        },
    }
}

fn validate(src: &Source, raw: RawConfig, path: Option<&Path>, base: &Path, problems: &mut Vec<Problem>) -> Config {
    let mut warnings = Vec::new();
    let warnings = &mut warnings;
    let s = raw.server;
    let listen_str = s.listen.unwrap_or_else(|| "127.0.0.1:8800".into());
    let allow_public = s.allow_public.unwrap_or(false);
    let listen = match listen_str.parse::<SocketAddr>() {
        Ok(a) => {
            if !a.ip().is_loopback() && !allow_public {
                problems.push(src.problem(
                    &key(&["server", "listen"]),
                    format!("`{a}` is not a loopback address; set `allow_public = true` in [server] if exposing the gateway beyond this machine is intended"),
                ));
            }
            a
        }
        Err(_) => {
            problems.push(src.problem(
                &key(&["server", "listen"]),
                format!("`{listen_str}` is not an address:port (e.g. \"127.0.0.1:8800\")"),
            ));
            SocketAddr::from(([127, 0, 0, 1], 8800))
        }
    };
    let allowed_origins = s.allowed_origins.unwrap_or_default();
    for (i, o) in allowed_origins.iter().enumerate() {
        if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
            problems.push(src.problem(
                &key(&["server", "allowed_origins", &i.to_string()]),
                format!("`{o}` is not an origin; write scheme://host[:port] without a path, e.g. \"https://app.example.com\""),
            ));
        }
    }
    let max_body_bytes = match s.max_body_bytes {
        None => 4 * 1024 * 1024,
        Some(0) => {
            problems.push(src.problem(&key(&["server", "max_body_bytes"]), "must be greater than zero"));
            1
        }
        Some(n) => n as usize,
    };
    let session_idle_timeout = duration(
        src,
        &key(&["server", "session_idle_timeout"]),
        s.session_idle_timeout.as_deref(),
        Duration::from_secs(30 * 60),
        problems,
    );
    let max_sessions_per_subject = match s.max_sessions_per_subject {
        None => DEFAULT_MAX_SESSIONS_PER_SUBJECT,
        Some(0) => {
            problems.push(src.problem(&key(&["server", "max_sessions_per_subject"]), "must be at least 1"));
            DEFAULT_MAX_SESSIONS_PER_SUBJECT
        }
        Some(n) => n as usize,
    };
    let stream_reconnect_after = s.stream_reconnect_after.as_deref().map(|v| {
        let at = key(&["server", "stream_reconnect_after"]);
        let d = duration(src, &at, Some(v), Duration::from_secs(60), problems);
        if d < Duration::from_secs(1) {
            problems.push(src.problem(&at, "must be at least 1s (clients wait `retry` before reconnecting)"));
        }
        d
    });
    let metrics_token = metrics_token(src, s.metrics_token, s.metrics_token_file, problems, warnings);
    let discovery =
        catalog::discovery(src, &key(&["server", "discovery"]), s.discovery.as_deref(), problems).unwrap_or_default();
    let server = ServerConfig {
        stream_reconnect_after,
        listen,
        allow_public,
        allowed_origins,
        allowed_hosts: s.allowed_hosts.unwrap_or_default(),
        max_body_bytes,
        session_idle_timeout,
        max_sessions_per_subject,
        metrics_token,
        discovery,
    };

    let style = match raw.naming.style.as_deref() {
        None | Some("prefixed") => NamingStyle::Prefixed,
        Some("contextforge") => NamingStyle::ContextForge,
        Some(other) => {
            problems.push(src.problem(
                &key(&["naming", "style"]),
                format!("unknown naming style `{other}`; use \"prefixed\" or \"contextforge\""),
            ));
            NamingStyle::Prefixed
        }
    };
    // ContextForge's GATEWAY_TOOL_NAME_SEPARATOR defaults to `-` and accepts `-`, `--`, `_`, `.`
    // (IBM/mcp-context-forge mcpgateway/config.py; anything else falls back to `-` there, with a
    // warning). Here anything else is refused, since a silent fallback would rename every tool.
    let default_separator = match style {
        NamingStyle::Prefixed => "__",
        NamingStyle::ContextForge => "-",
    };
    let separator = raw.naming.separator.unwrap_or_else(|| default_separator.into());
    if style == NamingStyle::ContextForge && !["-", "--", "_", "."].contains(&separator.as_str()) {
        problems.push(src.problem(
            &key(&["naming", "separator"]),
            format!(
                "`{separator}` is not a ContextForge separator; with style = \"contextforge\" use \"-\" \
                 (ContextForge's default), \"--\", \"_\" or \".\", the value of its GATEWAY_TOOL_NAME_SEPARATOR"
            ),
        ));
    } else if separator.is_empty() {
        problems.push(src.problem(
            &key(&["naming", "separator"]),
            "must not be empty (use `prefix = \"\"` on a backend to keep its names)",
        ));
    }
    let naming = Naming { style, separator };

    let mut names = HashSet::new();
    let mut backends = Vec::new();
    let mut positions = Vec::new();
    for (i, b) in raw.backends.into_iter().enumerate() {
        let at = |k: &str| key(&["backend", &i.to_string(), k]);
        if let Some(bc) = validate_backend(src, i, b, problems) {
            if !names.insert(bc.name.clone()) {
                problems.push(
                    src.problem(&at("name"), format!("backend name `{}` is used twice; names must be unique", bc.name)),
                );
            }
            backends.push(bc);
            positions.push(i);
        }
    }
    for (k, message) in namespace_clashes(&naming, &backends) {
        let field = if naming.style == NamingStyle::Prefixed { "prefix" } else { "name" };
        problems.push(src.problem(&key(&["backend", &positions[k].to_string(), field]), message));
    }

    let auth = governance::auth(src, raw.auth, server.listen.ip().is_loopback(), problems);
    let roles = governance::roles(src, raw.roles, problems);
    let rate_limit = governance::rate_limit(src, raw.rate_limit, problems);
    let names: Vec<String> = backends.iter().map(|b: &BackendConfig| b.name.clone()).collect();
    let kill_switch = governance::kill_switch(src, raw.kill_switch, &names, problems);
    let validation = governance::validation(src, raw.validation, problems);
    // Relative audit paths live beside the config file (the state directory for the default).
    let audit = governance::audit(src, raw.audit, base, problems, warnings);
    let alerts = alerts::alerts(src, raw.alerts, problems);
    let telemetry = telemetry::telemetry(src, raw.telemetry, problems);
    let cluster = cluster::cluster(src, raw.cluster, problems);
    let profiles = catalog::profiles(src, raw.profiles, problems);
    for r in &roles {
        for (i, p) in r.profiles.iter().flatten().enumerate() {
            if !profiles.iter().any(|q| &q.name == p) {
                problems.push(src.problem(
                    &key(&["roles", &r.name, "profiles", &i.to_string()]),
                    format!("there is no [[profile]] named `{p}`"),
                ));
            }
        }
    }
    let tool_overrides = catalog::overrides(src, raw.tool_overrides, problems);
    let pinning = catalog::pinning(src, raw.pinning, problems);
    Config {
        path: path.map(Path::to_path_buf),
        server,
        naming,
        backends,
        auth,
        roles,
        rate_limit,
        kill_switch,
        validation,
        audit,
        alerts,
        credentials: None,
        credentials_admin_role: None,
        telemetry,
        cluster,
        profiles,
        tool_overrides,
        pinning,
        warnings: std::mem::take(warnings),
        literal_secrets: Vec::new(),
        variables: Vec::new(),
        dev_secret_file: None,
    }
}

/// Backends whose names would fall in another backend's namespace, as far as the config alone
/// shows (tool names are known only at run time, where the catalog hides what still falls in
/// another's namespace): a namespace (`prefix` + separator, or the name's slug + separator in
/// the `contextforge` style) equal to or beginning with another's. Returns (index into
/// `backends`, message), one per offending backend. `sentinel check`, `serve` and a reload all
/// refuse such a config.
pub fn namespace_clashes(naming: &Naming, backends: &[BackendConfig]) -> Vec<(usize, String)> {
    let spaces: Vec<Option<String>> =
        backends.iter().map(|b| crate::naming::namespace(naming, &b.name, &b.prefix)).collect();
    let mut out = Vec::new();
    for (k, (b, ns)) in backends.iter().zip(&spaces).enumerate() {
        let Some(ns) = ns else { continue };
        let owner = backends.iter().zip(&spaces).enumerate().find(|(j, (_, other))| {
            // Equal namespaces are reported once, at the later backend.
            *j != k && other.as_deref().is_some_and(|o| ns.starts_with(o) && (ns != o || *j < k))
        });
        if let Some((_, (other, Some(o)))) = owner {
            let message = if ns == o {
                format!(
                    "backends `{}` and `{}` expose names in the same namespace `{o}`; their names would clash — give one a different {}",
                    other.name,
                    b.name,
                    if naming.style == NamingStyle::Prefixed { "`prefix`" } else { "name" }
                )
            } else {
                format!(
                    "backend `{}`'s names (`{ns}...`) would fall in backend `{}`'s namespace `{o}`: calls meant for one could reach the other, and `{o}*` globs would grant both — choose a {} that does not start with `{o}`",
                    b.name,
                    other.name,
                    if naming.style == NamingStyle::Prefixed { "`prefix`" } else { "name" }
                )
            };
            out.push((k, message));
        }
    }
    out
}

/// How many sessions one subject may hold when `max_sessions_per_subject` is not set: enough
/// for one person's editors and agents, far below the gateway-wide cap.
pub const DEFAULT_MAX_SESSIONS_PER_SUBJECT: usize = 64;

/// `[server] metrics_token` or `metrics_token_file` (one of them).
fn metrics_token(
    src: &Source,
    literal: Option<String>,
    file: Option<String>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<MetricsToken> {
    let token = match (literal, file) {
        (Some(_), Some(_)) => {
            problems.push(src.problem(
                &key(&["server", "metrics_token_file"]),
                "set `metrics_token` or `metrics_token_file`, not both",
            ));
            return None;
        }
        (Some(t), None) => {
            if !src.raw_string(&key(&["server", "metrics_token"])).is_some_and(|r| r.contains("${")) {
                warnings.push(src.problem(
                    &key(&["server", "metrics_token"]),
                    "the token is written in the file; prefer \"${SENTINEL_METRICS_TOKEN}\" or `metrics_token_file`",
                ));
            }
            t
        }
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                problems.push(src.problem(&key(&["server", "metrics_token_file"]), format!("cannot read `{f}`: {e}")));
                return None;
            }
        },
        (None, None) => return None,
    };
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(src.problem(
            &key(&["server", "metrics_token"]),
            "the /metrics token must be at least 16 characters without spaces; generate one with `openssl rand -hex 24`",
        ));
        return None;
    }
    Some(MetricsToken(token))
}

fn validate_backend(src: &Source, i: usize, b: RawBackend, problems: &mut Vec<Problem>) -> Option<BackendConfig> {
    let at = |k: &str| key(&["backend", &i.to_string(), k]);
    if b.name.is_empty() || !b.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        problems.push(src.problem(
            &at("name"),
            format!("`{}` is not a valid backend name; use letters, digits, `-`, `_` or `.`", b.name),
        ));
    }
    let circuit = {
        let raw = b.circuit.as_ref();
        let failures = match raw.and_then(|c| c.failures) {
            None => std::num::NonZeroU32::new(5).expect("non-zero"),
            Some(n) => std::num::NonZeroU32::new(n).unwrap_or_else(|| {
                problems
                    .push(src.problem(&key(&["backend", &i.to_string(), "circuit", "failures"]), "must be at least 1"));
                std::num::NonZeroU32::new(5).expect("non-zero")
            }),
        };
        let cooldown = duration(
            src,
            &key(&["backend", &i.to_string(), "circuit", "cooldown"]),
            raw.and_then(|c| c.cooldown.as_deref()),
            Duration::from_secs(30),
            problems,
        );
        crate::backend::breaker::BreakerSettings { failures, cooldown }
    };
    let transport = match (b.stdio, b.http) {
        (Some(s), None) => {
            if s.command.trim().is_empty() {
                problems.push(src.problem(&key(&["backend", &i.to_string(), "stdio", "command"]), "must not be empty"));
            }
            TransportConfig::Stdio {
                command: s.command,
                args: s.args,
                env: s.env,
                inherit_env: s.inherit_env,
                cwd: s.cwd.map(PathBuf::from),
            }
        }
        (None, Some(h)) => {
            match reqwest::Url::parse(&h.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => problems.push(src.problem(
                    &key(&["backend", &i.to_string(), "http", "url"]),
                    format!("`{}` is not an http(s) URL", h.url),
                )),
            }
            let mut headers = Vec::new();
            for (k, v) in h.headers {
                let bad_name = http::HeaderName::from_bytes(k.as_bytes()).is_err();
                let bad_value = http::HeaderValue::from_str(&v).is_err();
                if bad_name || bad_value {
                    problems.push(src.problem(
                        &key(&["backend", &i.to_string(), "http", "headers", &k]),
                        "is not a valid HTTP header name and value",
                    ));
                }
                headers.push((k, v));
            }
            TransportConfig::Http { url: h.url, headers }
        }
        (Some(_), Some(_)) => {
            problems.push(src.problem(&at("stdio"), "a backend has either `stdio` or `http`, not both"));
            return None;
        }
        (None, None) => {
            problems.push(src.problem(
                &at("name"),
                format!("backend `{}` needs `stdio = {{ command = ... }}` or `http = {{ url = ... }}`", b.name),
            ));
            return None;
        }
    };
    let identity = per_user::RawIdentity {
        credentials: b.credentials,
        instances: b.instances,
        idle_timeout: b.idle_timeout,
        max_instances: b.max_instances,
        list_as: b.list_as,
    };
    let (credentials, instances, list_as) = per_user::identity(src, i, identity, &transport, problems);
    let prefix = b.prefix.unwrap_or_else(|| b.name.clone());
    let max_message_bytes = match b.max_message_bytes {
        None => 64 * 1024 * 1024,
        Some(0) => {
            problems.push(src.problem(&at("max_message_bytes"), "must be greater than zero"));
            1
        }
        Some(n) => n as usize,
    };
    // `roots/list` answers name `file://` URIs only (the MCP specification requires it).
    let mut roots = Vec::new();
    for (n, r) in b.roots.unwrap_or_default().into_iter().enumerate() {
        match reqwest::Url::parse(&r.uri) {
            Ok(u) if u.scheme() == "file" => {}
            _ => problems.push(src.problem(
                &key(&["backend", &i.to_string(), "roots", &n.to_string(), "uri"]),
                format!("`{}` is not a file:// URI (e.g. \"file:///srv/project\")", r.uri),
            )),
        }
        let mut root = serde_json::Map::new();
        root.insert("uri".into(), r.uri.into());
        if let Some(name) = r.name {
            root.insert("name".into(), name.into());
        }
        roots.push(serde_json::Value::Object(root));
    }
    let roots = serde_json::json!({ "roots": roots }).to_string().into();
    let generation = match b.generation.as_deref() {
        None | Some("auto") => BackendGeneration::Auto,
        Some("stateless") => BackendGeneration::Stateless,
        Some("session-based") => BackendGeneration::SessionBased,
        Some(other) => {
            problems.push(src.problem(
                &at("generation"),
                format!(
                    "`{other}` is not a generation: use \"auto\" (the default), \"stateless\" or \"session-based\""
                ),
            ));
            BackendGeneration::Auto
        }
    };
    Some(BackendConfig {
        roots,
        generation,
        timeout: duration(src, &at("timeout"), b.timeout.as_deref(), Duration::from_secs(60), problems),
        probe_timeout: duration(
            src,
            &at("probe_timeout"),
            b.probe_timeout.as_deref(),
            Duration::from_secs(10),
            problems,
        ),
        name: b.name,
        prefix,
        transport,
        required: b.required.unwrap_or(false),
        circuit,
        max_message_bytes,
        credentials,
        instances,
        list_as,
    })
}

#[cfg(test)]
mod tests;
