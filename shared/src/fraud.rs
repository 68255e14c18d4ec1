//! The fraud guard's state in Redis, shared by the api (which counts sends and verifications
//! and sets blocks) and smsctl (which lists and lifts them): per number prefix, a sliding
//! window of counts kept in time buckets of one hash, and two sorted sets that index it.
//!
//! Key layout: `shared::keys` (`FraudWindow_`, `FraudBlock_`, `FraudWatched`, `FraudBlocked`).

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use redis::Script;

use crate::{cache::Redis, config::FraudSettings, keys::Keys};

/// Lua functions the counting scripts start with (the api's admission script among them).
///
/// A window hash holds per-bucket counts (`s<bucket>` sends, `v<bucket>` verified), their
/// totals over the window (`s`, `v`) and `p`, the oldest bucket that may still hold counts.
/// Buckets that slide out of the window are subtracted from the totals and deleted when the
/// hash is next touched, so a count costs O(1) amortised, however busy the prefix, and never
/// more than one pass over the window's buckets. Time is Redis's own (`TIME`), so that api
/// replicas with skewed clocks share one window.
pub const WINDOW_LUA: &str = r#"
local function fraud_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The totals (sends, verified) of window hash `key` once the buckets before the window that
-- ends at bucket `now_b` are dropped. One HMGET while nothing has slid out.
local function fraud_window(key, now_b, buckets)
  local got = redis.call('HMGET', key, 'p', 's', 'v')
  local p = tonumber(got[1])
  if p == nil then return 0, 0 end
  local s, v = tonumber(got[2]) or 0, tonumber(got[3]) or 0
  local low = now_b - buckets + 1
  if p < low then
    if low - p >= buckets then
      redis.call('DEL', key)
      return 0, 0
    end
    local ds, dv = 0, 0
    for b = p, low - 1 do
      local old = redis.call('HMGET', key, 's' .. b, 'v' .. b)
      ds = ds + (tonumber(old[1]) or 0)
      dv = dv + (tonumber(old[2]) or 0)
      redis.call('HDEL', key, 's' .. b, 'v' .. b)
    end
    if ds ~= 0 then s = redis.call('HINCRBY', key, 's', -ds) end
    if dv ~= 0 then v = redis.call('HINCRBY', key, 'v', -dv) end
    redis.call('HSET', key, 'p', low)
  end
  return s, v
end

-- Counts one `kind` ('s' or 'v') in bucket `now_b` of `key` (already passed through
-- fraud_window); returns the kind's new total. Two HINCRBYs; what needs doing once a bucket
-- (the oldest-bucket mark of a new hash, the TTL, the watched index) is done by the first
-- count of the bucket: the hash then outlives its last count by at least a window.
local function fraud_count(key, kind, now_b, ttl_ms, watched, prefix, now, window_ms)
  local total = redis.call('HINCRBY', key, kind, 1)
  if redis.call('HINCRBY', key, kind .. now_b, 1) == 1 then
    redis.call('HSETNX', key, 'p', now_b)
    redis.call('PEXPIRE', key, ttl_ms)
    -- A new member is the moment to drop those idle for a window: the set stays the size of
    -- the prefixes active in one window.
    if redis.call('ZADD', watched, now, prefix) == 1 then
      redis.call('ZREMRANGEBYSCORE', watched, '-inf', now - window_ms)
    end
  end
  return total
end
"#;

/// KEYS: window, watched. ARGV: prefix, bucket ms, buckets, window hash TTL ms, window ms.
const VERIFIED_LUA: &str = r#"
local now = fraud_now()
local now_b = math.floor(now / tonumber(ARGV[2]))
fraud_window(KEYS[1], now_b, tonumber(ARGV[3]))
fraud_count(KEYS[1], 'v', now_b, ARGV[4], KEYS[2], ARGV[1], now, tonumber(ARGV[5]))
return 0
"#;

/// Lifts a block and forgets the prefix's counts. KEYS: block, window, blocked, watched.
/// ARGV: prefix. Returns the block's remaining ms, or -2 when it was not blocked (then
/// nothing changes but a stale index entry).
const UNBLOCK_LUA: &str = r#"
redis.call('ZREM', KEYS[3], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return -2 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[4], ARGV[1])
return ttl
"#;

// Program constants, hashed once: a script is sent by its SHA, its body only when Redis does
// not know it yet.
static VERIFIED: LazyLock<Script> = LazyLock::new(|| Script::new(&[WINDOW_LUA, VERIFIED_LUA].concat()));
static UNBLOCK: LazyLock<Script> = LazyLock::new(|| Script::new(UNBLOCK_LUA));

/// The window's shape in Redis, from `FRAUD_WINDOW_SECS`: 60 buckets (at least a second each),
/// so the window slides in steps of a sixtieth of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Length of the window, ms.
    pub window_ms: u64,
    /// Length of one bucket, ms.
    pub bucket_ms: u64,
    /// Buckets in the window.
    pub buckets: u64,
}

impl Window {
    /// Buckets per window (fewer for windows under a minute: buckets are at least 1 s).
    const BUCKETS: u64 = 60;

    /// The window of `FRAUD_WINDOW_SECS`.
    pub fn new(window: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1000);
        let bucket_ms = (window_ms / Self::BUCKETS).max(1000);
        Self { window_ms, bucket_ms, buckets: window_ms.div_ceil(bucket_ms) }
    }

    /// How long a window hash outlives its last count: a window and a bucket.
    pub fn ttl_ms(&self) -> u64 {
        self.window_ms.saturating_add(self.bucket_ms)
    }
}

impl From<&FraudSettings> for Window {
    fn from(settings: &FraudSettings) -> Self {
        Self::new(settings.window)
    }
}

/// Counts a verified code (a successful register) for `prefix`.
pub async fn record_verified(redis: &mut Redis, keys: &Keys, window: Window, prefix: &str) -> redis::RedisResult<()> {
    VERIFIED
        .key(keys.fraud_window(prefix))
        .key(keys.fraud_watched())
        .arg(prefix)
        .arg(window.bucket_ms)
        .arg(window.buckets)
        .arg(window.ttl_ms())
        .arg(window.window_ms)
        .invoke_async(redis)
        .await
}

/// A blocked prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The prefix (`+861381234`).
    pub prefix: String,
    /// What is left of the block.
    pub remaining: Duration,
    /// Sends in the window when it was blocked.
    pub sends: u64,
    /// Verified codes in the window when it was blocked.
    pub verified: u64,
}

/// A prefix with counts in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The prefix (`+861381234`).
    pub prefix: String,
    /// Codes sent in the window.
    pub sends: u64,
    /// Codes verified in the window.
    pub verified: u64,
}

impl Watched {
    /// verified / sent (1 when nothing was sent).
    pub fn conversion(&self) -> f64 {
        if self.sends == 0 { 1.0 } else { self.verified as f64 / self.sends as f64 }
    }
}

/// What `smsctl fraud` shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Blocked prefixes, longest block left first.
    pub blocked: Vec<Blocked>,
    /// Prefixes with counts in the window, most sends first.
    pub watched: Vec<Watched>,
}

/// Prefixes read per pipeline: a long list never holds Redis for long.
const CHUNK: usize = 200;

/// Reads the blocked prefixes and the counts of every watched prefix, without writing and
/// without a script: the bucket sums are done here, by Redis's clock, in pipelined chunks.
pub async fn report(redis: &mut Redis, keys: &Keys, window: Window) -> redis::RedisResult<Report> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(redis).await?;
    let now_ms = secs * 1000 + micros / 1000;

    let blocked_prefixes: Vec<String> =
        redis::cmd("ZRANGEBYSCORE").arg(keys.fraud_blocked()).arg(now_ms).arg("+inf").query_async(redis).await?;
    let mut blocked = Vec::new();
    for chunk in blocked_prefixes.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for prefix in chunk {
            pipe.pttl(keys.fraud_block(prefix)).get(keys.fraud_block(prefix));
        }
        let answers: Vec<(i64, Option<String>)> = pipe.query_async(redis).await?;
        for (prefix, (ttl_ms, value)) in chunk.iter().zip(answers) {
            let Ok(remaining_ms) = u64::try_from(ttl_ms) else { continue };
            let mut counts = value.as_deref().unwrap_or("").split(' ').map(|n| n.parse().unwrap_or(0));
            let (sends, verified) = (counts.next().unwrap_or(0), counts.next().unwrap_or(0));
            blocked.push(Blocked {
                prefix: prefix.clone(),
                remaining: Duration::from_millis(remaining_ms),
                sends,
                verified,
            });
        }
    }
    blocked.sort_by(|a, b| b.remaining.cmp(&a.remaining).then_with(|| a.prefix.cmp(&b.prefix)));

    let since = now_ms.saturating_sub(window.window_ms);
    let watched_prefixes: Vec<String> =
        redis::cmd("ZRANGEBYSCORE").arg(keys.fraud_watched()).arg(since).arg("+inf").query_async(redis).await?;
    let low = (now_ms / window.bucket_ms + 1).saturating_sub(window.buckets);
    let mut watched = Vec::new();
    for chunk in watched_prefixes.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for prefix in chunk {
            pipe.hgetall(keys.fraud_window(prefix));
        }
        let hashes: Vec<HashMap<String, i64>> = pipe.query_async(redis).await?;
        for (prefix, hash) in chunk.iter().zip(hashes) {
            let (sends, verified) = sum_window(&hash, low);
            if sends > 0 || verified > 0 {
                watched.push(Watched { prefix: prefix.clone(), sends, verified });
            }
        }
    }
    watched.sort_by(|a, b| b.sends.cmp(&a.sends).then_with(|| a.prefix.cmp(&b.prefix)));
    Ok(Report { blocked, watched })
}

/// Sums the buckets from `low` on of a window hash: (sends, verified).
fn sum_window(hash: &HashMap<String, i64>, low: u64) -> (u64, u64) {
    let (mut sends, mut verified) = (0_i64, 0_i64);
    for (field, n) in hash {
        let (total, bucket) = match field.split_at_checked(1) {
            Some(("s", b)) => (&mut sends, b),
            Some(("v", b)) => (&mut verified, b),
            _ => continue,
        };
        if bucket.parse::<u64>().is_ok_and(|b| b >= low) {
            *total += n;
        }
    }
    (u64::try_from(sends).unwrap_or(0), u64::try_from(verified).unwrap_or(0))
}

/// Lifts the block of `prefix` and forgets its counts, so that the next request does not block
/// it again at once (a range that is still pumped is blocked again after `FRAUD_MIN_SENDS`
/// more sends). The block's remaining time, or `None` when it was not blocked: then nothing
/// changed.
pub async fn unblock(redis: &mut Redis, keys: &Keys, prefix: &str) -> redis::RedisResult<Option<Duration>> {
    let remaining_ms: i64 = UNBLOCK
        .key(keys.fraud_block(prefix))
        .key(keys.fraud_window(prefix))
        .key(keys.fraud_blocked())
        .key(keys.fraud_watched())
        .arg(prefix)
        .invoke_async(redis)
        .await?;
    Ok(match remaining_ms {
        -2 => None,
        // -1: a block without expiry (set by hand): it was there all the same.
        ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_has_sixty_buckets_of_at_least_a_second() {
        let hour = Window::new(Duration::from_secs(3600));
        assert_eq!((hour.bucket_ms, hour.buckets, hour.ttl_ms()), (60_000, 60, 3_660_000));
        let short = Window::new(Duration::from_secs(10));
        assert_eq!((short.bucket_ms, short.buckets), (1000, 10));
    }

    #[test]
    fn only_buckets_inside_the_window_are_summed() {
        let hash: HashMap<String, i64> =
            [("s", 9), ("v", 1), ("p", 5), ("s5", 4), ("s6", 3), ("v6", 1), ("s7", 2), ("x7", 8)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        assert_eq!(sum_window(&hash, 6), (5, 1));
        assert_eq!(sum_window(&hash, 8), (0, 0));
    }
}
