//! Definition pinning at the gateway: every catalog the backends' listings make is judged
//! against the pins (src/pins), changes are logged, counted and alerted, and in hold mode a
//! changed tool is kept out of lists and refused (-32017) until it is approved.

use super::Gateway;
use crate::catalog::{Catalog, Entry};
use crate::config::PinMode;
use crate::pins::{Judgement, Seen};
use crate::policy::Policy;

impl Gateway {
    /// Judges every tool of `catalog` against its pin: a new one is pinned, a changed one
    /// recorded and announced (once per new definition).
    pub(super) fn judge_pins(&self, catalog: &Catalog) {
        let live = self.live.load();
        let mode = self.policy.load().pin_mode;
        for e in &catalog.tools {
            let Some(definition) = &e.pin else { continue };
            let backend = live.slots[e.backend].name();
            let seen = Seen {
                backend: backend.to_string(),
                tool: e.original.clone(),
                exposed: e.exposed.clone(),
                definition: definition.clone(),
            };
            let Judgement::Changed(old) = self.pins.judge(&seen) else { continue };
            let effect = match mode {
                PinMode::Hold => format!("held (-32017) until `sentinel pins approve {}`", e.exposed),
                PinMode::Alert => "served anyway ([pinning] mode = \"alert\")".to_string(),
            };
            let message = format!(
                "tool `{}` of backend `{backend}` changed its definition since it was pinned ({} -> {}); {effect}; \
                 `sentinel pins diff {}` shows the change",
                e.exposed,
                &old[..12],
                &definition.hash[..12],
                e.exposed
            );
            tracing::warn!(backend, tool = %e.exposed, "{message}");
            self.metrics.definition_changed(backend);
            use crate::alerts::{Alert, AlertKind};
            // The subject names the tool: alerts are de-duplicated per (kind, subject), and
            // two tools of one backend changing are two alerts.
            let subject = format!("{backend}/{}", e.exposed);
            self.alerter.load().notify(Alert::new(AlertKind::ToolChanged, subject, message));
        }
        let policy = self.policy.load();
        let held = catalog.tools.iter().filter(|e| self.is_held(&policy, e, live.slots[e.backend].name())).count();
        self.metrics.tools_held(held);
    }

    /// The store's pins changed (an approval, or another replica's first sight): judge again,
    /// and tell clients, whose lists may now hold a tool that was held.
    pub(super) fn pins_changed(&self) {
        tracing::info!("pins changed in the store");
        self.judge_pins(&self.catalog());
        self.broadcast_list_changed("tools");
    }

    /// Whether tool `e` of `backend` is held: `[pinning] mode = "hold"` and its definition
    /// differs from its pin.
    pub(super) fn is_held(&self, policy: &Policy, e: &Entry, backend: &str) -> bool {
        policy.pin_mode == PinMode::Hold
            && e.pin.as_ref().is_some_and(|d| self.pins.differs(backend, &e.original, &d.hash))
    }
}
