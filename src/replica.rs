//! This process's replica id: which gateway process answered a request, when several share one
//! audit store and one load balancer. In audit records (`replica`) and on spans
//! (`sentinel.replica`). The host name and the process id, so two replicas on one host differ
//! and a restarted replica is told apart from its previous life.

use std::sync::OnceLock;

static ID: OnceLock<String> = OnceLock::new();

/// The id, made on first use: `<hostname>-<pid>`.
pub fn id() -> &'static str {
    ID.get_or_init(|| {
        let host = host_name().unwrap_or_else(|| "localhost".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Sets the id (`[cluster] replica_id`). Only before the first use of [`id`]: the id never
/// changes while the process runs. Returns whether it was set.
pub fn set(id: String) -> bool {
    ID.set(id).is_ok()
}

/// This machine's host name, as the kernel has it; `None` when it cannot be read or is empty.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
}
