//! Checking an SMS code for the register step: compared in constant time, single use even
//! under concurrent requests, at most `SMS_VERIFY_MAX_ATTEMPTS` wrong tries per code.

use redis::Script;
use shared::domain::{Mobile, SmsCode};
use subtle::ConstantTimeEq;

use crate::{AppState, error::ApiError};

/// Takes the code if it is still the stored one. KEYS: SMS code, attempts. ARGV: code.
/// Returns 1 when this request took it, 0 when another request took or replaced it.
const CLAIM: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"#;

/// Counts a wrong try. KEYS: SMS code, attempts. ARGV: max attempts.
/// Returns 1 when the code was used up (and deleted), else 0.
const MISS: &str = r#"
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

/// The two scripts.
pub struct VerifyScripts {
    claim: Script,
    miss: Script,
}

impl Default for VerifyScripts {
    fn default() -> Self {
        Self { claim: Script::new(CLAIM), miss: Script::new(MISS) }
    }
}

/// Consumes `SMS_<mobile>` if `typed` matches it; otherwise counts the wrong try.
#[tracing::instrument(skip_all)]
pub async fn consume_code(state: &AppState, mobile: &Mobile, typed: &str) -> Result<(), ApiError> {
    let (code_key, attempts_key) = (state.keys.sms_code(mobile), state.keys.verify_attempts(mobile));
    let mut redis = state.redis.clone();
    let stored: Option<String> = redis::cmd("GET")
        .arg(&code_key)
        .query_async(&mut redis)
        .await
        .map_err(|source| ApiError::Redis { errmsg: "数据查询失败", source })?;
    let Some(stored) = stored.map(SmsCode::from_stored) else {
        return Err(ApiError::SmsCodeExpired);
    };
    if bool::from(stored.expose().as_bytes().ct_eq(typed.as_bytes())) {
        let claimed: i64 = state
            .verify_scripts
            .claim
            .key(&code_key)
            .key(&attempts_key)
            .arg(stored.expose())
            .invoke_async(&mut redis)
            .await
            .map_err(|source| ApiError::Redis { errmsg: "数据查询失败", source })?;
        // Another request with the same code won the race: for this one the code is gone.
        return if claimed == 1 { Ok(()) } else { Err(ApiError::SmsCodeExpired) };
    }
    let used_up: i64 = state
        .verify_scripts
        .miss
        .key(&code_key)
        .key(&attempts_key)
        .arg(state.settings.sms_verify_max_attempts)
        .invoke_async(&mut redis)
        .await
        .map_err(|source| ApiError::Redis { errmsg: "数据查询失败", source })?;
    if used_up == 1 { Err(ApiError::TooManyAttempts) } else { Err(ApiError::SmsCodeWrong) }
}
