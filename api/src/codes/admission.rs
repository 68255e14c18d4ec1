//! Admission to `POST /passport/sms_code` (steps 3–5) in one round trip: a Lua script takes
//! the captcha with GETDEL, compares it, then checks and takes the three rate limits
//! atomically (so every api replica shares them and concurrent requests cannot both pass).

use std::{net::IpAddr, sync::LazyLock, time::Duration};

use chrono::Utc;
use redis::Script;
use shared::{
    domain::{ImageCodeId, Mobile, SmsCode},
    keys,
};

use super::store::CodeStore;
use crate::error::{ApiError, Limit, ResultExt};

/// KEYS: captcha, cooldown, daily count, IP hourly count.
/// ARGV: typed text (lower case), cooldown ms, daily limit, daily ttl ms, IP limit, IP ttl ms.
/// Returns {status, retry_after_ms}: 0 pass, 1 no captcha, 2 wrong captcha,
/// 3 cooldown, 4 daily cap, 5 IP cap.
const CHECK_LUA: &str = r#"
local real = redis.call('GETDEL', KEYS[1])
if not real then return {1, 0} end
if string.lower(real) ~= ARGV[1] then return {2, 0} end
local cooldown = redis.call('PTTL', KEYS[2])
if cooldown ~= -2 then return {3, cooldown} end
local daily = tonumber(redis.call('GET', KEYS[3]) or '0')
if daily >= tonumber(ARGV[3]) then return {4, redis.call('PTTL', KEYS[3])} end
local ip = tonumber(redis.call('GET', KEYS[4]) or '0')
if ip >= tonumber(ARGV[5]) then return {5, redis.call('PTTL', KEYS[4])} end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[6]) end
return {0, 0}
"#;

/// Gives back what CHECK took when no SMS was queued, and removes the stored code if it is
/// still ours. KEYS: SMS code, cooldown, daily count. ARGV: our code, or '' if none stored.
const RELEASE_LUA: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
if redis.call('DECR', KEYS[3]) <= 0 then redis.call('DEL', KEYS[3]) end
return 0
"#;

// Program constants, hashed once: a script is sent by its SHA, its body only when Redis does
// not know it yet.
static CHECK: LazyLock<Script> = LazyLock::new(|| Script::new(CHECK_LUA));
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
}

impl CodeStore {
    /// Steps 3–5: consume the captcha, compare it, take the rate limits.
    #[tracing::instrument(skip_all)]
    pub async fn check_captcha_and_limits(&self, attempt: &Attempt<'_>) -> Result<(), ApiError> {
        let (settings, keys) = (&self.settings, &self.keys);
        let now = Utc::now();
        let (status, retry_after_ms): (i64, i64) = CHECK
            .key(keys.image_code(attempt.image_code_id))
            .key(keys.resend_cooldown(attempt.mobile))
            .key(keys.daily_count(attempt.mobile, now))
            .key(keys.ip_hourly_count(attempt.ip, now))
            .arg(attempt.typed.to_lowercase())
            .arg(millis(settings.sms_resend_interval))
            .arg(settings.sms_daily_limit_per_mobile)
            .arg(keys::secs_until_day_end(now) * 1000)
            .arg(settings.sms_hourly_limit_per_ip)
            .arg(keys::secs_until_hour_end(now) * 1000)
            .invoke_async(&mut self.redis.clone())
            .await
            .errmsg("获取图片验证码失败")?;
        let limited = |limit| ApiError::RateLimited {
            limit,
            retry_after_secs: u64::try_from(retry_after_ms).unwrap_or(0).div_ceil(1000),
        };
        match status {
            0 => Ok(()),
            1 => Err(ApiError::ImageCodeExpired),
            2 => Err(ApiError::ImageCodeWrong),
            3 => Err(limited(Limit::ResendCooldown)),
            4 => Err(limited(Limit::DailyPerMobile)),
            5 => Err(limited(Limit::HourlyPerIp)),
            other => Err(ApiError::Internal(format!("check script returned {other}"))),
        }
    }

    /// Gives back the cooldown and the daily count taken by
    /// [`check_captcha_and_limits`](Self::check_captcha_and_limits), and deletes `code` from
    /// `SMS_<mobile>` if it is still the stored one. Best effort: logged on failure.
    #[tracing::instrument(skip_all)]
    pub async fn give_back(&self, mobile: &Mobile, code: Option<&SmsCode>) {
        let keys = &self.keys;
        let result: redis::RedisResult<i64> = RELEASE
            .key(keys.sms_code(mobile))
            .key(keys.resend_cooldown(mobile))
            .key(keys.daily_count(mobile, Utc::now()))
            .arg(code.map(SmsCode::expose).unwrap_or(""))
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
