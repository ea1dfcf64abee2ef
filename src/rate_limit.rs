//! Per-client, per-tool rate limits (`[rate_limit]`): one GCRA bucket for each (client, tool) pair, or for each
//! (client, rule) under a `per = "glob"` rule, whose names all draw from one bucket.
//!
//! The quota of a pair is the first client override matching the client, else the first tool glob matching the
//! tool, else the default; with none of those the call is not limited. "Tool" is the name policy judges: a tool or
//! prompt name, or a resource URI. Buckets are `governor` keyed limiters, one
//! limiter per distinct quota, so that a pair's bucket lives in exactly one map.
//!
//! Memory is bounded twice: `shrink()` (called periodically by the gateway) drops every bucket that is full again,
//! which is indistinguishable from a fresh one; and the number of live buckets is capped (`DEFAULT_MAX_KEYS`). At
//! the cap the limiter first sweeps full buckets itself (at most once a second); if the sweep frees nothing, every
//! limited call is refused with scope `"gateway"` until buckets refill. Refusing is the safe side: evicting live
//! buckets would hand their owners a fresh burst, and we cannot tell a new pair from a known one without keeping a
//! second map. Reaching the cap needs a million distinct (client, tool) pairs active within one refill period.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;

/// How many (client, tool) buckets may be live at once before calls are refused.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// The `scope` of an ordinary refusal: this client's bucket for this tool is empty.
pub const SCOPE_CLIENT_TOOL: &str = "client+tool";
/// The `scope` of a refusal by a `per = "glob"` rule: the client's bucket for every name the glob matches is empty.
pub const SCOPE_CLIENT_GLOB: &str = "client+glob";
/// The `scope` of a refusal because the limiter holds `max_keys` live buckets.
pub const SCOPE_GATEWAY: &str = "gateway";

/// Counting buckets takes a read lock on every shard of every map, so it is done once per this many checks.
const RECOUNT_EVERY: usize = 256;
/// At the cap, the limiter sweeps full buckets itself no more often than this: a sweep visits every bucket.
const SWEEP_AT_CAP_EVERY: Duration = Duration::from_secs(1);

/// A sustained rate and the burst allowed above it, and what shares one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Calls per minute, sustained.
    pub per_minute: NonZeroU32,
    /// Calls allowed at once on a full bucket.
    pub burst: NonZeroU32,
    /// Whether each matched name has its own bucket or they share one.
    pub per: Per,
}

/// What one bucket counts, for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Per {
    /// Each name the rule matches has a bucket of its own (`per = "tool"`, the default).
    #[default]
    Tool,
    /// Every name the rule matches draws from one bucket (`per = "glob"`).
    Glob,
}

impl Quota {
    fn gcra(self) -> governor::Quota {
        governor::Quota::per_minute(self.per_minute).allow_burst(self.burst)
    }

    /// How long an untouched bucket takes to be full again and so droppable by `shrink`.
    fn refill_time(self) -> Duration {
        Duration::from_secs(60) * (self.burst.get().saturating_add(1)) / self.per_minute.get()
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/min burst {}", self.per_minute, self.burst)
    }
}

/// A rule's quota and the text its shared bucket is keyed by (`per = "glob"`).
struct Rule {
    limiter: usize,
    /// The glob as written, for `per = "glob"` (all its names share the client's bucket).
    shared: Option<String>,
}

/// The `[rate_limit]` section, validated: globs are still text, compiled by [`RateLimiter::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// The quota of names no tool glob matches; `None`: unlimited.
    pub default: Option<Quota>,
    /// Globs over exposed tool names, in config order: the first match wins.
    pub tools: Vec<(String, Quota)>,
    /// Client subjects (exact, or globs), in config order: the first match wins, over any tool glob.
    pub clients: Vec<(String, Quota)>,
}

/// A `[rate_limit]` glob that does not compile: the limiter cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("rate_limit.{section}: bad glob {pattern:?}: {source}")]
pub struct BadRateLimitGlob {
    /// `clients` or `tools`.
    pub section: &'static str,
    /// The glob as written.
    pub pattern: String,
    /// globset's reason.
    pub source: globset::Error,
}

/// A refused call: JSON-RPC -32013 with `retry_after_ms`, `limit` and `scope`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limited ({limit}, scope {scope}): retry after {retry_after:?}")]
pub struct RateLimited {
    /// How long until the call would be allowed.
    pub retry_after: Duration,
    /// The quota that refused, e.g. `"120/min burst 20"`.
    pub limit: String,
    /// [`SCOPE_CLIENT_TOOL`] or [`SCOPE_GATEWAY`].
    pub scope: String,
}

impl RateLimited {
    /// `retry_after` in whole milliseconds, rounded up: a client that waits this long is not refused again.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// One client's bucket for one name (a tool, or a `per = "glob"` rule's glob), and its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket<'a> {
    /// The quota the bucket fills at.
    pub quota: Quota,
    /// The caller's subject.
    pub client: &'a str,
    /// The name (or, for `per = "glob"`, the glob) counted.
    pub name: &'a str,
    /// [`SCOPE_CLIENT_TOOL`] or [`SCOPE_CLIENT_GLOB`], for the refusal.
    pub scope: &'static str,
}

type Buckets<C> = governor::RateLimiter<u128, DashMapStateStore<u128>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The gateway's rate limiter, built once per config. Generic over the clock so that tests can drive time.
pub struct RateLimiter<C: Clock = DefaultClock> {
    /// Client overrides with their quota's limiter.
    clients: Vec<(GlobMatcher, Rule)>,
    /// Tool globs with their quota's limiter.
    tools: Vec<(GlobMatcher, Rule)>,
    default: Option<Rule>,
    /// One keyed limiter per distinct quota, so that rules sharing a quota share nothing else. Shared with the
    /// limiter a reload builds, when the quota is still there: its clients keep what they have used.
    limiters: Vec<(Quota, Arc<Buckets<C>>)>,
    /// Reads "now" for `retry_after`; the same clock the limiters run on.
    clock: C,
    /// Two independently seeded SipHashers give each (client, tool) a 128-bit key: a check allocates nothing,
    /// a bucket costs the same whatever the length of the names, and a collision (two pairs sharing a bucket)
    /// is as likely as guessing the process's random seeds.
    seeds: (RandomState, RandomState),
    max_keys: usize,
    /// Checks so far, to recount live buckets every `RECOUNT_EVERY`.
    checks: AtomicUsize,
    /// Live buckets at the last count; may run up to `RECOUNT_EVERY` behind.
    keys: AtomicUsize,
    /// When the limiter last swept at the cap; the lock also keeps concurrent callers from sweeping together.
    last_sweep: Mutex<Option<C::Instant>>,
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quotas: Vec<String> = self.limiters.iter().map(|(q, _)| q.to_string()).collect();
        f.debug_struct("RateLimiter").field("quotas", &quotas).field("max_keys", &self.max_keys).finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with `settings`' globs compiled and no buckets yet.
    pub fn new(settings: &RateLimitSettings) -> Result<RateLimiter, BadRateLimitGlob> {
        RateLimiter::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on `clock` (governor's `FakeRelativeClock` in tests). A bad glob is an error naming it.
    pub fn with_clock(settings: &RateLimitSettings, clock: C) -> Result<RateLimiter<C>, BadRateLimitGlob> {
        RateLimiter::build(settings, clock, (RandomState::new(), RandomState::new()), &[])
    }

    /// The limiter for a reloaded `[rate_limit]`: a quota that is still configured keeps its buckets (a client
    /// that used up its burst does not get a fresh one because an unrelated line changed); a new or changed
    /// quota starts full; a removed one is dropped.
    pub fn reconfigured(&self, settings: &RateLimitSettings) -> Result<RateLimiter<C>, BadRateLimitGlob> {
        RateLimiter::build(settings, self.clock.clone(), self.seeds.clone(), &self.limiters)
            .map(|l| l.with_max_keys(self.max_keys))
    }

    fn build(
        settings: &RateLimitSettings,
        clock: C,
        seeds: (RandomState, RandomState),
        keep: &[(Quota, Arc<Buckets<C>>)],
    ) -> Result<RateLimiter<C>, BadRateLimitGlob> {
        let mut quotas: Vec<Quota> = Vec::new();
        let mut index_of = |q: Quota| match quotas.iter().position(|&x| x == q) {
            Some(i) => i,
            None => {
                quotas.push(q);
                quotas.len() - 1
            }
        };
        // A shared bucket is keyed by a text no name can be (names have no NUL), so it never
        // meets a per-tool bucket of the same client.
        let shared = |q: Quota, what: &str, pattern: &str| (q.per == Per::Glob).then(|| format!("\0{what}\0{pattern}"));
        let mut rules =
            |what: &'static str, list: &[(String, Quota)]| -> Result<Vec<(GlobMatcher, Rule)>, BadRateLimitGlob> {
                list.iter()
                    .map(|(pattern, q)| {
                        let glob = Glob::new(pattern).map_err(|source| BadRateLimitGlob {
                            section: what,
                            pattern: pattern.clone(),
                            source,
                        })?;
                        Ok((glob.compile_matcher(), Rule { limiter: index_of(*q), shared: shared(*q, what, pattern) }))
                    })
                    .collect()
            };
        let clients = rules("clients", &settings.clients)?;
        let tools = rules("tools", &settings.tools)?;
        let default = settings.default.map(|q| Rule { limiter: index_of(q), shared: shared(q, "default", "*") });
        let limiters: Vec<_> = quotas
            .into_iter()
            .map(|q| match keep.iter().find(|(k, _)| *k == q) {
                Some((_, b)) => (q, b.clone()),
                None => (q, Arc::new(Buckets::dashmap_with_clock(q.gcra(), clock.clone()))),
            })
            .collect();
        let keys = AtomicUsize::new(limiters_len(&limiters));
        Ok(RateLimiter {
            clients,
            tools,
            default,
            limiters,
            clock,
            seeds,
            max_keys: DEFAULT_MAX_KEYS,
            checks: AtomicUsize::new(0),
            keys,
            last_sweep: Mutex::new(None),
        })
    }

    /// Changes the cap on live buckets (default [`DEFAULT_MAX_KEYS`]).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Takes one cell from the bucket of (client, tool) — or of (client, glob) under a `per = "glob"` rule — or
    /// says how long to wait. `tool` is the name policy judges: a tool or prompt name, or a resource URI.
    pub fn check(&self, client: &str, tool: &str) -> Result<(), RateLimited> {
        let Some(rule) = self.rule(client, tool) else { return Ok(()) };
        self.enforce_cap()?;
        let (quota, buckets) = &self.limiters[rule.limiter];
        let (key, scope) = match &rule.shared {
            Some(shared) => (self.key(client, shared), SCOPE_CLIENT_GLOB),
            None => (self.key(client, tool), SCOPE_CLIENT_TOOL),
        };
        buckets.check_key(&key).map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            limit: quota.to_string(),
            scope: scope.to_owned(),
        })
    }

    /// The bucket `check` would take a cell from, resolved without taking it: for limits shared
    /// by replicas ([`shared::SharedLimits`]), which keep the cells in Redis. `None`: not limited.
    pub fn bucket<'a>(&'a self, client: &'a str, tool: &'a str) -> Option<Bucket<'a>> {
        let rule = self.rule(client, tool)?;
        let quota = self.limiters[rule.limiter].0;
        Some(match &rule.shared {
            Some(shared) => Bucket { quota, client, name: shared, scope: SCOPE_CLIENT_GLOB },
            None => Bucket { quota, client, name: tool, scope: SCOPE_CLIENT_TOOL },
        })
    }

    /// Drops the buckets that are full again (a fresh bucket would behave the same) and releases their memory.
    pub fn shrink(&self) {
        for (_, buckets) in &self.limiters {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        self.keys.store(self.len(), Ordering::Relaxed);
    }

    /// Live buckets across all quotas.
    pub fn len(&self) -> usize {
        limiters_len(&self.limiters)
    }

    /// No live bucket at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rule(&self, client: &str, tool: &str) -> Option<&Rule> {
        let first = |rules: &'_ [(GlobMatcher, Rule)], name: &str| -> Option<usize> {
            rules.iter().position(|(g, _)| g.is_match(name))
        };
        if let Some(i) = first(&self.clients, client) {
            return Some(&self.clients[i].1);
        }
        if let Some(i) = first(&self.tools, tool) {
            return Some(&self.tools[i].1);
        }
        self.default.as_ref()
    }

    fn key(&self, client: &str, tool: &str) -> u128 {
        let hash = |seed: &RandomState| seed.hash_one((client, tool));
        (u128::from(hash(&self.seeds.0)) << 64) | u128::from(hash(&self.seeds.1))
    }

    fn enforce_cap(&self) -> Result<(), RateLimited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RECOUNT_EVERY == 0 {
            self.keys.store(self.len(), Ordering::Relaxed);
        }
        if self.keys.load(Ordering::Relaxed) < self.max_keys {
            return Ok(());
        }
        if let Ok(mut last) = self.last_sweep.try_lock() {
            let now = self.clock.now();
            let due = last.is_none_or(|at| Duration::from(now.duration_since(at)) >= SWEEP_AT_CAP_EVERY);
            if due {
                *last = Some(now);
                self.shrink();
                if self.keys.load(Ordering::Relaxed) < self.max_keys {
                    return Ok(());
                }
            }
        }
        // Every bucket alive now is droppable once the slowest quota has refilled.
        let refill = self.limiters.iter().map(|(q, _)| q.refill_time()).max().unwrap_or_default();
        Err(RateLimited {
            retry_after: refill.max(SWEEP_AT_CAP_EVERY),
            limit: format!("{} live rate-limit buckets", self.max_keys),
            scope: SCOPE_GATEWAY.to_owned(),
        })
    }
}

pub mod shared;
#[cfg(test)]
mod tests;

fn limiters_len<C: Clock>(limiters: &[(Quota, Arc<Buckets<C>>)]) -> usize {
    limiters.iter().map(|(_, b)| b.len()).sum()
}
