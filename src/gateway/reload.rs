//! Hot reload (SIGHUP, `sentinel reload`): a new config prepared off to the side, then
//! swapped in. Everything that can refuse the file (policy, rate-limit globs, auth keys)
//! is built before anything changes, so a refused reload leaves the running config whole.
//! Backends are compared by name: an unchanged one keeps its slot (process, circuit,
//! listing); a changed one is started anew beside the old, which finishes its calls in
//! flight and stops; an added one starts; a removed one drains and stops.

use std::sync::Arc;
use std::time::Duration;

use super::slot::Slot;
use super::start::{rate_limit_settings, start_backends};
use super::{Gateway, Live};
use crate::auth::Authenticator;
use crate::config::{AuthConfig, BackendConfig, Config};
use crate::policy::Policy;

/// Why a reload was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file would weaken authentication on the socket the gateway listens on.
    #[error("{0}")]
    WeakensAuth(String),
    #[error("policy: {0}")]
    /// Roles or the kill switch cannot be compiled.
    Policy(#[from] crate::policy::PolicyError),
    #[error("rate limits: {0}")]
    /// A rate-limit glob does not compile.
    RateLimits(#[from] crate::rate_limit::BadRateLimitGlob),
    /// The authenticator could not be built (keys unreadable or unusable).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("the gateway is shutting down")]
    /// The gateway is shutting down: nothing is reloaded.
    ShuttingDown,
}

/// How long a retired backend's calls may run on after the reload, beyond its call timeout.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// How long the alerts a replaced `[alerts]` section had queued may take to go out.
const REPLACED_ALERTS_GRACE: Duration = Duration::from_secs(30);

impl Gateway {
    /// Applies `new`; on success returns a line saying what changed. On error nothing changed.
    pub async fn reload(self: &Arc<Self>, mut new: Config) -> Result<String, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.live.load_full();

        // 1. What can refuse the file, before anything changes. First: never weaken
        // authentication on the socket actually bound (the running `listen`, not the file's).
        if let Some(why) = crate::config::auth_downgrade(old.config.server.listen, &old.config.auth, &new.auth) {
            return Err(ReloadError::WeakensAuth(why));
        }
        let policy = Policy::from_config(&new, self.policy.load().kill.runtime.clone())?;
        let limiter = self.limiter.load().reconfigured(&rate_limit_settings(&new))?;
        // Rebuilt even when unchanged: a reload is how rotated keys in a JWKS file are picked up.
        let auth = match &new.auth {
            AuthConfig::Disabled => None,
            AuthConfig::Jwt(j) => Some(Arc::new(Authenticator::new(j.clone(), self.client.clone()).await?)),
        };
        let needs_restart = restart_only_changes(&old.config, &new);
        // What stays in force until a restart stays in the config others read, too.
        new.server.listen = old.config.server.listen;
        new.server.max_body_bytes = old.config.server.max_body_bytes;
        new.telemetry = old.config.telemetry.clone();
        new.audit = crate::config::AuditConfig { redact_keys: new.audit.redact_keys, ..old.config.audit.clone() };

        // 2. Backends: keep the unchanged, start the added and changed ones beside the old.
        let mut slots = old.slots.clone();
        let first = slots.len();
        let mut to_start: Vec<BackendConfig> = Vec::new();
        let mut active = Vec::with_capacity(new.backends.len());
        for b in &new.backends {
            match old.active().find(|(_, s)| s.config.name == b.name) {
                Some((i, s)) if s.config == *b => active.push(i),
                _ => {
                    active.push(first + to_start.len());
                    to_start.push(b.clone());
                }
            }
        }
        let started = start_backends(first, &to_start, &new, &self.backend_client, &self.notices).await;
        if self.shutdown.is_cancelled() {
            for b in started.into_iter().filter_map(|(b, _)| b) {
                b.terminate(Duration::from_secs(1)).await;
            }
            return Err(ReloadError::ShuttingDown);
        }
        for (cfg, (backend, listing)) in to_start.iter().zip(started) {
            let per_user = super::per_user::PerUser::of(cfg, &self.client, &self.metrics);
            slots.push(Arc::new(Slot::new(cfg.clone(), backend, listing, &self.shutdown, per_user)));
        }
        let retired: Vec<Arc<Slot>> =
            old.active().filter(|(i, _)| !active.contains(i)).map(|(_, s)| s.clone()).collect();
        let summary = summarize(&old, &new, &to_start, &retired, &needs_restart);

        // 3. The swap. Calls already past the pipeline finish on what they started with.
        for p in &new.profiles {
            self.metrics.profile_configured(&p.name);
        }
        self.policy.store(Arc::new(policy));
        self.limiter.store(Arc::new(limiter));
        self.auth.store(auth);
        self.redactor.store(Arc::new(crate::audit::redact::Redactor::new(&new.audit.redact_keys)));
        if new.alerts != old.config.alerts {
            let replaced = self.alerter.swap(Arc::new(crate::alerts::Alerter::start(&new.alerts, self.client.clone())));
            // What it had queued still goes out, to the webhooks it had.
            self.tasks.spawn(async move {
                replaced.close(REPLACED_ALERTS_GRACE).await;
            });
        }
        let names: Vec<String> = new.backends.iter().map(|b| b.name.clone()).collect();
        self.metrics.restart_pending(&needs_restart);
        self.live.store(Arc::new(Live { config: Arc::new(new), slots, active: active.clone() }));
        self.rebuild_catalog();
        for kind in ["tools", "prompts", "resources"] {
            self.broadcast_list_changed(kind);
        }

        // 4. After it: new backends that are not up retry; retired ones drain and stop.
        for i in (first..first + to_start.len()).filter(|i| active.contains(i)) {
            let slot = self.slot(i);
            self.watch_instances(slot.clone());
            self.metrics.backend_configured(slot.name());
            self.metrics.circuit_state(slot.name(), crate::metrics::CircuitGauge::Closed);
            let up = slot.is_up();
            self.metrics.backend_up(slot.name(), up);
            if !up {
                // Died before the swap (its notice found no slot yet), or never started.
                slot.backend.store(None);
                self.tasks.spawn(self.clone().restart(i, Duration::ZERO));
            }
        }
        for slot in retired {
            if !names.iter().any(|n| n == slot.name()) {
                self.metrics.backend_removed(slot.name());
            }
            let grace = slot.config.timeout + DRAIN_MARGIN;
            self.tasks.spawn(async move { slot.retire(grace).await });
        }
        Ok(summary)
    }
}

/// Settings read once at start (`config::RESTART_ONLY`) that the new file changes: a reload
/// cannot apply them, and says so.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.audit, &new.audit);
    crate::config::RESTART_ONLY
        .into_iter()
        .filter(|key| match *key {
            "server.listen" => old.server.listen != new.server.listen,
            "server.max_body_bytes" => old.server.max_body_bytes != new.server.max_body_bytes,
            "audit.url" => o.url != n.url,
            // The writer decides what an unwritable spool means when it is started.
            "audit.on_audit_failure" => o.fail_open != n.fail_open,
            "audit.durability" => o.durability != n.durability,
            "audit.spool_dir" => o.spool_dir != n.spool_dir,
            "audit.retain" => o.retain != n.retain,
            "audit.queue/batch/flush_interval" => {
                (o.queue, o.batch, o.flush_interval) != (n.queue, n.batch, n.flush_interval)
            }
            "telemetry" => old.telemetry != new.telemetry,
            "cluster" => old.cluster != new.cluster,
            other => unreachable!("RESTART_ONLY names `{other}`, which reload does not compare"),
        })
        .collect()
}

fn summarize(
    old: &Live,
    new: &Config,
    started: &[BackendConfig],
    retired: &[Arc<Slot>],
    needs_restart: &[&str],
) -> String {
    let was = |name: &str| old.config.backends.iter().any(|b| b.name == name);
    let is = |name: &str| new.backends.iter().any(|b| b.name == name);
    let list = |names: Vec<&str>| if names.is_empty() { "none".to_string() } else { names.join(", ") };
    let added = started.iter().filter(|b| !was(&b.name)).map(|b| b.name.as_str()).collect();
    let changed = started.iter().filter(|b| was(&b.name)).map(|b| b.name.as_str()).collect();
    let removed = retired.iter().filter(|s| !is(s.name())).map(|s| s.name()).collect();
    let mut line = format!(
        "config reloaded: backends added: {}; changed (restarted): {}; removed: {}; roles, kill switch, rate limits, validation, auth, redaction and alerts as in the file",
        list(added),
        list(changed),
        list(removed)
    );
    if !needs_restart.is_empty() {
        line.push_str(&format!("; NOT applied until a restart: {}", needs_restart.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[auth]\ndisabled = true\n{extra}");
        Config::parse("t.toml", &text, None, &|_| None).unwrap()
    }

    /// Every setting `RESTART_ONLY` names is compared (none reaches the `unreachable!`), and
    /// each is reported when, and only when, it changes.
    #[test]
    fn each_restart_only_setting_is_compared() {
        let old = config("");
        assert!(restart_only_changes(&old, &old).is_empty());
        let changed = config(
            "[server]\nlisten = \"127.0.0.1:9\"\nmax_body_bytes = 7\n[audit]\nurl = \"sqlite://other.db\"\n\
             on_audit_failure = \"fail_open\"\ndurability = \"fsync\"\nspool_dir = \"other-spool\"\nretain = \"1d\"\nqueue = 7\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n",
        );
        assert_eq!(restart_only_changes(&old, &changed), crate::config::RESTART_ONLY);
    }
}
