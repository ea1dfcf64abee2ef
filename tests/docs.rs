//! The shell blocks of README.md and docs/quickstart.md, run as a new user types them: in order,
//! in one shell session per page (so `export` carries over), in a fresh folder holding a copy of
//! `sentinel.example.toml`, with the freshly built `sentinel` on PATH and a private HOME. After
//! each block the test checks what the page promises it does.
//!
//! Stand-ins (docs/testing.md lists them too), for what needs a network install or a second
//! terminal:
//! - `cargo install ...` does nothing (`sentinel` is already on PATH); `cargo run --release -- ARGS`
//!   runs `sentinel ARGS`; `cargo test` does nothing (it is the suite running this).
//! - `sentinel serve` runs in the background, as in a terminal of its own, and returns once it
//!   listens, printing what it printed; a later `sentinel serve` first stops the earlier one, as
//!   Ctrl-C would.
//! - `npx -y @modelcontextprotocol/server-sequential-thinking` and `uvx mcp-server-time` run the
//!   same servers from the test peers.
//! - `claude` records its arguments; the test then connects as Claude Code would, with them.
//! - The pages use the fixed address `127.0.0.1:8800`: the blocks run in a private network
//!   namespace (`unshare -rn`) where that port is free, or, where that is not allowed, on this
//!   machine's loopback if the port is free there.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ADDR: &str = "127.0.0.1:8800";
const URL: &str = "http://127.0.0.1:8800/mcp";
const IN_NETNS: &str = "SENTINEL_DOCS_IN_NETNS";
const TEST_NAME: &str = "readme_and_quickstart_run_as_written";

#[tokio::test]
async fn readme_and_quickstart_run_as_written() {
    let peers = peers::ensure();
    if std::env::var_os(IN_NETNS).is_none() {
        if private_network_works() {
            let status = Command::new("unshare")
                .args(["-rn", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
                .arg(std::env::current_exe().unwrap())
                .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(IN_NETNS, "1")
                .status()
                .expect("run the docs test in a private network namespace");
            assert!(status.success(), "the docs test failed in its private network namespace (output above)");
            return;
        }
        assert!(
            std::net::TcpListener::bind(ADDR).is_ok(),
            "the pages use {ADDR}, which is taken here, and no private network namespace (`unshare -rn`) is allowed"
        );
    }
    for page in ["README.md", "docs/quickstart.md"] {
        run_page(page, &peers).await;
    }
}

fn private_network_works() -> bool {
    Command::new("unshare")
        .args(["-rn", "--", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The ```sh blocks of a markdown page, and the ```text block that follows each (what a command
/// prints, shown on the page), if any.
fn sh_blocks(markdown: &str) -> Vec<(String, Option<String>)> {
    let mut blocks: Vec<(String, Option<String>)> = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let fence = line.trim_end();
        if fence != "```sh" && fence != "```text" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim_end() != "```").collect();
        let body = body.join("\n") + "\n";
        if fence == "```sh" {
            blocks.push((body, None));
        } else if let Some(last) = blocks.last_mut() {
            last.1.get_or_insert(body);
        }
    }
    blocks
}

/// One page's blocks in one shell, each followed by the check of its promises.
async fn run_page(page: &str, peers: &peers::Peers) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let markdown = std::fs::read_to_string(root.join(page)).unwrap();
    let blocks = sh_blocks(&markdown);
    assert!(blocks.len() >= 3, "{page}: too few ```sh blocks found: {}", blocks.len());
    let world = World::new(&root, peers);
    let mut shell = Shell::start(&world);
    for (i, (block, printed)) in blocks.iter().enumerate() {
        let output = shell
            .run(block)
            .unwrap_or_else(|e| panic!("{page}, block {}:\n{block}\n{e}\nserve's log:\n{}", i + 1, world.serve_log()));
        let at = format!("{page}, block {}:\n{block}\n--- it printed ---\n{output}", i + 1);
        check(&world, &mut shell, block, printed.as_deref(), &output, &at).await;
    }
    shell.stop();
}

/// What each block promises, told apart by what it runs.
async fn check(world: &World, shell: &mut Shell, block: &str, printed: Option<&str>, output: &str, at: &str) {
    let runs = |cmd: &str| block.lines().any(|l| l.trim_start().starts_with(cmd));
    if runs("cargo install") || runs("cargo test") {
        return;
    }
    if (runs("cargo run --release -- serve") || runs("sentinel serve")) && !runs("cp sentinel.example.toml") {
        first_run(output, at).await;
        return;
    }
    if runs("cp sentinel.example.toml") {
        assert!(output.contains("sentinel.toml: ok (2 backends)"), "`sentinel check` did not pass the example: {at}");
        assert!(output.contains(&format!("Sentinel listening on {URL}")), "`sentinel serve` did not listen: {at}");
        // The backends start with the gateway, but one that is slow to (a cold Python) is
        // retried and joins the list a little later.
        let token = admin_token(shell);
        let want = ["sequential-thinking__sequentialthinking", "get_current_time", "convert_time"];
        eventually_within(Duration::from_secs(90), "both example backends' tools are listed", || async {
            let tools = tool_names_with(&token, at).await;
            want.iter().all(|w| tools.iter().any(|t| t == w))
        })
        .await;
        if runs("claude mcp add") {
            claude_connects(world, at).await;
        }
        return;
    }
    if runs("export SENTINEL_TOKEN=$(sentinel token") {
        let token = shell.value("$SENTINEL_TOKEN");
        assert_eq!(token.split('.').count(), 3, "SENTINEL_TOKEN is not a token ({token:?}): {at}");
        let printed = printed.unwrap_or_else(|| panic!("no ```text block shows what client-config prints: {at}"));
        let here = world.cwd.join("sentinel.toml");
        let expected = printed.replace("/abs/path/sentinel.toml", here.to_str().unwrap());
        assert_eq!(
            output.trim_end(),
            expected.trim_end(),
            "the page shows other output than client-config prints: {at}"
        );
        // The page says to run one of the printed commands: run both, as printed.
        for command in expected.lines().filter(|l| l.starts_with("claude mcp add")) {
            shell.run(&format!("{command}\n")).unwrap_or_else(|e| panic!("`{command}` failed: {e}: {at}"));
        }
        claude_connects(world, at).await;
        return;
    }
    if runs("sentinel token --sub alice --role researcher") {
        let tokens: Vec<&str> = output.lines().filter(|l| l.split('.').count() == 3 && l.starts_with("eyJ")).collect();
        assert_eq!(tokens.len(), 2, "two tokens: {at}");
        // alice is a researcher: she sees what the example's role allows, no more.
        let tools = tool_names_with(tokens[0], at).await;
        assert_eq!(tools, ["sequential-thinking__sequentialthinking", "get_current_time"], "{at}");
        return;
    }
    if runs("sentinel audit") {
        // The calls the checks above made, as the page promises: "read what happened".
        assert!(output.lines().next().is_some_and(|l| l.starts_with("TIME (UTC)")), "no table: {at}");
        assert!(output.contains("get_current_time") && output.contains(" ok "), "the calls are not in the trail: {at}");
        return;
    }
    panic!("the docs test does not know what this block promises; teach `check` about it: {at}");
}

/// `sentinel serve` on the embedded default prints its URL, a development token and the Claude
/// Code command; the token works (and nothing works without it).
async fn first_run(output: &str, at: &str) {
    assert!(output.contains(&format!("Sentinel listening on {URL}")), "{at}");
    let command =
        output.lines().find(|l| l.contains("claude mcp add --transport http")).unwrap_or_else(|| panic!("{at}"));
    assert!(command.contains(URL), "{at}");
    let token = command.split("Authorization: Bearer ").nth(1).expect("a token").trim_end_matches('"');
    assert!(output.contains("Development token (role admin, valid for 30 days"), "{at}");
    assert_eq!(HttpClient::modern(URL).request("tools/list", json!({})).await.status, 401, "{at}");
    assert_eq!(tool_names_with(token, at).await, Vec::<String>::new(), "{at}");
}

/// A token for the example config's admin, minted in the page's shell (its secret).
fn admin_token(shell: &mut Shell) -> String {
    let t = shell.value("$(sentinel token --sub docs-check --role admin --ttl 1h)");
    assert_eq!(t.split('.').count(), 3, "{t}");
    t
}

async fn tool_names_with(token: &str, at: &str) -> Vec<String> {
    let r = HttpClient::modern(URL).with_token(token).request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "tools/list with the token: {r:?}: {at}");
    r.json()["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

/// Every `claude mcp add` the page ran, used the way Claude Code would: the HTTP one with its
/// header, the stdio one by starting the command with exactly the variables it was given.
async fn claude_connects(world: &World, at: &str) {
    let added = world.claude_calls();
    assert!(!added.is_empty(), "no `claude mcp add` was run: {at}");
    for args in added {
        assert_eq!(&args[..2], ["mcp", "add"], "{args:?}: {at}");
        if let Some(i) = args.iter().position(|a| a == "--transport") {
            assert_eq!(args[i + 1], "http", "{args:?}");
            let url = &args[i + 3];
            let header = &args[args.iter().position(|a| a == "--header").expect("a header") + 1];
            let token = header.strip_prefix("Authorization: Bearer ").unwrap_or_else(|| panic!("{header}: {at}"));
            let c = HttpClient::modern(url).with_token(token);
            let r = c.call("get_current_time", json!({"timezone": "UTC"})).await;
            assert_eq!(r.status, 200, "{r:?}: {at}");
            assert!(
                r.json()["result"]["content"].is_array() && r.json()["result"]["isError"] != json!(true),
                "{r:?}: {at}"
            );
        } else {
            let dash = args.iter().position(|a| a == "--").expect("`--` before the command");
            let mut env = Vec::new();
            let mut k = 2;
            while k < dash {
                if args[k] == "-e" {
                    let (name, value) = args[k + 1].split_once('=').expect("-e NAME=VALUE");
                    assert!(!value.is_empty(), "`-e {name}=` is empty: the shell had no value for it: {at}");
                    env.push((name.to_string(), value.to_string()));
                    k += 1;
                }
                k += 1;
            }
            let (program, rest) = (&args[dash + 1], &args[dash + 2..]);
            let program = world.which(program);
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let path = world.path.clone();
            let home = world.home.to_str().unwrap().to_string();
            env.push(("PATH", &path));
            env.push(("HOME", &home));
            let c = StdioClient::spawn_clean(&program, &rest, &world.cwd, &env);
            // A fresh gateway: its slower backend (a cold Python) may join the list a little later.
            let c = tokio::sync::Mutex::new(c);
            let next_id = std::sync::atomic::AtomicU64::new(100);
            eventually_within(Duration::from_secs(90), "the stdio gateway lists get_current_time", || async {
                let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let list = c.lock().await.request_modern(json!(id), "tools/list", json!({})).await;
                list.contains("\"get_current_time\"")
            })
            .await;
            let mut c = c.into_inner();
            let r: Value = serde_json::from_str(
                &c.request_modern(
                    json!(1),
                    "tools/call",
                    json!({"name": "get_current_time", "arguments": {"timezone": "UTC"}}),
                )
                .await,
            )
            .unwrap();
            assert!(r["result"]["content"].is_array(), "the stdio gateway Claude Code would start: {r}: {at}");
        }
    }
    world.forget_claude_calls();
}

/// The folder, HOME, PATH and stand-ins a page runs with.
struct World {
    _tmp: tempfile::TempDir,
    cwd: PathBuf,
    home: PathBuf,
    /// The stand-ins' records and serve's logs.
    state: PathBuf,
    path: String,
}

impl World {
    fn new(root: &Path, peers: &peers::Peers) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let (cwd, home, bin, state) =
            (tmp.path().join("work"), tmp.path().join("home"), tmp.path().join("bin"), tmp.path().join("state"));
        for d in [&cwd, &home, &bin, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(root.join("sentinel.example.toml"), cwd.join("sentinel.example.toml")).unwrap();
        let stub = |name: &str, body: String| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/usr/bin/env bash\nset -euo pipefail\n{body}")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let real = sentinel_bin();
        let (state_s, real_s) = (state.display(), real.display());
        stub(
            "sentinel",
            format!(
                r#"# `sentinel serve` in a terminal of its own: in the background, returning once it listens.
if [ "${{1:-}}" = serve ]; then
  if [ -f {state_s}/serve.pid ]; then
    old=$(cat {state_s}/serve.pid)
    kill -INT "$old" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  fi
  n=$(( $(cat {state_s}/serve.count 2>/dev/null || echo 0) + 1 )); echo $n > {state_s}/serve.count
  {real_s} "$@" > {state_s}/serve.$n.out 2> {state_s}/serve.$n.err &
  pid=$!; echo $pid > {state_s}/serve.pid
  for _ in $(seq 600); do
    grep -q 'listening on' {state_s}/serve.$n.out && break
    if ! kill -0 $pid 2>/dev/null; then cat {state_s}/serve.$n.out {state_s}/serve.$n.err; exit 1; fi
    sleep 0.1
  done
  cat {state_s}/serve.$n.out
  exit 0
fi
exec {real_s} "$@"
"#
            ),
        );
        stub(
            "cargo",
            r#"case "${1:-}" in
  install|test) echo "(docs test: \`cargo $*\` stands in as done)"; exit 0 ;;
  run) while [ "${1:-}" != "--" ]; do shift; done; shift; exec sentinel "$@" ;;
  *) echo "docs test: no stand-in for \`cargo $*\`" >&2; exit 1 ;;
esac
"#
            .to_string(),
        );
        stub(
            "claude",
            format!(
                "n=$(ls {state_s} | grep -c '^claude\\.' || true)\nprintf '%s\\0' \"$@\" > {state_s}/claude.$n\necho \"(docs test: claude $1 $2 recorded)\"\n"
            ),
        );
        stub(
            "npx",
            format!(
                "[ \"$*\" = \"-y @modelcontextprotocol/server-sequential-thinking\" ] || {{ echo \"docs test: no stand-in for npx $*\" >&2; exit 1; }}\nexec {} {}\n",
                peers.node().display(),
                peers.sequential_thinking().display()
            ),
        );
        stub(
            "uvx",
            format!(
                "[ \"$*\" = \"mcp-server-time\" ] || {{ echo \"docs test: no stand-in for uvx $*\" >&2; exit 1; }}\nexec {}\n",
                peers.mcp_server_time().display()
            ),
        );
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
        World { _tmp: tmp, cwd, home, state, path }
    }

    /// The arguments of each `claude` run so far, in order.
    fn claude_calls(&self) -> Vec<Vec<String>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.state)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("claude."))
            .collect();
        files.sort_by_key(|p| p.extension().unwrap().to_str().unwrap().parse::<u32>().unwrap());
        files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).unwrap();
                bytes
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    fn forget_claude_calls(&self) {
        for e in std::fs::read_dir(&self.state).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_str().unwrap().starts_with("claude.") {
                std::fs::rename(&p, p.with_file_name(format!("done-{}", p.file_name().unwrap().to_str().unwrap())))
                    .unwrap();
            }
        }
    }

    /// A program as the page's PATH finds it.
    fn which(&self, program: &str) -> PathBuf {
        self.path
            .split(':')
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("`{program}` is not on the page's PATH"))
    }

    fn serve_log(&self) -> String {
        let n = std::fs::read_to_string(self.state.join("serve.count")).unwrap_or_default();
        std::fs::read_to_string(self.state.join(format!("serve.{}.err", n.trim()))).unwrap_or_default()
    }

    /// Stops the page's `sentinel serve` as Ctrl-C would, and waits until it is gone (the next
    /// page's gateway needs the port).
    fn stop_serve(&self) {
        let Ok(pid) = std::fs::read_to_string(self.state.join("serve.pid")) else { return };
        let pid = pid.trim();
        let alive = || Command::new("kill").args(["-0", pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        let _ = Command::new("kill").args(["-INT", pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_serve();
    }
}

/// One `bash` session, fed block by block on stdin; `set -e`: a failing command ends it.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

const DONE: &str = "::docs-block-done::";

impl Shell {
    fn start(world: &World) -> Shell {
        let mut child = Command::new("bash")
            .args(["--norc", "--noprofile"])
            .current_dir(&world.cwd)
            .env_clear()
            .env("PATH", &world.path)
            .env("HOME", &world.home)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bash");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stdin = child.stdin.take().unwrap();
        // What a command writes to stderr shows up in order with the rest, as in a terminal.
        writeln!(stdin, "exec 2>&1\nset -eo pipefail").unwrap();
        Shell { child, stdin, lines }
    }

    /// Runs a block; its output (stdout and stderr), or why the shell ended.
    fn run(&mut self, block: &str) -> Result<String, String> {
        write!(self.stdin, "{block}\necho {DONE}$?\n").map_err(|e| format!("the shell is gone: {e}"))?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(DONE) => return Ok(out.join("\n")),
                Ok(line) => out.push(line),
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "--- the shell {} ---\n{}",
                        status.map_or("did not finish the block in 180 s".into(), |s| format!(
                            "ended: a command failed ({s})"
                        )),
                        out.join("\n")
                    ));
                }
            }
        }
    }

    /// What `echo` prints for a shell expression in the page's session (its variables).
    fn value(&mut self, expr: &str) -> String {
        self.run(&format!("printf '%s\\n' \"{expr}\"\n")).unwrap_or_else(|e| panic!("`{expr}`: {e}")).trim().to_string()
    }

    fn stop(mut self) {
        let _ = writeln!(self.stdin, "exit 0");
        let _ = self.child.wait();
    }
}
