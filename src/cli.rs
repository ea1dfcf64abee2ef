//! The `sentinel` command line: parse arguments, load the config, run a command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::audit::query::AuditOpts;
use crate::config::{self, Config, Needs};
use crate::front;
use crate::gateway::Gateway;
use crate::tasks::Tasks;

#[derive(Parser)]
#[command(name = "sentinel", version, about = "A governed MCP gateway: one chokepoint for every MCP call")]
struct Cli {
    /// Log lines on stderr: reports (check, doctor, token, audit, client-config, reload) print
    /// none without it; -v gives info (or SENTINEL_LOG), -vv debug
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon (HTTP at /mcp, /health)
    Serve {
        /// Config file (default: ./sentinel.toml, else the embedded default)
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Serve one MCP client over stdin/stdout
    Stdio {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Serve this `[[profile]]` (a virtual server) instead of the whole catalog
        #[arg(long)]
        profile: Option<String>,
    },
    /// Validate a config file and list every problem with its location
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Mint an HS256 token with the configured secret (for operators and tests)
    Token {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The token's subject (the client name the audit trail and rate limits use)
        #[arg(long)]
        sub: String,
        /// A role; repeat for several
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the token is valid, e.g. "12h", "30d"
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Read the audit trail from the store the config points at
    Audit {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Only records newer than this: a duration back from now ("15m", "2h", "7d") or a time
        /// ("2026-12-01T09:00:00Z", "2026-12-01 09:00:00" in UTC)
        #[arg(long, value_parser = crate::audit::query::parse_since)]
        since: Option<std::time::SystemTime>,
        /// Only this client (the token's `sub`)
        #[arg(long)]
        client: Option<String>,
        /// Only this exposed tool name
        #[arg(long)]
        tool: Option<String>,
        /// Only this backend
        #[arg(long)]
        backend: Option<String>,
        /// Only this outcome: ok, tool_error, denied_auth, denied_rbac, killed, rate_limited,
        /// invalid_args, backend_error, timeout, unavailable, cancelled, held
        #[arg(long)]
        outcome: Option<String>,
        /// How many of the newest records to print
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        /// Keep printing new records as they arrive (Ctrl-C stops)
        #[arg(long)]
        follow: bool,
        /// Instead of the store, the records it refused for good (the dead-letter file beside
        /// the spool), each with the store's reason
        #[arg(long, conflicts_with_all = ["since", "client", "tool", "backend", "outcome", "follow"])]
        dead_letter: bool,
    },
    /// Ask the running daemon to reload its config (SIGHUP via its pid file) and report the outcome
    Reload {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Deployment self-check: loopback binding, secret file permissions, audit store, backends
    Doctor {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Per-user credentials for backends, sealed in the audit database (see docs/credentials.md)
    Credentials {
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: crate::credentials::cli::Action,
    },
    /// Switch tools or backends off (and on again) on every gateway of the audit database
    KillSwitch {
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: crate::kill_switch::cli::Action,
    },
    /// Review and approve changed tool definitions (pinning; see docs/pins.md)
    Pins {
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: crate::pins::cli::Action,
    },
    /// Print what a client needs to connect: `claude mcp add` commands or `.mcp.json` snippets
    ClientConfig {
        /// claude-code: `claude mcp add` commands; json: `.mcp.json` snippets (HTTP and stdio)
        #[arg(value_enum)]
        format: crate::client_config::Format,
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Put this token in the output instead of the ${SENTINEL_TOKEN} placeholder
        #[arg(long)]
        token: Option<String>,
        /// Connect to this `[[profile]]` (`/mcp/<profile>`, `stdio --profile`) instead
        #[arg(long)]
        profile: Option<String>,
    },
}

/// The `sentinel` command line: parses the arguments, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Serve { .. } | Command::Stdio { .. });
    // Held to the end of `main`: dropping it writes out the lines still queued. The daemons
    // start their log once their config is read: its `[telemetry]` adds the span exporter.
    let _log = (!daemon).then(|| crate::log::init(daemon, cli.verbose, None, None));
    let verbose = cli.verbose;
    match cli.command {
        Command::Check { config } => check(config),
        Command::Serve { config } => run_daemon(tokio::runtime::Builder::new_multi_thread(), config, verbose, serve),
        // One client's calls need one thread, and on one thread no task is ever woken across
        // threads: over stdio that cost more than the calls themselves.
        Command::Stdio { config, profile } => {
            run_daemon(tokio::runtime::Builder::new_current_thread(), config, verbose, |c| stdio(c, profile))
        }
        Command::Token { config, sub, roles, ttl } => token(config, &sub, &roles, &ttl),
        Command::Audit { config, since, client, tool, backend, outcome, limit, json, follow, dead_letter } => {
            let opts = AuditOpts { since, client, tool, backend, outcome, limit, json, follow };
            // Reading records needs the store's URL, not the backends' secrets.
            let needs = Needs::Sections(&["audit"]);
            if dead_letter {
                run(config, needs, |c| dead_letters(c, limit, json))
            } else {
                run(config, needs, |c| audit(c, opts))
            }
        }
        Command::Reload { config } => crate::ops_cli::reload(config),
        Command::Doctor { config } => crate::ops_cli::doctor(config),
        Command::Credentials { config, action } => {
            // The store's URL, the key, and the backends' names: not the backends' secrets.
            run(config, Needs::Sections(&["audit", "credentials"]), |c| crate::credentials::cli::run(c, action))
        }
        Command::KillSwitch { config, action } => {
            // The store's URL, the backends' names and `[kill_switch]`: not the backends' secrets.
            run(config, Needs::Sections(&["audit"]), |c| crate::kill_switch::cli::run(c, action))
        }
        Command::Pins { config, action } => {
            // The store's URL only: not the backends' secrets.
            run(config, Needs::Sections(&["audit"]), |c| crate::pins::cli::run(c, action))
        }
        Command::ClientConfig { format, config, token, profile } => {
            crate::client_config::run(format, config, token, profile)
        }
    }
}

fn token(path: Option<PathBuf>, sub: &str, roles: &[String], ttl: &str) -> ExitCode {
    let ttl = match humantime::parse_duration(ttl) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sentinel: `--ttl {ttl}` is not a duration ({e}); write e.g. \"12h\" or \"30d\"");
            return ExitCode::FAILURE;
        }
    };
    let path = config::resolve_path(path.as_deref());
    // Only the `[auth]` secret is needed to mint: not the backends' keys.
    let config = match Config::load_with(path.as_deref(), Needs::Sections(&["auth"])) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nsentinel: the config is invalid; `sentinel check` lists every problem");
            return ExitCode::FAILURE;
        }
    };
    let config::AuthConfig::Jwt(j) = &config.auth else {
        eprintln!("sentinel: authentication is disabled in this config; there is nothing to mint a token for");
        return ExitCode::FAILURE;
    };
    let Some(secret) = &j.hs256_secret else {
        eprintln!("sentinel: this config has no `hs256_secret`; tokens for JWKS keys come from your identity provider");
        return ExitCode::FAILURE;
    };
    match crate::auth::mint_hs256(secret, sub, roles, ttl, j.issuer.as_deref(), j.audience.as_deref()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sentinel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let path = config::resolve_path(path.as_deref());
    let name = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into());
    match Config::load(path.as_deref()) {
        Ok(c) => {
            for w in c.literal_secrets.iter().chain(&c.warnings) {
                println!("warning: {w}");
            }
            println!("{name}: ok ({} backend{})", c.backends.len(), if c.backends.len() == 1 { "" } else { "s" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in &e.0 {
                println!("{p}");
            }
            println!("{name}: {} problem{} found", e.0.len(), if e.0.len() == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

fn run<F, Fut>(path: Option<PathBuf>, needs: Needs, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_with(tokio::runtime::Builder::new_multi_thread(), path, needs, f)
}

fn run_with<F, Fut>(runtime: tokio::runtime::Builder, path: Option<PathBuf>, needs: Needs, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_logged(runtime, path, needs, None, f)
}

/// `serve` and `stdio`: their log (and span exporter) starts once the config is read.
fn run_daemon<F, Fut>(runtime: tokio::runtime::Builder, path: Option<PathBuf>, verbose: u8, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_logged(runtime, path, Needs::All, Some(verbose), f)
}

/// Loads the config and runs `f` on a runtime; `log: Some(verbose)` starts the daemon's log
/// (held until `f` is done).
fn run_logged<F, Fut>(
    mut runtime: tokio::runtime::Builder,
    path: Option<PathBuf>,
    needs: Needs,
    log: Option<u8>,
    f: F,
) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let path = config::resolve_path(path.as_deref());
    let config = match Config::load_with(path.as_deref(), needs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nsentinel: the config is invalid; `sentinel check` lists every problem");
            return ExitCode::FAILURE;
        }
    };
    // Before anything reads it (the log, spans, audit records).
    if let Some(id) = config.cluster.as_ref().and_then(|c| c.replica_id.clone()) {
        crate::replica::set(id);
    }
    let replica = config.cluster.is_some().then(crate::replica::id);
    let _log = log.map(|verbose| crate::log::init(true, verbose, config.telemetry.as_ref(), replica));
    let rt = runtime.enable_all().build().expect("tokio runtime");
    match rt.block_on(f(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sentinel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long the development token `serve` prints on the embedded default stays valid.
const DEV_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

async fn serve(config: Config) -> anyhow::Result<()> {
    // What runs beside the gateway (dropped-log reports, SIGHUP reloads, the idle-session
    // reaper): ended last, so that shutdown itself is covered.
    let beside = Tasks::new();
    beside.spawn(crate::log::report_dropped());
    let embedded = config.path.is_none();
    let dev_token = match (&config.dev_secret_file, &config.auth) {
        (Some(_), config::AuthConfig::Jwt(j)) => match &j.hs256_secret {
            Some(secret) => Some(crate::auth::mint_hs256(
                secret,
                "dev",
                &["admin".to_string()],
                DEV_TOKEN_TTL,
                j.issuer.as_deref(),
                j.audience.as_deref(),
            )?),
            None => None,
        },
        _ => None,
    };
    for w in config.literal_secrets.iter().chain(&config.warnings) {
        tracing::warn!("config: {w}");
    }
    let path = config.path.clone();
    let config_dev_secret = config.dev_secret_file.clone();
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (is another process using the port? change server.listen)")
    })?;
    crate::credentials::check_at_start(&config).await?;
    let gw = Gateway::start(config).await?;
    let local = listener.local_addr()?;
    // For `sentinel reload`; removed when serve returns.
    let _pid_file = crate::ops_cli::PidFile::create(path.as_deref(), local);
    let url = format!("http://{local}/mcp");
    // One write: whoever waits for the "listening" line (a test, a wrapper script) finds the
    // development token with it.
    let mut banner = format!("Sentinel listening on {url}\n");
    if embedded {
        banner.push_str("No sentinel.toml found: running on the embedded default (loopback only, no backends).\n");
        if let (Some(t), Some(file)) = (&dev_token, &config_dev_secret) {
            banner.push_str(&format!(
                "Development token (role admin, valid for 30 days; signed with the development secret in {}, which \
                 `sentinel stdio` and `sentinel token` use too): {t}\n",
                file.display()
            ));
            banner.push_str(&format!(
                "Connect Claude Code:  claude mcp add --transport http sentinel {url} --header \"Authorization: Bearer {t}\"\n"
            ));
        }
        banner.push_str("Add MCP servers in sentinel.toml (see sentinel.example.toml), then `sentinel check`.\n");
    }
    print!("{banner}");
    if let Some(path) = path {
        beside.spawn(reload_on_sighup(gw.clone(), path));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let reaper = gw.clone();
    beside.spawn(async move {
        loop {
            // A quarter of the idle timeout (read each round: a reload may change it), so a
            // session is ended within 1.25× its timeout; at most a minute apart.
            let every = (reaper.config().server.session_idle_timeout / 4)
                .clamp(std::time::Duration::from_millis(250), std::time::Duration::from_secs(60));
            tokio::time::sleep(every).await;
            reaper.reap_idle_sessions();
        }
    });
    let shutdown = gw.shutdown.clone();
    let flushing = gw.clone();
    // Answers and stream events go out as soon as they are written: with Nagle's algorithm a
    // notification written right after another waits for the client's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    // With each connection's peer address, for throttling what refused requests cost per source.
    let app = front::http::router(gw).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    // Calls in flight get a grace period to finish once shutdown starts; then we stop anyway.
    tokio::select! {
        r = server => r?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("calls still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    flushing.stop_tasks(TASK_STOP_GRACE).await;
    flushing.flush_audit().await;
    flushing.stop_backends(BACKEND_STOP_GRACE).await;
    flushing.close_audit_and_alerts(TASK_STOP_GRACE).await;
    tracing::info!("stopped");
    beside.stop("serve", TASK_STOP_GRACE).await;
    Ok(())
}

/// How long the gateway's background tasks get to end at shutdown (audit records of calls
/// that just ended are written meanwhile).
const TASK_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a backend's process group gets to exit after SIGTERM before SIGKILL.
const BACKEND_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long calls in flight may run on after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGHUP re-reads the config file; a valid one's roles, kill switch and validation mode
/// take effect at once, an invalid one is refused and the running config stays.
async fn reload_on_sighup(gw: Arc<Gateway>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match Config::load(Some(&path)) {
            Ok(c) => match gw.reload(c).await {
                Ok(summary) => {
                    gw.metrics.config_reload(true);
                    tracing::info!("{summary}");
                }
                Err(e) => {
                    gw.metrics.config_reload(false);
                    tracing::error!("config reload refused: {e}; the running config stays");
                }
            },
            Err(e) => {
                gw.metrics.config_reload(false);
                tracing::error!("config reload refused; the running config stays:\n{e}");
            }
        }
    }
}

async fn stdio(config: Config, profile: Option<String>) -> anyhow::Result<()> {
    // An unknown profile ends here, before any MCP traffic, as a bad token does.
    if let Some(p) = &profile {
        if !config.profiles.iter().any(|q| &q.name == p) {
            let known: Vec<&str> = config.profiles.iter().map(|q| q.name.as_str()).collect();
            anyhow::bail!(
                "--profile {p}: the config has no such [[profile]] (it has: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            );
        }
    }
    // The token is checked before anything else starts: a bad one ends here, with one line.
    let caller = match &config.auth {
        config::AuthConfig::Disabled => crate::gateway::Caller::Anonymous,
        config::AuthConfig::Jwt(j) => {
            let token = std::env::var("SENTINEL_TOKEN").map_err(|_| {
                anyhow::anyhow!("SENTINEL_TOKEN is not set; mint one with `sentinel token --sub NAME --role ROLE`")
            })?;
            let client = reqwest::Client::new();
            let auth = crate::auth::Authenticator::new(j.clone(), client).await?;
            match auth.authenticate(token.trim()).await {
                Ok(identity) => crate::gateway::Caller::User(identity),
                Err(e) => anyhow::bail!("SENTINEL_TOKEN was refused: {e}"),
            }
        }
    };
    let beside = Tasks::new();
    beside.spawn(crate::log::report_dropped());
    crate::credentials::check_at_start(&config).await?;
    let gw: Arc<Gateway> = Gateway::start(config).await?;
    let served = front::stdio::serve(gw.clone(), caller, profile).await;
    gw.stop_tasks(TASK_STOP_GRACE).await;
    gw.flush_audit().await;
    gw.stop_backends(BACKEND_STOP_GRACE).await;
    gw.close_audit_and_alerts(TASK_STOP_GRACE).await;
    beside.stop("stdio", TASK_STOP_GRACE).await;
    Ok(served?)
}

async fn dead_letters(config: Config, limit: usize, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(config.audit.url != "none", "[audit] url = \"none\": there is no audit store, and no dead letters");
    Ok(crate::audit::dead_letter::run(&config.audit.spool_dir, &config.audit.url, limit, json)?)
}

async fn audit(config: Config, opts: AuditOpts) -> anyhow::Result<()> {
    Ok(crate::audit::query::run(&config.audit.url, opts).await?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
