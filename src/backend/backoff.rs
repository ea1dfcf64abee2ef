//! When to restart a stdio backend that exited: exponential backoff with jitter, reset by a stable run, and a
//! crash loop reported when the process keeps exiting quickly.
//!
//! The n-th restart since the last stable run waits `min(cap, base * 2^(n-1))` with *equal jitter*: half of that
//! fixed, the other half random. Equal rather than full jitter (a random delay in `[0, d]`) because a crash loop
//! must actually slow down: full jitter may restart a crashing process at once, however many times it crashed.
//! With equal jitter each delay is at least the one before until the cap is near, and restarts of many backends
//! that crashed together (say, a shared dependency went away) still spread over half of each delay.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::time::Duration;

/// Restarts of a stdio backend, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    /// The delay before the first restart (before jitter).
    pub base: Duration,
    /// The longest delay between restarts (before jitter).
    pub cap: Duration,
    /// A run at least this long was stable: the next restart starts again from `base`.
    pub stable_after: Duration,
    /// This many consecutive exits without a stable run is a crash loop.
    pub crash_loop: NonZeroU32,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            crash_loop: NonZeroU32::new(5).expect("5 is not zero"),
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// How long to wait before starting the process again.
    pub delay: Duration,
    /// Which restart this is since the last stable run: 1 for the first.
    pub attempt: u32,
    /// The process has exited quickly `crash_loop` times or more in a row. Stays set on every further quick exit,
    /// until a stable run.
    pub crash_loop: bool,
}

/// The restart schedule of one stdio backend, fed each exit of its process.
#[derive(Debug)]
pub struct RestartPolicy {
    settings: BackoffSettings,
    /// Restarts since the last stable run, counting the one after that run: the exponent of the delay.
    attempt: u32,
    /// Quick exits in a row: what makes a crash loop. Unlike `attempt`, not counting the exit ending a stable run.
    quick_exits: u32,
    jitter: Jitter,
}

impl RestartPolicy {
    /// A policy with no exits seen yet.
    pub fn new(settings: BackoffSettings) -> Self {
        RestartPolicy { settings, attempt: 0, quick_exits: 0, jitter: Jitter::from_entropy() }
    }

    /// Called when the process exits after running for `ran_for`: how long to wait before the next start, and
    /// whether this is now a crash loop.
    pub fn on_exit(&mut self, ran_for: Duration) -> Restart {
        let s = &self.settings;
        if ran_for >= s.stable_after {
            self.attempt = 0;
            self.quick_exits = 0;
        } else {
            self.quick_exits = self.quick_exits.saturating_add(1);
        }
        self.attempt = self.attempt.saturating_add(1);
        let exponential = 2u32.checked_pow(self.attempt - 1).and_then(|factor| s.base.checked_mul(factor));
        let delay = exponential.map_or(s.cap, |d| d.min(s.cap));
        Restart {
            delay: self.jitter.equal(delay),
            attempt: self.attempt,
            crash_loop: self.quick_exits >= s.crash_loop.get(),
        }
    }
}

/// A SplitMix64 generator. Hand-written because jitter needs only cheap, well-spread numbers, not a
/// cryptographic or even a statistically strong source, and not a new dependency.
#[derive(Debug)]
struct Jitter {
    state: u64,
}

impl Jitter {
    /// Seeded from the process's random hasher keys, so backends (and gateways) restart out of step.
    fn from_entropy() -> Self {
        Jitter { state: RandomState::new().hash_one(0u8) }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A delay in `[d/2, d]`: half fixed, half random.
    fn equal(&mut self, d: Duration) -> Duration {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        // `nanos - half` is at least `half`; the modulo's bias is negligible for spans far below 2^64 ns.
        let random = self.next() % (nanos - half + 1);
        Duration::from_nanos(half + random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    fn policy(crash_loop: u32) -> RestartPolicy {
        RestartPolicy::new(BackoffSettings {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            crash_loop: NonZeroU32::new(crash_loop).unwrap(),
        })
    }

    /// The delay before jitter of the n-th quick restart: 0.5 s, 1 s, 2 s ... capped at 30 s.
    fn unjittered(attempt: u32) -> Duration {
        Duration::from_millis(500 * 2u64.pow((attempt - 1).min(10))).min(Duration::from_secs(30))
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_up_to_the_cap() {
        for _ in 0..50 {
            let mut p = policy(100);
            let mut last = Duration::ZERO;
            for attempt in 1..=40 {
                let r = p.on_exit(QUICK);
                assert_eq!(r.attempt, attempt);
                let d = unjittered(attempt);
                assert!(
                    r.delay >= d / 2 && r.delay <= d,
                    "attempt {attempt}: {:?} not in [{:?}, {d:?}]",
                    r.delay,
                    d / 2
                );
                if attempt > 1 && d == 2 * unjittered(attempt - 1) {
                    assert!(r.delay >= last, "below the cap, equal jitter never shortens the next delay");
                }
                assert!(r.delay <= Duration::from_secs(30));
                last = r.delay;
            }
        }
    }

    #[test]
    fn jitter_spreads_restarts() {
        let delays: std::collections::HashSet<_> = (0..20).map(|_| policy(5).on_exit(QUICK).delay).collect();
        assert!(delays.len() > 1, "twenty fresh policies all chose {delays:?}");
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut p = policy(100);
        for _ in 0..8 {
            p.on_exit(QUICK);
        }
        let r = p.on_exit(Duration::from_secs(60));
        assert_eq!(r.attempt, 1);
        assert!(r.delay <= Duration::from_millis(500));
        let r = p.on_exit(QUICK);
        assert_eq!(r.attempt, 2, "a quick exit right after the stable run backs off from there");
        assert!(r.delay >= Duration::from_millis(500) && r.delay <= Duration::from_secs(1));
    }

    #[test]
    fn crash_loop_flagged_after_k_quick_exits_until_a_stable_run() {
        let mut p = policy(5);
        let flags: Vec<bool> = (0..7).map(|_| p.on_exit(QUICK).crash_loop).collect();
        assert_eq!(flags, [false, false, false, false, true, true, true]);
        assert!(!p.on_exit(Duration::from_secs(3600)).crash_loop);
        let flags: Vec<bool> = (0..5).map(|_| p.on_exit(QUICK).crash_loop).collect();
        assert_eq!(flags, [false, false, false, false, true], "the count starts again after a stable run");
    }

    #[test]
    fn huge_attempt_counts_stay_at_the_cap() {
        let mut p = policy(1);
        (p.attempt, p.quick_exits) = (u32::MAX - 1, u32::MAX - 1);
        for _ in 0..3 {
            let r = p.on_exit(QUICK);
            assert!(r.delay >= Duration::from_secs(15) && r.delay <= Duration::from_secs(30));
            assert!(r.crash_loop);
        }
    }
}
