//! `sentinel stdio`: one client on stdin/stdout, both protocol generations on the same pipe,
//! concurrent calls, progress, cancellation, bad input, and a clean exit when stdin closes.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// `sentinel stdio -c FILE` in a temp dir, with one `mcp-mock` backend named `mock` that logs
/// every message it receives.
struct Front {
    client: StdioClient,
    dir: tempfile::TempDir,
}

impl Front {
    /// `server` is an optional `[server]` section; the file has none when it is empty.
    fn start(server: &str) -> Front {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(&dir, server);
        let client = StdioClient::spawn(&sentinel_bin(), &["stdio", "-c", config.to_str().unwrap()], Some(dir.path()));
        Front { client, dir }
    }

    fn mock_log(&self) -> Vec<Value> {
        mock_log(&self.dir.path().join("mock.log"))
    }
}

fn write_config(dir: &tempfile::TempDir, server: &str) -> PathBuf {
    let log = dir.path().join("mock.log");
    let config = format!(
        "{server}\n[auth]\ndisabled = true\n\n{}",
        mock_stdio_backend("mock", None, &["--log", log.to_str().unwrap()])
    );
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The client's next message, which must be the response to `id` (nothing in between).
async fn next_is_response(client: &mut StdioClient, id: Value) -> Value {
    let v = parse(&client.recv().await);
    assert_eq!(v["id"], id, "expected the response to {id} next, got {v}");
    v
}

#[tokio::test]
async fn session_based_client() {
    let mut f = Front::start("");
    let init = parse(&f.client.initialize().await);
    assert_eq!(init["result"]["protocolVersion"], LEGACY, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "sentinel", "{init}");

    let list = parse(&f.client.request(json!(1), "tools/list", json!({})).await);
    let names: Vec<&str> =
        list["result"]["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"mock__echo"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("mock__")), "{names:?}");

    let args = json!({"text": "hello", "n": [1, 2, {"deep": true}]});
    let r = parse(&f.client.request(json!(2), "tools/call", json!({"name": "mock__echo", "arguments": args})).await);
    assert_eq!(r["result"]["structuredContent"], args, "{r}");

    let ping = parse(&f.client.request(json!("p"), "ping", json!({})).await);
    assert_eq!(ping["result"], json!({}), "{ping}");

    // logging/setLevel: below the level nothing arrives, at or above it the message does.
    let r = parse(&f.client.request(json!(3), "logging/setLevel", json!({"level": "warning"})).await);
    assert_eq!(r["result"], json!({}), "{r}");
    let log_call = |id: i64, level: &str| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"mock__log","arguments":{"level":level,"message":format!("at {level}")}}})
            .to_string()
    };
    f.client.send(&log_call(4, "info")).await;
    let (_, before) = f.client.until_response(&json!(4)).await;
    assert!(before.is_empty(), "an info message got through a warning threshold: {before:?}");
    f.client.send(&log_call(5, "error")).await;
    let (_, before) = f.client.until_response(&json!(5)).await;
    let messages: Vec<Value> = before.iter().map(|l| parse(l)).collect();
    assert!(
        messages.iter().any(|m| m["method"] == "notifications/message" && m["params"]["data"] == "at error"),
        "{before:?}"
    );
    let r = parse(&f.client.request(json!(6), "logging/setLevel", json!({"level": "loud"})).await);
    assert_eq!(r["error"]["code"], -32602, "{r}");
}

/// Stateless 2026-07-28 requests on the same pipe as a session-based client.
#[tokio::test]
async fn stateless_requests_on_the_same_pipe() {
    let mut f = Front::start("");
    f.client.initialize().await;

    let d = parse(&f.client.request_modern(json!("d"), "server/discover", json!({})).await);
    let versions = d["result"]["supportedVersions"].as_array().unwrap_or_else(|| panic!("{d}"));
    assert!(versions.contains(&json!(MODERN)), "{d}");

    let args = json!({"x": 1});
    let r = parse(
        &f.client.request_modern(json!("c"), "tools/call", json!({"name": "mock__echo", "arguments": args})).await,
    );
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(r["result"]["structuredContent"], args, "{r}");

    let no_caps =
        json!({"name": "mock__echo", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}});
    let r = parse(&f.client.request(json!("no-caps"), "tools/call", no_caps).await);
    assert_eq!(r["error"]["code"], -32602, "{r}");

    let mut future = modern_params(json!({"name": "mock__echo", "arguments": {}}));
    future["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = parse(&f.client.request(json!("future"), "tools/call", future).await);
    assert_eq!(r["error"]["code"], -32022, "{r}");
    let supported = r["error"]["data"]["supported"].as_array().unwrap_or_else(|| panic!("no data.supported: {r}"));
    assert!(supported.contains(&json!(MODERN)) && supported.contains(&json!(LEGACY)), "{r}");

    // The session-based client on the pipe is unaffected.
    let r =
        parse(&f.client.request(json!(9), "tools/call", json!({"name": "mock__echo", "arguments": {"y": 2}})).await);
    assert_eq!(r["result"]["structuredContent"], json!({"y": 2}), "{r}");
}

/// 50 calls written back to back before any answer is read: each answer carries its own
/// id and its own payload, in whatever order they finish.
#[tokio::test]
async fn fifty_concurrent_calls() {
    let mut f = Front::start("");
    f.client.initialize().await;
    let mut want = HashMap::new();
    for i in 0..50 {
        let id = format!("call-{i}");
        let args = json!({"i": i, "pad": "y".repeat(i * 13)});
        let msg =
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"mock__echo","arguments":args}});
        f.client.send(&msg.to_string()).await;
        want.insert(id, args);
    }
    while !want.is_empty() {
        let v = parse(&f.client.recv().await);
        let id = v["id"].as_str().unwrap_or_else(|| panic!("unexpected message {v}"));
        let args = want.remove(id).unwrap_or_else(|| panic!("a second or unknown response for {id}: {v}"));
        assert_eq!(v["result"]["structuredContent"], args, "{id} got someone else's answer: {v}");
    }
}

/// Progress comes back under the client's own token, before the response.
#[tokio::test]
async fn progress_under_the_clients_token() {
    let mut f = Front::start("");
    f.client.initialize().await;
    for token in [json!("my-token"), json!(42)] {
        let params = json!({"name": "mock__progress", "arguments": {"steps": 3, "delay_ms": 5}, "_meta": {"progressToken": token}});
        f.client.send(&json!({"jsonrpc":"2.0","id":"p","method":"tools/call","params":params}).to_string()).await;
        let (resp, before) = f.client.until_response(&json!("p")).await;
        let progress: Vec<Value> =
            before.iter().map(|l| parse(l)).filter(|m| m["method"] == "notifications/progress").collect();
        assert_eq!(progress.len(), 3, "{before:?}");
        for (i, p) in progress.iter().enumerate() {
            assert_eq!(p["params"]["progressToken"], token, "{p}");
            assert_eq!(p["params"]["progress"], (i + 1) as f64, "{p}");
        }
        assert!(parse(&resp)["result"]["content"][0]["text"].as_str().unwrap().starts_with("progress done"), "{resp}");
    }
}

/// `notifications/cancelled` reaches the backend, and the cancelled call is never answered.
#[tokio::test]
async fn cancellation_reaches_the_backend_and_the_call_is_not_answered() {
    let mut f = Front::start("");
    f.client.initialize().await;
    let slow = json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"mock__slow","arguments":{"ms":60000}}});
    f.client.send(&slow.to_string()).await;
    // Cancel only once the backend runs the call, so the test is about cancelling a call in flight.
    eventually("the backend receives the slow call", || {
        let seen = f.mock_log().iter().any(|m| m["params"]["name"] == "slow");
        async move { seen }
    })
    .await;
    f.client
        .send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"test"}}).to_string())
        .await;
    eventually("the backend logs notifications/cancelled", || {
        let log = f.mock_log();
        let done = log.iter().any(|m| m["method"] == "notifications/cancelled")
            && log.iter().any(|m| m["mock-event"] == "cancelled");
        async move { done }
    })
    .await;
    f.client.send(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#).await;
    next_is_response(&mut f.client, json!("after")).await;
}

#[tokio::test]
async fn malformed_line_gets_a_parse_error_and_the_session_continues() {
    let mut f = Front::start("");
    f.client.initialize().await;
    f.client.send(r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    let e = parse(&f.client.recv().await);
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert_eq!(e["id"], Value::Null, "{e}");
    let r =
        parse(&f.client.request(json!(2), "tools/call", json!({"name": "mock__echo", "arguments": {"ok": 1}})).await);
    assert_eq!(r["result"]["structuredContent"], json!({"ok": 1}), "{r}");
}

#[tokio::test]
async fn oversized_line_gets_an_error_and_the_session_continues() {
    let mut f = Front::start("[server]\nmax_body_bytes = 4096\n");
    f.client.initialize().await;
    let big = json!({"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"mock__echo","arguments":{"pad":"z".repeat(20_000)}}});
    f.client.send(&big.to_string()).await;
    let e = parse(&f.client.recv().await);
    assert!(e["error"]["code"].is_i64(), "expected an error for a 20 kB line, got {e}");
    assert!(f.mock_log().iter().all(|m| m["id"] != "big"), "the oversized call reached the backend");
    // The rest of the long line is skipped, not read as a new message; the next line is served.
    let r =
        parse(&f.client.request(json!(2), "tools/call", json!({"name": "mock__echo", "arguments": {"ok": 2}})).await);
    assert_eq!(r["result"]["structuredContent"], json!({"ok": 2}), "{r}");
    // A line just under the limit still goes through.
    let pad = "w".repeat(3500);
    let r = parse(
        &f.client.request(json!(3), "tools/call", json!({"name": "mock__echo", "arguments": {"pad": pad}})).await,
    );
    assert_eq!(r["result"]["structuredContent"]["pad"].as_str().map(str::len), Some(3500), "{r}");
}

/// A line that is not UTF-8 is a parse error like any other bad line, not the end of the session.
#[tokio::test]
async fn invalid_utf8_line_gets_a_parse_error_and_the_session_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = RawPipe::spawn(&write_config(&dir, ""));
    p.send(b"\xff\xfe{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n").await;
    let e = parse(&p.recv().await);
    assert_eq!(e["error"]["code"], -32700, "{e}");
    p.send(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n").await;
    let r = parse(&p.recv().await);
    assert_eq!(r["id"], 2, "{r}");
}

/// Closing stdin ends `sentinel stdio`, and its backend child goes with it.
#[tokio::test]
async fn closing_stdin_exits_and_stops_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = RawPipe::spawn(&write_config(&dir, ""));
    p.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"mock__echo\",\"arguments\":{}}}\n")
        .await;
    assert!(p.recv().await.contains("structuredContent"), "the backend is up");

    let sentinel_pid = p.child.id().expect("running");
    let mock_pid = children_of(sentinel_pid)
        .into_iter()
        .find(|(_, name)| name.starts_with("mcp-mock"))
        .map(|(pid, _)| pid)
        .expect("sentinel has an mcp-mock child");

    drop(p.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("sentinel stdio did not exit within 20s of stdin closing")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    eventually("the mcp-mock child is gone", || {
        let gone = !is_running(mock_pid);
        async move { gone }
    })
    .await;
}

/// Node (Claude Code, the Inspector) gives a child a socket, not a pipe, for its stdin and
/// stdout: one end of a socket pair serves as both here, with concurrent calls of both
/// generations, and the gateway exits when the client shuts its side, leaving the socket as it
/// found it.
#[tokio::test]
#[allow(unsafe_code)] // fcntl(F_GETFL) to see the flags the gateway left on the descriptor
async fn a_socket_as_stdin_and_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(&dir, "");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs = std::os::fd::OwnedFd::from(theirs);
    // The same open socket as the gateway's stdin and stdout, to see its flags from here.
    let seen = theirs.try_clone().unwrap();
    let nonblocking = || {
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL takes no pointer; the socket is open.
        let flags = unsafe { libc::fcntl(seen.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        flags & libc::O_NONBLOCK != 0
    };
    let mut child = tokio::process::Command::new(sentinel_bin())
        .args(["stdio", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::from(theirs.try_clone().unwrap()))
        .stdout(std::process::Stdio::from(theirs))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sentinel stdio");
    ours.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let (read, mut write) = ours.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let mut batch = String::new();
    for i in 0..40 {
        let meta = if i % 2 == 0 {
            json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}})
        } else {
            json!({})
        };
        let msg = json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
            "params":{"name":"mock__echo","arguments":{"i": i},"_meta": meta}});
        batch.push_str(&format!("{msg}\n"));
    }
    write.write_all(batch.as_bytes()).await.unwrap();
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 40 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("an answer within 30 s")
            .unwrap()
            .expect("the socket stays open");
        let v = parse(&line);
        let i = v["id"].as_i64().unwrap_or_else(|| panic!("unexpected message {v}"));
        assert_eq!(v["result"]["structuredContent"], json!({"i": i}), "{v}");
        assert!(answered.insert(i), "a second answer to {i}");
    }
    assert!(nonblocking(), "the socket is polled while the gateway runs");
    write.shutdown().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("sentinel stdio exits when the client shuts its side")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!nonblocking(), "the socket is left blocking, as it was, once both streams are done");
}

/// Over a pipe, stdin is polled by the reactor, not read on tokio's blocking threads: the pipe's
/// open file is non-blocking while the gateway runs (this process holds the same open file),
/// and blocking again after it exits, as the client left it.
#[tokio::test]
#[allow(unsafe_code)] // fcntl(F_GETFL) to see the flags the gateway left on the descriptor
async fn a_pipe_as_stdin_is_polled_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(&dir, "");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = tokio::process::Command::new(sentinel_bin())
        .args(["stdio", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::from(reader.try_clone().unwrap()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sentinel stdio");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let nonblocking = || {
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL takes no pointer; the pipe is open.
        let flags = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        flags & libc::O_NONBLOCK != 0
    };
    assert!(!nonblocking(), "a new pipe blocks");
    let mut writer = writer;
    std::io::Write::write_all(
        &mut writer,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"mock__echo\",\"arguments\":{}}}\n",
    )
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(answer.contains("structuredContent"), "{answer}");
    assert!(nonblocking(), "stdin is read through the reactor while the gateway runs");
    drop(writer);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!nonblocking(), "the pipe is left blocking, as it was");
}

/// With `2>&1` stdout is stderr's open file too: it stays blocking, so a log line written while
/// the pipe is full waits instead of being lost (and `eprintln!` cannot fail on it).
#[tokio::test]
#[allow(unsafe_code)] // fcntl(F_GETFL) to see the flags the gateway left on the descriptor
async fn stdout_shared_with_stderr_is_left_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reader, writer) = std::io::pipe().unwrap();
    let seen = writer.try_clone().unwrap();
    let mut child = tokio::process::Command::new(sentinel_bin())
        .args(["stdio", "-c"])
        .arg(write_config(&dir, ""))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(writer.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(writer))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sentinel stdio");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(reader)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"mock__echo\",\"arguments\":{}}}\n")
        .await
        .unwrap();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("an answer").expect("open");
        if line.contains("structuredContent") {
            break;
        }
    }
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL takes no pointer; the pipe is open.
    let flags = unsafe { libc::fcntl(seen.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0 && flags & libc::O_NONBLOCK == 0, "stdout, shared with stderr, was made non-blocking");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// What cannot be polled (here `/dev/null`, as a terminal or a file) is read the blocking way:
/// an immediate end of input is a clean exit.
#[tokio::test]
async fn dev_null_as_stdin_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = tokio::process::Command::new(sentinel_bin())
        .args(["stdio", "-c"])
        .arg(write_config(&dir, ""))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(20), status).await.expect("exits").unwrap();
    assert!(status.success(), "exit status {status}");
}

/// `sentinel stdio` driven byte by byte, for what `StdioClient` cannot do: send bytes that are
/// not UTF-8, and close stdin.
struct RawPipe {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RawPipe {
    fn spawn(config: &std::path::Path) -> RawPipe {
        let mut child = tokio::process::Command::new(sentinel_bin())
            .args(["stdio", "-c"])
            .arg(config)
            .current_dir(config.parent().expect("a directory"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sentinel stdio");
        let stdin = child.stdin.take();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        RawPipe { child, stdin, lines }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn recv(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("no message within 30s")
            .expect("read")
            .expect("stdout closed")
    }
}

/// `(pid, command name)` of every process whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc (these tests run on Linux)").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Some((name, fields)) = stat(pid) else { continue };
        // After the command name: state, ppid, ...
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, name));
        }
    }
    out
}

/// A process that still exists and is not a zombie waiting for a reaper.
fn is_running(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, fields)| fields.first().is_some_and(|state| state != "Z" && state != "X"))
}

/// `/proc/PID/stat` split into the command name and the fields after it (the name is in
/// parentheses and may contain spaces).
fn stat(pid: u32) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    Some((name, text[close + 1..].split_whitespace().map(str::to_string).collect()))
}

/// `sentinel stdio` with its three pipes, for the tests that close or stop reading one.
fn spawn_stdio(dir: &tempfile::TempDir, stderr: std::process::Stdio) -> tokio::process::Child {
    let config = write_config(dir, "");
    tokio::process::Command::new(sentinel_bin())
        .args(["stdio", "-c", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("SENTINEL_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sentinel stdio")
}

fn echo_call(id: u64) -> String {
    let params = modern_params(json!({"name": "mock__echo", "arguments": {"n": id}}));
    format!("{}\n", json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params}))
}

/// A client that closes its end of `sentinel stdio`'s stdout can no longer be answered:
/// the gateway stops reading and running its calls and exits, though stdin stays open.
#[tokio::test]
async fn a_client_that_closes_stdout_stops_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_stdio(&dir, std::process::Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(echo_call(1).as_bytes()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), out.next_line()).await.expect("an answer").unwrap();
    assert!(first.unwrap().contains("\"id\":1"));
    drop(out);
    // The client keeps asking (bounded); each answer's write fails with EPIPE.
    let asking = tokio::spawn(async move {
        for id in 2..2_000u64 {
            if stdin.write_all(echo_call(id).as_bytes()).await.is_err() {
                break;
            }
        }
        stdin
    });
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("sentinel stdio kept running after its client closed stdout")
        .unwrap();
    assert!(status.code().is_some(), "it exited by itself: {status:?}");
    drop(asking.await.unwrap());
}

/// A client that pipes `sentinel stdio`'s stderr and never reads it: once the pipe is full,
/// log lines (the per-call access line, a backend's stderr) are dropped and counted rather
/// than written, so calls keep being answered. The backend writes 1 MB to its stderr.
#[tokio::test]
async fn an_undrained_stderr_never_stalls_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_stdio(&dir, std::process::Stdio::piped());
    let _unread_stderr = child.stderr.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async |id: u64| {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .unwrap_or_else(|_| panic!("call {id} not answered within 30 s"))
            .unwrap()
            .expect("stdout open");
        assert_eq!(parse(&line)["id"], json!(id), "{line}");
        line
    };
    let line = format!("{}\n", "x".repeat(100));
    let params = modern_params(json!({"name": "mock__stderr", "arguments": {"hex": hex(&line), "repeat": 10_000}}));
    let flood = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params});
    stdin.write_all(format!("{flood}\n").as_bytes()).await.unwrap();
    assert!(next(1).await.contains("wrote 1010000 bytes"));
    for id in 2..300 {
        stdin.write_all(echo_call(id).as_bytes()).await.unwrap();
        next(id).await;
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `subscriptions/listen` takes the same path as every other request, so its refusals are
/// audited like theirs: here a second listen under an id whose stream is still open.
#[tokio::test]
async fn a_refused_listen_is_audited() {
    let mut f = Front::start("");
    let listen = json!({
        "jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
        "params": modern_params(json!({"notifications": {"toolsListChanged": true}})),
    })
    .to_string();
    f.client.send(&listen).await;
    let ack = parse(&f.client.recv().await);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    f.client.send(&listen).await;
    let r = next_is_response(&mut f.client, json!("L")).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let config = f.dir.path().join("sentinel.toml");
    eventually("the refused listen is in the audit trail", || async {
        let out = std::process::Command::new(sentinel_bin())
            .args(["audit", "-c", config.to_str().unwrap(), "--json", "--limit", "10"])
            .output()
            .expect("run sentinel audit");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().filter_map(|l| sentinel::audit::query::parse_json_line(l).ok()).any(|r| {
            r.method == "subscriptions/listen"
                && r.outcome == sentinel::audit::Outcome::InvalidArgs
                && r.error_code == Some(-32600)
        })
    })
    .await;
}
