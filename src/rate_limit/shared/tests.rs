//! Against the machine's real Redis (`SENTINEL_TEST_REDIS`, default 127.0.0.1:6379), each test
//! under a key prefix of its own.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::*;
use crate::rate_limit::{Per, RateLimitSettings, RateLimiter, SCOPE_CLIENT_GLOB, SCOPE_CLIENT_TOOL};

fn redis_url() -> String {
    std::env::var("SENTINEL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("sentinel-test-{}:", uuid::Uuid::new_v4())
}

async fn replica(prefix: &str) -> SharedLimits {
    SharedLimits::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("these tests need Redis at {} (set SENTINEL_TEST_REDIS): {e}", redis_url()))
}

fn quota(per_minute: u32, burst: u32, per: Per) -> Quota {
    Quota { per_minute: NonZeroU32::new(per_minute).unwrap(), burst: NonZeroU32::new(burst).unwrap(), per }
}

/// Two replicas (two connections) spread 20 calls of one client to one tool over a quota of
/// 10 a minute with a burst of 10: exactly 10 are allowed, whichever replica took them.
#[tokio::test]
async fn a_quota_is_shared_by_every_replica() {
    let prefix = prefix();
    let (a, b) = (replica(&prefix).await, replica(&prefix).await);
    let settings = RateLimitSettings { default: Some(quota(10, 10, Per::Tool)), ..Default::default() };
    let limiter = RateLimiter::new(&settings).unwrap();
    let bucket = limiter.bucket("alice", "t__echo").expect("limited");
    let mut allowed = 0;
    for i in 0..20 {
        let replica = if i % 2 == 0 { &a } else { &b };
        if replica.check(&bucket).await.expect("Redis answers").is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);

    // Another client, or another tool, has a bucket of its own.
    let other = limiter.bucket("bob", "t__echo").unwrap();
    assert!(a.check(&other).await.unwrap().is_ok());
    let other_tool = limiter.bucket("alice", "t__other").unwrap();
    assert!(b.check(&other_tool).await.unwrap().is_ok());
}

/// The refusal says when the next cell comes, as the local limiter does: one cell every 6 s
/// at 10 a minute, so right after the burst the wait is just under 6 s, and the refusal names
/// the quota and the scope.
#[tokio::test]
async fn a_refusal_says_exactly_when_to_retry() {
    let prefix = prefix();
    let a = replica(&prefix).await;
    let limiter =
        RateLimiter::new(&RateLimitSettings { default: Some(quota(10, 2, Per::Tool)), ..Default::default() }).unwrap();
    let bucket = limiter.bucket("alice", "t__echo").unwrap();
    assert!(a.check(&bucket).await.unwrap().is_ok());
    assert!(a.check(&bucket).await.unwrap().is_ok());
    let refused = a.check(&bucket).await.unwrap().expect_err("the burst of 2 is used up");
    assert!(
        refused.retry_after <= Duration::from_secs(6) && refused.retry_after > Duration::from_secs(5),
        "{:?}",
        refused.retry_after
    );
    assert_eq!(refused.limit, "10/min burst 2");
    assert_eq!(refused.scope, SCOPE_CLIENT_TOOL);
}

/// Under a `per = "glob"` rule every name the glob matches draws from the client's one bucket,
/// in Redis as locally.
#[tokio::test]
async fn a_glob_rule_shares_one_bucket_across_its_tools() {
    let prefix = prefix();
    let (a, b) = (replica(&prefix).await, replica(&prefix).await);
    let settings = RateLimitSettings { tools: vec![("exa__*".into(), quota(60, 3, Per::Glob))], ..Default::default() };
    let limiter = RateLimiter::new(&settings).unwrap();
    let names = ["exa__search", "exa__crawl", "exa__answer", "exa__search"];
    let mut outcomes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bucket = limiter.bucket("alice", name).unwrap();
        outcomes.push((if i % 2 == 0 { &a } else { &b }).check(&bucket).await.unwrap());
    }
    assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(outcomes[3].as_ref().unwrap_err().scope, SCOPE_CLIENT_GLOB);
    assert!(limiter.bucket("alice", "context7__docs").is_none(), "no rule, no limit");
}

/// A bucket's key lives only until the bucket is full again: Redis holds only buckets in use.
#[tokio::test]
async fn a_bucket_expires_once_full_again() {
    let prefix = prefix();
    let a = replica(&prefix).await;
    let limiter =
        RateLimiter::new(&RateLimitSettings { default: Some(quota(600, 5, Per::Tool)), ..Default::default() }).unwrap();
    let bucket = limiter.bucket("alice", "t__echo").unwrap();
    assert!(a.check(&bucket).await.unwrap().is_ok());
    let mut conn = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = a.key(&bucket);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    // One call at 600/min: full again 100 ms later (plus the 1 ms the script adds).
    assert!((1..=101).contains(&ttl), "PTTL {ttl}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(!exists, "the key of a full bucket is gone");
}

/// Connecting to a Redis that accepts connections but never answers (a hung server, a
/// black-holed network) gives up within its bound, and one that is not there at all is
/// reported at once. (A call's bound, once connected, is `a_redis_outage_fails_fast_and_recovers`.)
#[tokio::test]
async fn connecting_to_a_silent_or_absent_redis_gives_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            sockets.push(s);
        }
    });
    let started = Instant::now();
    let connected = SharedLimits::connect(&format!("redis://{silent}"), "x:").await;
    assert!(connected.is_err(), "a Redis that never answers the handshake is unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = SharedLimits::connect(&format!("redis://{closed}"), "x:").await.err().expect("refused");
    assert!(err.to_string().contains("Redis is unavailable"), "{err}");
    held.abort();
}

/// Redis stopping under a connected limiter: calls get `Unavailable` quickly, and checks work
/// again by themselves once it answers. A proxy in front of the real Redis plays the outage.
#[tokio::test]
async fn a_redis_outage_fails_fast_and_recovers() {
    let upstream = redis_url().trim_start_matches("redis://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(upstream).await;
    let prefix = prefix();
    let a = SharedLimits::connect(&format!("redis://{}", proxy.addr), &prefix).await.unwrap();
    let limiter =
        RateLimiter::new(&RateLimitSettings { default: Some(quota(6000, 100, Per::Tool)), ..Default::default() })
            .unwrap();
    let bucket = limiter.bucket("alice", "t__echo").unwrap();
    assert!(a.check(&bucket).await.unwrap().is_ok());

    proxy.cut(true);
    let started = Instant::now();
    let during = a.check(&bucket).await;
    assert!(during.is_err(), "{during:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "failed in {:?}", started.elapsed());

    proxy.cut(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = a.check(&bucket).await {
            assert!(r.is_ok());
            break;
        }
        assert!(Instant::now() < deadline, "the limiter did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy that can drop every connection and refuse new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (d, g) = (down.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, down, generation }
    }

    fn cut(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}
