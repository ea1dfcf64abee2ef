//! N logical MCP clients multiplexed on one child's stdin/stdout by JSON-RPC id: one writer
//! task owns stdin, one reader task hands each response line to the call waiting for its id.
//! Driving `mcp-mock` this way is the direct stdio baseline; driving `sentinel stdio` the same
//! way is the same clients through the gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::args::{Generation, Payload};
use crate::mcp::{self, INITIALIZED};

/// Longest line accepted from the child: the 1 MB payload plus framing, with room to spare.
const MAX_LINE_BYTES: usize = 16 << 20;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

pub struct StdioClients {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    waiters: Waiters,
    next_id: AtomicU64,
    child: tokio::sync::Mutex<Child>,
    writer: tokio::task::JoinHandle<()>,
    pub pid: u32,
    tool: String,
    generation: Generation,
    payload: Payload,
}

impl StdioClients {
    /// Starts the child; a session-based generation `initialize`s it once (stdio is one session).
    pub async fn spawn(
        mut cmd: Command,
        tool: &str,
        generation: Generation,
        payload: Payload,
    ) -> anyhow::Result<StdioClients> {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the stdio child")?;
        let pid = child.id().context("the child has no pid")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");

        let (lines, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::new(stdin);
            while let Some(line) = rx.recv().await {
                // Whatever else is queued goes out in the same write: one flush per burst.
                let mut ok = w.write_all(&line).await.is_ok();
                while let (true, Ok(more)) = (ok, rx.try_recv()) {
                    ok = w.write_all(&more).await.is_ok();
                }
                if !ok || w.flush().await.is_err() {
                    break;
                }
            }
        });
        let waiters: Waiters = Arc::default();
        let by_id = waiters.clone();
        tokio::spawn(async move {
            let mut reader = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
            while let Some(Ok(line)) = reader.next().await {
                let line = Bytes::from(line);
                // Notifications and requests from the child are not answers: ignored.
                if let Some(id) = mcp::response_id(&line) {
                    if let Some(waiter) = by_id.lock().unwrap().remove(&id) {
                        let _ = waiter.send(line);
                    }
                }
            }
            // The child is gone (or sent an overlong line): every waiting call fails now.
            by_id.lock().unwrap().clear();
        });

        let c = StdioClients {
            lines,
            waiters,
            next_id: AtomicU64::new(1),
            child: tokio::sync::Mutex::new(child),
            writer,
            pid,
            tool: tool.to_string(),
            generation,
            payload,
        };
        if generation == Generation::Legacy {
            let id = c.id();
            let answer =
                c.request(id, mcp::request_body(id, "initialize", mcp::initialize_params(), generation)).await?;
            ensure!(answer.windows(8).any(|w| w == b"\"result\""), "initialize failed: {}", mcp::preview(&answer));
            c.send(INITIALIZED.to_string())?;
        }
        Ok(c)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, mut line: String) -> anyhow::Result<()> {
        line.push('\n');
        self.lines.send(line.into_bytes()).ok().context("the child's stdin is closed")
    }

    async fn request(&self, id: u64, line: String) -> anyhow::Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        if let Err(e) = self.send(line) {
            self.waiters.lock().unwrap().remove(&id);
            return Err(e);
        }
        rx.await.ok().context("the child closed its stdout before answering")
    }

    /// One `tools/call`, its answer checked.
    pub async fn call(&self, client: usize, seq: u64) -> anyhow::Result<()> {
        let id = self.id();
        let answer =
            self.request(id, mcp::call_body(id, &self.tool, self.generation, self.payload, client, seq)).await?;
        mcp::check_call(&answer, id, self.generation, self.payload, client, seq)
    }

    /// Until `tools/list` shows the tool (a gateway lists a backend's tools once it answered).
    pub async fn wait_for_tool(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let id = self.id();
            let answer =
                self.request(id, mcp::request_body(id, "tools/list", serde_json::json!({}), self.generation)).await?;
            if mcp::lists_tool(&answer, &self.tool) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the stdio child does not list {} within {within:?}: {}", self.tool, mcp::preview(&answer));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes stdin (end of the session: a gateway then stops its backends) and waits for the
    /// child to exit, killing it after 10 s.
    pub async fn close(&self) {
        self.writer.abort();
        let mut child = self.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
