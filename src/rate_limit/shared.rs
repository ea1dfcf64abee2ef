//! Rate limits shared by every replica (`[cluster] redis`, issue #13): the same GCRA as
//! [`RateLimiter`](super::RateLimiter), with each bucket's state (its theoretical arrival time)
//! kept in Redis, so a quota of N per minute is N across all replicas, not N per replica.
//!
//! One call costs one round trip: a server-side script reads the bucket, decides and writes it
//! back atomically (`EVALSHA`; the `redis` crate loads the script on the first `NOSCRIPT`). Time
//! is Redis's own (`TIME`), never a replica's clock, so replicas whose clocks disagree still
//! share one timeline and `retry_after_ms` stays exact. A bucket's key expires when the bucket
//! is full again (it would behave like a fresh one), so Redis holds only buckets in use.
//!
//! What to do when Redis does not answer (`on_redis_failure`) is the caller's decision: every
//! failure, including no answer within [`CALL_TIMEOUT`], comes back as [`Unavailable`] and no
//! call ever waits longer than that for its limit.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Bucket, Quota, RateLimited};

/// The longest a call waits for its limit from Redis before the failure policy decides. Redis
/// answers in well under a millisecond on a healthy network; a replica that waits longer is
/// better served by its own limits than by a stalled call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest the first connection may take (at start).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// GCRA on one key, in microseconds of Redis time. ARGV: the emission interval `t` and the
/// burst tolerance `tau` (= t × (burst − 1)), as governor computes them. Returns
/// `{1, 0}` (allowed) or `{0, wait}` (refused; allowed again in `wait` µs).
///
/// Lua numbers are doubles: microseconds since 1970 (~1.8e15) are exact below 2^53 (~9e15).
const GCRA: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now_us
local earliest = tat - tau
if now_us < earliest then
  return {0, earliest - now_us}
end
local next_tat = math.max(tat, now_us) + t
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now_us) / 1000) + 1)
return {1, 0}
";

/// Redis did not answer, or answered with an error: the caller's `on_redis_failure` decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis is unavailable for shared rate limits: {0}")]
pub struct Unavailable(pub String);

/// The shared limiter: a connection (reconnected in the background when it drops) and the
/// script. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct SharedLimits {
    conn: ConnectionManager,
    script: redis::Script,
    /// Prepended to every key, so several deployments can share one Redis.
    prefix: String,
}

impl SharedLimits {
    /// Connects to `url` (`redis://` or `rediss://`). Keys are `{prefix}rl:{hash}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<SharedLimits, Unavailable> {
        let client = redis::Client::open(url).map_err(|e| Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // Reconnects are tried in the background; calls meanwhile fail fast (above).
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| Unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(SharedLimits { conn, script: redis::Script::new(GCRA), prefix: prefix.to_string() })
    }

    /// The connection (shared: clones multiplex on it), for the cluster's other keys.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Takes one cell from `bucket` in Redis, or says how long to wait. `Err` when Redis did
    /// not decide within [`CALL_TIMEOUT`].
    pub async fn check(&self, bucket: &Bucket<'_>) -> Result<Result<(), RateLimited>, Unavailable> {
        let (t, tau) = gcra_micros(bucket.quota);
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(self.key(bucket));
        invocation.arg(t).arg(tau);
        let answer: (i64, i64) = tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| Unavailable(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(match answer {
            (1, _) => Ok(()),
            (_, wait_us) => Err(RateLimited {
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
                limit: bucket.quota.to_string(),
                scope: bucket.scope.to_owned(),
            }),
        })
    }

    /// The bucket's key: a hash of (client, name), so a key's length does not depend on what a
    /// client sends and no two pairs can meet by concatenation ("a:b"+"c" vs "a"+"b:c").
    fn key(&self, bucket: &Bucket<'_>) -> String {
        use std::fmt::Write as _;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&(bucket.client.len() as u64).to_be_bytes());
        ctx.update(bucket.client.as_bytes());
        ctx.update(bucket.name.as_bytes());
        let digest = ctx.finish();
        let mut key = format!("{}rl:", self.prefix);
        for b in &digest.as_ref()[..16] {
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

/// The emission interval and burst tolerance of `quota` in microseconds, as governor derives
/// them (`Quota::per_minute(n).allow_burst(b)`: one cell every 60 s / n, `b` cells at once).
fn gcra_micros(quota: Quota) -> (u64, u64) {
    let t = (60_000_000 / u64::from(quota.per_minute.get())).max(1);
    (t, t * u64::from(quota.burst.get() - 1))
}

#[cfg(test)]
mod tests;
