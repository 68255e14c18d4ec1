//! Checking an SMS code for the register step: compared in constant time, single use even
//! under concurrent requests, at most `SMS_VERIFY_MAX_ATTEMPTS` wrong tries per code and
//! `REGISTER_HOURLY_FAILURES_PER_IP` wrong codes per client IP, and put back when our own
//! failure comes after it was taken.

use std::{net::IpAddr, sync::LazyLock};

use chrono::Utc;
use redis::Script;
use shared::{
    domain::{Mobile, SmsCode},
    keys,
};
use subtle::ConstantTimeEq;

use super::store::CodeStore;
use crate::error::{ApiError, Limit, ResultExt};

/// Takes the code if it is still the stored one. KEYS: SMS code, attempts. ARGV: code.
/// Returns the code's remaining lifetime in ms when this request took it (so that it can be
/// put back), 0 when another request took or replaced it.
const CLAIM_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  if ttl < 1 then return 1 end
  return ttl
end
return 0
"#;

/// Counts a wrong try against the code and against the client IP. KEYS: SMS code, attempts,
/// IP failures. ARGV: max attempts, IP window ms. Returns 1 when the code was used up (and
/// deleted), else 0.
const MISS_LUA: &str = r#"
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ttl)
if n >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"#;

// Program constants, hashed once (see admission.rs).
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
static MISS: LazyLock<Script> = LazyLock::new(|| Script::new(MISS_LUA));

/// A code this request took: what is needed to put it back.
#[derive(Debug)]
pub struct Claimed {
    code: SmsCode,
    ttl_ms: i64,
}

impl CodeStore {
    /// Consumes `SMS_<mobile>` if `typed` matches it (compared in constant time); otherwise
    /// counts the wrong try, deleting the code after `SMS_VERIFY_MAX_ATTEMPTS` of them. A
    /// client IP with `REGISTER_HOURLY_FAILURES_PER_IP` wrong codes this hour is refused
    /// before any code is looked at, so nobody can burn other people's codes in a loop.
    #[tracing::instrument(skip_all)]
    pub async fn consume_code(&self, mobile: &Mobile, typed: &str, ip: IpAddr) -> Result<Claimed, ApiError> {
        let now = Utc::now();
        let (code_key, attempts_key) = (self.keys.sms_code(mobile), self.keys.verify_attempts(mobile));
        let failures_key = self.keys.register_failures(ip, now);
        let mut redis = self.redis.clone();
        let (stored, failures, failures_ttl_ms): (Option<String>, Option<u32>, i64) = redis::pipe()
            .get(&code_key)
            .get(&failures_key)
            .pttl(&failures_key)
            .query_async(&mut redis)
            .await
            .errmsg("数据查询失败")?;
        if failures.unwrap_or(0) >= self.settings.register_hourly_failures_per_ip {
            let retry_after_secs = u64::try_from(failures_ttl_ms).unwrap_or(0).div_ceil(1000);
            return Err(ApiError::RateLimited { limit: Limit::RegisterFailuresPerIp, retry_after_secs });
        }
        let Some(stored) = stored.map(SmsCode::from_stored) else {
            return Err(ApiError::SmsCodeExpired);
        };
        if bool::from(stored.expose().as_bytes().ct_eq(typed.as_bytes())) {
            let ttl_ms: i64 = CLAIM
                .key(&code_key)
                .key(&attempts_key)
                .arg(stored.expose())
                .invoke_async(&mut redis)
                .await
                .errmsg("数据查询失败")?;
            // Another request with the same code won the race: for this one the code is gone.
            return if ttl_ms > 0 { Ok(Claimed { code: stored, ttl_ms }) } else { Err(ApiError::SmsCodeExpired) };
        }
        let used_up: i64 = MISS
            .key(&code_key)
            .key(&attempts_key)
            .key(&failures_key)
            .arg(self.settings.sms_verify_max_attempts)
            .arg(keys::secs_until_hour_end(now) * 1000)
            .invoke_async(&mut redis)
            .await
            .errmsg("数据查询失败")?;
        if used_up == 1 {
            // The code is gone; a new one can be asked once its cooldown is over, at the latest
            // SMS_RESEND_INTERVAL_SECS from now.
            Err(ApiError::TooManyAttempts { retry_after_secs: self.settings.sms_resend_interval.as_secs() })
        } else {
            Err(ApiError::SmsCodeWrong)
        }
    }

    /// Puts a taken code back with the lifetime it had left, unless a newer one was stored
    /// since: our own failure after the claim must not cost the user the code. Best effort:
    /// logged on failure.
    #[tracing::instrument(skip_all)]
    pub async fn put_back(&self, mobile: &Mobile, claimed: &Claimed) {
        let result: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.sms_code(mobile))
            .arg(claimed.code.expose())
            .arg("PX")
            .arg(claimed.ttl_ms)
            .arg("NX")
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, mobile = %mobile.masked(), "could not put the code back");
        }
    }
}
