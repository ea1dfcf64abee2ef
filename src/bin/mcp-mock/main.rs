//! `mcp-mock`: Sentinel's own scriptable MCP test backend.
//!
//! Speaks the session-based protocol (2025-03-26 .. 2025-11-25) and the stateless
//! 2026-07-28 protocol, over stdio or Streamable HTTP. It is deliberately
//! self-contained (no `use sentinel::..`): an independent peer does not share the
//! gateway's bugs. See `tools.rs` for the tools tests can script.

mod catalog;
mod content;
mod context;
mod dispatch;
mod headers;
mod http;
mod mrtr_tools;
mod rpc;
mod server;
mod stdio;
mod tasks;
mod tools;

use clap::Parser;
use server::{Generation, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "mcp-mock", about = "Scriptable MCP test backend (stdio or Streamable HTTP)")]
struct Cli {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Which protocol generation(s) to speak.
    #[arg(long, value_enum, default_value = "both")]
    generation: Generation,
    /// serverInfo name.
    #[arg(long, default_value = "mcp-mock")]
    name: String,
    /// Append every received message (exact text, one per line) to this file.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write a non-JSON line to stdout before anything else (stdio only).
    #[arg(long)]
    garbage_at_start: bool,
    /// Exit abruptly (code 4) on receiving the Nth request, without answering it.
    #[arg(long, value_name = "N")]
    exit_after: Option<u64>,
    /// Offer only tools of these names (repeat), each answering `called NAME`, instead of the
    /// fixed list: to stand in for a real server whose tool names a test needs.
    #[arg(long = "tool", value_name = "NAME")]
    tools: Vec<String>,
    /// HTTP status for an unknown `Mcp-Session-Id`: 404 (the spec's), or 400 with
    /// server-everything's "Bad Request: No valid session ID provided".
    #[arg(long, value_name = "STATUS", default_value = "404", value_parser = clap::value_parser!(u16).range(400..=404))]
    unknown_session_status: u16,
    /// Declare 2025-11-25 tasks and offer `task_work`, which may run as one.
    #[arg(long)]
    tasks: bool,
    /// Answer 401 to an HTTP POST without an `Authorization` header.
    #[arg(long)]
    require_authorization: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_MOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();

    let cli = Cli::parse();
    let log = match &cli.log {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    let mut server = Server::new(cli.name, cli.generation, log, cli.exit_after, cli.tools);
    server.unknown_session_status = cli.unknown_session_status;
    server.tasks = cli.tasks.then(tasks::Tasks::default);
    server.require_authorization = cli.require_authorization;
    let server = Arc::new(server);
    match cli.http {
        Some(addr) => http::run(server, addr).await,
        None => stdio::run(server, cli.garbage_at_start).await,
    }
}
