//! A circuit breaker per backend: after `failures` consecutive failed calls the backend is left alone for a
//! while, then one probe call decides whether it is healthy again. The first open lasts [`FIRST_OPEN`], and
//! each failed probe doubles it up to `cooldown`: a backend that restarts in a second or two (a redeploy, a
//! crash) is probed again at once, while one that stays down is left alone for longer and longer. A fixed
//! `cooldown` kept a restarted server refused for its whole 30 s although it was back after 2 s.
//!
//! An explicit state machine, shaped like linkerd's consecutive-failures breaker:
//!
//! ```text
//!   Closed ──N consecutive failures──▶ Open ──cooldown over, next acquire──▶ HalfOpen (one probe out)
//!     ▲                                 ▲                                        │
//!     │                                 └────────────── probe fails ─────────────┤
//!     └──────────────────────────────────────────────── probe succeeds ──────────┘
//! ```
//!
//! The breaker does not classify outcomes: the caller settles each [`Permit`] as a success or a failure.
//! Failures are what say the backend is unhealthy: timeouts, transport errors, HTTP 5xx. A tool result with
//! `isError` is not one: the backend answered. A permit dropped without a verdict (the call was cancelled) counts
//! as neither, and frees the half-open probe slot for the next caller.

use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// While the one probe is out, the others are told to come back after this (or the cooldown, if shorter): the
/// probe's outcome is not known yet, and it is usually known within a call's time.
const PROBE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long the breaker stays open the first time (or `cooldown`, if shorter); doubled by each failed probe.
pub const FIRST_OPEN: Duration = Duration::from_secs(1);

/// A backend's breaker, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures: NonZeroU32,
    /// The longest an open breaker refuses calls before letting one probe through (see [`FIRST_OPEN`]).
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failures: NonZeroU32::new(5).expect("5 is not zero"), cooldown: Duration::from_secs(30) }
    }
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Every call, counting consecutive failures.
    Closed,
    /// No call, until the cooldown ends.
    Open,
    /// One probe call; the rest are refused until its verdict.
    HalfOpen,
}

/// A change of state caused by a verdict, for the caller to log, alert or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the verdict.
    pub from: State,
    /// The state after it.
    pub to: State,
}

/// A call refused by the breaker: JSON-RPC -32014 with `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: retry after {retry_after:?}")]
pub struct Refused {
    /// How long until the breaker lets a probe through.
    pub retry_after: Duration,
}

impl Refused {
    /// `retry_after` in whole milliseconds, rounded up: a client that waits this long finds the cooldown over.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// The state proper. `HalfOpen` is entered lazily, by the first acquire after the cooldown.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Opens since the breaker last closed: the exponent of how long the next open lasts.
    opens: u32,
    /// Bumped on every change of phase. A permit remembers the epoch it was issued in, and its verdict counts
    /// only in that same epoch: a slow call let through while closed must not close a breaker that has since
    /// opened, nor reopen one that a probe has just closed.
    epoch: u64,
}

/// One backend's circuit breaker. Cheap per call: a mutex held for a few instructions, never across an `.await`.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner { phase: Phase::Closed { failures: 0 }, opens: 0, epoch: 0 }),
        }
    }

    /// Before a call: a permit to go ahead (to be settled with its verdict), or a refusal while the breaker is
    /// open, or half-open with the probe already out.
    pub fn acquire(&self) -> Result<Permit<'_>, Refused> {
        let now = Instant::now();
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if now < until => return Err(Refused { retry_after: until - now }),
            Phase::Open { .. } => {
                inner.epoch += 1;
                true
            }
            Phase::HalfOpen { probe_out: false } => true,
            Phase::HalfOpen { probe_out: true } => {
                return Err(Refused { retry_after: PROBE_RETRY_AFTER.min(self.settings.cooldown) });
            }
        };
        if probe {
            inner.phase = Phase::HalfOpen { probe_out: true };
        }
        Ok(Permit { breaker: self, epoch: inner.epoch, probe, settled: false })
    }

    /// The state as the next call would find it: an open breaker whose cooldown is over reads as half-open.
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { until } if Instant::now() < until => State::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// The state is a few plain fields updated without panicking in between, so a poisoned lock still holds a
    /// consistent state and is used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, epoch: u64, success: bool) -> Option<Transition> {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return None;
        }
        let (from, phase) = match (inner.phase, success) {
            (Phase::Closed { .. }, true) => {
                inner.phase = Phase::Closed { failures: 0 };
                return None;
            }
            (Phase::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures < self.settings.failures.get() {
                    inner.phase = Phase::Closed { failures };
                    return None;
                }
                (State::Closed, Phase::Open { until: Instant::now() + self.open_for(&mut inner) })
            }
            // Only the probe is issued in a half-open epoch, so this verdict is the probe's.
            (Phase::HalfOpen { .. }, true) => {
                inner.opens = 0;
                (State::HalfOpen, Phase::Closed { failures: 0 })
            }
            (Phase::HalfOpen { .. }, false) => {
                (State::HalfOpen, Phase::Open { until: Instant::now() + self.open_for(&mut inner) })
            }
            // Opening bumps the epoch, so no permit of this epoch is still out.
            (Phase::Open { .. }, _) => return None,
        };
        inner.phase = phase;
        inner.epoch += 1;
        let to = if matches!(phase, Phase::Closed { .. }) { State::Closed } else { State::Open };
        Some(Transition { from, to })
    }

    /// How long the open that starts now lasts: [`FIRST_OPEN`] doubled for each open since the breaker last
    /// closed, at most `cooldown`.
    fn open_for(&self, inner: &mut Inner) -> Duration {
        let doublings = inner.opens.min(16);
        inner.opens = inner.opens.saturating_add(1);
        FIRST_OPEN.saturating_mul(1 << doublings).min(self.settings.cooldown)
    }

    /// A permit dropped without a verdict: if it was the probe, the next caller may probe.
    fn abandon(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch && matches!(inner.phase, Phase::HalfOpen { probe_out: true }) {
            inner.phase = Phase::HalfOpen { probe_out: false };
        }
    }
}

/// Leave to make one call. Settle it with [`Permit::success`] or [`Permit::failure`]; dropping it unsettled
/// (the call was cancelled) counts as neither.
#[derive(Debug)]
#[must_use = "a permit is settled with success() or failure(); dropping it records nothing"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    epoch: u64,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// Whether this call is the half-open probe, whose verdict closes or reopens the breaker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The backend answered. Returns the transition to closed if this was a successful probe.
    pub fn success(mut self) -> Option<Transition> {
        self.settled = true;
        self.breaker.settle(self.epoch, true)
    }

    /// The backend timed out, could not be reached, or answered with a server error. Returns the transition to
    /// open if this failure opened (or reopened) the breaker.
    pub fn failure(mut self) -> Option<Transition> {
        self.settled = true;
        self.breaker.settle(self.epoch, false)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.abandon(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn breaker(failures: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings { failures: NonZeroU32::new(failures).unwrap(), cooldown: COOLDOWN })
    }

    /// Fails `n` calls in a row, returning the last transition.
    fn fail(b: &CircuitBreaker, n: u32) -> Option<Transition> {
        (0..n).map(|_| b.acquire().unwrap().failure()).last().flatten()
    }

    const OPENED: Transition = Transition { from: State::Closed, to: State::Open };
    const REOPENED: Transition = Transition { from: State::HalfOpen, to: State::Open };
    const CLOSED: Transition = Transition { from: State::HalfOpen, to: State::Closed };

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures() {
        let b = breaker(3);
        assert_eq!(fail(&b, 2), None);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(fail(&b, 1), Some(OPENED));
        assert_eq!(b.state(), State::Open);
        assert!(b.acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_carries_the_remaining_open_time() {
        let b = breaker(1);
        fail(&b, 1);
        assert_eq!(b.acquire().unwrap_err().retry_after, FIRST_OPEN);
        tokio::time::advance(Duration::from_millis(400)).await;
        let refused = b.acquire().unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert_eq!(refused.retry_after_ms(), 600);
    }

    /// Each failed probe doubles the open time, up to `cooldown`; a successful probe starts again from the
    /// first: a backend back after a restart is probed within a second, one that stays down less and less.
    #[tokio::test(start_paused = true)]
    async fn open_time_doubles_per_failed_probe_up_to_the_cooldown_and_resets_on_close() {
        let b = breaker(1);
        fail(&b, 1);
        let mut expected = FIRST_OPEN;
        for _ in 0..8 {
            assert_eq!(b.acquire().unwrap_err().retry_after, expected);
            tokio::time::advance(expected).await;
            assert_eq!(b.acquire().unwrap().failure(), Some(REOPENED));
            expected = (expected * 2).min(COOLDOWN);
        }
        assert_eq!(expected, COOLDOWN, "capped");
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(b.acquire().unwrap().success(), Some(CLOSED));
        fail(&b, 1);
        assert_eq!(b.acquire().unwrap_err().retry_after, FIRST_OPEN, "closed, the next open is short again");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_interleaved_reset_the_count() {
        let b = breaker(3);
        for _ in 0..5 {
            assert_eq!(fail(&b, 2), None);
            assert_eq!(b.acquire().unwrap().success(), None);
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(fail(&b, 3), Some(OPENED));
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_probe_among_concurrent_callers() {
        let b = breaker(1);
        fail(&b, 1);
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(b.state(), State::HalfOpen);
        let probe = b.acquire().unwrap();
        assert!(probe.is_probe());
        for _ in 0..10 {
            let refused = b.acquire().unwrap_err();
            assert_eq!(refused.retry_after, PROBE_RETRY_AFTER);
        }
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(probe.success(), Some(CLOSED));
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_probe_among_concurrent_tasks() {
        let b = std::sync::Arc::new(breaker(1));
        fail(&b, 1);
        tokio::time::advance(COOLDOWN).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (b, barrier) = (b.clone(), barrier.clone());
                tokio::spawn(async move {
                    let permit = b.acquire();
                    // Hold the permit until every task has tried, as a slow probe call would.
                    barrier.wait().await;
                    permit.is_ok()
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += usize::from(task.await.unwrap());
        }
        assert_eq!(admitted, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes() {
        let b = breaker(2);
        fail(&b, 2);
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(b.acquire().unwrap().success(), Some(CLOSED));
        assert_eq!(b.state(), State::Closed);
        // Closed afresh: the count starts again from zero.
        assert_eq!(fail(&b, 1), None);
        assert!(b.acquire().is_ok_and(|p| !p.is_probe()));
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_twice_as_long() {
        let b = breaker(2);
        fail(&b, 2);
        tokio::time::advance(FIRST_OPEN).await;
        assert_eq!(b.acquire().unwrap().failure(), Some(REOPENED));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.acquire().unwrap_err().retry_after, FIRST_OPEN * 2);
        tokio::time::advance(FIRST_OPEN * 2).await;
        assert!(b.acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_probe_frees_the_slot() {
        let b = breaker(1);
        fail(&b, 1);
        tokio::time::advance(COOLDOWN).await;
        let probe = b.acquire().unwrap();
        assert!(b.acquire().is_err());
        drop(probe);
        assert_eq!(b.state(), State::HalfOpen);
        let next = b.acquire().unwrap();
        assert!(next.is_probe());
        assert_eq!(next.success(), Some(CLOSED));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_call_while_closed_counts_as_neither() {
        let b = breaker(2);
        fail(&b, 1);
        drop(b.acquire().unwrap());
        assert_eq!(fail(&b, 1), Some(OPENED), "the cancelled call did not reset the count");
    }

    #[tokio::test(start_paused = true)]
    async fn late_verdicts_from_before_opening_are_ignored() {
        let b = breaker(1);
        let slow_success = b.acquire().unwrap();
        let slow_failure = b.acquire().unwrap();
        assert_eq!(fail(&b, 1), Some(OPENED));
        assert_eq!(slow_success.success(), None);
        assert_eq!(b.state(), State::Open, "a call let through before opening does not close it");
        tokio::time::advance(COOLDOWN).await;
        let probe = b.acquire().unwrap();
        assert_eq!(slow_failure.failure(), None);
        assert_eq!(probe.success(), Some(CLOSED));
    }
}
