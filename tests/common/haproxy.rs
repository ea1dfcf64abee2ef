//! A real HAProxy (Debian's `haproxy` package, which `.ci/run` installs) on loopback in front of
//! real replicas, running the config the project ships (`deploy/haproxy/haproxy.cfg`) with its
//! `bind` and `server` lines pointed here: round robin, no stickiness. Every answer names the
//! server that gave it in `x-served-by`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Haproxy {
    /// `/mcp` through the shipped backend.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// `haproxy` on PATH, or where Debian puts it (`/usr/sbin` is not on every user's PATH); a
/// missing one fails the test saying how to install it.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "haproxy is not installed: the load-balancer tests run Debian's HAProxy in front of real replicas. \
             `.ci/run` installs it; by hand: apt-get install -y haproxy"
        )
    })
}

/// A port the OS just handed out and took back: HAProxy cannot pick one itself and say which.
/// Another process could take it in between (rarely); `start` then tries other ports.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shipped config with its listeners on `ports` and its servers replaced by `servers`; the
/// `resolvers` section goes (the servers are addresses, and no DNS server is asked anything).
/// Added: an admin socket (to see the servers' health) and `x-served-by`.
pub fn config(shipped: &str, servers: &[(&str, SocketAddr)], port: u16, dir: &std::path::Path) -> String {
    let server_lines: String = servers.iter().map(|(name, addr)| format!("    server {name} {addr}\n")).collect();
    let served_by = "    http-response set-header x-served-by %[srv_name]\n";
    let mut out = String::new();
    let mut section = "";
    let mut servers_written = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if !line.starts_with(char::is_whitespace) && !trimmed.is_empty() && !trimmed.starts_with('#') {
            section = trimmed.split_whitespace().next().unwrap_or("");
            if section == "resolvers" {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            match section {
                "global" => {
                    out.push_str(&format!("    stats socket {}/admin.sock mode 600 level admin\n", dir.display()));
                }
                "backend" => out.push_str(served_by),
                _ => {}
            }
            continue;
        }
        if section == "resolvers" {
            continue;
        }
        if trimmed.starts_with("bind ") {
            out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
        } else if trimmed.starts_with("server ") {
            if !servers_written {
                out.push_str(&server_lines);
                servers_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written, "the shipped HAProxy config has no `server` line");
    out
}

impl Haproxy {
    /// HAProxy on the shipped config in front of `servers` (name, address), once it listens
    /// and sees every server up.
    pub fn start(servers: &[(&str, SocketAddr)]) -> Haproxy {
        let bin = binary();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let shipped =
            std::fs::read_to_string(root.join("deploy/haproxy/haproxy.cfg")).expect("deploy/haproxy/haproxy.cfg");
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(&cfg, config(&shipped, servers, port, dir.path())).unwrap();
            let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
            // -db: stay in the foreground, so that the test owns the process and its end.
            let child = Command::new(&bin)
                .arg("-db")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let mut lb = Haproxy { url: format!("http://127.0.0.1:{port}/mcp"), child, dir };
            match lb.wait_until_serving(servers.len()) {
                Ok(()) => return lb,
                Err(e) => {
                    last_error = format!(
                        "{e}\n--- haproxy.cfg ---\n{}\n--- log ---\n{}",
                        std::fs::read_to_string(&cfg).unwrap(),
                        lb.log()
                    );
                }
            }
        }
        panic!("HAProxy did not start: {last_error}");
    }

    /// Until the admin socket shows `servers` servers up in the shipped backend, whose health
    /// checks have then answered (or HAProxy exited: a port taken in between).
    fn wait_until_serving(&mut self, servers: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("haproxy exited: {status}"));
            }
            let up =
                self.servers().iter().filter(|(backend, _, status)| backend == "sentinel" && status == "UP").count();
            if up == servers {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not every server up within 20 s: {:?}", self.servers()))
    }

    /// (backend, server, status) of every server, from the admin socket's `show stat`.
    pub fn servers(&self) -> Vec<(String, String, String)> {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock")) else {
            return Vec::new();
        };
        let mut text = String::new();
        if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        // CSV: pxname, svname, ..., status is the 18th column.
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                let (px, sv, status) = (cols.first()?, cols.get(1)?, cols.get(17)?);
                (*sv != "FRONTEND" && *sv != "BACKEND").then(|| (px.to_string(), sv.to_string(), status.to_string()))
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log());
        }
    }
}
