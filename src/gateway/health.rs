//! Health as others see it: `/ready`, `/metrics`, and the watch that alerts on audit trouble.

use std::sync::Weak;

use super::Gateway;
use crate::audit::writer::AuditStats;

impl Gateway {
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
            "replica": crate::replica::id(),
            "config": live.config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into()),
            "audit": self.audit_detail(),
            "backends": backends,
        });
        let mut detail = detail;
        // Redis does not decide readiness: every replica shares it, so taking replicas out of
        // the load balancer for it would help nothing; `on_redis_failure` decides what calls get.
        if let Some(c) = &self.cluster {
            detail["cluster"] = c.detail();
        }
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
        if let Some(c) = &self.cluster {
            self.metrics.set_redis(c.is_up(), c.failures());
        }
        self.metrics.render()
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
pub(super) async fn watch_audit(gw: Weak<Gateway>, stop: tokio_util::sync::CancellationToken) {
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
