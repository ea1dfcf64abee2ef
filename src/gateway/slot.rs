//! One configured backend and what the gateway keeps for it: the running process or
//! connection, its restart schedule, circuit breaker, latest listing and the calls in flight.
//!
//! A slot lives as long as its config does. A reload keeps the slot of an unchanged backend
//! (its process, circuit and listing carry over), and gives a changed or added backend a new
//! one; the slot of a removed or changed backend is retired: its restart loop stops, calls in
//! flight finish on it, then it stops. Slots are numbered by their place in an append-only
//! list, so a number taken from the catalog (or carried by a backend's notice) always names
//! the same slot, whatever reloads happened since.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backend::backoff::{Restart, RestartPolicy};
use crate::backend::breaker::CircuitBreaker;
use crate::catalog::Listing;
use crate::config::BackendConfig;

/// One configured backend: its config, the running connection (if up) and its circuit breaker.
pub struct Slot {
    /// The backend's config, as the file says.
    pub config: BackendConfig,
    /// The running backend; empty while down or restarting.
    pub(super) backend: ArcSwapOption<Backend>,
    /// Its restart schedule and when its current process started.
    pub(super) supervision: Mutex<Supervision>,
    /// A restart loop is running (further down-notices are its own failed tries).
    pub(super) restarting: AtomicBool,
    pub(super) breaker: CircuitBreaker,
    /// The latest listing, kept so that one backend's change rebuilds the catalog without
    /// asking the others again.
    pub(super) listing: Mutex<Listing>,
    pub(super) refresh: Refresh,
    /// Cancelled when a reload removes or replaces this backend, and at shutdown: its restart
    /// loop ends and its notices are ignored.
    pub(super) retired: CancellationToken,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Its instances acting for each caller, for a backend with `credentials` or `instances`
    /// (src/gateway/per_user.rs); `None` when every caller shares `backend`.
    pub per_user: Option<super::per_user::PerUser>,
}

/// A backend's restart schedule and when its current process (or connection) started.
pub(super) struct Supervision {
    pub restarts: RestartPolicy,
    pub started: Instant,
}

impl Supervision {
    /// The backend stopped (or failed to start): when to try again, from how long it ran.
    pub fn on_exit(&mut self) -> Restart {
        let ran_for = self.started.elapsed();
        self.restarts.on_exit(ran_for)
    }
}

/// A list refresh in progress, and the list kinds changed since it began.
#[derive(Default)]
pub(super) struct Refresh {
    pub running: AtomicBool,
    pub kinds: Mutex<std::collections::BTreeSet<&'static str>>,
}

impl Slot {
    pub(super) fn new(
        config: BackendConfig,
        backend: Option<Arc<Backend>>,
        listing: Listing,
        shutdown: &CancellationToken,
        per_user: Option<super::per_user::PerUser>,
    ) -> Slot {
        Slot {
            breaker: CircuitBreaker::new(config.circuit),
            config,
            backend: ArcSwapOption::new(backend),
            supervision: Mutex::new(Supervision {
                restarts: RestartPolicy::new(Default::default()),
                started: Instant::now(),
            }),
            restarting: AtomicBool::new(false),
            listing: Mutex::new(listing),
            refresh: Refresh::default(),
            retired: shutdown.child_token(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            per_user,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The running connection, if the backend is up.
    pub fn backend(&self) -> Option<Arc<Backend>> {
        self.backend.load_full()
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.backend.load().as_ref().is_some_and(|b| b.is_alive())
    }

    /// Counts a call in until the guard is dropped, so that retiring the slot can wait for it.
    pub(super) fn enter(&self) -> CallOnSlot<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallOnSlot(self)
    }

    /// Retires the slot: no more restarts; once the calls in flight have finished (or after
    /// `grace`), its backend is stopped.
    pub(super) async fn retire(&self, grace: Duration) {
        self.retired.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    backend = %self.name(),
                    calls = self.in_flight.load(Ordering::Acquire),
                    "calls still in flight after {grace:?}: stopping the retired backend anyway"
                );
                break;
            }
        }
        if let Some(b) = self.backend.swap(None) {
            b.terminate(Duration::from_secs(1)).await;
        }
        if let Some(p) = &self.per_user {
            futures::future::join_all(p.take_all().iter().map(|i| i.backend.terminate(Duration::from_secs(1)))).await;
        }
        *self.listing.lock().expect("listing lock") = Listing::default();
    }
}

/// One call counted in on a slot until it drops, so that retiring the slot waits for it.
pub(super) struct CallOnSlot<'a>(&'a Slot);

impl Drop for CallOnSlot<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
