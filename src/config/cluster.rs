//! `[cluster]`: state shared by every replica through Redis (issue #13). Absent, the gateway is
//! one process with no Redis dependency, exactly as before. `secret_file` is the secret the
//! replicas share to seal what they hand each other (src/seal.rs); like the other secret
//! files it is read only by the commands that use it.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::key;
use super::source::{Needs, Problem, Source};
use crate::seal::Sealer;

#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub redis: Option<String>,
    pub secret_file: Option<String>,
    pub secret: Option<String>,
    pub on_redis_failure: Option<String>,
    pub replica_id: Option<String>,
    pub key_prefix: Option<String>,
}

/// What a replica does while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisFailure {
    /// Each replica falls back to its own limits, logs (and alerts) once, and goes back to the
    /// shared ones when Redis answers again.
    Local,
    /// Calls that draw from a rate limit are refused (-32014) until Redis answers again.
    FailClosed,
}

/// `[cluster]`, validated.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://` URL (may carry a password: never printed, see `Debug`).
    pub redis: String,
    /// What calls get while Redis does not answer.
    pub on_redis_failure: OnRedisFailure,
    /// This replica's id in audit records, spans and logs; `None`: `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// Prepended to every Redis key, so that several deployments can share one Redis.
    pub key_prefix: String,
    /// `secret_file` as written (read by [`secret`] for the commands that need it).
    pub secret_file: Option<String>,
    /// `secret = "${VAR}"`, filled in (never written in the file itself).
    secret_text: Option<String>,
    /// The key derived from `secret_file`: session records, bus messages and a bridged input
    /// round's `requestState` are sealed with it, so that any replica opens them and nobody
    /// with only Redis access can read or forge them. `None`: unsealed records, and each
    /// replica seals `requestState` with a key of its own.
    pub secret: Option<Arc<Sealer>>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &super::governance::redact_url(&self.redis))
            .field("on_redis_failure", &self.on_redis_failure)
            .field("replica_id", &self.replica_id)
            .field("key_prefix", &self.key_prefix)
            .field("secret_file", &self.secret_file)
            .field("secret", &self.secret_text.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Longest replica id and key prefix: both go into every audit record or Redis key.
const MAX_ID_BYTES: usize = 128;

pub fn cluster(src: &Source, raw: Option<RawCluster>, problems: &mut Vec<Problem>) -> Option<ClusterConfig> {
    let c = raw?;
    let at = |k: &str| key(&["cluster", k]);
    let redis = match c.redis {
        Some(url) => match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty()) => url,
            _ => {
                problems.push(
                    src.problem(&at("redis"), "is not a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379\")"),
                );
                return None;
            }
        },
        None => {
            problems.push(src.problem(
                &at("redis"),
                "is required in [cluster] (e.g. \"redis://127.0.0.1:6379\"); remove the section to run one process without Redis",
            ));
            return None;
        }
    };
    let on_redis_failure = match c.on_redis_failure.as_deref() {
        None | Some("local") => OnRedisFailure::Local,
        Some("fail_closed") => OnRedisFailure::FailClosed,
        Some(other) => {
            problems.push(src.problem(
                &at("on_redis_failure"),
                format!("`{other}` is not a policy: use \"local\" (the default) or \"fail_closed\""),
            ));
            OnRedisFailure::Local
        }
    };
    let printable = |s: &str| !s.is_empty() && s.len() <= MAX_ID_BYTES && s.bytes().all(|b| b.is_ascii_graphic());
    let replica_id = c.replica_id.filter(|id| {
        let ok = printable(id);
        if !ok {
            problems.push(src.problem(
                &at("replica_id"),
                format!("must be 1 to {MAX_ID_BYTES} printable ASCII characters without spaces"),
            ));
        }
        ok
    });
    let key_prefix = c.key_prefix.unwrap_or_else(|| "sentinel:".into());
    if key_prefix.len() > MAX_ID_BYTES || !key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(src.problem(
            &at("key_prefix"),
            format!("must be at most {MAX_ID_BYTES} printable ASCII characters without spaces"),
        ));
    }
    if c.secret.is_some() && c.secret_file.is_some() {
        problems.push(src.problem(&at("secret"), "set `secret_file` or `secret`, not both"));
    }
    if c.secret.is_some() && !src.raw_string(&at("secret")).is_some_and(|r| r.contains("${")) {
        problems.push(src.problem(
            &at("secret"),
            "the secret must not be written in the config; write \"${SENTINEL_CLUSTER_SECRET}\" or use `secret_file`",
        ));
    }
    Some(ClusterConfig {
        redis,
        on_redis_failure,
        replica_id,
        key_prefix,
        secret_file: c.secret_file,
        secret_text: c.secret,
        secret: None,
    })
}

/// Reads `[cluster] secret_file` (relative to `base`) or takes `secret` for a command that
/// needs it (`serve`, `check`): a file that cannot be read or too short a secret is a config
/// problem.
pub fn secret(src: &Source, cluster: &mut ClusterConfig, needs: Needs, base: &Path, problems: &mut Vec<Problem>) {
    if !needs.covers("cluster") {
        return;
    }
    if let Some(text) = cluster.secret_text.take() {
        match Sealer::from_secret(&text) {
            Ok(s) => cluster.secret = Some(Arc::new(s)),
            Err(e) => problems.push(src.problem(&key(&["cluster", "secret"]), format!("the variable: {e}"))),
        }
        return;
    }
    let Some(file) = &cluster.secret_file else { return };
    let at = key(&["cluster", "secret_file"]);
    let p = Path::new(file);
    let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    match std::fs::read_to_string(&p) {
        Ok(text) => match Sealer::from_secret(&text) {
            Ok(s) => cluster.secret = Some(Arc::new(s)),
            Err(e) => problems.push(src.problem(&at, format!("`{}`: {e}", p.display()))),
        },
        Err(e) => problems.push(src.problem(&at, format!("cannot read `{}`: {e}", p.display()))),
    }
}
