//! Admission to `POST /passport/sms_code` (steps 3–5) in one round trip: a Lua script checks
//! the fraud guard's block on the number's prefix, takes the captcha with GETDEL, compares it,
//! then checks and takes the three rate limits and counts the send for the fraud guard,
//! atomically (so every api replica shares them and concurrent requests cannot both pass).

use std::{net::IpAddr, sync::LazyLock, time::Duration};

use chrono::Utc;
use redis::Script;
use shared::{
    domain::{ImageCodeId, Mobile, SmsCode},
    fraud::{WINDOW_LUA, Window},
    keys,
};

use super::{
    fraud::{self, Guard},
    store::CodeStore,
};
use crate::error::{ApiError, Limit, ResultExt};

/// KEYS: captcha, cooldown, daily count, IP hourly count, fraud block, fraud window, watched
/// prefixes, blocked prefixes.
/// ARGV: typed text (lower case), cooldown ms, daily limit, daily ttl ms, IP limit, IP ttl ms,
/// then the fraud guard's: prefix ('' for a test number: no guard), bucket ms, buckets, window
/// hash ttl ms, window ms, min sends, min conversion, block ms.
/// Returns {status, n, fresh block, sends, verified}: status 0 pass (n = the bucket the send
/// was counted in, fresh block = 1 when this send blocked the prefix), 1 no captcha, 2 wrong
/// captcha, 3 cooldown, 4 daily cap, 5 IP cap, 6 prefix blocked (n = retry after ms).
///
/// A blocked prefix is refused before the captcha is taken: a user in a blocked range keeps
/// the captcha for when the block ends, and refusing costs one PTTL. The send that makes a
/// prefix fail the conversion test is itself admitted (it was counted); the next are refused.
const CHECK_LUA: &str = r#"
local guarded = ARGV[7] ~= ''
if guarded then
  local blocked = redis.call('PTTL', KEYS[5])
  if blocked == -1 then return {6, tonumber(ARGV[14]), 0, 0, 0} end
  if blocked >= 0 then return {6, blocked, 0, 0, 0} end
end
local real = redis.call('GETDEL', KEYS[1])
if not real then return {1, 0, 0, 0, 0} end
if string.lower(real) ~= ARGV[1] then return {2, 0, 0, 0, 0} end
local cooldown = redis.call('PTTL', KEYS[2])
if cooldown ~= -2 then return {3, cooldown, 0, 0, 0} end
local daily = tonumber(redis.call('GET', KEYS[3]) or '0')
if daily >= tonumber(ARGV[3]) then return {4, redis.call('PTTL', KEYS[3]), 0, 0, 0} end
local ip = tonumber(redis.call('GET', KEYS[4]) or '0')
if ip >= tonumber(ARGV[5]) then return {5, redis.call('PTTL', KEYS[4]), 0, 0, 0} end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[6]) end
if not guarded then return {0, -1, 0, 0, 0} end
local now = fraud_now()
local now_b = math.floor(now / tonumber(ARGV[8]))
local _, verified = fraud_window(KEYS[6], now_b, tonumber(ARGV[9]))
local sends = fraud_count(KEYS[6], 's', now_b, ARGV[10], KEYS[7], ARGV[7], now, tonumber(ARGV[11]))
if sends >= tonumber(ARGV[12]) and verified / sends < tonumber(ARGV[13]) then
  if redis.call('SET', KEYS[5], sends .. ' ' .. verified, 'PX', ARGV[14], 'NX') then
    redis.call('ZADD', KEYS[8], now + tonumber(ARGV[14]), ARGV[7])
    redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
    return {0, now_b, 1, sends, verified}
  end
end
return {0, now_b, 0, sends, verified}
"#;

/// Gives back what CHECK took when no SMS was queued, and removes the stored code if it is
/// still ours. KEYS: SMS code, cooldown, daily count, fraud window. ARGV: our code, or '' if
/// none stored; the bucket the send was counted in, or '' if it was not (a bucket that has
/// left the window since is not touched).
const RELEASE_LUA: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
if redis.call('DECR', KEYS[3]) <= 0 then redis.call('DEL', KEYS[3]) end
if ARGV[2] ~= '' then
  local oldest = tonumber(redis.call('HGET', KEYS[4], 'p'))
  if oldest and tonumber(ARGV[2]) >= oldest then
    redis.call('HINCRBY', KEYS[4], 's' .. ARGV[2], -1)
    redis.call('HINCRBY', KEYS[4], 's', -1)
  end
end
return 0
"#;

// Program constants, hashed once: a script is sent by its SHA, its body only when Redis does
// not know it yet.
static CHECK: LazyLock<Script> = LazyLock::new(|| Script::new(&[WINDOW_LUA, CHECK_LUA].concat()));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// One request's claim on a captcha.
pub struct Attempt<'a> {
    /// Who the code is for.
    pub mobile: &'a Mobile,
    /// Which captcha.
    pub image_code_id: &'a ImageCodeId,
    /// What the user typed.
    pub typed: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// How the fraud guard treats the mobile ([`Guard::of`]).
    pub guard: &'a Guard,
}

/// What admission took that a failed request gives back.
pub struct Admission {
    /// The fraud window bucket the send was counted in (none for a test number).
    fraud_bucket: Option<i64>,
}

impl CodeStore {
    /// Steps 3–5: refuse a blocked prefix, consume the captcha, compare it, take the rate
    /// limits and count the send for the fraud guard.
    #[tracing::instrument(skip_all)]
    pub async fn check_captcha_and_limits(&self, attempt: &Attempt<'_>) -> Result<Admission, ApiError> {
        let (settings, keys) = (&self.settings, &self.keys);
        let now = Utc::now();
        let prefix = attempt.guard.prefix().unwrap_or("");
        let window = Window::from(&settings.fraud);
        let answer: Vec<i64> = CHECK
            .key(keys.image_code(attempt.image_code_id))
            .key(keys.resend_cooldown(attempt.mobile))
            .key(keys.daily_count(attempt.mobile, now))
            .key(keys.ip_hourly_count(attempt.ip, now))
            .key(keys.fraud_block(prefix))
            .key(keys.fraud_window(prefix))
            .key(keys.fraud_watched())
            .key(keys.fraud_blocked())
            .arg(attempt.typed.to_lowercase())
            .arg(millis(settings.sms_resend_interval))
            .arg(settings.sms_daily_limit_per_mobile)
            .arg(keys::secs_until_day_end(now) * 1000)
            .arg(settings.sms_hourly_limit_per_ip)
            .arg(keys::secs_until_hour_end(now) * 1000)
            .arg(prefix)
            .arg(window.bucket_ms)
            .arg(window.buckets)
            .arg(window.ttl_ms())
            .arg(window.window_ms)
            .arg(settings.fraud.min_sends)
            .arg(settings.fraud.min_conversion)
            .arg(millis(settings.fraud.block))
            .invoke_async(&mut self.redis.clone())
            .await
            .errmsg("获取图片验证码失败")?;
        let &[status, n, fresh_block, sends, verified] = answer.as_slice() else {
            return Err(ApiError::Internal(format!("check script returned {answer:?}")));
        };
        let limited =
            |limit| ApiError::RateLimited { limit, retry_after_secs: u64::try_from(n).unwrap_or(0).div_ceil(1000) };
        match status {
            0 => {
                if fresh_block == 1 {
                    fraud::blocked(prefix, sends, verified, settings);
                }
                Ok(Admission { fraud_bucket: (n >= 0).then_some(n) })
            }
            1 => Err(ApiError::ImageCodeExpired),
            2 => Err(ApiError::ImageCodeWrong),
            3 => Err(limited(Limit::ResendCooldown)),
            4 => Err(limited(Limit::DailyPerMobile)),
            5 => Err(limited(Limit::HourlyPerIp)),
            6 => {
                fraud::refused(prefix);
                Err(limited(Limit::FraudBlock))
            }
            other => Err(ApiError::Internal(format!("check script returned {other}"))),
        }
    }

    /// Gives back the cooldown, the daily count and the fraud guard's send count taken by
    /// [`check_captcha_and_limits`](Self::check_captcha_and_limits), and deletes `code` from
    /// `SMS_<mobile>` if it is still the stored one. Best effort: logged on failure.
    #[tracing::instrument(skip_all)]
    pub async fn give_back(&self, attempt: &Attempt<'_>, admission: &Admission, code: Option<&SmsCode>) {
        let (keys, mobile) = (&self.keys, attempt.mobile);
        let result: redis::RedisResult<i64> = RELEASE
            .key(keys.sms_code(mobile))
            .key(keys.resend_cooldown(mobile))
            .key(keys.daily_count(mobile, Utc::now()))
            .key(keys.fraud_window(attempt.guard.prefix().unwrap_or("")))
            .arg(code.map(SmsCode::expose).unwrap_or(""))
            .arg(admission.fraud_bucket.map(|b| b.to_string()).unwrap_or_default())
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, mobile = %mobile.masked(), "could not give back the rate limit");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
