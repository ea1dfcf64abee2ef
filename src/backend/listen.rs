//! Resource subscriptions per backend, counted across clients, and a stateless (2026-07-28)
//! backend's `subscriptions/listen` stream: how the gateway hears
//! its list changes and the resource updates clients subscribed to. Session-based backends
//! use their GET stream (HTTP) or stdout (stdio) instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Backend, CallOpts};
use crate::protocol::Generation;

/// Which resource URIs clients subscribed to on this backend, with how many subscribers each.
#[derive(Default)]
pub struct Subscriptions {
    uris: Mutex<BTreeMap<String, usize>>,
    changed: Notify,
}

impl Subscriptions {
    /// Counts one more subscriber; true for the first (the backend must be told).
    pub fn add(&self, uri: &str) -> bool {
        let mut u = self.uris.lock().expect("subscriptions lock");
        let n = u.entry(uri.to_string()).or_default();
        *n += 1;
        let first = *n == 1;
        if first {
            self.changed.notify_one();
        }
        first
    }

    /// Counts one subscriber less; true for the last (the backend must be told).
    pub fn remove(&self, uri: &str) -> bool {
        let mut u = self.uris.lock().expect("subscriptions lock");
        let Some(n) = u.get_mut(uri) else { return false };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        u.remove(uri);
        self.changed.notify_one();
        true
    }

    fn uris(&self) -> Vec<String> {
        self.uris.lock().expect("subscriptions lock").keys().cloned().collect()
    }
}

/// Keeps one listen stream open to a stateless backend for as long as the backend lives,
/// reopening it when the subscribed URIs change or the stream ends. The task is the
/// backend's own (it ends when the backend is terminated); it holds the backend only while it
/// waits on it, and ends once the backend is dropped.
pub fn spawn(backend: &Arc<Backend>) {
    if backend.generation != Generation::Stateless {
        return;
    }
    let weak: Weak<Backend> = Arc::downgrade(backend);
    backend.tasks.spawn(async move {
        let mut failures = 0u32;
        loop {
            let Some(b) = weak.upgrade() else { return };
            let caps = &b.capabilities;
            let flag = |k: &str| {
                caps.get(k).and_then(|c| c.get("listChanged")).and_then(serde_json::Value::as_bool).unwrap_or(false)
            };
            let mut filter = serde_json::Map::new();
            for (cap, key) in [
                ("tools", "toolsListChanged"),
                ("prompts", "promptsListChanged"),
                ("resources", "resourcesListChanged"),
            ] {
                if flag(cap) {
                    filter.insert(key.into(), true.into());
                }
            }
            let uris = b.subscriptions.uris();
            if !uris.is_empty() {
                filter.insert("resourceSubscriptions".into(), uris.into());
            }
            if filter.is_empty() {
                // Nothing to listen for until a client subscribes to a resource.
                b.subscriptions.changed.notified().await;
                continue;
            }
            let params = super::stateless_params(serde_json::json!({ "notifications": filter }), &CallOpts::default());
            let started = tokio::time::Instant::now();
            let opts = CallOpts::default();
            let outcome = {
                let listen = b.conn.request(crate::method::Method::Listen.as_str(), params, &opts);
                tokio::select! {
                    r = listen => Some(r),
                    _ = b.subscriptions.changed.notified() => None,
                }
            };
            let name = b.config.name.clone();
            drop(b);
            if let Some(r) = outcome {
                // The stream ended (backend restarted or refused it): back off, then reopen.
                if started.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures = (failures + 1).min(6);
                tracing::debug!(backend = %name, outcome = ?r.map(|_| ()), "listen stream ended; reopening");
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
            }
        }
    });
}
