//! A backend reached over Streamable HTTP: one shared client (connection reuse, bounded read
//! buffers: see `http_client`),
//! JSON or SSE answers, the backend's session header kept for session-based servers.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::sync::{mpsc, oneshot};

use super::http_client::{BackendClient, body_stream, content_length};
use super::sse_limit::LimitError;
use super::{BackendError, CallOpts, Event, Notice, Notices, Reply, SlotNotice};
use crate::method::Notification;

/// Whether `method` is the handshake (the one request a lost session may still send).
fn is_initialize(method: &str) -> bool {
    method == crate::method::Method::Initialize.as_str()
}
use crate::config::{BackendConfig, TransportConfig};
use crate::jsonrpc::{self, Kind, Message};
use crate::param_headers;
use crate::protocol::{self, Generation};
use crate::tasks::Tasks;

pub struct HttpConn {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    index: usize,
    /// As messages show it (`net_error::shown_url`).
    url: reqwest::Url,
    /// Parsed once, not on every request (the profile showed URL parsing on the hot path).
    uri: Uri,
    headers: HeaderMap,
    /// Headers whose value takes the caller's credential (`{credential}`), filled in on every
    /// request from `credential`; left out while there is none (the shared connection of a
    /// backend with per-caller credentials).
    templates: Vec<(HeaderName, String)>,
    /// The caller's credential, for a connection acting for one caller: swapped when an
    /// exchanged token is refreshed.
    credential: arc_swap::ArcSwapOption<crate::credentials::Secret>,
    client: BackendClient,
    max_bytes: usize,
    /// The answer to a `roots/list` no client call can take (`roots` in the config).
    roots: Arc<str>,
    /// The client calls in flight on this connection, by request id: a server-to-client request
    /// on the session's GET stream (where some SDKs send them) can be attributed to the call
    /// when it is the only one.
    callers: Mutex<std::collections::HashMap<u64, CallerEntry>>,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Serializes re-initialization after the backend forgot our session (restart, expiry).
    reinit: tokio::sync::Mutex<()>,
    /// Requests that failed in a row (no usable answer); reset by any answer. The backend
    /// counts as down at `DOWN_AFTER`: an HTTP backend has no process to watch.
    failures: AtomicU32,
    notices: Notices,
    /// The backend's tasks (see `Backend::tasks`): the GET stream, answers to the backend's
    /// requests, cancellation notices.
    tasks: Tasks,
}

/// Why a POST got no usable answer.
enum PostError {
    Backend(BackendError),
    /// The backend no longer knows the session the request carried (it restarted, or the
    /// session expired): the request did not run.
    SessionEnded(String),
}

/// Consecutive failed requests after which an HTTP backend is reported down (`/health`,
/// `/ready`, `sentinel_backend_up`) until it answers again.
const DOWN_AFTER: u32 = 3;

impl From<BackendError> for PostError {
    fn from(e: BackendError) -> Self {
        PostError::Backend(e)
    }
}

#[derive(Default)]
struct State {
    /// `None` while probing; then the backend's generation.
    generation: Option<Generation>,
    session: Option<String>,
    /// The backend forgot our session and no new one could be opened yet (it was still
    /// restarting): the next request opens one first.
    lost: bool,
}

impl HttpConn {
    pub fn new(
        index: usize,
        config: &BackendConfig,
        client: BackendClient,
        notices: Notices,
        tasks: &Tasks,
        credential: Option<crate::credentials::Secret>,
    ) -> Result<HttpConn, super::StartError> {
        let bad = |e: &dyn std::fmt::Display| super::StartError::HttpConfig(e.to_string());
        let TransportConfig::Http { url, headers } = &config.transport else {
            unreachable!("http backend without http transport")
        };
        let mut map = HeaderMap::new();
        let mut templates = Vec::new();
        for (k, v) in headers {
            if v.contains(crate::config::CREDENTIAL_PLACEHOLDER) {
                templates.push((HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?, v.clone()));
                continue;
            }
            let mut value = HeaderValue::from_str(v).map_err(|e| bad(&e))?;
            value.set_sensitive(true);
            map.insert(HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?, value);
        }
        Ok(HttpConn {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                index,
                url: reqwest::Url::parse(url).map_err(|e| bad(&e))?,
                uri: url.parse().map_err(|e: http::uri::InvalidUri| bad(&e))?,
                headers: map,
                templates,
                credential: arc_swap::ArcSwapOption::new(credential.map(Arc::new)),
                client,
                max_bytes: config.max_message_bytes,
                roots: config.roots.clone(),
                callers: Mutex::default(),
                next_id: AtomicU64::new(1),
                state: Mutex::new(State::default()),
                reinit: tokio::sync::Mutex::new(()),
                failures: AtomicU32::new(0),
                notices,
                tasks: tasks.clone(),
            }),
        })
    }

    /// The caller's credential requests carry from now on.
    pub fn set_credential(&self, credential: crate::credentials::Secret) {
        self.inner.credential.store(Some(Arc::new(credential)));
    }

    pub fn set_generation(&self, g: Generation) {
        self.inner.state.lock().expect("state lock").generation = Some(g);
        if matches!(g, Generation::SessionBased(_)) {
            // The GET stream carries list_changed and other session-wide notifications.
            self.inner.tasks.spawn(listen(self.inner.clone()));
        }
    }

    /// Remembers the session id an `initialize` answer carried.
    fn generation(&self) -> Option<Generation> {
        self.inner.state.lock().expect("state lock").generation
    }

    /// Whether the backend answered lately: false once `DOWN_AFTER` requests in a row got no
    /// usable answer, until one does.
    pub fn is_answering(&self) -> bool {
        self.inner.failures.load(Ordering::Relaxed) < DOWN_AFTER
    }

    pub async fn request(&self, method: &str, params: String, opts: &CallOpts) -> Result<Reply, BackendError> {
        let out = self.request_in_session(method, &params, opts).await;
        match &out {
            Ok(_) => self.inner.failures.store(0, Ordering::Relaxed),
            Err(_) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }

    async fn request_in_session(&self, method: &str, params: &str, opts: &CallOpts) -> Result<Reply, BackendError> {
        if !is_initialize(method) && self.inner.state.lock().expect("state lock").lost {
            self.reinitialize(None).await?;
        }
        match self.request_once(method, params, opts).await {
            Err(PostError::SessionEnded(old)) if !is_initialize(method) => {
                // A session-based backend that restarted (or expired our session) says so
                // (404, or 400 from several SDKs' servers): the request never ran, so open a
                // new session and send it once more, instead of failing every later call.
                self.reinitialize(Some(&old)).await?;
                match self.request_once(method, params, opts).await {
                    Ok(r) => Ok(r),
                    Err(PostError::Backend(e)) => Err(e),
                    Err(PostError::SessionEnded(_)) => Err(BackendError::Unavailable(format!(
                        "backend `{}` keeps ending its session",
                        self.inner.name
                    ))),
                }
            }
            Err(PostError::SessionEnded(_)) => {
                Err(BackendError::Unavailable(format!("backend `{}` ended its session", self.inner.name)))
            }
            Err(PostError::Backend(e)) => Err(e),
            Ok(r) => Ok(r),
        }
    }

    async fn request_once(&self, method: &str, params: &str, opts: &CallOpts) -> Result<Reply, PostError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = jsonrpc::request(&id.to_string(), method, params);
        let session_based = matches!(self.generation(), Some(Generation::SessionBased(_)));
        let mut guard = CancelOnDrop { inner: self.inner.clone(), id, armed: session_based && !is_initialize(method) };
        let _caller = opts.events.as_ref().filter(|_| session_based).map(|ev| Caller::enter(&self.inner, id, ev, opts));
        let out = self.inner.post(method, opts.name.as_deref(), body, Some(id), opts).await;
        guard.armed = false;
        if is_initialize(method) {
            if let Ok((session, Reply::Result(r))) = &out {
                // Later handshake messages (notifications/initialized) need the session and
                // the negotiated version before the generation is formally set.
                let version = serde_json::from_str::<serde_json::Value>(r.get())
                    .ok()
                    .and_then(|v| v["protocolVersion"].as_str().and_then(protocol::known_session_based));
                let mut st = self.inner.state.lock().expect("state lock");
                st.session = session.clone();
                st.generation = version.map(Generation::SessionBased);
            }
        }
        out.map(|(_, r)| r)
    }

    /// Opens a new session unless another call already replaced `old` (`None`: the session
    /// was lost and no new one opened yet).
    async fn reinitialize(&self, old: Option<&str>) -> Result<(), BackendError> {
        let _one_at_a_time = self.inner.reinit.lock().await;
        {
            let mut st = self.inner.state.lock().expect("state lock");
            let current = if st.lost { None } else { st.session.as_deref() };
            if current != old || (old.is_none() && !st.lost) {
                return Ok(());
            }
            // Until a new session is open, later requests open one first rather than go out
            // without a session (which the backend would refuse in ways not all recognizable).
            st.session = None;
            st.lost = true;
        }
        tracing::warn!(backend = %self.inner.name, "backend forgot our session; initializing a new one");
        let generation = self.generation();
        let init = self
            .request_once(
                crate::method::Method::Initialize.as_str(),
                &super::handshake::initialize_params(),
                &CallOpts::default(),
            )
            .await;
        // Keep the generation the backend was probed with (initialize set the version it negotiated).
        if self.generation().is_none() {
            self.inner.state.lock().expect("state lock").generation = generation;
        }
        match init {
            Ok(Reply::Result(_)) => {
                self.inner.state.lock().expect("state lock").lost = false;
                self.notify(Notification::Initialized.as_str(), "{}".into()).await;
                // The old session's GET stream died with it.
                self.inner.tasks.spawn(listen(self.inner.clone()));
                tracing::info!(backend = %self.inner.name, "new backend session open");
                Ok(())
            }
            Ok(Reply::Error(e)) => Err(BackendError::Unavailable(format!(
                "backend `{}` refused a new session: {}",
                self.inner.name,
                e.get()
            ))),
            Ok(Reply::Streamed(_)) => unreachable!("initialize is not asked for as a stream"),
            Err(PostError::Backend(e)) => Err(e),
            Err(PostError::SessionEnded(_)) => {
                Err(BackendError::Unavailable(format!("backend `{}` refused a new session", self.inner.name)))
            }
        }
    }

    pub async fn notify(&self, method: &str, params: String) {
        let body = jsonrpc::notification(method, &params);
        // Bounded: a backend that accepts the connection but never answers must not hold us.
        let opts = CallOpts::default();
        let _ = tokio::time::timeout(NOTIFY_TIMEOUT, self.inner.post(method, None, body, None, &opts)).await;
    }
}

/// How long a notification POST may take.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends `notifications/cancelled` when a session-based call is dropped before its answer
/// (for stateless backends, closing the response stream is the cancellation).
struct CancelOnDrop {
    inner: Arc<Inner>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let inner = self.inner.clone();
            let params = super::cancelled_params(self.id);
            // Sent even when the backend is being stopped (a reload retiring it as its last
            // call is cut short): the server lives on and should stop the work. Bounded by
            // its timeout, and waited for by the stop.
            self.inner.tasks.spawn_to_completion(async move {
                let body = jsonrpc::notification(Notification::Cancelled.as_str(), &params);
                let opts = CallOpts::default();
                let post = inner.post(Notification::Cancelled.as_str(), None, body, None, &opts);
                let _ = tokio::time::timeout(NOTIFY_TIMEOUT, post).await;
            });
        }
    }
}

/// A call's event channel, and whether it is parked (`CallOpts::parked`).
type CallerEntry = (mpsc::UnboundedSender<Event>, Option<Arc<AtomicBool>>);

/// A client call counted in `Inner::callers` while it runs.
struct Caller {
    inner: Arc<Inner>,
    id: u64,
}

impl Caller {
    fn enter(inner: &Arc<Inner>, id: u64, events: &mpsc::UnboundedSender<Event>, opts: &CallOpts) -> Caller {
        inner.callers.lock().expect("callers lock").insert(id, (events.clone(), opts.parked.clone()));
        Caller { inner: inner.clone(), id }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.inner.callers.lock().expect("callers lock").remove(&self.id);
    }
}

impl Inner {
    /// The one client call in flight on this connection that may be asking, if there is
    /// exactly one (calls parked waiting for their client's answers do not count).
    fn sole_caller(&self) -> Option<mpsc::UnboundedSender<Event>> {
        let callers = self.callers.lock().expect("callers lock");
        let mut asking = callers.values().filter(|(_, parked)| super::may_ask(parked.as_ref()));
        match (asking.next(), asking.next()) {
            (Some((ev, _)), None) => Some(ev.clone()),
            _ => None,
        }
    }

    fn request_headers(&self, method: &str, name: Option<&str>, params: &[(String, String)]) -> HeaderMap {
        let mut h = self.headers.clone();
        if !self.templates.is_empty()
            && let Some(c) = &*self.credential.load()
        {
            for (name, template) in &self.templates {
                // A credential that cannot be a header value (a newline in it) is left out: the
                // backend refuses the call as unauthenticated rather than get a broken request.
                let text = template.replace(crate::config::CREDENTIAL_PLACEHOLDER, c.expose());
                if let Ok(mut v) = HeaderValue::from_str(&text) {
                    v.set_sensitive(true);
                    h.insert(name.clone(), v);
                }
            }
        }
        h.insert(http::header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let st = self.state.lock().expect("state lock");
        let version = match st.generation {
            Some(g) => g.version(),
            // Probing: `server/discover` goes out stateless, `initialize` carries no version header.
            None if is_initialize(method) => "",
            None => protocol::STATELESS,
        };
        if !version.is_empty() {
            h.insert("mcp-protocol-version", HeaderValue::from_static(version));
        }
        if let Some(s) = &st.session {
            if let Ok(v) = HeaderValue::from_str(s) {
                h.insert("mcp-session-id", v);
            }
        }
        if version == protocol::STATELESS {
            if let Ok(v) = HeaderValue::from_str(method) {
                h.insert("mcp-method", v);
            }
            if let Some(n) = name {
                if let Ok(v) = HeaderValue::from_str(&param_headers::encode(n)) {
                    h.insert("mcp-name", v);
                }
            }
            for (k, v) in params {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                    h.insert(k, v);
                }
            }
        }
        h
    }

    /// POSTs one message; returns the session id header (if any) and the reply.
    async fn post(
        &self,
        method: &str,
        name: Option<&str>,
        body: String,
        id: Option<u64>,
        opts: &CallOpts,
    ) -> Result<(Option<String>, Reply), PostError> {
        let mut headers = self.request_headers(method, name, &opts.param_headers);
        if let Some(t) = &opts.trace {
            // W3C Trace Context over HTTP: the backend span's context, whatever the client sent.
            for (k, v) in [("traceparent", Some(&t.traceparent)), ("tracestate", t.tracestate.as_ref())] {
                match v.and_then(|v| HeaderValue::from_str(v).ok()) {
                    Some(v) => headers.insert(k, v),
                    None => headers.remove(k),
                };
            }
        }
        let sent_session = self.state.lock().expect("state lock").session.clone();
        let resp = self
            .client
            .send(Method::POST, &self.uri, headers, body.into())
            .await
            .map_err(|e| BackendError::Unreachable(crate::net_error::describe_backend(&self.url, &e)))?;
        let status = resp.status();
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        if id.is_none() {
            return Ok((session, Reply::Result(super::raw("{}".into()))));
        }
        if let Some(old) = sent_session.as_ref().filter(|_| !status.is_success()) {
            if status == StatusCode::NOT_FOUND {
                return Err(PostError::SessionEnded(old.clone()));
            }
        }
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if is_sse {
            return Ok((session, self.read_sse(resp, id.expect("request id"), opts).await?));
        }
        if opts.stream && status.is_success() {
            return Ok((session, self.read_streaming(resp).await?));
        }
        let bytes = read_limited(resp, self.max_bytes)
            .await
            .map_err(|e| BackendError::Unavailable(format!("backend `{}`: {e}", self.name)))?;
        if let Some(old) = sent_session.filter(|_| status == StatusCode::BAD_REQUEST && says_session_lost(&bytes)) {
            return Err(PostError::SessionEnded(old));
        }
        match Message::parse(&bytes) {
            Ok(m) if matches!(m.kind(), Some(Kind::Response)) => Ok((session, into_reply(m))),
            _ => Err(PostError::Backend(BackendError::Unavailable(format!(
                "backend `{}` answered HTTP {status} without a JSON-RPC response: {}",
                self.name,
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )))),
        }
    }

    /// A JSON answer whose `result` is handed on as it arrives: the envelope before the result
    /// is read here; the rest is the `ResultBody`'s to read. An answer without a result (an
    /// error, or no JSON-RPC response) is read whole, as before.
    async fn read_streaming(&self, resp: http::Response<hyper::body::Incoming>) -> Result<Reply, BackendError> {
        use super::result_body::{EnvelopeScan, Found, ResultBody};
        let mut head = bytes::BytesMut::new();
        let mut scan = EnvelopeScan::default();
        let mut body = body_stream(resp);
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| BackendError::Unavailable(format!("backend `{}`: {}", self.name, net_error(e))))?;
            if head.len() + chunk.len() > self.max_bytes {
                return Err(BackendError::Unavailable(format!(
                    "backend `{}`: response larger than max_message_bytes",
                    self.name
                )));
            }
            head.extend_from_slice(&chunk);
            if let Found::Result(at) = scan.feed(&head) {
                let head = head.freeze().slice(at..);
                let rest = body.map(|c| c.map_err(super::BrokenBody));
                return Ok(Reply::Streamed(ResultBody::streaming(self.name.clone(), head, rest, self.max_bytes)));
            }
        }
        match Message::parse(&head) {
            Ok(m) if matches!(m.kind(), Some(Kind::Response)) => Ok(into_reply(m)),
            _ => Err(BackendError::Unavailable(format!(
                "backend `{}` answered without a JSON-RPC response: {}",
                self.name,
                String::from_utf8_lossy(&head[..head.len().min(200)])
            ))),
        }
    }

    async fn read_sse(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        id: u64,
        opts: &CallOpts,
    ) -> Result<Reply, BackendError> {
        let mut events = super::sse_limit::limit_events(body_stream(resp), self.max_bytes).eventsource();
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| {
                let why = match e {
                    eventsource_stream::EventStreamError::Transport(LimitError::Inner(e)) => net_error(e),
                    eventsource_stream::EventStreamError::Transport(LimitError::TooLarge) => {
                        "an event larger than max_message_bytes".into()
                    }
                    other => other.to_string(),
                };
                BackendError::Unavailable(format!("backend `{}`: broken event stream: {why}", self.name))
            })?;
            if ev.data.len() > self.max_bytes {
                return Err(BackendError::Unavailable(format!(
                    "backend `{}`: message larger than max_message_bytes",
                    self.name
                )));
            }
            if ev.data.trim().is_empty() {
                continue;
            }
            let Ok(msg) = Message::parse(ev.data.as_bytes()) else {
                tracing::warn!(backend = %self.name, "ignoring a non-JSON event");
                continue;
            };
            match msg.kind() {
                Some(Kind::Response) if msg.id.as_ref().is_some_and(|i| i.get() == id.to_string()) => {
                    return Ok(into_reply(msg));
                }
                Some(Kind::Notification) => self.on_notification(msg, opts.events.as_ref()),
                Some(Kind::Request) => self.on_request(msg, opts.events.as_ref()).await,
                _ => {}
            }
        }
        Err(BackendError::Unavailable(format!("backend `{}` closed the stream before answering", self.name)))
    }

    fn on_notification(&self, msg: Message, events: Option<&mpsc::UnboundedSender<Event>>) {
        let method = msg.method.unwrap_or_default();
        if let Some(n) = Notice::of(&method, msg.params.as_deref()) {
            let _ = self.notices.send(SlotNotice { slot: self.index, notice: n });
            return;
        }
        if let Some(ev) = events {
            let _ = ev.send(Event::Notification { method, params: msg.params });
        }
    }

    /// A server-to-client request: `ping` is answered by the gateway itself, and a
    /// `roots/list` that no call's client can take (on the GET stream) from the config; the
    /// others, on a call's stream, are relayed to that call's client. The answer is POSTed back.
    async fn on_request(&self, msg: Message, events: Option<&mpsc::UnboundedSender<Event>>) {
        let id = msg.id.expect("request has id");
        let method = msg.method.unwrap_or_default();
        if let Some(answer) = super::own_answer(&method, events, &self.roots) {
            let inner = Inner::clone_handle(self);
            let body = jsonrpc::result(&id, &answer);
            self.tasks.spawn(async move {
                let _ = inner.post_raw(body).await;
            });
            return;
        }
        let (tx, rx) = oneshot::channel();
        let relayed = events.is_some_and(|ev| {
            ev.send(Event::Request { method: method.clone(), params: msg.params, reply: tx }).is_ok()
        });
        let inner_id = id.clone();
        let answer = async move {
            if !relayed {
                return jsonrpc::error(
                    Some(&inner_id),
                    jsonrpc::code::INTERNAL_ERROR,
                    "Sentinel has no client to relay this request to",
                    None,
                );
            }
            match rx.await {
                Ok(Reply::Result(r)) => jsonrpc::result(&inner_id, r.get()),
                Ok(Reply::Error(e)) => jsonrpc::error_raw(Some(&inner_id), e.get()),
                Ok(Reply::Streamed(_)) | Err(_) => {
                    jsonrpc::error(Some(&inner_id), jsonrpc::code::INTERNAL_ERROR, "the client did not answer", None)
                }
            }
        };
        // Answer in the background: the backend may keep streaming while it waits.
        let inner = Inner::clone_handle(self);
        self.tasks.spawn(async move {
            let body = answer.await;
            let _ = inner.post_raw(body).await;
        });
    }

    fn clone_handle(&self) -> PostHandle {
        PostHandle { client: self.client.clone(), uri: self.uri.clone(), headers: self.request_headers("", None, &[]) }
    }
}

/// Enough to POST a response back to the backend from a background task.
struct PostHandle {
    client: BackendClient,
    uri: Uri,
    headers: HeaderMap,
}

impl PostHandle {
    async fn post_raw(&self, body: String) -> Result<(), super::http_client::Error> {
        let mut h = self.headers.clone();
        h.remove("mcp-method");
        self.client.send(Method::POST, &self.uri, h, body.into()).await.map(|_| ())
    }
}

/// The session's GET stream: list changes and other session-wide notifications.
async fn listen(inner: Arc<Inner>) {
    let mut headers = inner.request_headers("", None, &[]);
    headers.remove(http::header::CONTENT_TYPE);
    headers.remove("mcp-method");
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
    let Ok(resp) = inner.client.send(Method::GET, &inner.uri, headers, bytes::Bytes::new()).await else { return };
    if !resp.status().is_success() {
        tracing::debug!(backend = %inner.name, status = %resp.status(), "backend offers no GET stream");
        return;
    }
    let mut events = super::sse_limit::limit_events(body_stream(resp), inner.max_bytes).eventsource();
    while let Some(Ok(ev)) = events.next().await {
        let Ok(msg) = Message::parse(ev.data.as_bytes()) else { continue };
        match msg.kind() {
            Some(Kind::Notification) => inner.on_notification(msg, None),
            Some(Kind::Request) => {
                // Sent outside any call's stream: the call it belongs to is the only one in
                // flight, if there is only one.
                let caller = inner.sole_caller();
                inner.on_request(msg, caller.as_ref()).await;
            }
            _ => {}
        }
    }
}

/// Whether a 400 answer to a request that carried our session says the backend does not know
/// it. The spec says 404, but servers built on the SDKs answer 400 too: server-everything
/// "No valid session ID provided", the TypeScript SDK "Server not initialized" and
/// "Mcp-Session-Id header is required", the Python SDK "Missing session ID".
fn says_session_lost(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    text.contains("session") || text.contains("not initialized")
}

fn into_reply(m: Message) -> Reply {
    match (m.result, m.error) {
        (Some(r), _) => Reply::Result(r),
        (_, Some(e)) => Reply::Error(e),
        _ => Reply::Error(super::raw(r#"{"code":-32603,"message":"empty response"}"#.into())),
    }
}

/// A transport error's text (the client's errors never carry the URL, which may hold a key).
fn net_error(e: hyper::Error) -> String {
    crate::net_error::causes(&e)
}

async fn read_limited(resp: http::Response<hyper::body::Incoming>, max: usize) -> Result<Vec<u8>, String> {
    // Sized up front when the length is announced (never beyond the limit): a 1 MB result
    // grown by doubling was copied about twice over.
    let mut out = Vec::with_capacity(content_length(&resp).map_or(0, |n| n.min(max as u64 + 1) as usize));
    let mut stream = body_stream(resp);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(net_error)?;
        if out.len() + chunk.len() > max {
            return Err("response larger than max_message_bytes".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
