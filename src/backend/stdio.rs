//! A backend run as a child process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! One process serves every client: the gateway rewrites JSON-RPC ids to its own counter so
//! any number of concurrent calls multiplex safely, and routes each response, progress
//! notification and server-to-client request back to the call it belongs to.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::line_codec::{Line, LineCodec};
use crate::method::Notification;
use crate::tasks::Tasks;

use super::{BackendError, CallOpts, Event, Notice, Notices, Reply, SlotNotice};
use crate::config::{BackendConfig, TransportConfig};
use crate::jsonrpc::{self, Kind, Message};

/// What every stdio backend inherits from Sentinel's environment: enough to find programs,
/// write caches and speak the user's locale and CA bundle, nothing secret.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];

struct PendingCall {
    reply: oneshot::Sender<Result<Reply, BackendError>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// The caller takes its result streamed (`CallOpts::stream`).
    stream: bool,
    /// `CallOpts::parked`.
    parked: Option<Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Default)]
struct Routes {
    calls: HashMap<u64, PendingCall>,
    /// Gateway-minted progress token -> the call's event channel.
    progress: HashMap<String, mpsc::UnboundedSender<Event>>,
    /// Set once the process is gone: later calls fail at once with this reason.
    closed: Option<String>,
}

pub struct StdioConn {
    name: String,
    lines: mpsc::UnboundedSender<String>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    /// The child's process group (its pid: it was started as a group leader).
    pgid: Option<i32>,
    /// Becomes true once the child process has exited.
    exited: tokio::sync::watch::Receiver<bool>,
}

impl StdioConn {
    /// Starts the child; its pipes' tasks are `tasks`' (see `Backend::tasks`).
    pub fn spawn(
        index: usize,
        config: &BackendConfig,
        notices: Notices,
        tasks: &Tasks,
        credential: Option<&crate::credentials::Secret>,
    ) -> Result<StdioConn, super::StartError> {
        let TransportConfig::Stdio { command, args, env, inherit_env, cwd } = &config.transport else {
            unreachable!("stdio backend without stdio transport")
        };
        let mut cmd = Command::new(command);
        // A child sees only a few harmless variables of Sentinel's environment, those the
        // config names, and its own `env`: never Sentinel's secrets, other backends' keys,
        // or a client's token (SENTINEL_TOKEN in `sentinel stdio`).
        cmd.env_clear();
        for name in INHERITED_ENV.iter().copied().chain(inherit_env.iter().map(String::as_str)) {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        // The caller's credential fills `{credential}`; without one (the shared child the
        // gateway lists the backend with) such a variable is left unset, never set to the text.
        let placeholder = crate::config::CREDENTIAL_PLACEHOLDER;
        let env = env.iter().filter_map(|(k, v)| match (v.contains(placeholder), credential) {
            (false, _) => Some((k, v.clone())),
            (true, Some(c)) => Some((k, v.replace(placeholder, c.expose()))),
            (true, None) => None,
        });
        cmd.args(args).envs(env).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // Own process group, so the whole tree can be signalled together on shutdown.
        cmd.process_group(0);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().map_err(|cause| super::StartError::Spawn {
            backend: config.name.clone(),
            command: command.clone(),
            cause,
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let name = config.name.clone();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();

        tasks.spawn(async move {
            let _ = crate::line_writer::write_lines(stdin, lines_rx).await;
        });
        // Not cut short by a stop: it ends when the pipe does, which a stopped (or crashed)
        // process group closes, and what is still in the pipe then (a crash's traceback) is
        // the most useful part of the log.
        tasks.spawn_to_completion(super::stderr::drain(name.clone(), stderr));
        let reader = Reader {
            name: name.clone(),
            roots: config.roots.clone(),
            routes: routes.clone(),
            lines: lines_tx.clone(),
            notices,
            index,
            tasks: tasks.clone(),
        };
        let max = config.max_message_bytes;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        let stop = tasks.token();
        // Watches the stop itself: whatever ends the reading, the process is stopped and reaped.
        tasks.spawn_to_completion(async move {
            let frames = FramedRead::new(stdout, LineCodec::new(max));
            let why = match stop.run_until_cancelled(reader.run(frames)).await {
                Some(why) => why,
                None => "stopped by the gateway".into(),
            };
            // Calls in flight fail now, not when the process finally exits; a process whose
            // output is gone is of no use, so it is stopped — with anything it started.
            reader.close(why);
            if let Some(g) = pgid {
                signal_group(g, libc::SIGKILL);
            }
            let _ = child.start_kill();
            let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            let _ = exited_tx.send(true);
            tracing::warn!(backend = %reader.name, "backend process ended: {status}");
        });
        Ok(StdioConn { name, lines: lines_tx, routes, next_id: AtomicU64::new(1), pgid, exited })
    }

    pub async fn request(&self, method: &str, params: String, opts: &CallOpts) -> Result<Reply, BackendError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut r = self.routes.lock().expect("routes lock");
            if let Some(why) = &r.closed {
                return Err(BackendError::Unreachable(why.clone()));
            }
            r.calls.insert(
                id,
                PendingCall {
                    reply: tx,
                    events: opts.events.clone(),
                    stream: opts.stream,
                    parked: opts.parked.clone(),
                },
            );
            if let (Some(tok), Some(ev)) = (&opts.progress_token, &opts.events) {
                r.progress.insert(tok.clone(), ev.clone());
            }
        }
        let guard = RoutedCall { conn: self, id, token: opts.progress_token.clone(), done: false };
        if self.lines.send(jsonrpc::request(&id.to_string(), method, &params)).is_err() {
            return Err(BackendError::Unreachable(format!("backend `{}` is not running", self.name)));
        }
        let out =
            rx.await.unwrap_or_else(|_| Err(BackendError::Unreachable(format!("backend `{}` went away", self.name))));
        let mut guard = guard;
        guard.done = true;
        out
    }

    pub fn notify(&self, method: &str, params: String) {
        let _ = self.lines.send(jsonrpc::notification(method, &params));
    }

    /// The child's process id (it leads its own group).
    pub fn pid(&self) -> Option<i32> {
        self.pgid
    }

    /// Whether the process is still there to answer.
    pub fn is_alive(&self) -> bool {
        !*self.exited.borrow() && self.routes.lock().expect("routes lock").closed.is_none()
    }

    /// Stops the process group: SIGTERM, then SIGKILL for whatever is left after `grace`.
    /// No process of the group outlives this.
    pub async fn terminate(&self, grace: std::time::Duration) {
        let Some(g) = self.pgid else { return };
        let mut exited = self.exited.clone();
        // Once the leader is reaped its group id may belong to someone else: signal only
        // before. (When the leader's output ends, the reader kills the group before reaping.)
        if *exited.borrow() {
            return;
        }
        signal_group(g, libc::SIGTERM);
        if tokio::time::timeout(grace, exited.wait_for(|e| *e)).await.is_err() && !*exited.borrow() {
            signal_group(g, libc::SIGKILL);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), exited.wait_for(|e| *e)).await;
        }
    }
}

/// Sends a signal to a whole process group. Hand-written over libc: tokio's `Child` can only
/// signal the one process, and a backend (npx, uvx) usually starts children of its own.
#[allow(unsafe_code)]
fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; an already-gone group yields ESRCH.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Removes a call's routes when it ends; a call dropped before its answer (client cancelled,
/// timed out) is cancelled at the backend too.
struct RoutedCall<'a> {
    conn: &'a StdioConn,
    id: u64,
    token: Option<String>,
    done: bool,
}

impl Drop for RoutedCall<'_> {
    fn drop(&mut self) {
        let mut r = self.conn.routes.lock().expect("routes lock");
        r.calls.remove(&self.id);
        if let Some(t) = &self.token {
            r.progress.remove(t);
        }
        drop(r);
        if !self.done {
            self.conn.notify(Notification::Cancelled.as_str(), super::cancelled_params(self.id));
        }
    }
}

struct Reader {
    name: String,
    /// The answer to a `roots/list` no client call can take (`roots` in the config).
    roots: Arc<str>,
    index: usize,
    routes: Arc<Mutex<Routes>>,
    lines: mpsc::UnboundedSender<String>,
    notices: Notices,
    /// For the answers to the backend's requests, sent when the client has answered.
    tasks: Tasks,
}

impl Reader {
    async fn run(&self, mut frames: FramedRead<tokio::process::ChildStdout, LineCodec>) -> String {
        loop {
            match frames.next().await {
                None => return "stdout closed".into(),
                Some(Ok(Line::TooLong)) => {
                    tracing::error!(backend = %self.name, "a message exceeded max_message_bytes and was dropped");
                }
                Some(Err(e)) => return format!("read error: {e}"),
                Some(Ok(Line::Message(line))) => self.dispatch(line),
            }
        }
    }

    fn dispatch(&self, line: Bytes) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self.streamed_result(&line) {
            return;
        }
        let msg = match Message::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(backend = %self.name, error = %e, "ignoring a line that is not JSON-RPC");
                return;
            }
        };
        match msg.kind() {
            Some(Kind::Response) => {
                let Some(id) = msg.id.as_ref().and_then(|i| i.get().parse::<u64>().ok()) else {
                    return;
                };
                let call = self.routes.lock().expect("routes lock").calls.remove(&id);
                if let Some(call) = call {
                    let reply = match (msg.result, msg.error) {
                        (Some(r), _) => Reply::Result(r),
                        (_, Some(e)) => Reply::Error(e),
                        _ => unreachable!("response has result or error"),
                    };
                    let _ = call.reply.send(Ok(reply));
                }
            }
            Some(Kind::Notification) => self.notification(msg),
            Some(Kind::Request) => self.server_request(msg),
            None => tracing::warn!(backend = %self.name, "ignoring a malformed JSON-RPC message"),
        }
    }

    /// Hands a result to a call that takes it streamed as a slice of the line it came in,
    /// without copying it (the line is held until the client has it: the one copy of a stdio
    /// result in the gateway). False when the line is anything else, for `dispatch`.
    fn streamed_result(&self, line: &Bytes) -> bool {
        #[derive(serde::Deserialize)]
        struct Response<'a> {
            #[serde(borrow)]
            id: &'a RawValue,
            #[serde(borrow)]
            result: &'a RawValue,
            method: Option<serde::de::IgnoredAny>,
            error: Option<serde::de::IgnoredAny>,
        }
        let Ok(r) = serde_json::from_slice::<Response>(line) else { return false };
        if r.method.is_some() || r.error.is_some() {
            return false;
        }
        let Ok(id) = r.id.get().parse::<u64>() else { return false };
        let mut routes = self.routes.lock().expect("routes lock");
        if !routes.calls.get(&id).is_some_and(|c| c.stream) {
            return false;
        }
        let call = routes.calls.remove(&id).expect("checked above");
        drop(routes);
        // The raw value borrows from `line`: its offset there is where the slice starts.
        let at = r.result.get().as_ptr() as usize - line.as_ptr() as usize;
        let value = line.slice(at..at + r.result.get().len());
        let _ = call.reply.send(Ok(Reply::Streamed(super::ResultBody::whole(value))));
        true
    }

    fn notification(&self, msg: Message) {
        let method = msg.method.unwrap_or_default();
        match method.parse::<Notification>() {
            Ok(Notification::Progress) => {
                let token = msg.params.as_deref().and_then(progress_token);
                let target = token.and_then(|t| self.routes.lock().expect("routes lock").progress.get(&t).cloned());
                if let Some(ev) = target {
                    let _ = ev.send(Event::Notification { method, params: msg.params });
                }
            }
            Ok(Notification::Message) => {
                // Session-based servers do not say which request a log line belongs to on
                // stdio; it can only be attributed when exactly one call is in flight.
                match self.sole_caller() {
                    Ok(ev) => {
                        let _ = ev.send(Event::Notification { method, params: msg.params });
                    }
                    Err(_) => {
                        tracing::info!(backend = %self.name, params = %msg.params.as_deref().map(RawValue::get).unwrap_or(""), "backend log");
                    }
                }
            }
            _ => match Notice::of(&method, msg.params.as_deref()) {
                Some(n) => self.notice(n),
                None => tracing::debug!(backend = %self.name, method, "ignoring notification"),
            },
        }
    }

    fn notice(&self, n: Notice) {
        let _ = self.notices.send(SlotNotice { slot: self.index, notice: n });
    }

    /// The one client call in flight, if there is exactly one; otherwise how many there are
    /// (none, or several). The gateway's own requests (the listen stream, listings) carry no
    /// event channel and do not count, nor do calls parked waiting for their client's answers.
    fn sole_caller(&self) -> Result<mpsc::UnboundedSender<Event>, usize> {
        let r = self.routes.lock().expect("routes lock");
        let mut with_events =
            r.calls.values().filter(|c| super::may_ask(c.parked.as_ref())).filter_map(|c| c.events.as_ref());
        match (with_events.next(), with_events.next()) {
            (Some(ev), None) => Ok(ev.clone()),
            (None, _) => Err(0),
            (Some(_), Some(_)) => Err(2 + with_events.count()),
        }
    }

    /// A server-to-client request: `ping` is answered at once; the others are relayed to the
    /// caller they can be attributed to; a `roots/list` no call can take is answered from the
    /// config; anything else is answered with an error at once so the backend never hangs.
    fn server_request(&self, msg: Message) {
        let id = msg.id.expect("request has id");
        let method = msg.method.unwrap_or_default();
        let sole = self.sole_caller();
        if let Some(answer) = super::own_answer(&method, sole.as_ref().ok(), &self.roots) {
            let _ = self.lines.send(jsonrpc::result(&id, &answer));
            return;
        }
        let ev = match sole {
            Ok(ev) => ev,
            Err(n) => {
                let why = if n == 0 {
                    format!("no client call is in flight on this stdio backend to put `{method}` to")
                } else {
                    format!(
                        "Sentinel cannot tell which client call this `{method}` belongs to ({n} calls are in flight on this stdio backend)"
                    )
                };
                let _ = self.lines.send(jsonrpc::error(Some(&id), jsonrpc::code::INTERNAL_ERROR, &why, None));
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if ev.send(Event::Request { method: method.clone(), params: msg.params, reply: tx }).is_err() {
            let _ = self.lines.send(jsonrpc::error(
                Some(&id),
                jsonrpc::code::INTERNAL_ERROR,
                "the call this request belongs to has ended",
                None,
            ));
            return;
        }
        let lines = self.lines.clone();
        self.tasks.spawn(async move {
            let line = match rx.await {
                Ok(Reply::Result(r)) => jsonrpc::result(&id, r.get()),
                Ok(Reply::Error(e)) => jsonrpc::error_raw(Some(&id), e.get()),
                Ok(Reply::Streamed(_)) | Err(_) => {
                    jsonrpc::error(Some(&id), jsonrpc::code::INTERNAL_ERROR, "the client did not answer", None)
                }
            };
            let _ = lines.send(line);
        });
    }

    fn close(&self, why: String) {
        tracing::warn!(backend = %self.name, "backend connection closed: {why}");
        let calls: Vec<PendingCall> = {
            let mut r = self.routes.lock().expect("routes lock");
            r.closed = Some(format!("backend `{}` exited ({why})", self.name));
            r.progress.clear();
            r.calls.drain().map(|(_, c)| c).collect()
        };
        for c in calls {
            let _ = c.reply.send(Err(BackendError::Unreachable(format!(
                "backend `{}` exited during the call ({why})",
                self.name
            ))));
        }
        self.notice(Notice::Closed(why));
    }
}

/// The `progressToken` of a progress notification, as the string key the gateway minted.
pub(crate) fn progress_token(params: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(rename = "progressToken")]
        token: serde_json::Value,
    }
    let p: P = serde_json::from_str(params.get()).ok()?;
    match p.token {
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
