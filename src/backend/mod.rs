//! Backends: the MCP servers behind the gateway, over a stdio child process or Streamable
//! HTTP, each spoken to in its own protocol generation.

pub mod backoff;
pub mod breaker;
mod handshake;
mod http;
pub mod http_client;
mod listen;
mod result_body;
pub mod sse_limit;
mod stderr;
mod stdio;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::catalog::Listing;
use crate::config::{BackendConfig, TransportConfig};
use crate::method::Method;
use crate::protocol::{self, Generation, Params};
use crate::tasks::Tasks;

pub use listen::spawn as spawn_listener;
pub use result_body::{BrokenBody, Piece, ResultBody, Summary};

/// What a backend answered to one request: its `result` or its `error`, as raw bytes.
#[derive(Debug)]
pub enum Reply {
    /// The `result` value, whole.
    Result(Box<RawValue>),
    /// The `error` object.
    Error(Box<RawValue>),
    /// A result handed on as it arrives (only when the call's `CallOpts::stream` allowed it).
    Streamed(ResultBody),
}

/// Why a request got no answer from a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend answered, but not usably (bad status, no JSON-RPC response, too large).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend cannot be reached at all (connection refused, process gone).
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// No answer within the call's timeout.
    #[error("backend timed out")]
    Timeout,
}

/// Why a backend could not be started. Each variant's text includes its cause's; none is
/// given as `source()`, so `{e:#}` prints it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A stdio backend's command could not be run.
    #[error("backend `{backend}`: cannot start `{command}`: {cause} (is it installed and on PATH?)")]
    Spawn {
        /// The backend's name.
        backend: String,
        /// The command configured.
        command: String,
        /// Why it did not start.
        cause: std::io::Error,
    },
    /// An HTTP backend's URL or a header it is configured with cannot be sent (the parser's text).
    #[error("{0}")]
    HttpConfig(String),
    /// The process started or the URL is valid, but the backend would not complete the handshake.
    #[error("{0}")]
    Handshake(HandshakeError),
}

/// Why a started backend would not complete the MCP handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The `server/discover` probe could not reach the backend at all.
    #[error("backend `{backend}` did not answer the probe: {why}")]
    ProbeUnreachable {
        /// The backend's name.
        backend: String,
        /// Why.
        why: String,
    },
    /// `generation = "stateless"`, and the backend did not answer `server/discover` with it.
    #[error(
        "backend `{backend}` does not answer server/discover with 2026-07-28, and its config says generation = \"stateless\" (use \"auto\" to fall back to initialize)"
    )]
    NotStateless {
        /// The backend's name.
        backend: String,
    },
    /// No answer to `initialize` in time.
    #[error("backend `{backend}` did not answer initialize within {timeout:?}")]
    InitializeTimeout {
        /// The backend's name.
        backend: String,
        /// How long the gateway waited.
        timeout: Duration,
    },
    /// `initialize` got no usable answer.
    #[error("backend `{backend}`: initialize failed: {cause}")]
    InitializeFailed {
        /// The backend's name.
        backend: String,
        /// Why.
        cause: BackendError,
    },
    /// The backend answered `initialize` with a JSON-RPC error.
    #[error("backend `{backend}` refused initialize: {error}")]
    Refused {
        /// The backend's name.
        backend: String,
        /// The error object, as JSON.
        error: String,
    },
    /// The answer to `initialize` is not JSON.
    #[error("{0}")]
    BadAnswer(serde_json::Error),
    /// The backend speaks a protocol version Sentinel does not.
    #[error(
        "backend `{backend}` answered initialize with protocol version `{version}`, which Sentinel does not speak (it speaks {})",
        crate::protocol::SUPPORTED.join(", ")
    )]
    UnknownVersion {
        /// The backend's name.
        backend: String,
        /// The version it answered with.
        version: String,
    },
}

/// A message from a backend that belongs to one call in flight.
#[derive(Debug)]
pub enum Event {
    /// `notifications/progress` or `notifications/message` for this call.
    Notification {
        /// The notification's method.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
    },
    /// A server-to-client request (sampling, elicitation, roots) made while serving this call.
    Request {
        /// The request's method.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
        /// Where the client's answer goes, to be sent back to the backend.
        reply: oneshot::Sender<Reply>,
    },
}

/// A notice and the number of the slot whose backend sent it.
#[derive(Debug)]
pub struct SlotNotice {
    /// The slot's index in the gateway's table of backends.
    pub slot: usize,
    /// What the backend said.
    pub notice: Notice,
}

/// Where backends send their notices: the gateway's notice loop.
pub type Notices = mpsc::UnboundedSender<SlotNotice>;

/// Backend-wide news, not tied to a call.
#[derive(Debug)]
pub enum Notice {
    /// `notifications/{tools,prompts,resources}/list_changed`: which list.
    ListChanged(&'static str),
    /// `notifications/resources/updated` params, raw.
    ResourceUpdated(Box<RawValue>),
    /// `notifications/tasks/status` params, raw (a task the gateway handed a client).
    TaskStatus(Box<RawValue>),
    /// The connection ended (process exit, broken pipe).
    Closed(String),
}

impl Notice {
    /// The backend-wide notice a notification carries, if it is one.
    fn of(method: &str, params: Option<&RawValue>) -> Option<Notice> {
        use crate::method::Notification;
        match method.parse::<Notification>().ok()? {
            Notification::ToolsListChanged => Some(Notice::ListChanged("tools")),
            Notification::PromptsListChanged => Some(Notice::ListChanged("prompts")),
            Notification::ResourcesListChanged => Some(Notice::ListChanged("resources")),
            Notification::ResourcesUpdated => params.map(|p| Notice::ResourceUpdated(p.to_owned())),
            Notification::TaskStatus => params.map(|p| Notice::TaskStatus(p.to_owned())),
            _ => None,
        }
    }
}

/// `notifications/cancelled` params for the gateway's own request id `id`.
fn cancelled_params(id: u64) -> String {
    format!(r#"{{"requestId":{id},"reason":"cancelled by the client or timed out at the gateway"}}"#)
}

/// How one call is routed back: where its events go, and the progress token the gateway
/// minted for it (already written into the params).
#[derive(Default)]
pub struct CallOpts {
    /// Where the call's progress, log messages and server-to-client requests go; `None`
    /// drops them.
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// The progress token the gateway put in the params, by which the backend's progress
    /// notifications are matched to this call.
    pub progress_token: Option<String>,
    /// The `Mcp-Name` value (tool or prompt name, resource URI) for HTTP backends.
    pub name: Option<String>,
    /// Client capabilities declared to a stateless backend for this call.
    pub client_capabilities: Option<serde_json::Value>,
    /// Per-request log level for a stateless backend.
    pub log_level: Option<String>,
    /// `Mcp-Param-*` headers for a stateless HTTP backend (from `x-mcp-header` annotations).
    pub param_headers: Vec<(String, String)>,
    /// The gateway's backend span, sent to an HTTP backend as `traceparent`/`tracestate`
    /// headers (it is in `_meta` already); `None` with telemetry off.
    pub trace: Option<crate::telemetry::TraceParent>,
    /// The caller takes a result as a `Reply::Streamed` (it needs no more of it than a
    /// `Summary`); otherwise results come whole.
    pub stream: bool,
    /// Set while the call waits for its client's answers between input rounds (it is parked,
    /// src/gateway/bridge.rs): a server-to-client request that cannot name its call (stdio, a
    /// GET stream) is then not this call's, so it does not count when attributing one.
    pub parked: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Whether a call in flight can be the one a backend's unattributed request belongs to.
pub(crate) fn may_ask(parked: Option<&Arc<std::sync::atomic::AtomicBool>>) -> bool {
    !parked.is_some_and(|p| p.load(std::sync::atomic::Ordering::Relaxed))
}

pub(crate) enum Conn {
    Stdio(stdio::StdioConn),
    Http(http::HttpConn),
}

impl Conn {
    async fn request(&self, method: &str, params: String, opts: &CallOpts) -> Result<Reply, BackendError> {
        match self {
            Conn::Stdio(c) => c.request(method, params, opts).await,
            Conn::Http(c) => c.request(method, params, opts).await,
        }
    }

    async fn notify(&self, method: &str, params: String) {
        match self {
            Conn::Stdio(c) => c.notify(method, params),
            Conn::Http(c) => c.notify(method, params).await,
        }
    }

    /// Stops the process group first (its pipes' tasks end with it), then the tasks.
    async fn stop(&self, tasks: &Tasks, name: &str, grace: Duration) {
        if let Conn::Stdio(c) = self {
            c.terminate(grace).await;
        }
        tasks.stop(&format!("backend `{name}`"), grace).await;
    }
}

/// One started backend.
pub struct Backend {
    /// Its `[[backend]]` entry.
    pub config: BackendConfig,
    /// The protocol generation it speaks, settled by the handshake.
    pub generation: Generation,
    /// The capabilities it declared.
    pub capabilities: serde_json::Value,
    /// Resource URIs clients subscribed to (stateless backends: carried on the listen stream).
    pub subscriptions: listen::Subscriptions,
    conn: Conn,
    /// For a stateless HTTP backend that also speaks the session-based protocol: a second
    /// connection with a session of its own, for session-based clients' calls. Over it the
    /// backend can ask the client things the way its session-based clients expect (a real
    /// `sampling/createMessage` mid-call), which many dual-generation servers cannot do
    /// statelessly at all (the Python SDK answers "no back-channel"). `None`: no such backend,
    /// or it refused `initialize`; session-based clients are then bridged (`input_required`
    /// put to them as requests).
    session_based: Option<Arc<Backend>>,
    /// Its connection's background tasks (a child's reader and pipes, an HTTP backend's GET
    /// stream, a stateless backend's listen stream, answers to the backend's requests):
    /// stopped and awaited by `terminate`, told to end when the backend is dropped.
    tasks: Tasks,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// Whether the backend advertises a capability (`tools`, `prompts`, `resources`, `completions`).
fn has(caps: &serde_json::Value, key: &str) -> bool {
    caps.get(key).is_some_and(|v| !v.is_null())
}

impl Backend {
    /// Starts the transport, probes the generation and completes the handshake. A backend
    /// with a credential per caller is started here without one: its `{credential}` headers
    /// and variables are left out (this is the connection the gateway lists it with).
    pub async fn start(
        index: usize,
        config: BackendConfig,
        client: http_client::BackendClient,
        notices: Notices,
    ) -> Result<Backend, StartError> {
        Backend::start_as(index, config, client, notices, None).await
    }

    /// [`start`](Self::start) acting for one caller: `credential` fills the `{credential}`
    /// templates of its headers (HTTP) or environment (stdio).
    pub async fn start_as(
        index: usize,
        config: BackendConfig,
        client: http_client::BackendClient,
        notices: Notices,
        credential: Option<crate::credentials::Secret>,
    ) -> Result<Backend, StartError> {
        let tasks = Tasks::new();
        let conn = match &config.transport {
            TransportConfig::Stdio { .. } => {
                Conn::Stdio(stdio::StdioConn::spawn(index, &config, notices.clone(), &tasks, credential.as_ref())?)
            }
            TransportConfig::Http { .. } => Conn::Http(http::HttpConn::new(
                index,
                &config,
                client.clone(),
                notices.clone(),
                &tasks,
                credential.clone(),
            )?),
        };
        let hs = match handshake::handshake(&conn, &config).await {
            Ok(hs) => hs,
            Err(e) => {
                // A process that started but would not talk must not stay behind, nor must
                // anything its connection started.
                conn.stop(&tasks, &config.name, Duration::from_secs(1)).await;
                return Err(StartError::Handshake(e));
            }
        };
        if let Conn::Http(h) = &conn {
            h.set_generation(hs.generation);
        }
        let session_based = match (&conn, hs.generation) {
            (Conn::Http(_), Generation::Stateless) if config.generation == crate::config::BackendGeneration::Auto => {
                Backend::start_session_based(index, config.clone(), client, notices, credential).await.map(Arc::new)
            }
            _ => None,
        };
        tracing::info!(
            backend = %config.name,
            generation = %hs.generation,
            session_based_too = session_based.is_some(),
            "backend ready"
        );
        Ok(Backend {
            generation: hs.generation,
            capabilities: hs.capabilities,
            subscriptions: Default::default(),
            config,
            conn,
            session_based,
            tasks,
        })
    }

    /// The session-based companion of a stateless HTTP backend (see `session_based`): a
    /// connection of its own that `initialize`s, or `None` when the backend does not.
    async fn start_session_based(
        index: usize,
        config: BackendConfig,
        client: http_client::BackendClient,
        notices: Notices,
        credential: Option<crate::credentials::Secret>,
    ) -> Option<Backend> {
        let tasks = Tasks::new();
        let conn = Conn::Http(http::HttpConn::new(index, &config, client, notices, &tasks, credential).ok()?);
        match handshake::initialize(&conn, &config).await {
            Ok(hs) => {
                if let Conn::Http(h) = &conn {
                    h.set_generation(hs.generation);
                }
                Some(Backend {
                    generation: hs.generation,
                    capabilities: hs.capabilities,
                    subscriptions: Default::default(),
                    config,
                    conn,
                    session_based: None,
                    tasks,
                })
            }
            Err(e) => {
                tracing::debug!(backend = %config.name, "stateless only ({e}); session-based clients are bridged");
                conn.stop(&tasks, &config.name, Duration::from_secs(1)).await;
                None
            }
        }
    }

    /// The connection a session-based client's calls go over: the session-based companion
    /// when the backend has one, else this one.
    pub fn for_session_based_client(self: &Arc<Self>) -> &Arc<Backend> {
        self.session_based.as_ref().unwrap_or(self)
    }

    /// Sends one request, adapting `_meta` to the backend's generation, bounded by the
    /// backend's timeout.
    pub async fn call(&self, method: &str, params: Params, opts: &CallOpts) -> Result<Reply, BackendError> {
        let params = match self.generation {
            Generation::Stateless => stateless_params_of(params, opts),
            Generation::SessionBased(_) => {
                let mut params = params;
                let mut meta = params.meta().unwrap_or_default();
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
                params.set_meta(&meta);
                params.to_json()
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        match tokio::time::timeout_at(deadline, self.conn.request(method, params, opts)).await {
            // The rest of a streamed result is bounded by the same timeout.
            Ok(Ok(Reply::Streamed(body))) => Ok(Reply::Streamed(body.with_deadline(deadline))),
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout),
        }
    }

    /// Whether the backend can answer: a stdio backend's process still runs; an HTTP backend
    /// answered at least one of its last few requests.
    pub fn is_alive(&self) -> bool {
        match &self.conn {
            Conn::Stdio(c) => c.is_alive(),
            Conn::Http(c) => c.is_answering(),
        }
    }

    /// Stops the backend: a stdio backend's whole process group (TERM, then KILL after
    /// `grace`), then its connection's tasks (waiting up to `grace` for them).
    pub async fn terminate(&self, grace: Duration) {
        if let Some(s) = &self.session_based {
            Box::pin(s.terminate(grace)).await;
        }
        self.conn.stop(&self.tasks, &self.config.name, grace).await;
    }

    /// The caller's credential its requests carry from now on (an HTTP backend acting for one
    /// caller, whose exchanged token was refreshed or whose stored credential changed). A
    /// stdio child keeps the environment it was started with.
    pub fn set_credential(&self, credential: crate::credentials::Secret) {
        // The session-based companion acts for the same caller.
        if let Some(s) = &self.session_based {
            s.set_credential(credential.clone());
        }
        if let Conn::Http(c) = &self.conn {
            c.set_credential(credential);
        }
    }

    /// The process id of a stdio backend's child.
    pub fn pid(&self) -> Option<i32> {
        match &self.conn {
            Conn::Stdio(c) => c.pid(),
            Conn::Http(_) => None,
        }
    }

    /// Sends a notification (e.g. `notifications/cancelled`) to the backend.
    pub async fn notify(&self, method: &str, params: String) {
        self.conn.notify(method, params).await;
    }

    /// Lists everything the backend offers, following pagination cursors.
    pub async fn listing(&self) -> Listing {
        let mut l = Listing {
            has_resources: has(&self.capabilities, "resources"),
            has_completions: has(&self.capabilities, "completions"),
            ..Default::default()
        };
        if has(&self.capabilities, "tools") {
            l.tools = self
                .list_all(Method::ToolsList, "tools")
                .await
                .iter()
                .filter_map(|r| crate::catalog::Listed::parse(r))
                .collect();
        }
        if has(&self.capabilities, "prompts") {
            l.prompts = self
                .list_all(Method::PromptsList, "prompts")
                .await
                .iter()
                .filter_map(|r| crate::catalog::Listed::parse(r))
                .collect();
        }
        if l.has_resources {
            l.resources = keyed(self.list_all(Method::ResourcesList, "resources").await, "uri");
            l.templates = keyed(self.list_all(Method::TemplatesList, "resourceTemplates").await, "uriTemplate");
        }
        l
    }

    async fn list_all(&self, method: Method, key: &str) -> Vec<Box<RawValue>> {
        let method = method.as_str();
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(rename = "nextCursor")]
            next_cursor: Option<String>,
        }
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // A bound on pages so a backend that always returns a cursor cannot hang startup.
        for _ in 0..1000 {
            let mut params = Params::default();
            if let Some(c) = &cursor {
                params.set_str("cursor", c);
            }
            let page = match self.call(method, params, &CallOpts::default()).await {
                Ok(Reply::Result(r)) => r,
                Ok(Reply::Error(e)) => {
                    tracing::warn!(backend = %self.config.name, method, error = %e.get(), "listing failed");
                    break;
                }
                Ok(Reply::Streamed(_)) => unreachable!("a listing is not asked for as a stream"),
                Err(e) => {
                    tracing::warn!(backend = %self.config.name, method, error = %e, "listing failed");
                    break;
                }
            };
            let fields: indexmap::IndexMap<String, Box<RawValue>> =
                serde_json::from_str(page.get()).unwrap_or_default();
            if let Some(items) = fields.get(key) {
                out.extend(serde_json::from_str::<Vec<Box<RawValue>>>(items.get()).unwrap_or_default());
            }
            cursor = serde_json::from_str::<Page>(page.get()).ok().and_then(|p| p.next_cursor);
            if cursor.is_none() {
                break;
            }
        }
        out
    }

    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Params for a stateless backend: the per-request `_meta` the 2026-07-28 revision requires.
fn stateless_params_of(mut params: Params, opts: &CallOpts) -> String {
    let mut meta = params.meta().unwrap_or_default();
    meta.insert(protocol::META_PROTOCOL_VERSION.into(), protocol::STATELESS.into());
    meta.insert(
        protocol::META_CLIENT_CAPABILITIES.into(),
        opts.client_capabilities.clone().unwrap_or_else(|| serde_json::json!({})),
    );
    meta.insert(protocol::META_CLIENT_INFO.into(), protocol::server_info());
    match &opts.log_level {
        Some(l) => meta.insert(protocol::META_LOG_LEVEL.into(), l.clone().into()),
        None => meta.remove(protocol::META_LOG_LEVEL),
    };
    params.set_meta(&meta);
    params.to_json()
}

pub(crate) fn stateless_params(v: serde_json::Value, opts: &CallOpts) -> String {
    let params: Params = serde_json::from_value(v).unwrap_or_default();
    stateless_params_of(params, opts)
}

fn keyed(items: Vec<Box<RawValue>>, key: &str) -> Vec<(String, Box<RawValue>)> {
    items
        .into_iter()
        .filter_map(|raw| {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get()).ok()?;
            let k = v.get(key)?.as_str()?.to_string();
            Some((k, raw))
        })
        .collect()
}

/// Raw JSON from a string the gateway built itself (always valid JSON).
/// What the gateway answers itself of a backend's server-to-client request, if anything:
/// `ping` always (either side may ping at any time, and no client should be bothered with a
/// backend's liveness check); `roots/list` from the backend's configured `roots` when there
/// is no client call to put it to (`caller` is the call the request can be attributed to).
pub(crate) fn own_answer(method: &str, caller: Option<&mpsc::UnboundedSender<Event>>, roots: &str) -> Option<String> {
    if method == crate::method::Method::Ping.as_str() {
        return Some("{}".into());
    }
    let is_roots = method.parse::<crate::method::ServerRequest>() == Ok(crate::method::ServerRequest::Roots);
    (caller.is_none() && is_roots).then(|| roots.to_string())
}

pub(crate) fn raw(s: String) -> Box<RawValue> {
    RawValue::from_string(s).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is json"))
}

/// The raw text, without copying it.
pub(crate) fn raw_into_string(r: Box<RawValue>) -> String {
    Box::<str>::from(r).into_string()
}

/// Default capabilities the gateway declares to session-based backends: it can relay
/// sampling, elicitation and roots requests to the client whose call caused them.
pub(crate) fn gateway_client_capabilities() -> serde_json::Value {
    serde_json::json!({ "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } })
}

pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
