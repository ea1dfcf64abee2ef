//! The kill switch at run time: tools and backends switched off with `sentinel kill-switch`,
//! on top of the config's `[kill_switch]` baseline.
//!
//! Entries live in the audit database (`kill_switch` table), so they survive restarts and
//! every gateway on one database — any number of replicas — sees the same list: each polls
//! the table twice a second and applies a change within a second. The last list seen is kept
//! in a file beside the spool, so a gateway restarted while its database is down still
//! refuses what was switched off (the safe side), until the database answers again.

pub mod cli;
pub mod store;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// How often a gateway looks at the table: a change applies within this (and one query).
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// What an entry switches off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A glob over exposed names (tools, prompts, resource URIs), as `[kill_switch] tools`.
    Tool,
    /// A whole backend, by name.
    Backend,
}

impl Kind {
    /// The kind's word in the store and in `sentinel kill-switch list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Backend => "backend",
        }
    }

    /// The kind for its word in the store, if it is one.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "tool" => Some(Kind::Tool),
            "backend" => Some(Kind::Backend),
            _ => None,
        }
    }
}

/// One thing switched off at run time, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// A tool glob or a backend.
    pub kind: Kind,
    /// The glob, or the backend's name.
    pub target: String,
    /// Why, as the operator gave it.
    pub reason: Option<String>,
    /// Who switched it off: `user@host` of the `sentinel kill-switch` that added it.
    pub added_by: String,
    /// ms since the Unix epoch.
    pub added_ms: i64,
}

/// The entries in force, compiled for the hot path.
#[derive(Default)]
pub struct Switched {
    /// The entries as read from the store, for `list` and change detection.
    pub entries: Vec<Entry>,
    tools: GlobSet,
    backends: HashSet<String>,
}

impl Switched {
    /// Compiles `entries`; a glob that does not compile (written to the table by hand) is left
    /// out with a warning rather than taking the others down.
    pub fn new(entries: Vec<Entry>) -> Switched {
        let mut tools = GlobSetBuilder::new();
        let mut backends = HashSet::new();
        for e in &entries {
            match e.kind {
                Kind::Tool => match Glob::new(&e.target) {
                    Ok(g) => {
                        tools.add(g);
                    }
                    Err(err) => tracing::warn!("kill switch: `{}` is not a glob ({err}); ignored", e.target),
                },
                Kind::Backend => {
                    backends.insert(e.target.clone());
                }
            }
        }
        let tools = tools.build().unwrap_or_default();
        Switched { entries, tools, backends }
    }

    /// The exposed `name` of `backend` is switched off by one of the entries.
    pub fn is_killed(&self, name: &str, backend: &str) -> bool {
        (!self.backends.is_empty() && self.backends.contains(backend))
            || (!self.entries.is_empty() && self.tools.is_match(name))
    }
}

/// The run-time list one gateway holds, shared by every policy version (a config reload keeps
/// it).
#[derive(Default)]
pub struct Runtime {
    current: ArcSwap<Switched>,
}

impl Runtime {
    /// The exposed `name` of `backend` is switched off by the list in force.
    pub fn is_killed(&self, name: &str, backend: &str) -> bool {
        self.current.load().is_killed(name, backend)
    }

    /// A copy of the entries in force.
    pub fn entries(&self) -> Vec<Entry> {
        self.current.load().entries.clone()
    }

    /// Puts `entries` in force; says whether anything changed.
    pub fn set(&self, entries: Vec<Entry>) -> bool {
        if self.current.load().entries == entries {
            return false;
        }
        self.current.store(Arc::new(Switched::new(entries)));
        true
    }
}

/// The file beside the spool that keeps the last list seen from a store, for a start while the
/// store is down. Named by the store's identity: one spool folder may serve several stores.
pub fn cache_file(spool_dir: &std::path::Path, store_id: &str) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, store_id.as_bytes());
    spool_dir.join(format!("kill-switch-{}.json", hex::encode(&digest.as_ref()[..8])))
}

/// The list kept in `file`, if it can be read.
pub fn read_cache(file: &std::path::Path) -> Option<Vec<Entry>> {
    let text = std::fs::read(file).ok()?;
    match serde_json::from_slice(&text) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!("kill switch: cannot read {}: {err}", file.display());
            None
        }
    }
}

/// Writes the list to `file` (through a temporary file, so a crash leaves the old or the new).
pub fn write_cache(file: &std::path::Path, entries: &[Entry]) {
    let tmp = file.with_extension("json.tmp");
    let written = std::fs::write(&tmp, serde_json::to_vec(entries).expect("plain fields"))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        tracing::warn!("kill switch: cannot keep the list in {}: {e}", file.display());
    }
}

/// Keeps `runtime` equal to the store's table, calling `changed` after each change, until
/// `stop`. Connects (and reconnects) on its own; while the store is away the list stays as it
/// was, and a warning is logged once per outage.
pub async fn watch(
    runtime: Arc<Runtime>,
    url: String,
    cache: PathBuf,
    stop: tokio_util::sync::CancellationToken,
    changed: impl Fn(&[Entry]) + Send + 'static,
) {
    let mut store: Option<crate::audit::store::SqlStore> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // The audit writer migrates; a gateway polling before it has simply sees no table yet.
        let what = ("kill switch", "the last list stays in force");
        let Some(s) = crate::audit::store::SqlStore::connected(&mut store, &url, &mut warned, what).await else {
            continue;
        };
        match store::list(s).await {
            Ok(entries) => {
                if warned {
                    tracing::info!("kill switch: the store answers again");
                    warned = false;
                }
                // Cloned only when the list changed: most polls find it as it was.
                if runtime.set(entries) {
                    let entries = runtime.entries();
                    write_cache(&cache, &entries);
                    changed(&entries);
                }
            }
            Err(e) => {
                if !warned && !e.is_missing_table() {
                    tracing::warn!("kill switch: reading the list failed ({e:#}); the last list stays in force");
                    warned = true;
                }
            }
        }
    }
    if let Some(s) = store {
        s.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, target: &str) -> Entry {
        Entry { kind, target: target.into(), reason: None, added_by: "op".into(), added_ms: 0 }
    }

    #[test]
    fn entries_switch_off_by_glob_and_backend_and_changes_are_seen() {
        let r = Runtime::default();
        assert!(!r.is_killed("exa__search", "exa"));
        assert!(r.set(vec![entry(Kind::Tool, "exa__deep_*"), entry(Kind::Backend, "n8n")]));
        assert!(r.is_killed("exa__deep_research", "exa"));
        assert!(!r.is_killed("exa__search", "exa"));
        assert!(r.is_killed("n8n__anything", "n8n"));
        assert!(!r.set(r.entries()), "the same list is no change");
        assert!(r.set(Vec::new()));
        assert!(!r.is_killed("exa__deep_research", "exa"));
    }

    #[test]
    fn a_bad_glob_leaves_the_others_in_force() {
        let s = Switched::new(vec![entry(Kind::Tool, "a[__x"), entry(Kind::Tool, "b__*")]);
        assert!(s.is_killed("b__y", "b"));
    }

    #[test]
    fn the_cache_round_trips_and_is_named_by_store() {
        let dir = tempfile::tempdir().unwrap();
        let f = cache_file(dir.path(), "postgres://h:5432/a");
        assert_ne!(f, cache_file(dir.path(), "postgres://h:5432/b"));
        assert_eq!(read_cache(&f), None);
        let list = vec![entry(Kind::Backend, "n8n")];
        write_cache(&f, &list);
        assert_eq!(read_cache(&f), Some(list));
    }
}
