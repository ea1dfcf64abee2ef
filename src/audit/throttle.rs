//! Throttling of `denied_auth` records per source. Anyone who can reach the gateway can be
//! refused without a token, as often as they like; each refusal is a record in the spool, the
//! store and the log. Past a small burst per source (and overall), refusals are still answered
//! 401 but no longer recorded one by one: they are counted in
//! `sentinel_audit_suppressed_total{reason="denied_auth_throttled"}`, and the first suppressed
//! refusal of a source says so in the log once.
//!
//! Hand-written GCRA buckets rather than `governor`'s keyed limiter: its map has no bound on
//! the number of keys, and here a source the map has no room for must fall back to a shared
//! bucket rather than get a fresh one (an attacker with many addresses would otherwise get a
//! fresh burst per address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records kept per source before throttling starts, and the pace after.
const SOURCE_BURST: u32 = 20;
const SOURCE_INTERVAL: Duration = Duration::from_secs(6);
/// Records kept across all sources: the bound on what unauthenticated traffic costs in disk.
const GLOBAL_BURST: u32 = 100;
const GLOBAL_INTERVAL: Duration = Duration::from_millis(100);
/// Sources remembered at once; more share one bucket.
const MAX_SOURCES: usize = 4096;

/// One GCRA bucket: the theoretical arrival time of the next cell.
#[derive(Clone, Copy)]
struct Bucket {
    tat: Instant,
    /// Whether the log has said that this source is throttled: once per episode, which ends
    /// when the source has been quiet long enough for its bucket to be full again.
    told: bool,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket { tat: now, told: false }
    }

    /// Takes a cell if the burst allows it: `burst` at once, then one per `interval`.
    fn take(&mut self, now: Instant, interval: Duration, burst: u32) -> bool {
        let tat = self.tat.max(now);
        if tat.duration_since(now) > interval * burst.saturating_sub(1) {
            return false;
        }
        self.tat = tat + interval;
        true
    }

    /// Full again: indistinguishable from a fresh bucket, so it may be forgotten.
    fn is_full(&self, now: Instant) -> bool {
        self.tat <= now
    }
}

/// Where a request came from, as throttling counts it: an IPv4 address, or an IPv6 /64 (one
/// host usually has a whole /64 to pick addresses from).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Rate limits the `denied_auth` records of unauthenticated requests: per source, over a bounded map, and in total.
pub struct Throttle {
    state: Mutex<State>,
}

struct State {
    sources: HashMap<Source, Bucket>,
    /// Shared by the sources that found the map full.
    overflow: Bucket,
    global: Bucket,
}

/// What became of one refusal's record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the record.
    Record,
    /// Not recorded.
    Suppress {
        /// This source has just started being throttled (its first suppressed refusal is logged).
        first: bool,
    },
}

impl Throttle {
    /// A throttle whose buckets are all full at `now`.
    pub fn new(now: Instant) -> Throttle {
        Throttle {
            state: Mutex::new(State { sources: HashMap::new(), overflow: Bucket::new(now), global: Bucket::new(now) }),
        }
    }

    /// Whether a `denied_auth` record from `peer` is kept. Without a peer (stdio: the one local
    /// client) it always is.
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Verdict {
        let Some(ip) = peer else { return Verdict::Record };
        let source = Source::of(ip);
        let mut st = self.state.lock().expect("throttle lock");
        if !st.sources.contains_key(&source) && st.sources.len() >= MAX_SOURCES {
            st.sources.retain(|_, b| !b.is_full(now));
        }
        let State { sources, overflow, global } = &mut *st;
        let bucket = if sources.len() < MAX_SOURCES || sources.contains_key(&source) {
            sources.entry(source).or_insert_with(|| Bucket::new(now))
        } else {
            overflow
        };
        // A source that went quiet long enough to refill its burst starts a new episode.
        if bucket.is_full(now) {
            bucket.told = false;
        }
        if bucket.take(now, SOURCE_INTERVAL, SOURCE_BURST) && global.take(now, GLOBAL_INTERVAL, GLOBAL_BURST) {
            return Verdict::Record;
        }
        let first = !bucket.told;
        bucket.told = true;
        Verdict::Suppress { first }
    }

    /// Forgets the sources whose buckets are full again (called now and then).
    pub fn shrink(&self, now: Instant) {
        let mut st = self.state.lock().expect("throttle lock");
        st.sources.retain(|_, b| !b.is_full(now));
        st.sources.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_source_gets_its_burst_then_one_record_per_interval() {
        let t0 = Instant::now();
        let t = Throttle::new(t0);
        let kept = (0..50).filter(|_| t.check(ip("192.0.2.1"), t0) == Verdict::Record).count();
        assert_eq!(kept, SOURCE_BURST as usize);
        assert_eq!(t.check(ip("192.0.2.1"), t0), Verdict::Suppress { first: false }, "said once, not again");
        assert_eq!(t.check(ip("192.0.2.2"), t0), Verdict::Record, "another source has its own bucket");
        let soon = t0 + Duration::from_millis(1);
        assert_eq!(t.check(ip("192.0.2.1"), soon), Verdict::Suppress { first: false }, "no more a moment later");
        assert_eq!(t.check(ip("192.0.2.1"), t0 + SOURCE_INTERVAL), Verdict::Record, "one more after a pause");
        assert_eq!(t.check(ip("192.0.2.1"), t0 + SOURCE_INTERVAL), Verdict::Suppress { first: false });
        assert_eq!(t.check(None, t0), Verdict::Record, "stdio is never throttled");
    }

    #[test]
    fn the_first_suppression_of_an_episode_is_marked() {
        let t0 = Instant::now();
        let t = Throttle::new(t0);
        for _ in 0..SOURCE_BURST {
            assert_eq!(t.check(ip("192.0.2.9"), t0), Verdict::Record);
        }
        assert_eq!(t.check(ip("192.0.2.9"), t0), Verdict::Suppress { first: true });
        assert_eq!(t.check(ip("192.0.2.9"), t0), Verdict::Suppress { first: false });
        // Still sending at the allowed pace: the same episode, not said again.
        assert_eq!(t.check(ip("192.0.2.9"), t0 + SOURCE_INTERVAL), Verdict::Record);
        assert_eq!(t.check(ip("192.0.2.9"), t0 + SOURCE_INTERVAL), Verdict::Suppress { first: false });
        // Quiet until the burst is back: a new episode.
        let later = t0 + SOURCE_INTERVAL * (SOURCE_BURST + 2);
        for _ in 0..SOURCE_BURST {
            assert_eq!(t.check(ip("192.0.2.9"), later), Verdict::Record);
        }
        assert_eq!(t.check(ip("192.0.2.9"), later), Verdict::Suppress { first: true });
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_many_sources_stay_bounded() {
        let t0 = Instant::now();
        let t = Throttle::new(t0);
        let kept = (0..50).filter(|i| t.check(ip(&format!("2001:db8::{i:x}")), t0) == Verdict::Record).count();
        assert_eq!(kept, SOURCE_BURST as usize, "addresses of one /64 share a bucket");
        // Many distinct sources: the overall bucket bounds what is kept.
        let t = Throttle::new(t0);
        let kept = (0..10_000u32)
            .filter(|i| t.check(Some(IpAddr::V4((0x0a00_0000 + i).into())), t0) == Verdict::Record)
            .count();
        assert_eq!(kept, GLOBAL_BURST as usize);
        assert!(t.state.lock().unwrap().sources.len() <= MAX_SOURCES);
    }
}
