//! The gateway core: backends, the aggregated catalog, client sessions, and `handle`, the
//! one place every client message passes through, whichever front door it came in by.

mod forward;
mod lists;
mod pipeline;
mod reload;
mod slot;

pub use pipeline::{Admission, Route};
pub use slot::Slot;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use http::StatusCode;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::audit::AuditSink;
use crate::audit::writer::{AuditStats, AuditWriter};
use crate::auth::Authenticator;
use crate::backend::http_client::BackendClient;
use crate::backend::{Backend, Notice, Reply};
use crate::catalog::{self, Catalog, Listing};
use crate::config::AuthConfig;
use crate::config::Config;
use crate::error::Refusal;
use crate::jsonrpc::{self, Kind, Message};
use crate::method::Method;
use crate::policy::{Access, Policy};
use crate::protocol::{self, Generation, ModernMeta, Params};
use crate::rate_limit::{Quota, RateLimitSettings, RateLimiter};
use crate::session::Session;

/// How often the JWKS (file or URL) is read again, whatever tokens arrive.
const JWKS_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

/// Most session-based client sessions kept at once: each costs memory until it ends or idles
/// out, and anyone who can reach `/mcp` can open one.
const MAX_SESSIONS: usize = 10_000;

pub struct Gateway {
    /// The running config and the backends it names; swapped whole by a reload.
    live: ArcSwap<Live>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Kept for starting and restarting backends.
    client: reqwest::Client,
    /// Reaches HTTP backends (a client of its own: see `backend::http_client`).
    backend_client: BackendClient,
    notices: mpsc::UnboundedSender<(usize, Notice)>,
    pub metrics: crate::metrics::Metrics,
    catalog: ArcSwap<Catalog>,
    /// Session-based clients (HTTP sessions and stdio), for server-initiated notifications.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Stateless clients' `subscriptions/listen` streams.
    listeners: Mutex<Vec<Listener>>,
    /// Roles, kill switch and validation mode.
    policy: ArcSwap<Policy>,
    limiter: ArcSwap<RateLimiter>,
    /// Empty when authentication is disabled.
    auth: arc_swap::ArcSwapOption<Authenticator>,
    audit: Arc<dyn AuditSink>,
    /// The writer behind `audit`, for its counters; `None` with `[audit] url = "none"`.
    audit_writer: Option<Arc<AuditWriter>>,
    redactor: ArcSwap<crate::audit::redact::Redactor>,
    /// Webhooks told of backend and audit trouble (a no-op without `[alerts]` webhooks).
    alerter: ArcSwap<crate::alerts::Alerter>,
    /// Keeps refusals without valid credentials from costing more than a bounded trickle of
    /// audit records per source.
    denied_auth: crate::audit::throttle::Throttle,
    seq: AtomicU64,
    /// Cancelled when the gateway shuts down: long-lived client streams end on it, and so do
    /// the gateway's background tasks.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Every background task the gateway starts (restart loops, housekeeping, audit records
    /// written after their call, drains of retired backends): closed and awaited at shutdown
    /// (`stop_tasks`), so that none is cut off mid-write and none outlives the gateway.
    tasks: tokio_util::task::TaskTracker,
}

/// The config in force and the slots of the backends it names.
pub struct Live {
    pub config: Arc<Config>,
    /// Every slot made since start, retired ones included: append-only, so that a slot's
    /// number never changes (see `slot.rs`).
    slots: Vec<Arc<Slot>>,
    /// The slot of each configured backend, in config order.
    active: Vec<usize>,
}

impl Live {
    /// The slots of the configured backends, in config order.
    fn active(&self) -> impl Iterator<Item = (usize, &Arc<Slot>)> {
        self.active.iter().map(|&i| (i, &self.slots[i]))
    }
}

struct Listener {
    id: Box<RawValue>,
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: HashSet<String>,
    tx: mpsc::UnboundedSender<String>,
}

/// Who is calling, as the front door established it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is disabled (loopback only).
    Anonymous,
    User(crate::auth::Identity),
    /// The credentials were refused: every request is answered -32010 (HTTP 401).
    Refused(crate::auth::AuthError),
}

/// The client name of every caller when authentication is disabled: in audit records, the log
/// and the rate limits (where `[rate_limit] clients` can name it).
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The name audit records and rate limits know this caller by: the token's `sub`, or
    /// [`ANONYMOUS`] without authentication; none for a refused caller (it proved no name).
    pub fn client(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => Some(ANONYMOUS),
            _ => self.subject(),
        }
    }

    /// The token's `sub` (sessions belong to it).
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::User(i) => Some(&i.subject),
            _ => None,
        }
    }

    pub fn roles(&self) -> &[String] {
        match self {
            Caller::User(i) => &i.roles,
            _ => &[],
        }
    }
}

/// What the front door knows about one request beyond the message itself.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub caller: &'a Caller,
    /// The validated stateless `_meta`, for 2026-07-28 requests.
    pub modern: Option<&'a ModernMeta>,
    /// This request's own stream (SSE response, or stdout) for its notifications and
    /// server-to-client requests; `None` when the client asked for a plain JSON answer.
    pub out: Option<&'a mpsc::UnboundedSender<String>>,
    /// The client's address (HTTP), for throttling what refusals cost; `None` on stdio.
    pub peer: Option<std::net::IpAddr>,
}

/// One request on its way through the pipeline: the front door's context, the session it
/// came in (a throwaway one for a stateless request) and its id, passed whole instead of as
/// a list of arguments.
#[derive(Clone, Copy)]
pub(crate) struct RequestCtx<'a> {
    pub session: &'a Arc<Session>,
    pub id: &'a RawValue,
    pub ctx: Ctx<'a>,
}

/// A response ready to send: whole, or with a backend's result still streaming in.
pub enum Framed {
    Whole(String),
    /// The response's bytes as they come; an error cuts the response off (the result broke,
    /// or its audit record could not be stored under a fail-closed policy).
    Streamed(std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>),
    /// A `subscriptions/listen` stream: messages until the client ends it.
    Listen(Listening),
}

/// A stateless client's `subscriptions/listen` stream, opened: the acknowledgment goes first,
/// then each notification as it comes. It ends when the client cancels the request (`call`)
/// or goes away, or when the gateway shuts down.
pub struct Listening {
    pub ack: String,
    pub notifications: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
    /// The request, registered in its session so that `notifications/cancelled` ends it.
    pub call: crate::session::InFlight,
}

impl From<String> for Framed {
    fn from(s: String) -> Framed {
        Framed::Whole(s)
    }
}

impl Framed {
    /// `{"jsonrpc":"2.0","id":ID,"result":` + the result as it arrives + `fields` it lacks + `}`.
    fn result(
        id: &RawValue,
        body: crate::backend::ResultBody,
        fields: &'static [(&'static str, &'static str)],
    ) -> Framed {
        use crate::backend::Piece;
        use futures::StreamExt;
        let head = bytes::Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{},"result":"#, id.get()));
        let rest = body.map(move |p| match p {
            Ok(Piece::Data(d)) => Ok(d),
            Ok(Piece::End(summary)) => {
                let mut tail = summary.closing(fields).to_vec();
                tail.push(b'}');
                Ok(bytes::Bytes::from(tail))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        Framed::Streamed(Box::pin(futures::stream::once(async move { Ok(head) }).chain(rest)))
    }

    /// The whole response as text (for the paths that write whole messages); `None` when a
    /// streamed result broke off. Of a listen stream, only its acknowledgment: the front doors
    /// relay the stream itself before they come here.
    pub async fn into_string(self) -> Option<String> {
        use futures::StreamExt;
        match self {
            Framed::Whole(s) => Some(s),
            Framed::Listen(l) => Some(l.ack),
            Framed::Streamed(mut s) => {
                let mut out = Vec::new();
                while let Some(chunk) = s.next().await {
                    out.extend_from_slice(&chunk.ok()?);
                }
                String::from_utf8(out).ok()
            }
        }
    }
}

/// How a request ended, before it is framed as a response.
pub enum Answer {
    Result(String),
    /// A backend's result on its way (see `backend::ResultBody`); audited when it ends.
    Stream(crate::backend::ResultBody),
    /// A backend's error object, passed on verbatim.
    Error(String),
    /// A `subscriptions/listen` stream, opened.
    Listen(Listening),
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
        let kills = Arc::new(crate::kill_switch::Runtime::default());
        let kills_cache = (config.audit.url != "none").then(|| {
            let file = crate::kill_switch::cache_file(
                &config.audit.spool_dir,
                &crate::audit::store::identity(&config.audit.url),
            );
            // In force before the store answers: what was switched off stays off across a restart.
            kills.set(crate::kill_switch::read_cache(&file).unwrap_or_default());
            file
        });
        let policy = Policy::from_config(&config, kills.clone()).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
        let config_redact_keys = config.audit.redact_keys.clone();
        let audit_writer = crate::audit::open::open(&config.audit)?;
        let audit: Arc<dyn AuditSink> = match &audit_writer {
            Some(w) => w.clone(),
            None => Arc::new(crate::audit::NoStore),
        };
        let limiter =
            RateLimiter::new(&rate_limit_settings(&config)).map_err(|e| anyhow::anyhow!("rate limits: {e}"))?;
        let auth = match &config.auth {
            AuthConfig::Disabled => {
                tracing::warn!("authentication is disabled: every local caller may use every tool");
                None
            }
            AuthConfig::Jwt(j) => Some(Authenticator::new(j.clone(), client.clone()).await?),
        };
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let metrics = crate::metrics::Metrics::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let backend_client = BackendClient::new(concat!("sentinel/", env!("CARGO_PKG_VERSION")))?;
        let started = start_backends(0, &config.backends, &backend_client, &notices_tx).await;
        let slots: Vec<Arc<Slot>> = config
            .backends
            .iter()
            .zip(started)
            .map(|(cfg, (backend, listing))| {
                metrics.backend_configured(&cfg.name);
                metrics.backend_up(&cfg.name, backend.is_some());
                metrics.circuit_state(&cfg.name, crate::metrics::CircuitGauge::Closed);
                Arc::new(Slot::new(cfg.clone(), backend, listing, &shutdown))
            })
            .collect();
        let down: Vec<usize> =
            slots.iter().enumerate().filter(|(_, s)| s.backend().is_none()).map(|(i, _)| i).collect();
        let alerter = crate::alerts::Alerter::start(&config.alerts, client.clone());
        let gw = Arc::new(Gateway {
            live: ArcSwap::from_pointee(Live { active: (0..slots.len()).collect(), slots, config: Arc::new(config) }),
            reloading: tokio::sync::Mutex::new(()),
            client,
            backend_client,
            notices: notices_tx,
            metrics,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            sessions: Mutex::new(HashMap::new()),
            listeners: Mutex::new(Vec::new()),
            policy: ArcSwap::from_pointee(policy),
            limiter: ArcSwap::from_pointee(limiter),
            auth: arc_swap::ArcSwapOption::new(auth.map(Arc::new)),
            audit,
            audit_writer,
            redactor: ArcSwap::from_pointee(crate::audit::redact::Redactor::new(&config_redact_keys)),
            alerter: ArcSwap::from_pointee(alerter),
            denied_auth: crate::audit::throttle::Throttle::new(std::time::Instant::now()),
            seq: AtomicU64::new(1),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        });
        gw.rebuild_catalog();
        gw.tasks.spawn(notice_loop(Arc::downgrade(&gw), notices_rx, gw.shutdown.clone()));
        // A backend that did not start keeps being retried, with backoff.
        for i in down {
            gw.tasks.spawn(gw.clone().restart(i, std::time::Duration::ZERO));
        }
        // Rate-limit state of clients that went quiet is dropped, so memory stays bounded.
        let weak = Arc::downgrade(&gw);
        let stop = gw.shutdown.clone();
        gw.tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let Some(gw) = weak.upgrade() else { break };
                gw.limiter.load().shrink();
                gw.denied_auth.shrink(std::time::Instant::now());
            }
        });
        gw.tasks.spawn(watch_audit(Arc::downgrade(&gw), gw.shutdown.clone()));
        if let Some(cache) = kills_cache {
            // A change of the run-time kill switch changes what every list shows.
            let weak = Arc::downgrade(&gw);
            let url = gw.config().audit.url.clone();
            gw.tasks.spawn(crate::kill_switch::watch(kills, url, cache, gw.shutdown.clone(), move |entries| {
                tracing::info!(entries = entries.len(), "kill switch changed");
                if let Some(gw) = weak.upgrade() {
                    for kind in ["tools", "prompts", "resources"] {
                        gw.broadcast_list_changed(kind);
                    }
                }
            }));
        }
        // Keys an issuer removed from its JWKS stop being accepted within this period, not only
        // when a token with an unknown `kid` happens to trigger a refetch.
        let weak = Arc::downgrade(&gw);
        let stop = gw.shutdown.clone();
        gw.tasks.spawn(async move {
            let mut tick = tokio::time::interval(JWKS_REFRESH);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let Some(gw) = weak.upgrade() else { break };
                let auth = gw.auth.load_full();
                drop(gw);
                if let Some(auth) = auth {
                    let _ = auth.refresh_keys().await;
                }
            }
        });
        Ok(gw)
    }

    /// The config in force (a reload swaps it; what a caller holds stays as it was).
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// Slot `i` (a number from the catalog or a backend's notice).
    pub fn slot(&self, i: usize) -> Arc<Slot> {
        self.live.load().slots[i].clone()
    }

    /// Who is calling, from an HTTP `Authorization` header (or stdio's `SENTINEL_TOKEN`).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Caller {
        let Some(auth) = self.auth.load_full() else { return Caller::Anonymous };
        let Some(token) = bearer else { return Caller::Refused(crate::auth::AuthError::Missing) };
        let span = crate::stage_span!("sentinel.authenticate");
        match tracing::Instrument::instrument(auth.authenticate(token), span).await {
            Ok(identity) => Caller::User(identity),
            Err(e) => Caller::Refused(e),
        }
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.load().is_some()
    }

    /// Logs and exports a circuit breaker's change of state.
    fn circuit_changed(&self, backend: &str, t: crate::backend::breaker::Transition) {
        use crate::backend::breaker::State;
        let gauge = match t.to {
            State::Closed => crate::metrics::CircuitGauge::Closed,
            State::HalfOpen => crate::metrics::CircuitGauge::HalfOpen,
            State::Open => crate::metrics::CircuitGauge::Open,
        };
        self.metrics.circuit_state(backend, gauge);
        match t.to {
            State::Open => tracing::error!(backend, "circuit open: calls are refused fast until a probe succeeds"),
            _ => tracing::info!(backend, "circuit {:?}", t.to),
        }
        use crate::alerts::{Alert, AlertKind};
        match t.to {
            State::Open => self.alerter.load().notify(Alert::new(
                AlertKind::CircuitOpen,
                backend,
                "circuit open: calls are refused fast until a probe succeeds",
            )),
            State::Closed => self.alerter.load().notify(Alert::new(
                AlertKind::CircuitClosed,
                backend,
                "circuit closed: calls flow again",
            )),
            State::HalfOpen => {}
        }
    }

    /// Whether every `required` backend is up, and the audit trail writable: `/ready`.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        use crate::backend::breaker::State;
        let live = self.live.load();
        let mut ready = self.audit.writable();
        let backends: Vec<serde_json::Value> = live
            .active()
            .map(|(_, slot)| {
                let up = slot.is_up();
                let circuit = match slot.breaker.state() {
                    State::Closed => "closed",
                    State::HalfOpen => "half_open",
                    State::Open => "open",
                };
                let b = &slot.config;
                if b.required && (!up || circuit == "open") {
                    ready = false;
                }
                serde_json::json!({ "name": b.name, "required": b.required, "up": up, "circuit": circuit })
            })
            .collect();
        let detail = serde_json::json!({
            "ready": ready,
            "config": live.config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into()),
            "audit": self.audit_detail(),
            "backends": backends,
        });
        (ready, detail)
    }

    /// The audit trail's part of `/ready`: whether records can be made durable (what readiness
    /// depends on: the spool is enough), the store's state, and other stores' spool folders
    /// waiting in the configured spool folder for a gateway of theirs.
    fn audit_detail(&self) -> serde_json::Value {
        let writable = self.audit.writable();
        let Some(w) = &self.audit_writer else { return serde_json::json!({ "writable": writable, "store": "none" }) };
        let a = w.stats();
        let foreign = w.foreign_spools().unwrap_or_else(|e| {
            tracing::warn!("cannot list the audit spool folder: {e}");
            Vec::new()
        });
        serde_json::json!({
            "writable": writable,
            "store": if a.store_up { "up" } else { "down" },
            "store_down_seconds": a.store_down_for.map(|d| d.as_secs()),
            "backlog": a.backlog,
            "dead_lettered": a.dead_lettered,
            "foreign_spools": foreign,
        })
    }

    /// The Prometheus text of every family, with the audit counters read now.
    pub fn render_metrics(&self) -> String {
        let a = self.audit_stats();
        // Read now rather than set on events: an HTTP backend goes down and up by how its
        // requests fare, with no event of its own.
        for (_, slot) in self.live.load().active() {
            self.metrics.backend_up(slot.name(), slot.is_up());
        }
        let store_up = a.store_up || self.audit_writer.is_none();
        self.metrics.set_audit(
            a.queue_depth as u64,
            [a.written, a.spooled, a.replayed, a.failed, a.dead_lettered],
            store_up,
        );
        self.metrics.render()
    }

    /// Stops every stdio backend's process group (shutdown): TERM, then KILL after `grace`.
    /// Shutdown is declared first, so that their exits are not taken for crashes (no "backend
    /// is down" error, no restart): `sentinel stdio` gets here when its client closes stdin.
    pub async fn stop_backends(&self, grace: std::time::Duration) {
        self.shutdown.cancel();
        let running: Vec<Arc<Backend>> = self.live.load().slots.iter().filter_map(|s| s.backend.swap(None)).collect();
        futures::future::join_all(running.iter().map(|b| b.terminate(grace))).await;
    }

    /// Shutdown: ends the gateway's background tasks and waits up to `grace` for them (audit
    /// records of calls that just ended are handed to the writer before it flushes).
    pub async fn stop_tasks(&self, grace: std::time::Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(left = self.tasks.len(), "background tasks still running after {grace:?}; stopping anyway");
        }
    }

    /// Writes out every queued audit record (shutdown).
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }

    pub fn audit_stats(&self) -> AuditStats {
        self.audit_writer.as_ref().map(|w| w.stats()).unwrap_or_default()
    }

    pub fn audit_writable(&self) -> bool {
        self.audit.writable()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The running backend of slot `i`, if it is up.
    pub fn backend(&self, i: usize) -> Option<Arc<Backend>> {
        self.live.load().slots.get(i).and_then(|s| s.backend())
    }

    pub fn backends_up(&self) -> usize {
        self.live.load().active().filter(|(_, s)| s.is_up()).count()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn rebuild_catalog(&self) {
        let live = self.live.load();
        // Held together for the build; every other holder takes one alone, so no lock order
        // to get wrong.
        let listings: Vec<_> = live.active().map(|(i, s)| (i, s, s.listing.lock().expect("listing lock"))).collect();
        let sources: Vec<catalog::Source> = listings
            .iter()
            .map(|(i, s, l)| catalog::Source { index: *i, name: &s.config.name, prefix: &s.config.prefix, listing: l })
            .collect();
        let c = Catalog::build(&live.config.naming, &sources);
        // Each problem is logged on every rebuild; the alert goes out when it is new (one
        // backend's list changing must not re-announce another's standing problem).
        let before = self.catalog.load();
        for clash in &c.clashes {
            tracing::error!("name clash: {clash}");
            if !before.clashes.contains(clash) {
                // The subject is the problem itself, so that distinct clashes are not folded
                // into one by the alerts' de-duplication.
                self.alerter.load().notify(crate::alerts::Alert::new(
                    crate::alerts::AlertKind::NameClash,
                    crate::audit::bounded(clash, 200),
                    format!("name clash: {clash}"),
                ));
            }
        }
        for t in &c.tools {
            self.metrics.tool_listed(&t.exposed, &live.slots[t.backend].config.name);
        }
        drop(before);
        self.catalog.store(c);
    }

    /// Registers a new session-based client session; `None` at the session limit. A subject
    /// at its own limit (`max_sessions_per_subject`) first gives up its longest-idle session
    /// with no call in flight, so that one token cannot hold every session there is; if all of
    /// its sessions are busy, it gets none.
    pub fn new_session(&self, transport: &'static str, subject: Option<&str>) -> Option<Arc<Session>> {
        let per_subject = self.config().server.max_sessions_per_subject;
        let s = Arc::new(Session::new(uuid::Uuid::new_v4().to_string(), transport, subject));
        let evicted = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let own = sessions.values().filter(|x| x.transport == transport && x.subject.as_deref() == subject);
            let evicted = if own.clone().count() >= per_subject {
                let oldest = own.filter(|x| !x.has_calls()).max_by_key(|x| x.idle_for()).map(|x| x.id.clone());
                // All of them busy: this subject gets no more sessions for now.
                sessions.remove(&oldest?)
            } else {
                None
            };
            if sessions.len() >= MAX_SESSIONS {
                // Only reached when this subject had room: nothing was evicted.
                return None;
            }
            sessions.insert(s.id.clone(), s.clone());
            self.metrics.sessions(transport, sessions.values().filter(|x| x.transport == transport).count() as i64);
            evicted
        };
        if let Some(old) = evicted {
            tracing::info!(
                subject = subject.unwrap_or("-"),
                "session limit of the subject reached: its longest-idle session is ended for a new one"
            );
            self.close_session(&old);
        }
        Some(s)
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions lock").get(id).cloned()
    }

    pub fn end_session(&self, id: &str) -> bool {
        let removed = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let removed = sessions.remove(id);
            if let Some(s) = &removed {
                let open = sessions.values().filter(|x| x.transport == s.transport).count();
                self.metrics.sessions(s.transport, open as i64);
            }
            removed
        };
        match removed {
            Some(s) => {
                self.close_session(&s);
                true
            }
            None => false,
        }
    }

    /// Ends a session already taken out of the table: its streams and subscriptions.
    fn close_session(&self, s: &Session) {
        s.close();
        for uri in s.take_subscriptions() {
            self.count_subscription(&uri, false);
        }
    }

    /// Ends HTTP sessions unused for longer than the configured idle timeout.
    pub fn reap_idle_sessions(&self) {
        let limit = self.config().server.session_idle_timeout;
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
    pub async fn handle(
        self: &Arc<Self>,
        session: &Arc<Session>,
        msg: Message,
        ctx: Ctx<'_>,
    ) -> Option<(StatusCode, Framed)> {
        session.touch();
        match msg.kind() {
            None => {
                let r = Refusal::InvalidRequest("not a JSON-RPC 2.0 request, notification or response".into());
                Some((r.status(), r.to_response(msg.id.as_deref()).into()))
            }
            Some(Kind::Response) => {
                let id = msg.id.as_ref().map(|i| i.get().to_string()).unwrap_or_default();
                let reply = match (msg.result, msg.error) {
                    (Some(r), _) => Reply::Result(r),
                    (_, Some(e)) => Reply::Error(e),
                    _ => return None,
                };
                if !session.deliver_reply(&id, reply) {
                    let id = crate::audit::bounded(&id, crate::audit::MAX_NAME_BYTES);
                    tracing::debug!(%id, "a client answered a request nobody waits for");
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
                    return Some((r.status(), r.to_response(Some(&id)).into()));
                }
                if msg.jsonrpc.as_deref() != Some("2.0") {
                    let r = Refusal::InvalidRequest("`jsonrpc` must be \"2.0\"".into());
                    return Some((r.status(), r.to_response(Some(&id)).into()));
                }
                let name = msg.method.unwrap_or_default();
                let method = name.parse::<Method>().map_err(|_| name.as_str());
                let req = RequestCtx { session, id: &id, ctx };
                let (status, text) = match self.govern(req, method, msg.params).await {
                    // A stateless client gets the fields its revision requires on every result.
                    Ok(Answer::Result(r)) if ctx.modern.is_some() => {
                        (StatusCode::OK, jsonrpc::result(&id, &lists::modern_result(method.ok(), r)))
                    }
                    Ok(Answer::Result(r)) => (StatusCode::OK, jsonrpc::result(&id, &r)),
                    Ok(Answer::Stream(body)) => {
                        let fields = if ctx.modern.is_some() { lists::modern_fields(method.ok()) } else { &[] };
                        return Some((StatusCode::OK, Framed::result(&id, body, fields)));
                    }
                    Ok(Answer::Error(e)) => {
                        let status =
                            if ctx.modern.is_some() { lists::http_status_of_error(&e) } else { StatusCode::OK };
                        (status, jsonrpc::error_raw(Some(&id), &e))
                    }
                    Ok(Answer::Cancelled) => return None,
                    Ok(Answer::Listen(l)) => return Some((StatusCode::OK, Framed::Listen(l))),
                    // Over stateless HTTP an unknown method is a 404 (the spec's version probe relies on it).
                    Err(r @ Refusal::MethodNotFound(_)) if ctx.modern.is_some() => {
                        (StatusCode::NOT_FOUND, r.to_response(Some(&id)))
                    }
                    Err(r) => (r.status(), r.to_response(Some(&id))),
                };
                Some((status, text.into()))
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
            other => {
                let method = crate::audit::bounded(other, crate::audit::MAX_METHOD_BYTES);
                tracing::debug!(%method, "ignoring client notification")
            }
        }
    }

    /// The protocol's own methods (handshake, lists, discovery); lists show a caller only
    /// what it may use.
    async fn protocol_method(
        &self,
        session: &Arc<Session>,
        id: &RawValue,
        method: Method,
        params: Option<Box<RawValue>>,
        access: &Access,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let modern = ctx.modern.is_some();
        let policy = self.policy.load();
        let catalog = self.catalog();
        let live = self.live.load();
        let visible = |e: &catalog::Entry| policy.visible(access, &e.exposed, live.slots[e.backend].name());
        let answer = match method {
            Method::Initialize => Answer::Result(self.initialize(session, params.as_deref())?),
            Method::Ping => Answer::Result("{}".into()),
            Method::SetLogLevel => {
                let p = Params::parse(params.as_deref()).map_err(Refusal::InvalidParams)?;
                let level = p.str("level").map_err(Refusal::InvalidParams)?.unwrap_or_default();
                let rank = protocol::log_level_rank(&level)
                    .ok_or_else(|| Refusal::InvalidParams(format!("unknown log level `{level}`")))?;
                session.set_log_level(rank);
                Answer::Result("{}".into())
            }
            Method::Discover => Answer::Result(lists::discover()),
            Method::ToolsList => Answer::Result(lists::list("tools", &catalog.tools_json(visible), modern)),
            Method::PromptsList => Answer::Result(lists::list("prompts", &catalog.prompts_json(visible), modern)),
            Method::ResourcesList => Answer::Result(lists::list("resources", &catalog.resources_json(visible), modern)),
            Method::TemplatesList => {
                Answer::Result(lists::list("resourceTemplates", &catalog.templates_json(visible), modern))
            }
            Method::Listen if modern => Answer::Listen(self.listen(session, access, id, params.as_deref())?),
            Method::Listen => {
                return Err(Refusal::InvalidRequest(
                    "subscriptions/listen is a stream; send it to /mcp directly".into(),
                ));
            }
            Method::ToolsCall
            | Method::PromptsGet
            | Method::ResourcesRead
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::Complete => return Err(Refusal::MethodNotFound(method.as_str().to_string())),
        };
        Ok(answer)
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

    /// Opens a stateless client's `subscriptions/listen` stream: the acknowledgment, and the
    /// stream's notifications as they come. Resource subscriptions are honoured only for URIs
    /// the caller may read (the same predicate as `resources/read`); the acknowledgment names
    /// what was honoured.
    fn listen(
        &self,
        session: &Arc<Session>,
        access: &Access,
        id: &RawValue,
        params: Option<&RawValue>,
    ) -> Result<Listening, Refusal> {
        let Some(call) = session.start_call(id.get()) else {
            return Err(Refusal::InvalidRequest(format!("request id {} is already in flight", id.get())));
        };
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
        let mut f = params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()).unwrap_or_default().notifications;
        let (policy, catalog) = (self.policy.load(), self.catalog());
        // The same judgement as `resources/subscribe`: a URI in normal form, that a backend
        // serves, that the caller may read.
        f.resource_subscriptions.retain(|uri| {
            crate::uri::is_normal(uri)
                && catalog.resource_backend(uri).is_some_and(|b| policy.visible(access, uri, self.slot(b).name()))
        });
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
        let notifications = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let notifications =
            Box::pin(futures::StreamExt::take_until(notifications, self.shutdown.clone().cancelled_owned()));
        Ok(Listening { ack, notifications, call })
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
        let Some(b) = self.catalog().resource_backend(uri).and_then(|i| self.backend(i)) else { return };
        let changed = if add { b.subscriptions.add(uri) } else { b.subscriptions.remove(uri) };
        if changed && b.generation != Generation::Modern {
            let method = if add { Method::ResourcesSubscribe } else { Method::ResourcesUnsubscribe }.as_str();
            let params = serde_json::json!({ "uri": uri });
            self.tasks.spawn(async move {
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

    async fn refresh(&self, i: usize) {
        let slot = self.slot(i);
        let Some(b) = slot.backend() else { return };
        let listing = b.listing().await;
        if slot.retired.is_cancelled() {
            return;
        }
        *slot.listing.lock().expect("listing lock") = listing;
        self.rebuild_catalog();
    }
}

impl Gateway {
    /// Starts slot `i`'s backend again after `delay` (with growing delays while it keeps
    /// failing), then lists it again and tells clients what changed.
    // Boxed: it may spawn itself again, and a recursive future needs a named, `Send` type.
    fn restart(self: Arc<Self>, i: usize, delay: std::time::Duration) -> crate::audit::BoxFuture<'static, ()> {
        Box::pin(async move {
            let slot = self.slot(i);
            if slot.restarting.swap(true, Ordering::AcqRel) {
                return;
            }
            self.restart_loop(&slot, i, delay).await;
            slot.restarting.store(false, Ordering::Release);
            // A backend that died again while being listed sent its down-notice while this
            // loop still ran (and was ignored): go round again.
            if !slot.retired.is_cancelled() && !slot.is_up() {
                let r = {
                    let mut s = slot.supervision.lock().expect("supervision lock");
                    let ran_for = s.1.elapsed();
                    s.0.on_exit(ran_for)
                };
                self.tasks.spawn(self.clone().restart(i, r.delay));
            }
        })
    }

    async fn restart_loop(&self, slot: &Slot, i: usize, mut delay: std::time::Duration) {
        let cfg = &slot.config;
        loop {
            // Retired by a reload (or shutdown): the slot's backend is someone else's business now.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = slot.retired.cancelled() => return,
            }
            if let Some(old) = slot.backend.swap(None) {
                old.terminate(std::time::Duration::from_secs(1)).await;
            }
            slot.supervision.lock().expect("supervision lock").1 = std::time::Instant::now();
            match Backend::start(i, cfg.clone(), self.backend_client.clone(), self.notices.clone()).await {
                Ok(b) => {
                    let b = Arc::new(b);
                    if slot.retired.is_cancelled() {
                        // Retired while it started: it would outlive `stop_backends` or the retirement.
                        b.terminate(std::time::Duration::from_secs(1)).await;
                        return;
                    }
                    crate::backend::spawn_listener(&b);
                    slot.backend.store(Some(b));
                    self.metrics.backend_restarted(&cfg.name);
                    self.metrics.backend_up(&cfg.name, true);
                    tracing::info!(backend = %cfg.name, "backend restarted");
                    self.alerter.load().notify(crate::alerts::Alert::new(
                        crate::alerts::AlertKind::BackendUp,
                        &cfg.name,
                        "backend restarted",
                    ));
                    self.refresh(i).await;
                    for kind in ["tools", "prompts", "resources"] {
                        self.broadcast_list_changed(kind);
                    }
                    return;
                }
                Err(e) => {
                    let r = {
                        let mut s = slot.supervision.lock().expect("supervision lock");
                        let ran_for = s.1.elapsed();
                        s.0.on_exit(ran_for)
                    };
                    tracing::error!(backend = %cfg.name, "restart failed: {e:#}; next attempt in {:?}", r.delay);
                    delay = r.delay;
                }
            }
        }
    }

    /// Re-lists a backend after it announced a change, then tells clients. Runs beside the
    /// notice loop (a slow backend must not hold up the others' news), one refresh per
    /// backend at a time; changes announced meanwhile are folded into one more refresh.
    async fn on_list_changed(self: Arc<Self>, i: usize, kind: &'static str) {
        let slot = self.slot(i);
        let r = &slot.refresh;
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
            self.refresh(i).await;
            for k in kinds {
                self.broadcast_list_changed(k);
            }
        }
    }
}

/// Starts backends concurrently (numbering their slots from `first`) and lists what each
/// offers; one that fails to start is logged and left for its restart loop.
async fn start_backends(
    first: usize,
    configs: &[crate::config::BackendConfig],
    client: &BackendClient,
    notices: &mpsc::UnboundedSender<(usize, Notice)>,
) -> Vec<(Option<Arc<Backend>>, Listing)> {
    let starts = configs.iter().enumerate().map(|(k, cfg)| async move {
        match Backend::start(first + k, cfg.clone(), client.clone(), notices.clone()).await {
            Ok(b) => {
                let b = Arc::new(b);
                crate::backend::spawn_listener(&b);
                let listing = b.listing().await;
                (Some(b), listing)
            }
            Err(e) => {
                tracing::error!("{e:#}");
                (None, Listing::default())
            }
        }
    });
    futures::future::join_all(starts).await
}

fn rate_limit_settings(c: &Config) -> RateLimitSettings {
    let q = |q: &crate::config::QuotaConfig| Quota { per_minute: q.per_minute, burst: q.burst, per: q.per };
    RateLimitSettings {
        default: c.rate_limit.default.as_ref().map(q),
        tools: c.rate_limit.tools.iter().map(|(g, x)| (g.clone(), q(x))).collect(),
        clients: c.rate_limit.clients.iter().map(|(g, x)| (g.clone(), q(x))).collect(),
    }
}

async fn notice_loop(
    gw: Weak<Gateway>,
    mut rx: mpsc::UnboundedReceiver<(usize, Notice)>,
    stop: tokio_util::sync::CancellationToken,
) {
    // At shutdown backends exit on purpose: nothing they announce matters any more.
    while let Some(Some((i, notice))) = stop.run_until_cancelled(rx.recv()).await {
        let Some(gw) = gw.upgrade() else { break };
        match notice {
            // A backend a reload is still starting has no slot yet (that reload lists it), and a
            // retired one's news no longer matters.
            _ if gw.live.load().slots.get(i).is_none_or(|s| s.retired.is_cancelled()) => {}
            Notice::ListChanged(kind) => {
                gw.tasks.spawn(gw.clone().on_list_changed(i, kind));
            }
            Notice::ResourceUpdated(p) => gw.broadcast_resource_updated(&p),
            Notice::Closed(why) => {
                let slot = gw.slot(i);
                let name = slot.name().to_string();
                // From an instance already replaced.
                if slot.is_up() {
                    continue;
                }
                // Down now: calls are refused at once until the restart (not sent to a dead
                // process, where they would count against its circuit and open it).
                slot.backend.store(None);
                gw.metrics.backend_up(&name, false);
                // It died while its restart loop was still listing it: that loop sees it is
                // gone when it ends and goes round again.
                if slot.restarting.load(Ordering::Acquire) {
                    continue;
                }
                let restart = {
                    let mut s = slot.supervision.lock().expect("supervision lock");
                    let ran_for = s.1.elapsed();
                    s.0.on_exit(ran_for)
                };
                let kind = if restart.crash_loop {
                    tracing::error!(backend = %name, attempt = restart.attempt, "backend is in a crash loop: {why}; restarting in {:?}", restart.delay);
                    crate::alerts::AlertKind::CrashLoop
                } else {
                    tracing::error!(backend = %name, "backend is down: {why}; restarting in {:?}", restart.delay);
                    crate::alerts::AlertKind::BackendDown
                };
                let message = format!("{why}; restarting in {:?}", restart.delay);
                gw.alerter.load().notify(crate::alerts::Alert::new(kind, &name, message));
                gw.tasks.spawn(gw.clone().restart(i, restart.delay));
            }
        }
    }
}

/// How often the audit trail's state is looked at for alerts.
const AUDIT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the audit store may stay unreachable before an alert says so (records are safe in
/// the spool meanwhile: a short restart of the database is not worth waking anyone).
const AUDIT_STORE_DOWN_ALERT: std::time::Duration = std::time::Duration::from_secs(10);

/// Alerts on audit trouble, which has no single event to hook: records piling up in the spool
/// while none reach the store (the store is down), a store that stays unreachable (from start,
/// or with no records arriving), records the store refused for good (moved to the dead-letter
/// file), and a spool that cannot be written at all.
async fn watch_audit(gw: Weak<Gateway>, stop: tokio_util::sync::CancellationToken) {
    use crate::alerts::{Alert, AlertKind};
    let mut tick = tokio::time::interval(AUDIT_WATCH_INTERVAL);
    let mut last: Option<AuditStats> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let Some(gw) = gw.upgrade() else { break };
        if gw.shutdown.is_cancelled() {
            break;
        }
        let alerter = gw.alerter.load();
        if !alerter.enabled() {
            last = None;
            continue;
        }
        if !gw.audit.writable() {
            let effect = if gw.config().audit.fail_open {
                "fail_open: calls proceed WITHOUT a durable audit record"
            } else {
                "fail_closed: calls are refused (-32016)"
            };
            alerter.notify(Alert::new(
                AlertKind::AuditFailClosed,
                "audit",
                format!("the audit spool cannot be written; {effect}"),
            ));
        }
        let now = gw.audit_stats();
        if let Some(down) = now.store_down_for.filter(|d| *d >= AUDIT_STORE_DOWN_ALERT) {
            alerter.notify(Alert::new(
                AlertKind::AuditStoreDown,
                "audit",
                format!(
                    "the audit store has not answered for {}s; {} records wait in the local spool",
                    down.as_secs(),
                    now.backlog
                ),
            ));
        }
        let refused = now.dead_lettered - last.as_ref().map_or(0, |b| b.dead_lettered);
        if refused > 0 {
            let reason = gw.audit_writer.as_ref().and_then(|w| w.last_refusal()).unwrap_or_default();
            alerter.notify(Alert::new(
                AlertKind::AuditDeadLetter,
                "audit",
                format!(
                    "the audit store refused {refused} record(s) for good (moved to the dead-letter file): {reason}"
                ),
            ));
        }
        if let Some(before) = &last {
            if now.backlog > before.backlog && now.written == before.written {
                alerter.notify(Alert::new(
                    AlertKind::AuditSpooling,
                    "audit",
                    format!("the audit store is not answering: {} records wait in the local spool", now.backlog),
                ));
            }
        }
        last = Some(now);
    }
}
