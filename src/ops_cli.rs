//! Operator commands around a running deployment: the daemon's pid file, `sentinel reload`
//! and `sentinel doctor`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, AuthConfig, Config};

/// The pid file's name. It sits beside the config file (in the working folder for the
/// embedded default).
pub const PID_FILE: &str = "sentinel.pid";

/// Where the daemon started on `config_path` keeps its pid file.
pub fn pid_path(config_path: Option<&Path>) -> PathBuf {
    match config_path.and_then(|p| p.parent()) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(PID_FILE),
        _ => PathBuf::from(PID_FILE),
    }
}

/// The running daemon's pid file: line 1 the pid, line 2 the address it listens on (the
/// bound one, so that `listen = "127.0.0.1:0"` is found too). Removed when dropped, unless
/// another daemon has written its own since.
pub struct PidFile {
    path: PathBuf,
    contents: String,
}

impl PidFile {
    /// Writes the pid file; a failure is a warning, never a reason not to serve.
    pub fn create(config_path: Option<&Path>, listening: SocketAddr) -> Option<PidFile> {
        let path = pid_path(config_path);
        let contents = format!("{}\n{listening}\n", std::process::id());
        match std::fs::write(&path, &contents) {
            Ok(()) => Some(PidFile { path, contents }),
            Err(e) => {
                tracing::warn!(
                    "cannot write the pid file {}: {e}; `sentinel reload` will not find this daemon",
                    path.display()
                );
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A running daemon, as its pid file names it.
struct Daemon {
    pid: i32,
    /// The address it bound (line 2 of the pid file), if the file has one.
    addr: Option<SocketAddr>,
}

/// Why there is no daemon to talk to: each a sentence for the operator (no file, a malformed
/// one, a stale one after a crash), naming the pid file it read.
#[derive(Debug, thiserror::Error)]
enum NoDaemon {
    /// No pid file; `serve` names the command that would have written it (` -c FILE`, or none).
    #[error("no daemon to reload: {} does not exist (is `sentinel serve{serve_args}` running?)", pid_file.display())]
    NoPidFile { pid_file: PathBuf, serve_args: String },
    #[error("cannot read the pid file {}: {error}", pid_file.display())]
    Unreadable { pid_file: PathBuf, error: std::io::Error },
    #[error("the pid file {} is malformed; remove it and restart the daemon", .0.display())]
    Malformed(PathBuf),
    #[error(
        "no daemon to reload: the pid file {} names process {pid}, which is not running (a stale file from a crash; remove it)",
        pid_file.display()
    )]
    NotRunning { pid_file: PathBuf, pid: i32 },
    #[error("cannot signal process {pid} from {}: {error}", pid_file.display())]
    CannotSignal { pid_file: PathBuf, pid: i32, error: std::io::Error },
    /// The pid was reused by another program (`exe`) after a crash.
    #[error(
        "the pid file {} names process {pid}, which is `{}`, not sentinel (a stale file from a crash; remove it)",
        pid_file.display(),
        exe.display()
    )]
    NotSentinel { pid_file: PathBuf, pid: i32, exe: PathBuf },
}

/// Sends `signal` to process `pid`; signal 0 sends nothing, only asks whether the process
/// exists and may be signalled. Hand-written over libc: std signals only its own children.
#[allow(unsafe_code)]
fn send_signal(pid: i32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The daemon started on `config_path`, or why there is none to talk to.
fn find_daemon(config_path: Option<&Path>) -> Result<Daemon, NoDaemon> {
    let pid_file = pid_path(config_path);
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let serve_args = config_path.map(|p| format!(" -c {}", p.display())).unwrap_or_default();
            return Err(NoDaemon::NoPidFile { pid_file, serve_args });
        }
        Err(error) => return Err(NoDaemon::Unreadable { pid_file, error }),
    };
    let mut lines = text.lines();
    let Some(pid) = lines.next().and_then(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 0) else {
        return Err(NoDaemon::Malformed(pid_file));
    };
    let addr: Option<SocketAddr> = lines.next().and_then(|l| l.trim().parse().ok());
    // Signal 0: does the process exist (and may we signal it)?
    if let Err(error) = send_signal(pid, 0) {
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Err(NoDaemon::NotRunning { pid_file, pid });
        }
        return Err(NoDaemon::CannotSignal { pid_file, pid, error });
    }
    // After a crash the pid may have been reused by another program: never send it SIGHUP (whose
    // default action is to end the process). Unreadable (another user's process) is left to `kill`.
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        let name = exe.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !name.starts_with("sentinel") {
            return Err(NoDaemon::NotSentinel { pid_file, pid, exe });
        }
    }
    Ok(Daemon { pid, addr })
}

/// The address a running daemon on this config bound, if one runs (`client-config` shows the
/// port a `listen = "...:0"` got).
pub fn running_daemon_addr(config_path: Option<&Path>) -> Option<SocketAddr> {
    find_daemon(config_path).ok()?.addr.map(reachable)
}

/// `sentinel reload`: validate the file, SIGHUP the daemon, report whether it took the file and
/// which changes wait for a restart.
pub fn reload(path: Option<PathBuf>) -> ExitCode {
    let path = config::resolve_path(path.as_deref());
    let Some(path) = path else {
        eprintln!(
            "sentinel: no config file (-c FILE or ./sentinel.toml): a daemon on the embedded default has nothing to reload"
        );
        return ExitCode::FAILURE;
    };
    let Daemon { pid, addr } = match find_daemon(Some(&path)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sentinel: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The daemon would refuse an invalid file anyway; saying why here is kinder than a log line.
    let config = match Config::load(Some(&path)) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.0 {
                println!("{p}");
            }
            println!(
                "{}: {} problem{} found; the daemon was not asked to reload and keeps its running config",
                path.display(),
                e.0.len(),
                if e.0.len() == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = addr.unwrap_or(config.server.listen);
    // The daemon refuses a file that turns authentication off while it listens beyond
    // loopback (the address it is bound to, not the file's `listen`); say so before asking.
    // Only the new file is known here (the daemon judges other changes against its own).
    if let Some(why) = config::auth_downgrade(addr, &config.auth, &config.auth) {
        println!("{}: {why}", path.display());
        println!("{}: refused; the daemon was not asked to reload and keeps its running config", path.display());
        return ExitCode::FAILURE;
    }
    let addr = reachable(addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client");
        let url = format!("http://{addr}/metrics");
        let token = config.server.metrics_token.as_ref().map(|t| t.0.clone());
        let before = match reload_counts(&client, &url, token.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sentinel: cannot read {url} before reloading: {e:#}; the daemon was not signalled");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = send_signal(pid, libc::SIGHUP) {
            eprintln!("sentinel: cannot send SIGHUP to process {pid}: {e}");
            return ExitCode::FAILURE;
        }
        // A reload that starts backends takes as long as their handshakes (each up to 30 s).
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(60);
        let mut told = false;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(now) = reload_counts(&client, &url, token.as_deref()).await {
                if now.1 > before.1 {
                    println!(
                        "{}: refused (the gateway log says why: a problem in the file, or a change that would weaken authentication on a non-loopback listener); the running config stays",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
                if now.0 > before.0 {
                    println!("{}: accepted (process {pid})", path.display());
                    let pending = restart_pending(&client, &url).await;
                    if !pending.is_empty() {
                        println!(
                            "{}: changed but NOT applied until the daemon restarts: {}",
                            path.display(),
                            pending.join(", ")
                        );
                    }
                    return ExitCode::SUCCESS;
                }
            }
            if !told && started.elapsed() > Duration::from_secs(3) {
                println!("{}: the daemon is still reloading (starting backends?) ...", path.display());
                told = true;
            }
            if tokio::time::Instant::now() >= deadline {
                println!(
                    "{}: no answer from process {pid} within 60s (sentinel_config_reloads_total did not move); see the gateway log",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    })
}

/// An address a client can connect to: a wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The settings `sentinel_config_restart_pending` marks: the file changes them, the daemon
/// keeps what it started with.
async fn restart_pending(client: &reqwest::Client, url: &str) -> Vec<String> {
    let Ok(r) = client.get(url).send().await else { return Vec::new() };
    let Ok(text) = r.text().await else { return Vec::new() };
    text.lines()
        .filter(|l| l.starts_with("sentinel_config_restart_pending{") && l.ends_with(" 1"))
        .filter_map(|l| l.split("setting=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect()
}

/// `sentinel_config_reloads_total` (ok, error) from the daemon's /metrics.
/// `token`: the file's `[server] metrics_token`, when `/metrics` asks for one.
async fn reload_counts(client: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<(f64, f64)> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    anyhow::ensure!(r.status().is_success(), "status {}", r.status());
    let text = r.text().await?;
    let count = |result: &str| {
        let label = format!("result=\"{result}\"");
        text.lines()
            .filter(|l| l.starts_with("sentinel_config_reloads_total") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    anyhow::ensure!(text.contains("sentinel_config_reloads_total"), "no sentinel_config_reloads_total in the answer");
    Ok((count("ok"), count("error")))
}

/// The outcome of one `doctor` check.
#[derive(Clone, Copy, PartialEq)]
enum Status {
    Pass,
    Warn,
    Fail,
}

struct Report {
    failures: usize,
}

impl Report {
    fn line(&mut self, status: Status, what: impl std::fmt::Display) {
        let tag = match status {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => {
                self.failures += 1;
                "FAIL"
            }
        };
        println!("{tag}  {what}");
    }
}

/// How long doctor waits for the audit store to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(15);

/// `sentinel doctor`: one pass/warn/FAIL line per check; non-zero exit on any failure.
pub fn doctor(path: Option<PathBuf>) -> ExitCode {
    let path = config::resolve_path(path.as_deref());
    let name = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into());
    let mut report = Report { failures: 0 };
    let config = match Config::load(path.as_deref()) {
        Ok(c) => {
            report.line(Status::Pass, format!("config {name} is valid"));
            c
        }
        Err(e) => {
            for p in &e.0 {
                println!("      {p}");
            }
            report.line(Status::Fail, format!("config {name}: {} problem(s); `sentinel check` lists them", e.0.len()));
            return ExitCode::FAILURE;
        }
    };

    let listen = config.server.listen;
    if listen.ip().is_loopback() {
        report.line(Status::Pass, format!("listen {listen} is loopback"));
    } else if config.server.allow_public {
        report.line(
            Status::Warn,
            format!("listen {listen} is not loopback: exposed beyond this machine because `allow_public = true`"),
        );
    } else {
        report.line(Status::Fail, format!("listen {listen} is not loopback and `allow_public` is not set"));
    }

    for (key, file) in secret_files(&config) {
        report_secret_file(&mut report, &key, &file);
    }
    for w in &config.literal_secrets {
        report.line(Status::Fail, format!("literal secret in the config: {w}"));
    }
    for w in &config.warnings {
        report.line(Status::Warn, format!("{w}"));
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        check_audit(&mut report, &config).await;
        check_credentials(&mut report, &config).await;
        check_backends(&mut report, config).await;
    });
    drop(rt);

    if report.failures == 0 {
        println!("{name}: every check passed");
        ExitCode::SUCCESS
    } else {
        println!("{name}: {} check{} failed", report.failures, if report.failures == 1 { "" } else { "s" });
        ExitCode::FAILURE
    }
}

/// The secret files the config names: `[auth] hs256_secret_file` and `jwks_file`, and the
/// keys of `[credentials]`.
fn secret_files(config: &Config) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    // A secret's path is not kept once it is read: find it in the file again.
    let raw = config.path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()?.parse::<toml::Table>().ok());
    // `in_config_dir`: a relative path is read from the config's folder (as `[credentials]`
    // reads its keys), else from the working folder (as `[auth]` reads its secret).
    let named = |section: &str, key: &str, in_config_dir: bool| -> Option<PathBuf> {
        let f = raw.as_ref()?.get(section)?.get(key)?.as_str()?.to_string();
        let env = |k: &str| std::env::var(k).ok();
        let f = PathBuf::from(config::expand(&f, &env).unwrap_or(f));
        let dir = config.path.as_ref().and_then(|p| p.parent()).filter(|_| in_config_dir);
        Some(match dir {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f,
        })
    };
    if let AuthConfig::Jwt(j) = &config.auth {
        if let Some(f) = named("auth", "hs256_secret_file", false) {
            out.push(("[auth] hs256_secret_file".to_string(), f));
        }
        if let Some(f) = &j.jwks_file {
            out.push(("[auth] jwks_file".to_string(), f.clone()));
        }
    }
    for key in ["key_file", "previous_key_file"] {
        if let Some(f) = named("credentials", key, true) {
            out.push((format!("[credentials] {key}"), f));
        }
    }
    out
}

fn report_secret_file(report: &mut Report, key: &str, file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(file) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 == 0 {
                report.line(Status::Pass, format!("{key} {} is private (mode {mode:03o})", file.display()));
            } else {
                report.line(
                    Status::Fail,
                    format!(
                        "{key} {} is readable by others (mode {mode:03o}); run `chmod 600 {}`",
                        file.display(),
                        file.display()
                    ),
                );
            }
        }
        Err(e) => report.line(Status::Fail, format!("{key} {}: {e}", file.display())),
    }
}

/// Whether the keys of `[credentials]` open every credential stored.
async fn check_credentials(report: &mut Report, config: &Config) {
    let Some(keys) = &config.credentials else { return };
    let counted = tokio::time::timeout(STORE_TIMEOUT, async {
        let store = crate::audit::store::SqlStore::connect(&config.audit.url).await?;
        store.migrate().await?;
        let verified = crate::credentials::store::verify(&store, keys).await;
        let n: i64 = crate::credentials::store::key_ids(&store).await?.iter().map(|(_, n)| n).sum();
        store.close().await;
        Ok::<_, anyhow::Error>(verified.map(|()| n))
    })
    .await;
    match counted {
        Ok(Ok(Ok(n))) => report.line(
            Status::Pass,
            format!("credential store: {n} credential(s), every one sealed with a key this config holds"),
        ),
        Ok(Ok(Err(e))) => report.line(Status::Fail, format!("credential store: {e:#}")),
        // An unreachable store is reported by the audit check already.
        Ok(Err(_)) | Err(_) => {
            report.line(Status::Warn, "credential store: not checked (the audit store did not answer)");
        }
    }
}

async fn check_audit(report: &mut Report, config: &Config) {
    let a = &config.audit;
    if a.url == "none" {
        report.line(Status::Warn, "audit store: [audit] url = \"none\": no durable audit trail");
        return;
    }
    let shown = config::redact_url(&a.url);
    let store = tokio::time::timeout(STORE_TIMEOUT, async {
        let store = crate::audit::store::SqlStore::connect(&a.url).await?;
        store.migrate().await?;
        Ok::<_, anyhow::Error>(store)
    })
    .await;
    match store {
        Ok(Ok(store)) => {
            store.close().await;
            report.line(Status::Pass, format!("audit store {shown} is reachable and migrated"));
        }
        Ok(Err(e)) => report.line(Status::Fail, format!("audit store {shown}: {e:#}")),
        Err(_) => report.line(Status::Fail, format!("audit store {shown}: no answer within {STORE_TIMEOUT:?}")),
    }
    let dir = &a.spool_dir;
    match probe_dir(dir) {
        Ok(()) => report.line(Status::Pass, format!("audit spool {} is writable", dir.display())),
        Err(e) => report.line(Status::Fail, format!("audit spool {} is not writable: {e}", dir.display())),
    }
    // Records of another store's gateway (configs in one folder share the default spool folder)
    // are never replayed into this one: they wait for a gateway of theirs.
    match crate::audit::spool::foreign(dir, &crate::audit::store::identity(&a.url)) {
        Ok(folders) => {
            for f in folders {
                let owner = if f.owner_running { "its gateway is running" } else { "its gateway is not running" };
                report.line(
                    Status::Warn,
                    format!(
                        "audit spool {} holds {} segment(s) ({} bytes) for another store, {}; {owner}: they are stored when a gateway of that store starts with this spool_dir",
                        f.dir.display(),
                        f.segments,
                        f.bytes,
                        f.store
                    ),
                );
            }
        }
        Err(e) => report.line(Status::Warn, format!("audit spool {}: cannot list its folders: {e}", dir.display())),
    }
}

/// Creates the folder if needed and writes, syncs and removes a file of doctor's own in it
/// (never the name a running daemon's spool uses).
fn probe_dir(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(format!(".doctor-probe-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&path)?;
    let written = f.write_all(b"probe\n").and_then(|()| f.sync_data());
    let _ = std::fs::remove_file(&path);
    written
}

async fn check_backends(report: &mut Report, config: Config) {
    if config.backends.is_empty() {
        report.line(Status::Warn, "no backends configured");
        return;
    }
    // Each backend is started and handshaken on its own (`server/discover`, falling back to
    // `initialize`), as the gateway would, so that each failure comes with its reason.
    let client =
        crate::backend::http_client::BackendClient::new(concat!("sentinel/", env!("CARGO_PKG_VERSION"), " (doctor)"))
            .expect("http client");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let starts = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| crate::backend::Backend::start(i, b.clone(), client.clone(), tx.clone()));
    let started = futures::future::join_all(starts).await;
    for (b, r) in config.backends.iter().zip(&started) {
        match r {
            Ok(backend) => report.line(
                Status::Pass,
                format!("backend `{}` started and answered (protocol {})", b.name, backend.generation),
            ),
            Err(e) => {
                let why = format!("{e:#}");
                let named = format!("backend `{}`", b.name);
                report.line(Status::Fail, if why.starts_with(&named) { why } else { format!("{named}: {why}") });
            }
        }
    }
    // The names the started backends' tools and prompts get, as the gateway would build them:
    // two that come out the same (two tools of one backend that slug alike, in the
    // `contextforge` style) leave one hidden.
    let mut listings = Vec::new();
    for (i, (b, r)) in config.backends.iter().zip(&started).enumerate() {
        if let Ok(backend) = r {
            listings.push((i, b, backend.listing().await));
        }
    }
    let sources: Vec<crate::catalog::Source> = listings
        .iter()
        .map(|(i, b, l)| crate::catalog::Source { index: *i, name: &b.name, prefix: &b.prefix, listing: l })
        .collect();
    let catalog = crate::catalog::Catalog::build(&config.naming, &config.tool_overrides, &sources);
    for clash in &catalog.clashes {
        report.line(Status::Fail, clash);
    }
    if !sources.is_empty() && catalog.clashes.is_empty() {
        report.line(
            Status::Pass,
            format!("{} tool and prompt names, none clashing", catalog.tools.len() + catalog.prompts.len()),
        );
    }
    let running: Vec<_> = started.iter().filter_map(|r| r.as_ref().ok()).collect();
    futures::future::join_all(running.iter().map(|b| b.terminate(Duration::from_secs(2)))).await;
}
