//! Backend supervision: what happens when a backend announces a change or goes down (the
//! notice loop), restarts with backoff, list refreshes, the circuit breaker's state changes
//! reported, and the catalog rebuilt from the backends' latest listings.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Gateway;
use super::slot::Slot;
use crate::backend::{Backend, Notice, SlotNotice};
use crate::catalog::{self, Catalog};

impl Gateway {
    /// Logs and exports a circuit breaker's change of state.
    pub(super) fn circuit_changed(&self, backend: &str, t: crate::backend::breaker::Transition) {
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

    pub(super) fn rebuild_catalog(&self) {
        let live = self.live.load();
        // Held together for the build; every other holder takes one alone, so no lock order
        // to get wrong.
        let listings: Vec<_> = live.active().map(|(i, s)| (i, s, s.listing.lock().expect("listing lock"))).collect();
        let sources: Vec<catalog::Source> = listings
            .iter()
            .map(|(i, s, l)| catalog::Source { index: *i, name: &s.config.name, prefix: &s.config.prefix, listing: l })
            .collect();
        let c = Catalog::build(&live.config.naming, &live.config.tool_overrides, &sources);
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
        // Judged before it is served: a changed tool is never listed in hold mode.
        self.judge_pins(&c);
        self.catalog.store(c);
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
    /// Starts slot `i`'s backend again after `delay` (with growing delays while it keeps
    /// failing), then lists it again and tells clients what changed.
    // Boxed: it may spawn itself again, and a recursive future needs a named, `Send` type.
    pub(super) fn restart(
        self: Arc<Self>,
        i: usize,
        delay: std::time::Duration,
    ) -> crate::audit::BoxFuture<'static, ()> {
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
                let r = slot.supervision.lock().expect("supervision lock").on_exit();
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
            slot.supervision.lock().expect("supervision lock").started = std::time::Instant::now();
            let listing_as = crate::credentials::listing_credential(&self.config(), cfg).await;
            match Backend::start_as(i, cfg.clone(), self.backend_client.clone(), self.notices.clone(), listing_as).await
            {
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
                    let r = slot.supervision.lock().expect("supervision lock").on_exit();
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

pub(super) async fn notice_loop(
    gw: Weak<Gateway>,
    mut rx: mpsc::UnboundedReceiver<SlotNotice>,
    stop: tokio_util::sync::CancellationToken,
) {
    // At shutdown backends exit on purpose: nothing they announce matters any more.
    while let Some(Some(SlotNotice { slot: i, notice })) = stop.run_until_cancelled(rx.recv()).await {
        let Some(gw) = gw.upgrade() else { break };
        match notice {
            // A backend a reload is still starting has no slot yet (that reload lists it), and a
            // retired one's news no longer matters.
            _ if gw.live.load().slots.get(i).is_none_or(|s| s.retired.is_cancelled()) => {}
            Notice::ListChanged(kind) => {
                gw.tasks.spawn(gw.clone().on_list_changed(i, kind));
            }
            Notice::ResourceUpdated(p) => gw.broadcast_resource_updated(&p),
            Notice::TaskStatus(p) => gw.task_status(i, p.get()),
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
                let restart = slot.supervision.lock().expect("supervision lock").on_exit();
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
