//! The `sentinel` command line: parse arguments, load the config, run a command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::front;
use crate::gateway::Gateway;

#[derive(Parser)]
#[command(name = "sentinel", version, about = "A governed MCP gateway: one chokepoint for every MCP call")]
struct Cli {
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
    },
    /// Validate a config file and list every problem with its location
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SENTINEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Serve { config } => run(config, serve),
        Command::Stdio { config } => run(config, stdio),
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let path = config::resolve_path(path.as_deref());
    let name = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into());
    match Config::load(path.as_deref()) {
        Ok(c) => {
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

fn run<F, Fut>(path: Option<PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let path = config::resolve_path(path.as_deref());
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nsentinel: the config is invalid; `sentinel check` lists every problem");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(f(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sentinel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let embedded = config.path.is_none();
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (is another process using the port? change server.listen)")
    })?;
    let gw = Gateway::start(config).await?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}/mcp");
    println!("Sentinel listening on {url}");
    if embedded {
        println!("No sentinel.toml found: running on the embedded default (loopback only, no backends).");
        println!("Connect Claude Code:  claude mcp add --transport http sentinel {url}");
        println!("Add MCP servers in sentinel.toml (see sentinel.example.toml), then `sentinel check`.");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let reaper = gw.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            reaper.reap_idle_sessions();
        }
    });
    let shutdown = gw.shutdown.clone();
    let server = axum::serve(listener, front::http::router(gw)).with_graceful_shutdown({
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
    tracing::info!("stopped");
    Ok(())
}

/// How long calls in flight may run on after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn stdio(config: Config) -> anyhow::Result<()> {
    let gw: Arc<Gateway> = Gateway::start(config).await?;
    front::stdio::serve(gw).await
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
