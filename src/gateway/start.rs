//! Start-up and shutdown: the gateway built from its config, its backends started, and its
//! background tasks (notice loop, restart loops, housekeeping, watches) given their owner.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::health::watch_audit;
use super::sessions::SessionTable;
use super::slot::Slot;
use super::supervise::notice_loop;
use super::{Gateway, Live};
use crate::audit::AuditSink;
use crate::auth::Authenticator;
use crate::backend::http_client::BackendClient;
use crate::backend::{Backend, Notices};
use crate::catalog::{Catalog, Listing};
use crate::config::{AuthConfig, Config};
use crate::policy::Policy;
use crate::rate_limit::{Quota, RateLimitSettings, RateLimiter};

/// Why the gateway did not start. Each variant's text includes its cause's; none is given as
/// `source()`, so `{e:#}` prints it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client (for the JWKS URL, OTLP) could not be built.
    #[error("{}", crate::audit::store::chain(.0))]
    HttpClient(reqwest::Error),
    /// The policy in the config does not compile.
    #[error("policy: {0}")]
    Policy(crate::policy::PolicyError),
    /// The audit spool folder could not be made or locked.
    #[error("{0}")]
    AuditSpool(crate::audit::open::SpoolError),
    /// A rate limit's tool pattern is not valid.
    #[error("rate limits: {0}")]
    RateLimits(crate::rate_limit::BadRateLimitGlob),
    /// Authentication could not be set up (the JWKS, the issuer).
    #[error("{0}")]
    Auth(crate::auth::AuthSetupError),
    /// The client for HTTP backends could not be built.
    #[error("{0}")]
    BackendClient(crate::backend::http_client::ClientError),
}

/// How often the JWKS (file or URL) is read again, whatever tokens arrive.
const JWKS_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

impl Gateway {
    /// Starts every backend (concurrently), lists what they offer and builds the catalog.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, StartError> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(StartError::HttpClient)?;
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
        let policy = Policy::from_config(&config, kills.clone()).map_err(StartError::Policy)?;
        let config_redact_keys = config.audit.redact_keys.clone();
        let audit_writer = crate::audit::open::open(&config.audit).map_err(StartError::AuditSpool)?;
        let audit: Arc<dyn AuditSink> = match &audit_writer {
            Some(w) => w.clone(),
            None => Arc::new(crate::audit::NoStore),
        };
        let limiter = RateLimiter::new(&rate_limit_settings(&config)).map_err(StartError::RateLimits)?;
        let auth = match &config.auth {
            AuthConfig::Disabled => {
                tracing::warn!("authentication is disabled: every local caller may use every tool");
                None
            }
            AuthConfig::Jwt(j) => Some(Authenticator::new(j.clone(), client.clone()).await.map_err(StartError::Auth)?),
        };
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let metrics = crate::metrics::Metrics::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let backend_client =
            BackendClient::new(concat!("sentinel/", env!("CARGO_PKG_VERSION"))).map_err(StartError::BackendClient)?;
        let started = start_backends(0, &config.backends, &config, &backend_client, &notices_tx).await;
        let slots: Vec<Arc<Slot>> = config
            .backends
            .iter()
            .zip(started)
            .map(|(cfg, (backend, listing))| {
                metrics.backend_configured(&cfg.name);
                metrics.backend_up(&cfg.name, backend.is_some());
                metrics.circuit_state(&cfg.name, crate::metrics::CircuitGauge::Closed);
                let per_user = super::per_user::PerUser::of(cfg, &client, &metrics);
                Arc::new(Slot::new(cfg.clone(), backend, listing, &shutdown, per_user))
            })
            .collect();
        for p in &config.profiles {
            metrics.profile_configured(&p.name);
        }
        let down: Vec<usize> =
            slots.iter().enumerate().filter(|(_, s)| s.backend().is_none()).map(|(i, _)| i).collect();
        let alerter = crate::alerts::Alerter::start(&config.alerts, client.clone());
        let tasks = tokio_util::task::TaskTracker::new();
        let cluster = match &config.cluster {
            Some(c) => Some(crate::cluster::Cluster::start(c.clone(), &tasks, shutdown.clone()).await),
            None => None,
        };
        let bus = cluster.as_ref().map(|c| c.listen(&tasks, shutdown.clone()));
        // What the replicas share seals `requestState` too, so that a retry opens on any of them.
        let sealer = match config.cluster.as_ref().and_then(|c| c.secret.clone()) {
            Some(s) => s,
            None => {
                if config.cluster.is_some() {
                    tracing::warn!(
                        "[cluster] has no secret_file: session records and bus messages in Redis are not sealed, and a stateless client's input round must come back to the replica that asked it"
                    );
                }
                Arc::new(crate::seal::Sealer::ephemeral())
            }
        };
        // The pins in the store are in force before the first catalog is judged, so that a
        // restart does not take a changed definition for a new tool.
        let pins = Arc::new(crate::pins::Pins::default());
        if config.audit.url != "none" {
            crate::pins::load(&pins, &config.audit.url).await;
        }
        let gw = Arc::new(Gateway {
            live: ArcSwap::from_pointee(Live { active: (0..slots.len()).collect(), slots, config: Arc::new(config) }),
            reloading: tokio::sync::Mutex::new(()),
            client,
            backend_client,
            notices: notices_tx,
            metrics,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            sessions: SessionTable::default(),
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
            tasks,
            cluster,
            bridges: Arc::new(super::bridge::Bridges::new(sealer)),
            task_handles: Default::default(),
            pins: pins.clone(),
            credential_db: tokio::sync::OnceCell::new(),
        });
        if let Some(mut bus) = bus {
            let (weak, stop) = (Arc::downgrade(&gw), gw.shutdown.clone());
            gw.tasks.spawn(async move {
                loop {
                    let message = tokio::select! {
                        m = bus.recv() => m,
                        _ = stop.cancelled() => return,
                    };
                    let (Some(message), Some(gw)) = (message, weak.upgrade()) else { return };
                    gw.on_bus(message);
                }
            });
        }
        gw.rebuild_catalog();
        for slot in &gw.live.load().slots {
            gw.watch_instances(slot.clone());
        }
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
        if gw.config().audit.url != "none" {
            // An approval (on any gateway of this store) brings held tools back into lists.
            let weak = Arc::downgrade(&gw);
            let url = gw.config().audit.url.clone();
            gw.tasks.spawn(crate::pins::watch(pins, url, gw.shutdown.clone(), move || {
                if let Some(gw) = weak.upgrade() {
                    gw.pins_changed();
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

    /// Stops every stdio backend's process group (shutdown): TERM, then KILL after `grace`.
    /// Shutdown is declared first, so that their exits are not taken for crashes (no "backend
    /// is down" error, no restart): `sentinel stdio` gets here when its client closes stdin.
    pub async fn stop_backends(&self, grace: std::time::Duration) {
        self.shutdown.cancel();
        let mut running: Vec<Arc<Backend>> =
            self.live.load().slots.iter().filter_map(|s| s.backend.swap(None)).collect();
        // Every user's instance too (their reapers end with the shutdown, and may not get to them).
        for s in &self.live.load().slots {
            running.extend(s.per_user.iter().flat_map(super::per_user::PerUser::take_all).map(|i| i.backend.clone()));
        }
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

    /// Shutdown, last: ends the audit writer's tasks (what it has queued is spooled and synced;
    /// what is not stored yet stays in the spool for the next start) and the alerts' sender
    /// (alerts queued go out first), waiting up to `grace` for each.
    pub async fn close_audit_and_alerts(&self, grace: std::time::Duration) {
        let alerter = self.alerter.load_full();
        let audit = async {
            if let Some(w) = &self.audit_writer {
                w.close(grace).await;
            }
        };
        let alerts = async {
            alerter.close(grace).await;
        };
        tokio::join!(audit, alerts);
    }
}

/// Starts backends concurrently (numbering their slots from `first`) and lists what each
/// offers; one that fails to start is logged and left for its restart loop.
pub(super) async fn start_backends(
    first: usize,
    configs: &[crate::config::BackendConfig],
    config: &Config,
    client: &BackendClient,
    notices: &Notices,
) -> Vec<(Option<Arc<Backend>>, Listing)> {
    let starts = configs.iter().enumerate().map(|(k, cfg)| async move {
        let listing_as = crate::credentials::listing_credential(config, cfg).await;
        match Backend::start_as(first + k, cfg.clone(), client.clone(), notices.clone(), listing_as).await {
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

pub(super) fn rate_limit_settings(c: &Config) -> RateLimitSettings {
    let q = |q: &crate::config::QuotaConfig| Quota { per_minute: q.per_minute, burst: q.burst, per: q.per };
    RateLimitSettings {
        default: c.rate_limit.default.as_ref().map(q),
        tools: c.rate_limit.tools.iter().map(|(g, x)| (g.clone(), q(x))).collect(),
        clients: c.rate_limit.clients.iter().map(|(g, x)| (g.clone(), q(x))).collect(),
    }
}
