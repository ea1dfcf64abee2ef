//! Child processes the bench starts: servers that announce `... listening on http://ADDR/mcp`
//! on stdout (`sentinel serve`, `mcp-mock --http`), and where the binaries are.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `sentinel` and `mcp-mock`, beside this binary unless told otherwise: `cargo build
/// --release` puts all three in `target/release`, and integration tests find them in
/// `target/debug`.
pub struct Bins {
    pub sentinel: PathBuf,
    pub mock: PathBuf,
}

impl Bins {
    pub fn find(dir: Option<&Path>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()?.parent().context("this binary has no folder")?.to_path_buf(),
        };
        let bins = Bins { sentinel: dir.join("sentinel"), mock: dir.join("mcp-mock") };
        for b in [&bins.sentinel, &bins.mock] {
            if !b.is_file() {
                bail!("{} not found: build it (`cargo build --release`) or pass --bin-dir", b.display());
            }
        }
        Ok(bins)
    }
}

/// A server process, stopped when dropped: SIGTERM first, so that a gateway stops the stdio
/// backends it started (each in a process group of its own, which a SIGKILL would orphan).
pub struct Server {
    child: Child,
    pub url: String,
    /// From spawn to the `listening on` line.
    pub announced_after: Duration,
}

impl Server {
    /// Starts `cmd` and waits for its `listening on URL` line.
    pub fn start(mut cmd: Command, what: &str) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("start {what}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps reading after the URL so that the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((line.rsplit(' ').next().unwrap_or_default().to_string(), started.elapsed()));
                    }
                }
            }
        });
        let mut server = Server { child, url: String::new(), announced_after: Duration::ZERO };
        let (url, after) =
            rx.recv_timeout(Duration::from_secs(60)).with_context(|| format!("{what} announced no URL within 60 s"))?;
        server.url = url;
        server.announced_after = after;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR` without `/mcp`.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches("/mcp")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
#[allow(unsafe_code)]
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet (try_wait said so).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
