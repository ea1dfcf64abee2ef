//! The gateway core: one `Gateway` holding the config in force, the backends' slots, the
//! aggregated catalog, client sessions and the policy, split by what each part does:
//!
//! - `start.rs`: start-up and shutdown, and the background tasks' owner;
//! - `dispatch.rs`: `handle`, the one place every client message passes through;
//! - `pipeline.rs`: the governed path of a request, its stages numbered, with `forward.rs`
//!   (a call rewritten for its backend and sent), `route.rs` (which backend serves a name),
//!   `relay.rs` (the backend's notifications and requests relayed to the client) and
//!   `audited.rs` (the record written whatever the outcome, streamed results included);
//! - `own_methods.rs`: the methods the gateway answers itself (handshake, lists, listen);
//! - `sessions.rs`: the table of session-based clients; `shared_sessions.rs`: those sessions
//!   shared with other replicas (`[cluster]`); `streams.rs`: where a session's server-initiated
//!   messages go, here or to the replica holding its GET stream; `subscriptions.rs`: listen
//!   streams, resource subscriptions and notifications fanned out to clients;
//! - `supervise.rs`: backends' notices, restarts, list refreshes and the catalog; `slot.rs`:
//!   one configured backend; `reload.rs`: a new config swapped in;
//! - `health.rs`: `/ready`, `/metrics` and the audit-trouble watch;
//! - `per_user.rs`: backends acting for each caller (their instances and the caller's
//!   credential); `credential_admin.rs`: the credential store for `/admin/credentials`.
//!
//! Calls go down this list's dependencies, never back up to the module that called.

mod answer;
mod audited;
mod bridge;
mod caller;
mod credential_admin;
mod dispatch;
mod forward;
mod health;
mod lists;
mod meta;
mod own_methods;
mod per_user;
mod pinning;
mod pipeline;
mod relay;
mod reload;
mod route;
mod sessions;
mod shared_sessions;
mod slot;
mod start;
mod streams;
mod subscriptions;
mod supervise;
mod task_handles;

pub use answer::{Answer, Framed, Listening};
pub(crate) use caller::RequestCtx;
pub use caller::{ANONYMOUS, Caller, Ctx};
pub use credential_admin::AdminError;
pub use pipeline::Admission;
pub use reload::ReloadError;
pub use route::Route;
pub use slot::Slot;
pub use start::StartError;
pub use streams::OpenStream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::audit::AuditSink;
use crate::audit::writer::{AuditStats, AuditWriter};
use crate::auth::Authenticator;
use crate::backend::http_client::BackendClient;
use crate::backend::{Backend, Notices};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::policy::Policy;
use crate::rate_limit::RateLimiter;
use sessions::SessionTable;

/// The running gateway: every client message passes its `handle`.
pub struct Gateway {
    /// The running config and the backends it names; swapped whole by a reload.
    live: ArcSwap<Live>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Kept for starting and restarting backends.
    client: reqwest::Client,
    /// Reaches HTTP backends (a client of its own: see `backend::http_client`).
    backend_client: BackendClient,
    notices: Notices,
    /// The Prometheus families served at `/metrics`.
    pub metrics: crate::metrics::Metrics,
    catalog: ArcSwap<Catalog>,
    /// Session-based clients (HTTP sessions and stdio), for server-initiated notifications.
    sessions: SessionTable,
    /// Stateless clients' `subscriptions/listen` streams.
    listeners: Mutex<Vec<subscriptions::Listener>>,
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
    /// State shared with other replicas through Redis (`[cluster]`); `None`: one process.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Stateless clients' calls parked while their session-based backend waits for answers.
    bridges: Arc<bridge::Bridges>,
    /// Backends' tasks created through the gateway (2025-11-25 experimental tasks).
    task_handles: task_handles::TaskHandles,
    /// Tool definitions pinned (`[pinning]`), shared with the store's watch.
    pins: Arc<crate::pins::Pins>,
    /// The credential store (`[credentials]`), connected on the first call that needs it.
    credential_db: tokio::sync::OnceCell<crate::audit::store::SqlStore>,
}

/// The config in force and the slots of the backends it names.
pub struct Live {
    /// The config in force.
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

impl Gateway {
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

    /// Whether the config in force has a `[[profile]]` of that name.
    pub fn has_profile(&self, name: &str) -> bool {
        self.policy.load().has_profile(name)
    }

    /// The audit writer's counters (zero without a store).
    pub fn audit_stats(&self) -> AuditStats {
        self.audit_writer.as_ref().map(|w| w.stats()).unwrap_or_default()
    }

    /// Whether a call's audit record can be made durable now (store or spool).
    pub fn audit_writable(&self) -> bool {
        self.audit.writable()
    }

    /// The catalog in force (tools, prompts, resources of every backend up).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The running backend of slot `i`, if it is up.
    pub fn backend(&self, i: usize) -> Option<Arc<Backend>> {
        self.live.load().slots.get(i).and_then(|s| s.backend())
    }

    /// How many configured backends are up.
    pub fn backends_up(&self) -> usize {
        self.live.load().active().filter(|(_, s)| s.is_up()).count()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}
