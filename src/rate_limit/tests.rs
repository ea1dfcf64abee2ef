use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;

fn quota(per_minute: u32, burst: u32) -> Quota {
    Quota { per_minute: NonZeroU32::new(per_minute).unwrap(), burst: NonZeroU32::new(burst).unwrap(), per: Per::Tool }
}

fn limiter(settings: RateLimitSettings) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (RateLimiter::with_clock(&settings, clock.clone()).unwrap(), clock)
}

fn default_only(q: Quota) -> RateLimitSettings {
    RateLimitSettings { default: Some(q), ..Default::default() }
}

/// How many calls pass back to back before the first refusal.
fn burst_of(l: &RateLimiter<FakeRelativeClock>, client: &str, tool: &str) -> u32 {
    (0..1000).take_while(|_| l.check(client, tool).is_ok()).count() as u32
}

#[test]
fn burst_then_refusal_with_retry_after_then_recovery() {
    let (l, clock) = limiter(default_only(quota(60, 2)));
    assert!(l.check("alice", "a__x").is_ok());
    assert!(l.check("alice", "a__x").is_ok());
    // 60/min is one cell a second: the burst of 2 is spent, the next cell comes 1s after the first call.
    let refused = l.check("alice", "a__x").unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    assert_eq!(refused.retry_after_ms(), 1000);
    assert_eq!(refused.limit, "60/min burst 2");
    assert_eq!(refused.scope, "client+tool");

    clock.advance(Duration::from_millis(400));
    assert_eq!(l.check("alice", "a__x").unwrap_err().retry_after, Duration::from_millis(600));
    clock.advance(Duration::from_millis(600));
    assert!(l.check("alice", "a__x").is_ok());
    assert!(l.check("alice", "a__x").is_err());
    clock.advance(Duration::from_secs(10));
    assert_eq!(burst_of(&l, "alice", "a__x"), 2, "a long pause refills the whole burst, no more");
}

#[test]
fn retry_after_ms_rounds_up() {
    let r = RateLimited { retry_after: Duration::from_micros(1500), limit: String::new(), scope: String::new() };
    assert_eq!(r.retry_after_ms(), 2);
}

#[test]
fn buckets_are_per_client_and_per_tool() {
    let (l, _clock) = limiter(default_only(quota(60, 3)));
    assert_eq!(burst_of(&l, "alice", "a__x"), 3);
    assert_eq!(burst_of(&l, "bob", "a__x"), 3, "bob does not share alice's bucket");
    assert_eq!(burst_of(&l, "alice", "a__y"), 3, "another tool is another bucket");
    // No ambiguity from concatenation: ("ab", "c") is not ("a", "bc").
    assert_eq!(burst_of(&l, "ab", "c"), 3);
    assert_eq!(burst_of(&l, "a", "bc"), 3);
}

#[test]
fn tool_glob_beats_default_and_client_override_beats_tool_glob() {
    let settings = RateLimitSettings {
        default: Some(quota(120, 5)),
        tools: vec![("firecrawl__*".into(), quota(10, 2)), ("firecrawl__scrape".into(), quota(10, 4))],
        clients: vec![("svc-*".into(), quota(600, 7)), ("carol".into(), quota(60, 1))],
    };
    let (l, _clock) = limiter(settings);
    assert_eq!(burst_of(&l, "alice", "exa__search"), 5, "default");
    assert_eq!(burst_of(&l, "alice", "firecrawl__scrape"), 2, "first matching tool glob wins");
    assert_eq!(l.check("alice", "firecrawl__scrape").unwrap_err().limit, "10/min burst 2");
    assert_eq!(burst_of(&l, "svc-indexer", "firecrawl__crawl"), 7, "client glob beats tool glob");
    assert_eq!(burst_of(&l, "carol", "exa__search"), 1, "exact client beats default");
    assert_eq!(burst_of(&l, "carolyn", "exa__search"), 5, "exact client is exact");
}

#[test]
fn nothing_configured_means_unlimited_and_no_state() {
    let settings = RateLimitSettings { tools: vec![("slow__*".into(), quota(60, 1))], ..Default::default() };
    let (l, _clock) = limiter(settings);
    assert_eq!(burst_of(&l, "alice", "fast__x"), 1000);
    assert_eq!(l.len(), 0);
    assert_eq!(burst_of(&l, "alice", "slow__x"), 1);
}

#[test]
fn bad_glob_is_named() {
    let settings = RateLimitSettings { tools: vec![("a__[x".into(), quota(60, 1))], ..Default::default() };
    let err = RateLimiter::new(&settings).err().unwrap().to_string();
    assert!(err.contains("rate_limit.tools") && err.contains("a__[x"), "{err}");
}

#[test]
fn shrink_bounds_memory() {
    let (l, clock) = limiter(default_only(quota(60, 2)));
    for i in 0..100_000 {
        l.check(&format!("client-{i}"), "a__x").unwrap();
    }
    assert_eq!(l.len(), 100_000);
    l.shrink();
    assert_eq!(l.len(), 100_000, "buckets that are not full yet stay");
    clock.advance(Duration::from_secs(3));
    l.shrink();
    assert_eq!(l.len(), 0);
    assert_eq!(burst_of(&l, "client-7", "a__x"), 2, "a dropped bucket comes back full");
}

#[test]
fn at_the_cap_new_calls_are_refused_until_buckets_refill() {
    let (l, clock) = limiter(default_only(quota(60, 2)));
    let l = l.with_max_keys(100);
    let mut refused = None;
    for i in 0..1000 {
        if let Err(e) = l.check(&format!("client-{i}"), "a__x") {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("the cap refuses");
    assert_eq!(refused.scope, "gateway");
    assert_eq!(refused.retry_after, Duration::from_secs(3), "(burst + 1) cells at 1/s");
    assert!(l.len() <= 100 + RECOUNT_EVERY, "overshoot is bounded: {}", l.len());
    assert_eq!(l.check("client-0", "a__x").unwrap_err().scope, "gateway");

    clock.advance(Duration::from_secs(3));
    assert!(l.check("someone-new", "a__x").is_ok(), "the limiter sweeps full buckets itself");
    assert_eq!(l.len(), 1);
}

#[test]
fn shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RateLimiter>();
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_quotas_and_resets_changed_ones() {
    let tools = |q: Quota| vec![("a__*".to_string(), quota(60, 2)), ("b__*".to_string(), q)];
    let (old, _clock) = limiter(RateLimitSettings { tools: tools(quota(60, 3)), ..Default::default() });
    assert_eq!(burst_of(&old, "alice", "a__x"), 2);
    assert_eq!(burst_of(&old, "alice", "b__x"), 3);

    // `b__*` changes its quota; `a__*` keeps its own, and a new default appears.
    let new = old
        .reconfigured(&RateLimitSettings {
            default: Some(quota(60, 1)),
            tools: tools(quota(60, 5)),
            ..Default::default()
        })
        .unwrap();
    assert!(new.check("alice", "a__x").is_err(), "alice spent a__*'s burst before the reload: still spent");
    assert_eq!(burst_of(&new, "alice", "b__x"), 5, "a changed quota starts full, at its new size");
    assert_eq!(burst_of(&new, "alice", "c__x"), 1, "the new default applies");
    assert!(
        old.reconfigured(&RateLimitSettings { tools: vec![("[".into(), quota(1, 1))], ..Default::default() }).is_err()
    );
}

#[test]
fn a_per_glob_rule_shares_one_bucket_between_every_name_it_matches() {
    let shared = Quota { per: Per::Glob, ..quota(60, 3) };
    let settings = RateLimitSettings {
        default: Some(quota(60, 3)),
        tools: vec![("crawl__*".into(), shared)],
        ..Default::default()
    };
    let (l, _clock) = limiter(settings);
    assert!(l.check("alice", "crawl__a").is_ok());
    assert!(l.check("alice", "crawl__b").is_ok());
    assert!(l.check("alice", "crawl__c").is_ok());
    let refused = l.check("alice", "crawl__d").unwrap_err();
    assert_eq!(refused.scope, SCOPE_CLIENT_GLOB, "the fourth name finds the glob's bucket empty");
    assert_eq!(burst_of(&l, "bob", "crawl__z"), 3, "per client still");
    assert_eq!(burst_of(&l, "alice", "other"), 3, "the default stays per tool");
    assert_eq!(burst_of(&l, "alice", "another"), 3);
}
