//! Starting a scenario's two sides: the backend called directly, and the same backend behind a
//! fresh gateway started on the scenario's config. Everything started here stops when the
//! `Pair` is dropped (or `close`d, for the stdio children, which end on EOF).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::args::{BackendKind, Governance};
use crate::gateway_config::{self, BackendSpec, Governed, SECRET_ENV};
use crate::http_client::HttpClients;
use crate::load::Target;
use crate::process::{Bins, Server};
use crate::scenario::Scenario;
use crate::stdio_client::StdioClients;

/// The mock's tool, and its name through the gateway (backend `mock`).
const TOOL: &str = "bench";
const GATEWAY_TOOL: &str = "mock__bench";
/// Time for a gateway to list its backend's tools.
const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct Pair {
    pub direct: Arc<Target>,
    pub sentinel: Arc<Target>,
    /// The process the direct side talks to (the mock), and the gateway: whose CPU time and
    /// memory are reported.
    pub direct_pid: u32,
    pub gateway_pid: u32,
    /// Processes that live as long as the pair; dropped after the targets.
    _servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub async fn start(s: &Scenario, bins: &Bins, governed: &Governed) -> anyhow::Result<Pair> {
        let governed = match s.governance {
            Governance::Off => None,
            Governance::On | Governance::NoAudit | Governance::Traced | Governance::Cluster => Some(governed),
        };
        let audit = matches!(s.governance, Governance::On | Governance::Traced | Governance::Cluster);
        let traced = s.governance == Governance::Traced;
        let cluster = s.governance == Governance::Cluster;
        let dir = tempfile::tempdir()?;
        let mut servers = Vec::new();
        let (direct, direct_pid, sentinel, gateway_pid) = match s.backend {
            BackendKind::Http => {
                let mut cmd = Command::new(&bins.mock);
                cmd.args(["--http", "127.0.0.1:0"]).stderr(std::process::Stdio::null());
                let mock = Server::start(cmd, "mcp-mock --http")?;
                let direct = http_clients(&mock.url, TOOL, s, None).await?;
                let config =
                    gateway_config::config(&[("mock", BackendSpec::Http(&mock.url))], governed, audit, traced, cluster);
                let gw = serve(bins, dir.path(), &config, governed).await?;
                let sentinel = http_clients(&gw.url, GATEWAY_TOOL, s, governed).await?;
                let pids = (mock.pid(), gw.pid());
                servers.extend([mock, gw]);
                (direct, pids.0, sentinel, pids.1)
            }
            BackendKind::Stdio | BackendKind::StdioHttp => {
                let mut mock = tokio::process::Command::new(&bins.mock);
                mock.stderr(std::process::Stdio::null());
                let direct = StdioClients::spawn(mock, TOOL, s.generation, s.payload).await?;
                let direct_pid = direct.pid;
                let direct = Target::Stdio(direct);
                let config = gateway_config::config(
                    &[("mock", BackendSpec::Stdio(&bins.mock))],
                    governed,
                    audit,
                    traced,
                    cluster,
                );
                if s.backend == BackendKind::Stdio {
                    let front = sentinel_stdio(bins, dir.path(), &config, governed)?;
                    let clients = StdioClients::spawn(front, GATEWAY_TOOL, s.generation, s.payload).await?;
                    let pid = clients.pid;
                    (direct, direct_pid, Target::Stdio(clients), pid)
                } else {
                    let gw = serve(bins, dir.path(), &config, governed).await?;
                    let sentinel = http_clients(&gw.url, GATEWAY_TOOL, s, governed).await?;
                    let pid = gw.pid();
                    servers.push(gw);
                    (direct, direct_pid, sentinel, pid)
                }
            }
        };
        direct.wait_for_tool(READY_WITHIN).await?;
        sentinel.wait_for_tool(READY_WITHIN).await?;
        Ok(Pair {
            direct: Arc::new(direct),
            sentinel: Arc::new(sentinel),
            direct_pid,
            gateway_pid,
            _servers: servers,
            _dir: dir,
        })
    }

    pub async fn close(self) {
        self.direct.close().await;
        self.sentinel.close().await;
    }
}

/// HTTP clients of `url`; through a governed gateway each presents a token of its own.
async fn http_clients(url: &str, tool: &str, s: &Scenario, governed: Option<&Governed>) -> anyhow::Result<Target> {
    let tokens = (0..s.clients)
        .map(|i| governed.map(|g| g.token(&format!("bench-client-{i}"))).transpose())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Target::Http(HttpClients::connect(url, tool, s.generation, s.payload, tokens).await?))
}

fn write_config(dir: &Path, config: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("sentinel.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// `sentinel serve` on `config`, in `dir` (its audit spool goes there), ready: `/ready`
/// answers 200 once every (required) backend is up.
pub async fn serve(bins: &Bins, dir: &Path, config: &str, governed: Option<&Governed>) -> anyhow::Result<Server> {
    let mut cmd = Command::new(&bins.sentinel);
    cmd.arg("serve").arg("-c").arg(write_config(dir, config)?).current_dir(dir);
    cmd.stderr(std::fs::File::create(dir.join("sentinel.log"))?);
    if let Some(g) = governed {
        cmd.env(SECRET_ENV, &g.secret);
    }
    let gw = Server::start(cmd, "sentinel serve")?;
    wait_ready(gw.base(), READY_WITHIN).await.with_context(|| log_tail(dir))?;
    Ok(gw)
}

/// Polls `/ready` every millisecond until it answers 200.
pub async fn wait_ready(base: &str, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let answer = http.get(format!("{base}/ready")).send().await;
        if answer.as_ref().is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{base}/ready not 200 within {within:?}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `sentinel stdio` on `config`; the token comes from `SENTINEL_TOKEN`, as for any stdio client.
fn sentinel_stdio(
    bins: &Bins,
    dir: &Path,
    config: &str,
    governed: Option<&Governed>,
) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(&bins.sentinel);
    cmd.arg("stdio").arg("-c").arg(write_config(dir, config)?).current_dir(dir);
    cmd.stderr(std::fs::File::create(dir.join("sentinel.log"))?);
    if let Some(g) = governed {
        cmd.env(SECRET_ENV, &g.secret).env("SENTINEL_TOKEN", g.token("bench-stdio-client")?);
    }
    Ok(cmd)
}

/// The end of a gateway's log, for a failure report.
pub fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("sentinel.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!("gateway log (last lines):\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
}
