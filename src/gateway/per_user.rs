//! Backends acting for each caller (SPEC §7): the caller's credential found (the credential
//! store, or a token exchange), and the instance that acts with it — a stdio child of the
//! caller's own, or an HTTP connection with the caller's own headers and backend session.
//!
//! Instances are started on a caller's first call, kept by subject, and reaped once unused for
//! `idle_timeout`; at most `max_instances` run at once. Each has its own circuit breaker, so
//! one user's failing child opens no circuit for the others. One that exited is started again
//! on its user's next call (counted as a restart of the backend). Their notices go nowhere:
//! the catalog comes from the backend's shared connection (started without a credential), and
//! a user's child exiting is no news for the shared one's supervision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use super::{Caller, Gateway, Slot};
use crate::backend::Backend;
use crate::backend::backoff::RestartPolicy;
use crate::backend::breaker::CircuitBreaker;
use crate::config::{BackendConfig, CredentialMode, InstanceMode};
use crate::credentials::Secret;
use crate::credentials::exchange::{ExchangeSettings, TokenExchange};

mod credential;
use crate::error::Refusal;

/// How long a credential read from the store is used before it is read again: a credential
/// set or removed with `sentinel credentials` (another process) takes effect within this; one
/// set or removed through the admin endpoint takes effect at once.
const RECHECK_AFTER: Duration = Duration::from_secs(30);
/// How long after its next attempt was due a subject's failed start is remembered (its backoff
/// grows while it keeps failing within this).
const FORGET_FAILED_AFTER: Duration = Duration::from_secs(600);
/// Longest pause between two looks for idle instances.
const MAX_REAP_TICK: Duration = Duration::from_secs(30);

/// One backend's per-caller side: its instances and, with a token exchange, the exchanger.
pub struct PerUser {
    table: Mutex<Table>,
    idle_timeout: Duration,
    max_instances: usize,
    /// The token exchange of `credentials = { token_exchange = ... }`, with its cache.
    exchange: Option<TokenExchange>,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, Arc<Instance>>,
    /// Subjects whose instance is being started, with the lock their other calls wait on.
    starting: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Subjects whose instance failed to start: not before when it is tried again, and the
    /// schedule that backs off (as a shared child's restarts do), so that a caller's retries
    /// cannot make the gateway spawn a failing command in a loop.
    failed: HashMap<String, (Instant, RestartPolicy)>,
}

/// One caller's instance of a backend.
pub struct Instance {
    /// The running child or connection, acting for its caller.
    pub backend: Arc<Backend>,
    /// Its own breaker: one user's failures open no circuit for the others.
    pub breaker: CircuitBreaker,
    /// The credential it acts with, and when it was last read from the store.
    credential: Mutex<(Option<Secret>, Instant)>,
    last_used: Mutex<Instant>,
    in_flight: AtomicUsize,
}

/// What serves one call: the backend's shared connection, or the caller's own instance.
pub(super) enum Serving {
    Shared(Arc<Backend>),
    /// The instance, and the call counted in on it until the call (or its streamed result) ends.
    Own(Arc<Instance>, InstanceUse),
}

impl Serving {
    pub fn backend(&self) -> &Arc<Backend> {
        match self {
            Serving::Shared(b) => b,
            Serving::Own(i, _) => &i.backend,
        }
    }

    pub fn breaker<'a>(&'a self, slot: &'a Slot) -> &'a CircuitBreaker {
        match self {
            Serving::Shared(_) => &slot.breaker,
            Serving::Own(i, _) => &i.breaker,
        }
    }
}

/// A call counted in on an instance: an instance is not reaped while calls use it.
pub(super) struct InstanceUse(Arc<Instance>);

impl Drop for InstanceUse {
    fn drop(&mut self) {
        *self.0.last_used.lock().expect("last used lock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Instance {
    fn enter(self: &Arc<Self>) -> InstanceUse {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.last_used.lock().expect("last used lock") = Instant::now();
        InstanceUse(self.clone())
    }

    fn idle_for(&self, now: Instant) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| now.saturating_duration_since(*self.last_used.lock().expect("last used lock")))
    }
}

impl PerUser {
    /// The per-caller side of `config`, if it acts for each caller.
    pub fn of(config: &BackendConfig, http: &reqwest::Client, metrics: &crate::metrics::Metrics) -> Option<PerUser> {
        let InstanceMode::PerUser { idle_timeout, max_instances } = config.instances else { return None };
        let exchange = match &config.credentials {
            CredentialMode::TokenExchange(t) => {
                let settings = ExchangeSettings {
                    token_url: t.token_url.clone(),
                    client_id: t.client_id.clone(),
                    client_secret: t.client_secret.clone(),
                    audience: t.audience.clone(),
                    scope: t.scope.clone(),
                };
                Some(TokenExchange::new(settings, http.clone()).counting(metrics.token_exchange_counters(&config.name)))
            }
            _ => None,
        };
        metrics.per_user_backend(&config.name, exchange.is_some());
        Some(PerUser { table: Mutex::default(), idle_timeout, max_instances, exchange })
    }

    /// Whether `instance` is `subject`'s in the table (not reaped or replaced meanwhile).
    fn holds(&self, subject: &str, instance: &Arc<Instance>) -> bool {
        self.table.lock().expect("instances lock").live.get(subject).is_some_and(|i| Arc::ptr_eq(i, instance))
    }

    /// How many instances run.
    pub fn len(&self) -> usize {
        self.table.lock().expect("instances lock").live.len()
    }

    /// Every instance, taken out of the table (shutdown, retirement).
    pub fn take_all(&self) -> Vec<Arc<Instance>> {
        self.table.lock().expect("instances lock").live.drain().map(|(_, i)| i).collect()
    }

    /// Takes out the instances unused for `idle_timeout`, and those whose process is gone.
    fn take_idle(&self) -> (Vec<Arc<Instance>>, usize) {
        let now = Instant::now();
        let mut table = self.table.lock().expect("instances lock");
        // A failed start is forgotten a while after its next attempt was due.
        table.failed.retain(|_, (at, _)| now.saturating_duration_since(*at) < FORGET_FAILED_AFTER);
        let mut gone = 0;
        let idle: Vec<String> = table
            .live
            .iter()
            .filter(|(_, i)| {
                let dead = !i.backend.is_alive() && i.in_flight.load(Ordering::Acquire) == 0;
                gone += usize::from(dead);
                dead || i.idle_for(now).is_some_and(|d| d >= self.idle_timeout)
            })
            .map(|(s, _)| s.clone())
            .collect();
        (idle.iter().filter_map(|s| table.live.remove(s)).collect(), gone)
    }

    /// Forgets what is cached for `subject` (its credential changed through the admin endpoint):
    /// its next call reads the store (or exchanges) again.
    pub fn forget(&self, subject: &str) {
        if let Some(i) = self.table.lock().expect("instances lock").live.get(subject) {
            i.credential.lock().expect("credential lock").1 = Instant::now() - RECHECK_AFTER;
        }
        if let Some(x) = &self.exchange {
            x.forget(subject);
        }
    }
}

/// What to do with a subject's table entry.
enum Step<'a> {
    Use(Arc<Instance>),
    Wait(Arc<tokio::sync::Mutex<()>>),
    Start(StartGuard<'a>),
}

/// A start under way: its entry leaves the table however the start ends (a dropped call
/// included), so that the subject's next call is not left waiting on it.
struct StartGuard<'a> {
    per_user: &'a PerUser,
    subject: String,
    _lock: OwnedMutexGuard<()>,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.per_user.table.lock().expect("instances lock").starting.remove(&self.subject);
    }
}

impl Gateway {
    /// Stage 9 for a backend acting for each caller: the caller's credential and the
    /// instance that acts with it (started if need be). A backend shared by every caller is
    /// served by its one connection.
    pub(super) async fn serving(&self, i: usize, slot: &Arc<Slot>, caller: &Caller) -> Result<Serving, Refusal> {
        let name = slot.name();
        let Some(per_user) = &slot.per_user else {
            return slot.backend().map(Serving::Shared).ok_or_else(|| Refusal::BackendUnavailable {
                backend: name.to_string(),
                reason: "it is down or restarting; see the gateway log".into(),
                retry_after_ms: 1000,
            });
        };
        let subject = caller.client().unwrap_or(super::ANONYMOUS).to_string();
        let known = per_user.table.lock().expect("instances lock").live.get(&subject).cloned();
        let (credential, read_at) = self.caller_credential(slot, per_user, caller, &subject, known.as_ref()).await?;
        let mut known = known;
        loop {
            let instance = self.instance(i, slot, per_user, &subject, known, (credential.clone(), read_at)).await?;
            // Counted in before it is checked to still be in the table: the reaper takes only
            // an instance nobody has entered, so one still there now is not reaped under it.
            let used = instance.enter();
            if per_user.holds(&subject, &instance) {
                return Ok(Serving::Own(instance, used));
            }
            known = None;
        }
    }

    /// The caller's instance, started if there is none (or it exited, or its credential
    /// changed under a child that took it in its environment).
    async fn instance(
        &self,
        index: usize,
        slot: &Arc<Slot>,
        per_user: &PerUser,
        subject: &str,
        known: Option<Arc<Instance>>,
        (credential, read_at): (Option<Secret>, Option<Instant>),
    ) -> Result<Arc<Instance>, Refusal> {
        let name = slot.name();
        // Keeps what an instance knows of its credential: the credential, and when the store
        // was last read for it (a cached one keeps its time, so that it is read again in time).
        let remember = |i: &Instance| {
            let mut c = i.credential.lock().expect("credential lock");
            c.0 = credential.clone();
            if let Some(at) = read_at {
                c.1 = at;
            }
        };
        if let Some(i) = known
            && i.backend.is_alive()
        {
            let same = i.credential.lock().expect("credential lock").0 == credential;
            if same || !matches!(slot.config.transport, crate::config::TransportConfig::Stdio { .. }) {
                if !same && let Some(new) = &credential {
                    i.backend.set_credential(new.clone());
                }
                remember(&i);
                return Ok(i);
            }
            // A child's environment cannot change: the one with the old credential goes.
            self.drop_instance(slot, per_user, subject, &i);
        }
        loop {
            let step = {
                let mut table = per_user.table.lock().expect("instances lock");
                match table.live.get(subject).cloned() {
                    Some(i) if i.backend.is_alive() => Step::Use(i),
                    found => {
                        if let Some(dead) = found {
                            // Exited (crashed, or killed): started again below, as a restart.
                            table.live.remove(subject);
                            tracing::warn!(backend = %name, subject = %subject, pid = ?dead.backend.pid(), "a per-user instance has exited; starting it again");
                            self.metrics.backend_restarted(name);
                        }
                        let wait =
                            table.failed.get(subject).map(|(at, _)| at.saturating_duration_since(Instant::now()));
                        match table.starting.get(subject) {
                            Some(lock) => Step::Wait(lock.clone()),
                            None if wait.is_some_and(|w| !w.is_zero()) => {
                                let wait = wait.unwrap_or_default();
                                return Err(Refusal::BackendUnavailable {
                                    backend: name.to_string(),
                                    reason: format!(
                                        "its instance for this caller failed to start; next attempt in {} (see the gateway log)",
                                        humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                                    ),
                                    retry_after_ms: wait.as_millis() as u64 + 1,
                                });
                            }
                            None if table.live.len() + table.starting.len() >= per_user.max_instances => {
                                return Err(Refusal::BackendUnavailable {
                                    backend: name.to_string(),
                                    reason: format!(
                                        "it already runs its maximum of {} per-user instances (max_instances); one \
                                         is stopped after {} unused (idle_timeout)",
                                        per_user.max_instances,
                                        humantime::format_duration(per_user.idle_timeout)
                                    ),
                                    retry_after_ms: 1000,
                                });
                            }
                            None => {
                                let lock = Arc::new(tokio::sync::Mutex::new(()));
                                let held = lock.clone().try_lock_owned().expect("a new lock is free");
                                table.starting.insert(subject.to_string(), lock);
                                Step::Start(StartGuard { per_user, subject: subject.to_string(), _lock: held })
                            }
                        }
                    }
                }
            };
            match step {
                Step::Use(i) => {
                    // Started by another call of this caller, with the credential it read.
                    if let Some(new) = &credential {
                        i.backend.set_credential(new.clone());
                    }
                    remember(&i);
                    return Ok(i);
                }
                Step::Wait(lock) => {
                    drop(lock.lock().await);
                }
                Step::Start(guard) => {
                    let started = Backend::start_as(
                        index,
                        slot.config.clone(),
                        self.backend_client.clone(),
                        // Nobody listens: see the module's comment.
                        tokio::sync::mpsc::unbounded_channel().0,
                        credential.clone(),
                    )
                    .await
                    .map_err(|e| {
                        let delay = {
                            let mut table = per_user.table.lock().expect("instances lock");
                            let (at, policy) = table
                                .failed
                                .entry(subject.to_string())
                                .or_insert_with(|| (Instant::now(), RestartPolicy::new(Default::default())));
                            let delay = policy.on_exit(Duration::ZERO).delay;
                            *at = Instant::now() + delay;
                            delay
                        };
                        tracing::error!(backend = %name, subject = %subject, "per-user instance did not start: {e:#}; next attempt in {delay:?}");
                        Refusal::BackendUnavailable {
                            backend: name.to_string(),
                            reason: "its instance for this caller did not start; see the gateway log".into(),
                            retry_after_ms: delay.as_millis() as u64,
                        }
                    })?;
                    let instance = Arc::new(Instance {
                        backend: Arc::new(started),
                        breaker: CircuitBreaker::new(slot.config.circuit),
                        credential: Mutex::new((credential, Instant::now())),
                        last_used: Mutex::new(Instant::now()),
                        in_flight: AtomicUsize::new(0),
                    });
                    if slot.retired.is_cancelled() {
                        instance.backend.terminate(Duration::from_secs(1)).await;
                        return Err(Refusal::BackendUnavailable {
                            backend: name.to_string(),
                            reason: "it was removed or replaced by a reload".into(),
                            retry_after_ms: 1000,
                        });
                    }
                    let n = {
                        let mut table = per_user.table.lock().expect("instances lock");
                        table.live.insert(subject.to_string(), instance.clone());
                        table.failed.remove(subject);
                        table.live.len()
                    };
                    drop(guard);
                    self.metrics.backend_instances(name, n);
                    tracing::info!(backend = %name, subject = %subject, pid = ?instance.backend.pid(), instances = n, "per-user instance started");
                    return Ok(instance);
                }
            }
        }
    }

    /// Takes `instance` out of the table and stops it in the background.
    fn drop_instance(&self, slot: &Slot, per_user: &PerUser, subject: &str, instance: &Arc<Instance>) {
        let n = {
            let mut table = per_user.table.lock().expect("instances lock");
            if table.live.get(subject).is_some_and(|i| Arc::ptr_eq(i, instance)) {
                table.live.remove(subject);
            }
            table.live.len()
        };
        self.metrics.backend_instances(slot.name(), n);
        let b = instance.backend.clone();
        self.tasks.spawn(async move { b.terminate(Duration::from_secs(1)).await });
    }

    /// Stops a slot's idle per-user instances (and forgets exited ones) until the slot is
    /// retired: one task per backend acting for each caller.
    pub(super) fn watch_instances(self: &Arc<Self>, slot: Arc<Slot>) {
        let Some(per_user) = &slot.per_user else { return };
        let tick = (per_user.idle_timeout / 4).clamp(Duration::from_millis(50), MAX_REAP_TICK);
        let weak = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = slot.retired.cancelled() => break,
                }
                let Some(gw) = weak.upgrade() else { break };
                let Some(per_user) = &slot.per_user else { break };
                let (idle, gone) = per_user.take_idle();
                if idle.is_empty() {
                    continue;
                }
                gw.metrics.backend_instances(slot.name(), per_user.len());
                if gone > 0 {
                    tracing::warn!(backend = %slot.name(), exited = gone, "per-user instances exited; each starts again on its user's next call");
                }
                tracing::info!(backend = %slot.name(), stopped = idle.len() - gone, "idle per-user instances stopped");
                drop(gw);
                futures::future::join_all(idle.iter().map(|i| i.backend.terminate(Duration::from_secs(1)))).await;
            }
            // Retired or shut down: every instance goes.
            if let Some(per_user) = &slot.per_user {
                let all = per_user.take_all();
                futures::future::join_all(all.iter().map(|i| i.backend.terminate(Duration::from_secs(1)))).await;
            }
        });
    }
}
