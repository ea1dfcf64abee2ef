//! N MCP clients over Streamable HTTP sharing one connection pool, in either generation:
//! 2026-07-28 (stateless: `_meta` in every request, `Mcp-Method`/`Mcp-Name` headers) or
//! 2025-11-25 (each client `initialize`s its own session and sends `Mcp-Session-Id`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::args::{Generation, Payload};
use crate::mcp::{self, INITIALIZED, LEGACY, MODERN};

/// Largest answer accepted: the 1 MB payload plus framing, with room to spare.
const MAX_ANSWER_BYTES: usize = 16 << 20;

pub struct HttpClients {
    http: reqwest::Client,
    url: String,
    tool: String,
    generation: Generation,
    payload: Payload,
    /// Per client: its `Authorization` header (governance on) and its session (2025-11-25).
    auth: Vec<Option<HeaderValue>>,
    sessions: Vec<Option<HeaderValue>>,
    next_id: AtomicU64,
}

impl HttpClients {
    /// `tokens` has one entry per client. Session-based clients open their sessions here,
    /// outside the measured rounds.
    pub async fn connect(
        url: &str,
        tool: &str,
        generation: Generation,
        payload: Payload,
        tokens: Vec<Option<String>>,
    ) -> anyhow::Result<HttpClients> {
        let auth = tokens
            .into_iter()
            .map(|t| t.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let mut c = HttpClients {
            // One pool for all clients, as many clients of one host would look to the server;
            // no idle limit, so every client keeps its connection between calls.
            http: reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).build()?,
            url: url.to_string(),
            tool: tool.to_string(),
            generation,
            payload,
            sessions: vec![None; auth.len()],
            auth,
            next_id: AtomicU64::new(1),
        };
        if generation == Generation::Legacy {
            for client in 0..c.auth.len() {
                let body = mcp::request_body(c.id(), "initialize", mcp::initialize_params(), generation);
                let (headers, answer) = c.post(client, body, "initialize", None).await?;
                ensure!(answer.windows(8).any(|w| w == b"\"result\""), "initialize failed: {}", mcp::preview(&answer));
                let sid = headers.get("mcp-session-id").context("initialize answered without Mcp-Session-Id")?;
                c.sessions[client] = Some(sid.clone());
                c.post(client, INITIALIZED.to_string(), "notifications/initialized", None).await?;
            }
        }
        Ok(c)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One `tools/call`, its answer checked.
    pub async fn call(&self, client: usize, seq: u64) -> anyhow::Result<()> {
        let id = self.id();
        let body = mcp::call_body(id, &self.tool, self.generation, self.payload, client, seq);
        let (_, answer) = self.post(client, body, "tools/call", Some(&self.tool)).await?;
        mcp::check_call(&answer, id, self.generation, self.payload, client, seq)
    }

    /// Until `tools/list` shows the tool (a gateway lists a backend's tools once it answered).
    pub async fn wait_for_tool(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let body = mcp::request_body(self.id(), "tools/list", serde_json::json!({}), self.generation);
            let listed = self.post(0, body, "tools/list", None).await;
            if let Ok((_, answer)) = &listed {
                if mcp::lists_tool(answer, &self.tool) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} does not list {} within {within:?}: {:?}",
                    self.url,
                    self.tool,
                    listed.map(|(_, a)| mcp::preview(&a))
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs one message; answers with the response headers and the response message (the
    /// JSON body, or the last event of an SSE stream). A notification's 202 gives an empty one.
    async fn post(
        &self,
        client: usize,
        body: String,
        method: &str,
        name: Option<&str>,
    ) -> anyhow::Result<(HeaderMap, Bytes)> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(a) = &self.auth[client] {
            req = req.header("authorization", a.clone());
        }
        match self.generation {
            Generation::Modern => {
                req = req.header("mcp-protocol-version", MODERN).header("mcp-method", method);
                if let Some(name) = name {
                    req = req.header("mcp-name", name);
                }
            }
            Generation::Legacy => {
                if let Some(sid) = &self.sessions[client] {
                    req = req.header("mcp-session-id", sid.clone()).header("mcp-protocol-version", LEGACY);
                }
            }
        }
        let mut resp = req.body(body).send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut buf = BytesMut::new();
        while let Some(chunk) = resp.chunk().await? {
            ensure!(buf.len() + chunk.len() <= MAX_ANSWER_BYTES, "answer larger than {MAX_ANSWER_BYTES} bytes");
            buf.extend_from_slice(&chunk);
        }
        let body = buf.freeze();
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok((headers, Bytes::new()));
        }
        ensure!(status == reqwest::StatusCode::OK, "HTTP {status}: {}", mcp::preview(&body));
        let sse = headers.get("content-type").is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
        let message = if sse { last_sse_data(&body).context("an SSE answer without data")? } else { body };
        Ok((headers, message))
    }
}

/// The data of the last event that has any: the response ends a call's stream.
fn last_sse_data(body: &Bytes) -> Option<Bytes> {
    let mut last = None;
    let mut current: Vec<u8> = Vec::new();
    for line in body.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)) {
        if line.is_empty() {
            if !current.is_empty() {
                last = Some(std::mem::take(&mut current));
            }
        } else if let Some(data) = line.strip_prefix(b"data:") {
            if !current.is_empty() {
                current.push(b'\n');
            }
            current.extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
        }
    }
    if !current.is_empty() {
        last = Some(current);
    }
    last.map(Bytes::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_event_is_the_answer() {
        let body =
            bytes::Bytes::from_static(b"event: message\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\r\n\r\n");
        assert_eq!(super::last_sse_data(&body).as_deref(), Some(&b"{\"b\":2}"[..]));
        assert_eq!(super::last_sse_data(&bytes::Bytes::from_static(b": nothing\n\n")), None);
    }
}
