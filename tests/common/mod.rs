//! Test harness: the real `sentinel` and `mcp-mock` binaries started on loopback, and a small
//! MCP client that speaks both generations over HTTP and stdio. Every test builds from these.
#![allow(dead_code)]

pub mod governance;
pub mod haproxy;
pub mod peers;
pub mod pg;
pub mod proxy;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub const MODERN: &str = "2026-07-28";
pub const LEGACY: &str = "2025-11-25";

pub fn sentinel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentinel"))
}

pub fn mock_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-mock"))
}

/// A TOML string literal for a path or argument.
pub fn lit(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

/// A `[[backend]]` block running `mcp-mock` over stdio with extra arguments.
pub fn mock_stdio_backend(name: &str, prefix: Option<&str>, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(lit).collect();
    let prefix = prefix.map(|p| format!("prefix = {}\n", lit(p))).unwrap_or_default();
    format!(
        "[[backend]]\nname = {}\n{prefix}stdio = {{ command = {}, args = [{}] }}\n",
        lit(name),
        lit(mock_bin().to_string_lossy()),
        args.join(", ")
    )
}

pub fn http_backend(name: &str, prefix: Option<&str>, url: &str) -> String {
    let prefix = prefix.map(|p| format!("prefix = {}\n", lit(p))).unwrap_or_default();
    format!("[[backend]]\nname = {}\n{prefix}http = {{ url = {} }}\n", lit(name), lit(url))
}

/// Reads the first stdout line of a child that announces `... listening on http://ADDR/mcp`.
fn wait_for_url(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut sent = false;
        while let Some(Ok(line)) = lines.next() {
            if !sent && line.contains("listening on ") {
                let url = line.rsplit(' ').next().unwrap_or_default().to_string();
                let _ = tx.send(url);
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what} did not announce its URL within 60s"))
}

/// `sentinel serve` on a port of its own, from a config string.
pub struct Gateway {
    pub url: String,
    pub child: Child,
    /// The config's folder (also the audit database's and spool's). Shared, so that a test can
    /// start another gateway on the same config after this one is gone (`start_at`).
    pub dir: Arc<tempfile::TempDir>,
}

impl Gateway {
    pub fn start(config_body: &str) -> Gateway {
        Gateway::start_with_env(config_body, &[])
    }

    /// With extra environment variables for the gateway process. Authentication is disabled
    /// (a loopback test gateway) unless the config has an `[auth]` section.
    pub fn start_with_env(config_body: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = if config_body.contains("[auth]") { "" } else { "[auth]\ndisabled = true\n" };
        let config = format!("[server]\nlisten = \"127.0.0.1:0\"\n{auth}\n{config_body}");
        std::fs::write(dir.path().join("sentinel.toml"), config).expect("write config");
        Gateway::start_at(Arc::new(dir), env)
    }

    /// On the `sentinel.toml` already in `dir` (a restart: the audit spool and database a
    /// previous gateway left there are found again). The log is appended to.
    pub fn start_at(dir: Arc<tempfile::TempDir>, env: &[(&str, &str)]) -> Gateway {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("stderr.log"))
            .expect("log file");
        let mut child = Command::new(sentinel_bin())
            .args(["serve", "-c"])
            .arg(Gateway::config_path_in(&dir))
            .current_dir(dir.path())
            .env("SENTINEL_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sentinel");
        let url = wait_for_url(&mut child, "sentinel serve");
        Gateway { url, child, dir }
    }

    fn config_path_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("sentinel.toml")
    }

    pub fn config_path(&self) -> PathBuf {
        Gateway::config_path_in(&self.dir)
    }

    /// The gateway's log so far. Its lines reach stderr through a queue and a writer thread
    /// (src/log.rs: so that a stderr nobody reads never stalls a call), so a line logged before
    /// an answer may land in the file just after the test has the answer. How full that queue
    /// is cannot be seen from outside, so this reads until the file stops growing: two reads
    /// 50 ms apart that agree (for 5 s at most).
    pub fn log(&self) -> String {
        let path = self.dir.path().join("stderr.log");
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = read();
            if now.len() == last.len() || std::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    pub fn base(&self) -> String {
        self.url.trim_end_matches("/mcp").to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the gateway said: CI keeps no temp folders.
        if std::thread::panicking() {
            // Per-call audit lines would bury the rest: all other lines, then the last few calls.
            let log = self.log();
            let calls: Vec<&str> = log.lines().filter(|l| l.contains(" audit: call ")).collect();
            eprintln!("--- gateway log (per-call audit lines left out: {}) ---", calls.len());
            log.lines().filter(|l| !l.contains(" audit: call ")).for_each(|l| eprintln!("{l}"));
            eprintln!("--- last per-call audit lines ---");
            calls.iter().skip(calls.len().saturating_sub(5)).for_each(|l| eprintln!("{l}"));
        }
    }
}

/// `mcp-mock --http 127.0.0.1:0 ...`.
pub struct MockHttp {
    pub url: String,
    pub child: Child,
}

impl MockHttp {
    pub fn start(args: &[&str]) -> MockHttp {
        MockHttp::start_at("127.0.0.1:0", args)
    }

    /// On a given address (to restart a backend where the gateway expects it).
    pub fn start_at(addr: &str, args: &[&str]) -> MockHttp {
        let mut child = Command::new(mock_bin())
            .args(["--http", addr])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mcp-mock");
        let url = wait_for_url(&mut child, "mcp-mock");
        MockHttp { url, child }
    }
}

impl Drop for MockHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response from an MCP endpoint, with SSE bodies split into messages.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// Every JSON-RPC message in the body (one for JSON, each `data:` event for SSE), raw.
    pub messages: Vec<String>,
}

impl Reply {
    /// The last message (the response), parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.messages.last().unwrap_or_else(|| panic!("no message in {self:?}"))).expect("json")
    }

    /// The raw bytes of the response's `result` member, cut out of the message text.
    pub fn raw_result(&self) -> String {
        raw_member(self.messages.last().expect("a message"), "result")
    }

    pub fn error_code(&self) -> Option<i64> {
        self.json()["error"]["code"].as_i64()
    }
}

/// The raw text of a top-level member of a JSON object, without re-encoding it.
pub fn raw_member(message: &str, key: &str) -> String {
    let m: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(message).expect("object");
    m.get(key).unwrap_or_else(|| panic!("no `{key}` in {message}")).get().to_string()
}

pub fn sse_messages(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in body.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if line.is_empty() && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Request params with the `_meta` every stateless 2026-07-28 request carries.
pub fn modern_params(mut params: Value) -> Value {
    let meta = params.as_object_mut().expect("params object").entry("_meta").or_insert(json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    meta["io.modelcontextprotocol/clientInfo"] = json!({"name":"sentinel-tests","version":"1"});
    params
}

/// A stateless `tools/call` body declaring `capabilities`, with `extra` params (an input
/// round's retry: `requestState`, `inputResponses`).
pub fn stateless_call_body(tool: &str, capabilities: Value, extra: Value) -> String {
    let mut params = json!({"name": tool, "arguments": {}});
    params.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let mut params = modern_params(params);
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string()
}

/// That call sent, and its response parsed; a call that takes over 20 s fails the test.
pub async fn stateless_call(c: &HttpClient, tool: &str, capabilities: Value, extra: Value) -> Value {
    let body = stateless_call_body(tool, capabilities, extra);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        c.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]),
    )
    .await
    .expect("answered, never hung");
    serde_json::from_str(r.messages.last().unwrap_or_else(|| panic!("a response: {r:?}"))).unwrap()
}

/// A minimal MCP client over Streamable HTTP, for either generation.
#[derive(Clone)]
pub struct HttpClient {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    pub accept: &'static str,
    /// A bearer token sent as `Authorization` on every request.
    pub token: Option<String>,
}

impl HttpClient {
    pub fn new(url: &str) -> HttpClient {
        HttpClient {
            http: reqwest::Client::new(),
            url: url.to_string(),
            session: None,
            version: LEGACY.into(),
            accept: "application/json, text/event-stream",
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> HttpClient {
        self.token = Some(token.to_string());
        self
    }

    /// A session-based client, initialized.
    pub async fn legacy(url: &str, capabilities: Value) -> HttpClient {
        HttpClient::new(url).initialized(capabilities).await
    }

    /// Initializes this client (its token, if any, is used).
    pub async fn initialized(self, capabilities: Value) -> HttpClient {
        let mut c = self;
        let r = c
            .post_raw(
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion": LEGACY, "capabilities": capabilities, "clientInfo": {"name":"sentinel-tests","version":"1"}}})
                .to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "initialize failed: {r:?}");
        c.session = Some(r.headers["mcp-session-id"].to_str().unwrap().to_string());
        c.notify("notifications/initialized", json!({})).await;
        c
    }

    /// A stateless 2026-07-28 client.
    pub fn modern(url: &str) -> HttpClient {
        let mut c = HttpClient::new(url);
        c.version = MODERN.into();
        c
    }

    /// A POST with this client's headers (accept, version, session) plus `extra`.
    pub fn post(&self, body: &str, extra: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", self.accept)
            .header("mcp-protocol-version", &self.version)
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req
    }

    pub async fn post_raw(&self, body: &str, extra: &[(&str, &str)]) -> Reply {
        self.try_post_raw(body, extra).await.expect("a whole response body")
    }

    /// `None` when the response was cut off (a streamed result that broke off, or whose audit
    /// record could not be stored under fail-closed).
    pub async fn try_post_raw(&self, body: &str, extra: &[(&str, &str)]) -> Option<Reply> {
        let resp = self.post(body, extra).send().await.expect("POST");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.ok()?;
        let is_sse = headers.get("content-type").is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"));
        let messages = if is_sse {
            sse_messages(&body)
        } else if body.is_empty() {
            vec![]
        } else {
            vec![body.clone()]
        };
        Some(Reply { status, headers, body, messages })
    }

    /// Adds the stateless `_meta` and headers when this client is modern.
    pub fn request_body(&self, id: Value, method: &str, params: Value) -> String {
        let params = if self.version == MODERN { modern_params(params) } else { params };
        json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string()
    }

    pub async fn request(&self, method: &str, params: Value) -> Reply {
        // Ids must be unique among a client's requests in flight.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = self.request_body(json!(id), method, params.clone());
        let name = params.get("name").or_else(|| params.get("uri")).and_then(|v| v.as_str()).map(str::to_string);
        let mut extra = vec![("mcp-method", method)];
        if let Some(n) = &name {
            extra.push(("mcp-name", n));
        }
        self.post_raw(&body, if self.version == MODERN { &extra } else { &[] }).await
    }

    pub async fn call(&self, tool: &str, args: Value) -> Reply {
        self.request("tools/call", json!({"name": tool, "arguments": args})).await
    }

    /// A stateless `tools/call` whose response may be cut off (`None`).
    pub async fn try_call(&self, tool: &str, args: Value) -> Option<Reply> {
        let params = json!({"name": tool, "arguments": args});
        let body = self.request_body(json!(1), "tools/call", params);
        self.try_post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).await
    }

    pub async fn notify(&self, method: &str, params: Value) -> Reply {
        self.post_raw(&json!({"jsonrpc":"2.0","method":method,"params":params}).to_string(), &[]).await
    }

    pub async fn tool_names(&self) -> Vec<String> {
        let r = self.request("tools/list", json!({})).await;
        r.json()["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A client speaking newline-delimited JSON-RPC to a child process (`sentinel stdio`, or a
/// backend driven directly).
pub struct StdioClient {
    pub child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl StdioClient {
    pub fn spawn(program: &Path, args: &[&str], cwd: Option<&Path>) -> StdioClient {
        StdioClient::spawn_with_env(program, args, cwd, &[])
    }

    /// With extra environment variables for the child.
    pub fn spawn_with_env(program: &Path, args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> StdioClient {
        let mut cmd = tokio::process::Command::new(program);
        cmd.envs(env.iter().copied());
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().expect("spawn stdio peer");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        StdioClient { child, stdin, lines }
    }

    /// With an environment holding only `env`, in `cwd`: as a client that passes nothing else.
    pub fn spawn_clean(program: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> StdioClient {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear().envs(env.iter().copied()).current_dir(cwd);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn stdio peer");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        StdioClient { child, stdin, lines }
    }

    pub async fn send(&mut self, msg: &str) {
        self.stdin.write_all(msg.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Next line, within 30 s.
    pub async fn recv(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("no message within 30s")
            .expect("read")
            .expect("stdout closed")
    }

    /// Reads until the response with this id, returning it and everything before it.
    pub async fn until_response(&mut self, id: &Value) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let line = self.recv().await;
            let v: Value = serde_json::from_str(&line).expect("json line");
            if v.get("id") == Some(id) && (v.get("result").is_some() || v.get("error").is_some()) {
                return (line, before);
            }
            before.push(line);
        }
    }

    pub async fn request(&mut self, id: Value, method: &str, params: Value) -> String {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string()).await;
        self.until_response(&id).await.0
    }

    /// A stateless 2026-07-28 request (no `initialize` needed), returning the response line.
    pub async fn request_modern(&mut self, id: Value, method: &str, params: Value) -> String {
        self.request(id, method, modern_params(params)).await
    }

    /// Closes the child's stdin (the client goes away) and hands back the process.
    pub fn close(self) -> tokio::process::Child {
        drop(self.stdin);
        drop(self.lines);
        self.child
    }

    pub async fn initialize(&mut self) -> String {
        let r = self
            .request(
                json!("init"),
                "initialize",
                json!({"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name":"sentinel-tests","version":"1"}}),
            )
            .await;
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
        r
    }
}

/// Waits for a condition with a deadline instead of sleeping a guessed time.
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(20), what, f).await;
}

/// [`eventually`] with a deadline of its own (a cold backend start on a loaded machine).
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// An SSE response read message by message, as it arrives.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
    pending: std::collections::VecDeque<String>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        SseReader { resp, buf: String::new(), pending: Default::default() }
    }

    /// A response header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.resp.headers().get(name).map(|v| v.to_str().unwrap_or_default().to_string())
    }

    /// The next JSON-RPC message, `None` when the stream ends; panics after 30 s of silence.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("no SSE data within 30s")
                .expect("read SSE");
            let chunk = chunk?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                self.pending.extend(sse_messages(&event));
            }
        }
    }
}

impl HttpClient {
    /// Starts a request and returns its response stream without waiting for the end (the
    /// headers come with the first message the call sends).
    pub async fn stream(&self, body: &str, extra: &[(&str, &str)]) -> SseReader {
        let resp = self.post(body, extra).send().await.expect("POST");
        assert_eq!(resp.status(), 200);
        SseReader::new(resp)
    }

    /// Opens the session's GET stream.
    pub async fn get_stream(&self) -> SseReader {
        let mut req = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.as_ref().expect("a session"));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.expect("GET");
        assert_eq!(resp.status(), 200);
        SseReader::new(resp)
    }
}

/// Lines of a `mcp-mock --log FILE`, parsed.
pub fn mock_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
