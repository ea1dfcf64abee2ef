//! The replicas' shared state at run time (`[cluster]`, issue #13): the rate limits, evaluated
//! in Redis ([`SharedLimits`]), so that a quota of N per minute is N across all replicas; the
//! sessions of session-based clients (`sessions.rs`), so that any replica serves them; what
//! replicas tell each other (`bus.rs`): sessions ended, answers and cancellations that reached
//! a replica other than the one holding the call; and what is for a session's GET stream,
//! handed to the replica holding it (`streams.rs`).
//!
//! Redis being down or slow never holds a call: each call waits at most
//! [`CALL_TIMEOUT`](crate::rate_limit::shared::CALL_TIMEOUT) for its limit, and then
//! `on_redis_failure` decides (the replica's own limits, or -32014). An outage is logged once
//! when it starts and once when it ends; a replica that starts while Redis is away keeps
//! trying to connect in the background, and the connection, once made, reconnects by itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod bus;
mod sessions;
mod streams;

pub use bus::{BridgeRound, BusMessage};
pub use sessions::SharedSession;

use crate::config::{ClusterConfig, OnRedisFailure};
use crate::rate_limit::shared::{SharedLimits, Unavailable};
use crate::rate_limit::{Bucket, RateLimited};

/// How often a replica that could not reach Redis at start tries again.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// One replica's handle on the shared state.
pub struct Cluster {
    config: ClusterConfig,
    /// `None` until the first connection succeeds.
    limits: ArcSwapOption<SharedLimits>,
    /// Whether Redis decided the last call's limit (for `/ready` and `sentinel_redis_up`).
    up: AtomicBool,
    /// Set when an outage has been announced, cleared when Redis answers again: one log line
    /// (and one alert) per outage, not one per call.
    outage_announced: AtomicBool,
    /// Calls whose limit Redis could not decide.
    failures: AtomicU64,
    /// Why Redis failed last (for `/ready`).
    last_error: std::sync::Mutex<Option<String>>,
    /// The listener's connection, to listen to a session's channel when this replica takes its
    /// GET stream (`streams.rs`); `None` while it is not connected.
    sink: std::sync::Mutex<Option<redis::aio::PubSubSink>>,
    /// The sessions whose GET stream this replica holds: their channels are listened to again
    /// when the listener reconnects.
    held: std::sync::Mutex<HashSet<String>>,
}

/// What became of a call's limit when Redis did not decide it.
pub struct Outage {
    /// Why Redis did not decide (for logs and alerts).
    pub reason: String,
    /// The first failure of this outage: the caller announces it (alert).
    pub first: bool,
}

impl Cluster {
    /// Connects to Redis (briefly: a replica starts without it, and keeps trying in a task
    /// owned by `tasks` that ends on `stop`).
    pub async fn start(config: ClusterConfig, tasks: &TaskTracker, stop: CancellationToken) -> Arc<Cluster> {
        let cluster = Arc::new(Cluster {
            config,
            limits: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            outage_announced: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
            sink: std::sync::Mutex::new(None),
            held: std::sync::Mutex::new(HashSet::new()),
        });
        let redis = crate::config::redact_url(&cluster.config.redis);
        match cluster.connect().await {
            Ok(()) => tracing::info!(%redis, "[cluster]: rate limits are shared through Redis"),
            Err(e) => {
                tracing::warn!(%redis, "[cluster]: Redis is unreachable at start ({e}); {}; connecting in the background", cluster.effect());
                cluster.outage_announced.store(true, Ordering::Relaxed);
                let c = cluster.clone();
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(CONNECT_RETRY) => {}
                            _ = stop.cancelled() => return,
                        }
                        if c.connect().await.is_ok() {
                            tracing::info!(%redis, "[cluster]: Redis answers; rate limits are shared again");
                            c.outage_announced.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                });
            }
        }
        cluster
    }

    /// The Redis connection, once made.
    fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        self.limits.load().as_ref().map(|l| l.connection())
    }

    /// Redis answered: an outage, if one was announced, is over.
    fn answered(&self) {
        if !self.up.swap(true, Ordering::Relaxed) && self.outage_announced.swap(false, Ordering::Relaxed) {
            tracing::info!("[cluster]: Redis answers again; state is shared again");
        }
    }

    async fn connect(&self) -> Result<(), Unavailable> {
        match SharedLimits::connect(&self.config.redis, &self.config.key_prefix).await {
            Ok(l) => {
                self.limits.store(Some(Arc::new(l)));
                self.up.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                *self.last_error.lock().expect("cluster lock") = Some(e.0.clone());
                Err(e)
            }
        }
    }

    /// Takes one cell from `bucket` in Redis. `Err` when Redis did not decide: the caller
    /// applies [`Cluster::on_failure`].
    pub async fn take(&self, bucket: &Bucket<'_>) -> Result<Result<(), RateLimited>, Outage> {
        let Some(limits) = self.limits.load_full() else {
            return Err(self.failed("not connected yet".into()));
        };
        match limits.check(bucket).await {
            Ok(decided) => {
                self.answered();
                Ok(decided)
            }
            Err(e) => Err(self.failed(e.0)),
        }
    }

    fn failed(&self, reason: String) -> Outage {
        self.up.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("cluster lock") = Some(reason.clone());
        let first = !self.outage_announced.swap(true, Ordering::Relaxed);
        if first {
            tracing::warn!("[cluster]: Redis does not answer ({reason}); {}", self.effect());
        }
        Outage { reason, first }
    }

    /// What the replica does while Redis is away, in words (logs, alerts, refusals).
    pub fn effect(&self) -> &'static str {
        match self.config.on_redis_failure {
            OnRedisFailure::Local => {
                "each replica applies its own rate limits until it is back (on_redis_failure = \"local\")"
            }
            OnRedisFailure::FailClosed => {
                "calls that draw from a rate limit are refused until it is back (on_redis_failure = \"fail_closed\")"
            }
        }
    }

    /// What calls get while Redis is away (`on_redis_failure`).
    pub fn on_failure(&self) -> OnRedisFailure {
        self.config.on_redis_failure
    }

    /// Whether Redis answered the last exchange (`/ready`, `sentinel_redis_up`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Calls whose limit Redis could not decide, since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The cluster's part of `/ready`.
    pub fn detail(&self) -> serde_json::Value {
        let up = self.is_up();
        serde_json::json!({
            "redis": if up { "up" } else { "down" },
            "on_redis_failure": match self.config.on_redis_failure {
                OnRedisFailure::Local => "local",
                OnRedisFailure::FailClosed => "fail_closed",
            },
            "failures": self.failures(),
            "last_error": if up { None } else { self.last_error.lock().expect("cluster lock").clone() },
        })
    }
}
