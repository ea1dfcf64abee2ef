//! Definition pinning (issue #17): the first time a backend's tool is seen, its definition
//! (name, description, input and output schema, annotations) is pinned by its SHA-256; when the
//! backend later serves a different definition the change is recorded (old and new), alerted,
//! and per `[pinning] mode` served anyway ("alert") or held out of lists and calls (-32017,
//! "hold") until `sentinel pins approve`.
//!
//! Pins live in the audit database (`tool_pins`, `tool_pin_changes`), like the run-time kill
//! switch: every replica on one database sees the same pins (each polls the hashes every
//! second, so an approval reaches all of them within about a second). What this process
//! pinned or saw change is queued for that store and written by the same task, so the
//! catalog's rebuild (which runs without `await`) never waits on the database. With
//! `[audit] url = "none"` the pins are kept in memory only, for the life of the process.

pub mod cli;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use serde_json::value::RawValue;

/// How often a gateway reads the pins' hashes: an approval applies within this (and one query).
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// The members of a tool definition a pin covers: what a model reads and what decides the
/// call. `title` and `_meta` are left out: a display name is no instruction to the model.
const PINNED: [&str; 5] = ["name", "description", "inputSchema", "outputSchema", "annotations"];

/// A tool's definition as pinned: canonical JSON (keys sorted at every depth, so that a
/// backend re-ordering its keys is no change) and its SHA-256 in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Canonical JSON of the pinned members.
    pub json: String,
    /// SHA-256 of `json`, lower-case hex.
    pub hash: String,
}

impl Definition {
    /// The definition of a tool as its backend listed it (before any override).
    pub fn of(fields: &IndexMap<String, Box<RawValue>>) -> Definition {
        let mut pinned = serde_json::Map::new();
        for key in PINNED {
            if let Some(raw) = fields.get(key) {
                let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
                pinned.insert(key.to_string(), canonical(v));
            }
        }
        let json = serde_json::Value::Object(pinned).to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, json.as_bytes());
        Definition { hash: hex::encode(digest.as_ref()), json }
    }
}

/// `v` with every object's keys sorted (serde_json keeps insertion order in this build).
fn canonical(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// What a tool's definition is against its pin.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Never seen: pinned now.
    New,
    /// As pinned.
    Same,
    /// Different from the pin (the pin's hash), and this is the first time this process sees
    /// this new definition: record and alert it.
    Changed(String),
    /// Different from the pin, already recorded and alerted.
    StillChanged,
}

/// A write for the store, queued by the catalog's rebuild.
#[derive(Debug, Clone)]
pub enum Write {
    /// First sight of a tool: pin it (unless another replica pinned it first).
    Pin(Seen),
    /// A definition different from the pin.
    Change(Seen),
}

/// One tool as a backend served it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The backend's name in the config.
    pub backend: String,
    /// The tool's own name at the backend.
    pub tool: String,
    /// The name clients knew it by when it was seen.
    pub exposed: String,
    /// Its definition.
    pub definition: Definition,
}

/// The pins one gateway holds, shared by every config version: the approved hash of each
/// (backend, tool), as the store has them plus what this process pinned and has not yet
/// stored.
#[derive(Default)]
pub struct Pins {
    /// backend → tool → approved hash. Read on every call of a tool in hold mode.
    approved: ArcSwap<HashMap<String, HashMap<String, String>>>,
    /// (backend, tool, new hash) already recorded and alerted by this process.
    alerted: Mutex<HashSet<(String, String, String)>>,
    /// Writes waiting for the store's task.
    queue: Mutex<Vec<Write>>,
    /// Wakes the store's task when something is queued.
    wake: tokio::sync::Notify,
}

impl Pins {
    /// Whether `tool` of `backend`, served with definition hash `hash`, differs from its pin
    /// (an unpinned tool is pinned by the rebuild before anyone sees it).
    pub fn differs(&self, backend: &str, tool: &str, hash: &str) -> bool {
        self.approved.load().get(backend).and_then(|t| t.get(tool)).is_some_and(|h| h != hash)
    }

    /// Judges a tool the catalog is about to serve; pins a new one (in memory now, in the
    /// store soon) and queues a change for recording the first time it is seen.
    pub fn judge(&self, seen: &Seen) -> Judgement {
        let approved = self.approved.load();
        match approved.get(&seen.backend).and_then(|t| t.get(&seen.tool)) {
            Some(h) if *h == seen.definition.hash => Judgement::Same,
            Some(h) => {
                let key = (seen.backend.clone(), seen.tool.clone(), seen.definition.hash.clone());
                if !self.alerted.lock().expect("pins lock").insert(key) {
                    return Judgement::StillChanged;
                }
                let old = h.clone();
                self.enqueue(Write::Change(seen.clone()));
                Judgement::Changed(old)
            }
            None => {
                drop(approved);
                self.approved.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.entry(seen.backend.clone()).or_default().insert(seen.tool.clone(), seen.definition.hash.clone());
                    m
                });
                self.enqueue(Write::Pin(seen.clone()));
                Judgement::New
            }
        }
    }

    fn enqueue(&self, w: Write) {
        self.queue.lock().expect("pins lock").push(w);
        self.wake.notify_one();
    }

    /// Takes what waits for the store.
    fn take_queue(&self) -> Vec<Write> {
        std::mem::take(&mut *self.queue.lock().expect("pins lock"))
    }

    /// Puts back writes the store did not take, ahead of newer ones.
    fn requeue(&self, mut failed: Vec<Write>) {
        let mut q = self.queue.lock().expect("pins lock");
        failed.append(&mut q);
        *q = failed;
    }

    /// Puts the store's hashes in force (they win over this process's own for the same tool;
    /// pins of this process the store does not have yet are kept). Says whether anything
    /// changed.
    pub fn set_from_store(&self, rows: Vec<(String, String, String)>) -> bool {
        let current = self.approved.load_full();
        let mut next: HashMap<String, HashMap<String, String>> = HashMap::clone(&current);
        let mut changed = false;
        for (backend, tool, hash) in rows {
            let slot = next.entry(backend).or_default().entry(tool).or_default();
            if *slot != hash {
                *slot = hash;
                changed = true;
            }
        }
        if changed {
            self.approved.store(Arc::new(next));
        }
        changed
    }
}

/// Puts the store's pins in force at start, waiting a few seconds at most: a store that does
/// not answer (or is not migrated yet) leaves the pins to the watch.
pub async fn load(pins: &Pins, url: &str) {
    let read = async {
        let db = crate::audit::store::SqlStore::connect(url).await.ok()?;
        let rows = match store::hashes(&db).await {
            Ok(rows) => Some(rows),
            // A store not migrated yet (a first start) has no pins: nothing to wait for.
            Err(e) if e.is_missing_table() => Some(Vec::new()),
            Err(_) => None,
        };
        db.close().await;
        rows
    };
    match tokio::time::timeout(Duration::from_secs(3), read).await {
        Ok(Some(rows)) => {
            pins.set_from_store(rows);
        }
        // The watch brings the store's pins when it answers, and the catalog is judged again
        // against them then.
        _ => {
            tracing::warn!(
                "pins: the store did not give the pins at start; tools are judged against them when it does"
            );
        }
    }
}

/// Keeps `pins` equal to the store's and writes what `pins` queued, until `stop`; calls
/// `changed` after the store's pins changed (an approval). Connects and reconnects on its own;
/// while the store is away the pins stay as they were and writes wait.
pub async fn watch(
    pins: Arc<Pins>,
    url: String,
    stop: tokio_util::sync::CancellationToken,
    changed: impl Fn() + Send + 'static,
) {
    let mut db: Option<crate::audit::store::SqlStore> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = pins.wake.notified() => {}
        }
        let what = ("pins", "the pins in memory stay in force");
        let Some(s) = crate::audit::store::SqlStore::connected(&mut db, &url, &mut warned, what).await else {
            continue;
        };
        let writes = pins.take_queue();
        if !writes.is_empty() {
            if let Err(e) = write_all(s, &writes).await {
                if !e.is_missing_table() && !warned {
                    tracing::warn!("pins: {e}; retrying");
                    warned = true;
                }
                pins.requeue(writes);
                continue;
            }
        }
        match store::hashes(s).await {
            Ok(rows) => {
                if warned {
                    tracing::info!("pins: the store answers again");
                    warned = false;
                }
                if pins.set_from_store(rows) {
                    changed();
                }
            }
            Err(e) => {
                if !warned && !e.is_missing_table() {
                    tracing::warn!("pins: reading them failed ({e}); the pins in memory stay in force");
                    warned = true;
                }
            }
        }
    }
    // Shutdown: what was queued is written if the store takes it at once.
    if let Some(s) = db {
        let _ = write_all(&s, &pins.take_queue()).await;
        s.close().await;
    }
}

/// Writes queued pins and changes in order: the new pins first (together), then the
/// changes (which read the pins they differ from).
async fn write_all(db: &crate::audit::store::SqlStore, writes: &[Write]) -> Result<(), store::StoreError> {
    let by = crate::replica::id();
    let new: Vec<&Seen> = writes.iter().filter_map(|w| if let Write::Pin(s) = w { Some(s) } else { None }).collect();
    store::pin_new(db, &new, by).await?;
    for w in writes.iter().filter(|w| matches!(w, Write::Change(_))) {
        store::write(db, w, by).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> IndexMap<String, Box<RawValue>> {
        serde_json::from_str(json).unwrap()
    }

    fn seen(desc: &str) -> Seen {
        let f = fields(&format!(r#"{{"name":"t","description":"{desc}","inputSchema":{{"type":"object"}}}}"#));
        Seen { backend: "b".into(), tool: "t".into(), exposed: "b__t".into(), definition: Definition::of(&f) }
    }

    #[test]
    fn key_order_and_title_do_not_change_a_definition() {
        let a = Definition::of(&fields(r#"{"name":"t","inputSchema":{"type":"object","properties":{}},"title":"A"}"#));
        let b = Definition::of(&fields(r#"{"inputSchema":{"properties":{},"type":"object"},"name":"t","title":"B"}"#));
        assert_eq!(a, b);
        let c = Definition::of(&fields(r#"{"name":"t","description":"x","inputSchema":{"type":"object"}}"#));
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn first_sight_pins_a_change_is_reported_once_and_the_store_wins() {
        let p = Pins::default();
        assert_eq!(p.judge(&seen("one")), Judgement::New);
        assert_eq!(p.judge(&seen("one")), Judgement::Same);
        let first = seen("one").definition.hash;
        assert_eq!(p.judge(&seen("two")), Judgement::Changed(first));
        assert_eq!(p.judge(&seen("two")), Judgement::StillChanged);
        assert!(p.differs("b", "t", &seen("two").definition.hash));
        assert_eq!(p.take_queue().len(), 2, "the pin and the change wait for the store");
        // Approved (in the store, by `sentinel pins approve`): the new definition is the pin.
        assert!(p.set_from_store(vec![("b".into(), "t".into(), seen("two").definition.hash)]));
        assert!(!p.differs("b", "t", &seen("two").definition.hash));
        assert!(!p.set_from_store(vec![("b".into(), "t".into(), seen("two").definition.hash)]));
    }
}
