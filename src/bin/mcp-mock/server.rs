//! Shared state of one mock process: options, the runtime tool list, legacy
//! sessions, modern `subscriptions/listen` streams, and the receive log.

use crate::catalog;
use crate::rpc::{Emitter, Frame, META_SUBSCRIPTION, notification};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Generation {
    Both,
    Legacy,
    Modern,
}

/// Which protocol generation one request is served under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Era {
    Legacy,
    Modern,
}

pub struct Server {
    pub name: String,
    pub generation: Generation,
    log: Option<Mutex<std::fs::File>>,
    exit_after: Option<u64>,
    requests_seen: AtomicU64,
    /// Keys the MRTR `requestState` signature; random per process.
    pub secret: String,
    /// The fixed tools, built once: a 2026-07-28 `tools/call` looks its tool up to check the
    /// `Mcp-Param-*` headers, and rebuilding ~40 tool JSON values for that made the mock's
    /// stateless calls cost four times its session-based ones (sentinel-bench showed it).
    static_tools: Vec<Value>,
    /// Tools added by `add_tool`, appended after the fixed list.
    dynamic_tools: Mutex<Vec<String>>,
    /// Descriptions changed by `redescribe` (a server changing a tool under its users' feet,
    /// for the gateway's definition pinning), by tool name.
    redescribed: Mutex<HashMap<String, String>>,
    /// Legacy HTTP sessions by `Mcp-Session-Id` (stdio keeps its one session itself).
    pub sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions that receive legacy list_changed broadcasts (HTTP sessions and stdio).
    legacy_sinks: Mutex<Vec<Arc<Session>>>,
    /// Open modern `subscriptions/listen` streams.
    listeners: Mutex<Vec<Listener>>,
    next_listener: AtomicU64,
    /// HTTP status for a request naming a session this process does not know: the spec's
    /// 404, or 400 as server-everything answers ("No valid session ID provided").
    pub unknown_session_status: u16,
    /// `--tasks`: 2025-11-25 tasks for `task_work` (session-based only).
    pub tasks: Option<crate::tasks::Tasks>,
    /// Answer 401 to an HTTP request without an `Authorization` header (as servers that act as
    /// their caller do, e.g. GitHub's).
    pub require_authorization: bool,
}

/// A modern subscription: where to deliver and what the client opted in to.
struct Listener {
    key: u64,
    subscription_id: Value,
    filter: Value,
    out: Emitter,
}

/// Legacy (initialize-based) state: one per HTTP session, one for a stdio process.
#[derive(Default)]
pub struct Session {
    pub id: Option<String>,
    pub version: Mutex<String>,
    pub client_caps: Mutex<Value>,
    /// Minimum level set by `logging/setLevel` (index into `LEVELS`); `None` logs all.
    pub log_level: Mutex<Option<usize>>,
    pub subscriptions: Mutex<BTreeSet<String>>,
    /// Server-to-client requests waiting for the client's response, by request id.
    pub pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next_request: AtomicU64,
    /// Where server-initiated messages go: stdout, or the session's GET stream.
    pub stream: Mutex<Option<Emitter>>,
    /// Running requests by id, so `notifications/cancelled` can stop them.
    pub inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Set once `initialize` was answered.
    pub ready: AtomicBool,
}

pub const LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

pub fn level_index(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

impl Session {
    pub fn new(id: Option<String>) -> Session {
        Session { id, ..Session::default() }
    }

    pub fn next_request_id(&self) -> String {
        format!("mock-{}", self.next_request.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn version(&self) -> String {
        self.version.lock().unwrap().clone()
    }

    pub fn caps(&self) -> Value {
        self.client_caps.lock().unwrap().clone()
    }

    /// Sends a server-initiated message on the session's stream, if one is open.
    pub fn push(&self, line: String) {
        if let Some(out) = self.stream.lock().unwrap().as_ref() {
            let _ = out.send(Frame::Line(line));
        }
    }
}

impl Server {
    /// A mock offering the fixed tools, or only `only_tools` when that is not empty.
    pub fn new(
        name: String,
        generation: Generation,
        log: Option<std::fs::File>,
        exit_after: Option<u64>,
        only_tools: Vec<String>,
    ) -> Server {
        let static_tools = if only_tools.is_empty() { catalog::static_tools() } else { Vec::new() };
        Server {
            name,
            generation,
            log: log.map(Mutex::new),
            exit_after,
            requests_seen: AtomicU64::new(0),
            secret: uuid::Uuid::new_v4().to_string(),
            static_tools,
            dynamic_tools: Mutex::new(only_tools),
            redescribed: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            legacy_sinks: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(0),
            unknown_session_status: 404,
            tasks: None,
            require_authorization: false,
        }
    }

    pub fn server_info(&self) -> Value {
        json!({"name": self.name, "version": env!("CARGO_PKG_VERSION")})
    }

    /// Appends one received message (its exact text) to the `--log` file.
    pub fn record(&self, text: &str) {
        if let Some(file) = &self.log {
            let mut file = file.lock().unwrap();
            let _ = writeln!(file, "{}", text.trim_end_matches(['\r', '\n']));
            let _ = file.flush();
        }
    }

    /// Records a mock-side event (not a received message) in the log, e.g. a cancellation.
    pub fn record_event(&self, event: &str, request_id: &Value) {
        tracing::info!(event, %request_id, "mock event");
        self.record(&json!({"mock-event": event, "requestId": request_id}).to_string());
    }

    /// Counts a received request; `--exit-after N` ends the process on the Nth.
    pub fn count_request(&self) {
        let seen = self.requests_seen.fetch_add(1, Ordering::SeqCst) + 1;
        if self.exit_after.is_some_and(|limit| seen >= limit) {
            eprintln!("mcp-mock: --exit-after reached after {seen} requests, exiting");
            std::process::exit(4);
        }
    }

    pub fn tools(&self) -> Vec<Value> {
        let mut tools = self.static_tools.clone();
        if self.tasks.is_some() {
            tools.push(crate::tasks::tool());
        }
        tools.extend(self.dynamic_tools.lock().unwrap().iter().map(|n| catalog::dynamic_tool(n)));
        let redescribed = self.redescribed.lock().unwrap();
        if !redescribed.is_empty() {
            for t in &mut tools {
                if let Some(d) = t["name"].as_str().and_then(|n| redescribed.get(n)) {
                    t["description"] = d.clone().into();
                }
            }
        }
        tools
    }

    /// One tool's definition, without building the whole list.
    pub fn tool(&self, name: &str) -> Option<Value> {
        let mut t = match self.static_tools.iter().find(|t| t["name"] == name) {
            Some(t) => Some(t.clone()),
            None => self.is_dynamic_tool(name).then(|| catalog::dynamic_tool(name)),
        }?;
        if let Some(d) = self.redescribed.lock().unwrap().get(name) {
            t["description"] = d.clone().into();
        }
        Some(t)
    }

    /// Gives tool `name` a new description from now on (`redescribe`).
    pub fn redescribe(&self, name: &str, description: &str) {
        self.redescribed.lock().unwrap().insert(name.to_string(), description.to_string());
    }

    pub fn is_dynamic_tool(&self, name: &str) -> bool {
        self.dynamic_tools.lock().unwrap().iter().any(|n| n == name)
    }

    pub fn add_tool(&self, name: &str) {
        let mut tools = self.dynamic_tools.lock().unwrap();
        if !tools.iter().any(|n| n == name) {
            tools.push(name.to_string());
        }
    }

    pub fn add_legacy_sink(&self, session: Arc<Session>) {
        self.legacy_sinks.lock().unwrap().push(session);
    }

    pub fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self.sessions.lock().unwrap().remove(id);
        self.legacy_sinks.lock().unwrap().retain(|s| s.id.as_deref() != Some(id));
        removed
    }

    /// Opens a modern subscription and returns its key (for `unlisten`).
    pub fn listen(&self, subscription_id: Value, filter: Value, out: Emitter) -> u64 {
        let key = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners.lock().unwrap().push(Listener { key, subscription_id, filter, out });
        key
    }

    pub fn unlisten(&self, key: u64) {
        self.listeners.lock().unwrap().retain(|l| l.key != key);
    }

    /// Announces `notifications/resources/updated` for `uri` to the legacy sessions subscribed
    /// to it and to the modern listeners that named it in `resourceSubscriptions`.
    pub fn resource_updated(&self, uri: &str) {
        let method = "notifications/resources/updated";
        for session in self.legacy_sinks.lock().unwrap().iter() {
            if session.ready.load(Ordering::SeqCst) && session.subscriptions.lock().unwrap().contains(uri) {
                session.push(notification(method, json!({"uri": uri})));
            }
        }
        for l in self.listeners.lock().unwrap().iter() {
            let named = l.filter.get("resourceSubscriptions").and_then(Value::as_array);
            if named.is_some_and(|uris| uris.iter().any(|u| u == uri)) {
                let params = json!({"uri": uri, "_meta": {META_SUBSCRIPTION: l.subscription_id}});
                let _ = l.out.send(Frame::Line(notification(method, params)));
            }
        }
    }

    /// Announces `notifications/{kind}/list_changed` to legacy sessions and to modern
    /// listeners that opted in (`toolsListChanged`, `promptsListChanged`, ...).
    pub fn list_changed(&self, kind: &str) {
        let method = format!("notifications/{kind}/list_changed");
        for session in self.legacy_sinks.lock().unwrap().iter() {
            if session.ready.load(Ordering::SeqCst) {
                session.push(notification(&method, json!({})));
            }
        }
        let filter_key = format!("{kind}ListChanged");
        for l in self.listeners.lock().unwrap().iter() {
            if l.filter.get(&filter_key) == Some(&Value::Bool(true)) {
                let params = json!({"_meta": {META_SUBSCRIPTION: l.subscription_id}});
                let _ = l.out.send(Frame::Line(notification(&method, params)));
            }
        }
    }
}
