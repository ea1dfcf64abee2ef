//! The gateway core: backends, the aggregated catalog, client sessions, and `handle`, the
//! one place every client message passes through, whichever front door it came in by.

mod forward;
mod lists;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use http::StatusCode;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::backend::{Backend, Notice, Reply};
use crate::catalog::{self, Catalog, Listing};
use crate::config::Config;
use crate::error::Refusal;
use crate::jsonrpc::{self, Kind, Message};
use crate::protocol::{self, Generation, ModernMeta, Params};
use crate::session::Session;

/// Most session-based client sessions kept at once: each costs memory until it ends or idles
/// out, and anyone who can reach `/mcp` can open one.
const MAX_SESSIONS: usize = 10_000;

pub struct Gateway {
    pub config: Arc<Config>,
    backends: Vec<Option<Arc<Backend>>>,
    /// Each backend's latest listing, kept so one backend's change rebuilds without re-asking the others.
    listings: Mutex<Vec<Listing>>,
    /// Per backend: a list refresh in progress, and the list kinds changed since it began.
    refreshes: Vec<Refresh>,
    catalog: ArcSwap<Catalog>,
    /// Session-based clients (HTTP sessions and stdio), for server-initiated notifications.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Stateless clients' `subscriptions/listen` streams.
    listeners: Mutex<Vec<Listener>>,
    seq: AtomicU64,
    /// Cancelled when the gateway shuts down: long-lived client streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct Refresh {
    running: std::sync::atomic::AtomicBool,
    kinds: Mutex<std::collections::BTreeSet<&'static str>>,
}

struct Listener {
    id: Box<RawValue>,
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: HashSet<String>,
    tx: mpsc::UnboundedSender<String>,
}

/// What the front door knows about one request beyond the message itself.
#[derive(Default, Clone, Copy)]
pub struct Ctx<'a> {
    /// The validated stateless `_meta`, for 2026-07-28 requests.
    pub modern: Option<&'a ModernMeta>,
    /// This request's own stream (SSE response, or stdout) for its notifications and
    /// server-to-client requests; `None` when the client asked for a plain JSON answer.
    pub out: Option<&'a mpsc::UnboundedSender<String>>,
}

/// How a request ended, before it is framed as a response.
pub(crate) enum Answer {
    Result(String),
    /// A backend's error object, passed on verbatim.
    Error(String),
    /// Cancelled by the client: nothing is sent.
    Cancelled,
}

impl Gateway {
    /// Starts every backend (concurrently), lists what they offer and builds the catalog.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let starts = config.backends.iter().enumerate().map(|(i, b)| {
            let client = client.clone();
            let tx = notices_tx.clone();
            let b = b.clone();
            async move {
                match Backend::start(i, b, client, tx).await {
                    Ok(b) => Some(Arc::new(b)),
                    Err(e) => {
                        tracing::error!("{e:#}");
                        None
                    }
                }
            }
        });
        let backends: Vec<Option<Arc<Backend>>> = futures::future::join_all(starts).await;
        for b in backends.iter().flatten() {
            crate::backend::spawn_listener(b);
        }
        let listings = futures::future::join_all(backends.iter().map(|b| async move {
            match b {
                Some(b) => b.listing().await,
                None => Listing::default(),
            }
        }))
        .await;
        let gw = Arc::new(Gateway {
            config: Arc::new(config),
            backends,
            refreshes: listings.iter().map(|_| Refresh::default()).collect(),
            listings: Mutex::new(listings),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            sessions: Mutex::new(HashMap::new()),
            listeners: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
            shutdown: Default::default(),
        });
        gw.rebuild_catalog();
        tokio::spawn(notice_loop(Arc::downgrade(&gw), notices_rx));
        Ok(gw)
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    pub fn backend(&self, i: usize) -> Option<&Arc<Backend>> {
        self.backends.get(i).and_then(Option::as_ref)
    }

    pub fn backends_up(&self) -> usize {
        self.backends.iter().filter(|b| b.is_some()).count()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn rebuild_catalog(&self) {
        let listings = self.listings.lock().expect("listings lock");
        let sources: Vec<catalog::Source> = self
            .config
            .backends
            .iter()
            .zip(listings.iter())
            .map(|(b, l)| catalog::Source { name: &b.name, prefix: &b.prefix, listing: l })
            .collect();
        let c = Catalog::build(&self.config.naming, &sources);
        for clash in &c.clashes {
            tracing::error!("name clash: {clash}");
        }
        self.catalog.store(c);
    }

    /// Registers a new session-based client session; `None` at the session limit.
    pub fn new_session(&self, transport: &'static str) -> Option<Arc<Session>> {
        let s = Arc::new(Session::new(uuid::Uuid::new_v4().to_string(), transport));
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        sessions.insert(s.id.clone(), s.clone());
        Some(s)
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions lock").get(id).cloned()
    }

    pub fn end_session(&self, id: &str) -> bool {
        let removed = self.sessions.lock().expect("sessions lock").remove(id);
        match removed {
            Some(s) => {
                s.close();
                for uri in s.take_subscriptions() {
                    self.count_subscription(&uri, false);
                }
                true
            }
            None => false,
        }
    }

    /// Ends HTTP sessions unused for longer than the configured idle timeout.
    pub fn reap_idle_sessions(&self) {
        let limit = self.config.server.session_idle_timeout;
        let idle: Vec<String> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.transport == "http" && s.idle_for() > limit && !s.is_busy())
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            self.end_session(&id);
        }
    }

    /// Handles one client message; returns the HTTP status and the response to send, if any.
    pub async fn handle(&self, session: &Arc<Session>, msg: Message, ctx: Ctx<'_>) -> Option<(StatusCode, String)> {
        session.touch();
        match msg.kind() {
            None => {
                let r = Refusal::InvalidRequest("not a JSON-RPC 2.0 request, notification or response".into());
                Some((r.status(), r.to_response(msg.id.as_deref())))
            }
            Some(Kind::Response) => {
                let id = msg.id.as_ref().map(|i| i.get().to_string()).unwrap_or_default();
                let reply = match (msg.result, msg.error) {
                    (Some(r), _) => Reply::Result(r),
                    (_, Some(e)) => Reply::Error(e),
                    _ => return None,
                };
                if !session.deliver_reply(&id, reply) {
                    tracing::debug!(id, "a client answered a request nobody waits for");
                }
                None
            }
            Some(Kind::Notification) => {
                self.notification(session, msg.method.as_deref().unwrap_or_default(), msg.params.as_deref());
                None
            }
            Some(Kind::Request) => {
                let valid = msg.id_is_valid();
                let id = msg.id.expect("request has an id");
                if !valid {
                    let r = Refusal::InvalidRequest("the id must be a string or an integer".into());
                    return Some((r.status(), r.to_response(Some(&id))));
                }
                if msg.jsonrpc.as_deref() != Some("2.0") {
                    let r = Refusal::InvalidRequest("`jsonrpc` must be \"2.0\"".into());
                    return Some((r.status(), r.to_response(Some(&id))));
                }
                let method = msg.method.unwrap_or_default();
                match self.request(session, &id, &method, msg.params, ctx).await {
                    Ok(Answer::Result(r)) => Some((StatusCode::OK, jsonrpc::result(&id, &r))),
                    Ok(Answer::Error(e)) => {
                        let status =
                            if ctx.modern.is_some() { lists::http_status_of_error(&e) } else { StatusCode::OK };
                        Some((status, jsonrpc::error_raw(Some(&id), &e)))
                    }
                    Ok(Answer::Cancelled) => None,
                    // Over stateless HTTP an unknown method is a 404 (the spec's version probe relies on it).
                    Err(r @ Refusal::MethodNotFound(_)) if ctx.modern.is_some() => {
                        Some((StatusCode::NOT_FOUND, r.to_response(Some(&id))))
                    }
                    Err(r) => Some((r.status(), r.to_response(Some(&id)))),
                }
            }
        }
    }

    fn notification(&self, session: &Session, method: &str, params: Option<&RawValue>) {
        match method {
            "notifications/cancelled" => {
                #[derive(serde::Deserialize)]
                struct P {
                    #[serde(rename = "requestId")]
                    request_id: Box<RawValue>,
                }
                if let Some(p) = params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()) {
                    session.cancel_call(p.request_id.get());
                }
            }
            "notifications/initialized" | "notifications/roots/list_changed" => {}
            other => tracing::debug!(method = other, "ignoring client notification"),
        }
    }

    async fn request(
        &self,
        session: &Arc<Session>,
        id: &RawValue,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let modern = ctx.modern.is_some();
        // Methods the stateless revision removed are unknown to a stateless request.
        if modern
            && matches!(
                method,
                "initialize" | "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe"
            )
        {
            return Err(Refusal::MethodNotFound(method.to_string()));
        }
        let answer = match method {
            "initialize" => Answer::Result(self.initialize(session, params.as_deref())?),
            "ping" => Answer::Result("{}".into()),
            "logging/setLevel" => {
                let p = Params::parse(params.as_deref()).map_err(Refusal::InvalidParams)?;
                let level = p.str("level").map_err(Refusal::InvalidParams)?.unwrap_or_default();
                let rank = protocol::log_level_rank(&level)
                    .ok_or_else(|| Refusal::InvalidParams(format!("unknown log level `{level}`")))?;
                session.set_log_level(rank);
                Answer::Result("{}".into())
            }
            "server/discover" => Answer::Result(lists::discover()),
            "tools/list" => Answer::Result(lists::list("tools", &self.catalog().tools_json(|_| true), modern)),
            "prompts/list" => Answer::Result(lists::list("prompts", &self.catalog().prompts_json(|_| true), modern)),
            "resources/list" => Answer::Result(lists::list("resources", &self.catalog().resources_json, modern)),
            "resources/templates/list" => {
                Answer::Result(lists::list("resourceTemplates", &self.catalog().templates_json, modern))
            }
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "completion/complete"
            | "resources/subscribe"
            | "resources/unsubscribe" => self.forward(session, id, method, params, ctx).await?,
            _ => return Err(Refusal::MethodNotFound(method.to_string())),
        };
        Ok(match answer {
            Answer::Result(r) if modern => Answer::Result(lists::modern_result(method, r)),
            other => other,
        })
    }

    fn initialize(&self, session: &Session, params: Option<&RawValue>) -> Result<String, Refusal> {
        let p = Params::parse(params).map_err(Refusal::InvalidParams)?;
        let requested = p.str("protocolVersion").map_err(Refusal::InvalidParams)?;
        let version = protocol::negotiate_legacy(requested.as_deref());
        let caps: serde_json::Value =
            p.0.get("capabilities")
                .and_then(|c| serde_json::from_str(c.get()).ok())
                .unwrap_or_else(|| serde_json::json!({}));
        session.initialize(Generation::Legacy(version), caps);
        Ok(lists::initialize_result(version))
    }

    /// Opens a stateless client's `subscriptions/listen` stream: returns the acknowledgment
    /// and the receiver the stream's notifications arrive on.
    pub fn listen(&self, id: &RawValue, params: Option<&RawValue>) -> (String, mpsc::UnboundedReceiver<String>) {
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Filter {
            #[serde(default)]
            tools_list_changed: bool,
            #[serde(default)]
            prompts_list_changed: bool,
            #[serde(default)]
            resources_list_changed: bool,
            #[serde(default)]
            resource_subscriptions: Vec<String>,
        }
        #[derive(serde::Deserialize, Default)]
        struct P {
            #[serde(default)]
            notifications: Filter,
        }
        let f = params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()).unwrap_or_default().notifications;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut honored = serde_json::Map::new();
        if f.tools_list_changed {
            honored.insert("toolsListChanged".into(), true.into());
        }
        if f.prompts_list_changed {
            honored.insert("promptsListChanged".into(), true.into());
        }
        if f.resources_list_changed {
            honored.insert("resourcesListChanged".into(), true.into());
        }
        if !f.resource_subscriptions.is_empty() {
            honored.insert("resourceSubscriptions".into(), f.resource_subscriptions.clone().into());
        }
        let ack = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{{"_meta":{{"{}":{}}},"notifications":{}}}}}"#,
            protocol::META_SUBSCRIPTION_ID,
            id.get(),
            serde_json::Value::Object(honored)
        );
        let uris: HashSet<String> = f.resource_subscriptions.into_iter().collect();
        for uri in &uris {
            self.count_subscription(uri, true);
        }
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        listeners.push(Listener {
            id: id.to_owned(),
            tools: f.tools_list_changed,
            prompts: f.prompts_list_changed,
            resources: f.resources_list_changed,
            uris,
            tx,
        });
        (ack, rx)
    }

    /// Drops listeners whose client went away, releasing their resource subscriptions.
    fn prune_listeners(&self, listeners: &mut Vec<Listener>) {
        listeners.retain(|l| {
            if !l.tx.is_closed() {
                return true;
            }
            for uri in &l.uris {
                self.count_subscription(uri, false);
            }
            false
        });
    }

    /// Counts a resource subscriber in or out at the owning backend. A session-based backend
    /// is told of the first subscriber and the last one leaving; a stateless backend hears it
    /// through its listen stream.
    fn count_subscription(&self, uri: &str, add: bool) {
        let Some(b) = self.catalog().resource_backend(uri).and_then(|i| self.backend(i)).cloned() else { return };
        let changed = if add { b.subscriptions.add(uri) } else { b.subscriptions.remove(uri) };
        if changed && b.generation != Generation::Modern {
            let method = if add { "resources/subscribe" } else { "resources/unsubscribe" };
            let params = serde_json::json!({ "uri": uri });
            tokio::spawn(async move {
                let params: Params = serde_json::from_value(params).unwrap_or_default();
                if let Err(e) = b.call(method, params, &crate::backend::CallOpts::default()).await {
                    tracing::warn!(backend = %b.name(), method, "subscription change failed: {e}");
                }
            });
        }
    }

    /// Tells every client that asked that a list changed.
    fn broadcast_list_changed(&self, kind: &str) {
        let method = format!("notifications/{kind}/list_changed");
        let legacy = format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#);
        // Only session-based clients (they initialized) get unsolicited list changes; a
        // stateless client asks for them with subscriptions/listen.
        for s in self.sessions.lock().expect("sessions lock").values().filter(|s| s.generation().is_some()) {
            if let Some(out) = s.outbound() {
                let _ = out.send(legacy.clone());
            }
        }
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        for l in listeners.iter() {
            let wanted = match kind {
                "tools" => l.tools,
                "prompts" => l.prompts,
                _ => l.resources,
            };
            if wanted {
                let _ = l.tx.send(format!(
                    r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"_meta":{{"{}":{}}}}}}}"#,
                    protocol::META_SUBSCRIPTION_ID,
                    l.id.get()
                ));
            }
        }
    }

    fn broadcast_resource_updated(&self, params: &RawValue) {
        let Ok(mut p) = Params::parse(Some(params)) else { return };
        let Ok(Some(uri)) = p.str("uri") else { return };
        let legacy = jsonrpc::notification("notifications/resources/updated", params.get());
        for s in self.sessions.lock().expect("sessions lock").values() {
            if s.is_subscribed(&uri) {
                if let Some(out) = s.outbound() {
                    let _ = out.send(legacy.clone());
                }
            }
        }
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        for l in listeners.iter().filter(|l| l.uris.contains(&uri)) {
            let mut meta = p.meta().unwrap_or_default();
            meta.insert(protocol::META_SUBSCRIPTION_ID.into(), serde_json::from_str(l.id.get()).unwrap_or_default());
            p.set_meta(&meta);
            let _ = l.tx.send(jsonrpc::notification("notifications/resources/updated", &p.to_json()));
        }
    }

    async fn refresh(&self, backend: usize) {
        let Some(b) = self.backend(backend).cloned() else { return };
        let listing = b.listing().await;
        self.listings.lock().expect("listings lock")[backend] = listing;
        self.rebuild_catalog();
    }
}

impl Gateway {
    /// Re-lists a backend after it announced a change, then tells clients. Runs beside the
    /// notice loop (a slow backend must not hold up the others' news), one refresh per
    /// backend at a time; changes announced meanwhile are folded into one more refresh.
    async fn on_list_changed(self: Arc<Self>, backend: usize, kind: &'static str) {
        let r = &self.refreshes[backend];
        r.kinds.lock().expect("refresh lock").insert(kind);
        if r.running.swap(true, Ordering::AcqRel) {
            return;
        }
        loop {
            let kinds = std::mem::take(&mut *r.kinds.lock().expect("refresh lock"));
            if kinds.is_empty() {
                r.running.store(false, Ordering::Release);
                // A change may have arrived between the take and the store.
                if r.kinds.lock().expect("refresh lock").is_empty() || r.running.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            self.refresh(backend).await;
            for k in kinds {
                self.broadcast_list_changed(k);
            }
        }
    }
}

async fn notice_loop(gw: Weak<Gateway>, mut rx: mpsc::UnboundedReceiver<(usize, Notice)>) {
    while let Some((i, notice)) = rx.recv().await {
        let Some(gw) = gw.upgrade() else { break };
        match notice {
            Notice::ListChanged(kind) => {
                tokio::spawn(gw.on_list_changed(i, kind));
            }
            Notice::ResourceUpdated(p) => gw.broadcast_resource_updated(&p),
            Notice::Closed(why) => {
                let name = gw.config.backends[i].name.clone();
                tracing::error!(backend = %name, "backend is down: {why}");
            }
        }
    }
}
