//! Checking an SMS code for the register step: compared in constant time, single use even
//! under concurrent requests, at most `SMS_VERIFY_MAX_ATTEMPTS` wrong tries per code.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};
use shared::domain::{Mobile, SmsCode};
use subtle::ConstantTimeEq;

use super::store::CodeStore;
use crate::error::{ApiError, ResultExt};

/// Takes the code if it is still the stored one. KEYS: SMS code, attempts. ARGV: code.
/// Returns 1 when this request took it, 0 when another request took or replaced it.
const CLAIM_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"#;

/// Counts a wrong try. KEYS: SMS code, attempts. ARGV: max attempts.
/// Returns 1 when the code was used up (and deleted), else 0.
const MISS_LUA: &str = r#"
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

impl CodeStore {
    /// Consumes `SMS_<mobile>` if `typed` matches it (compared in constant time); otherwise
    /// counts the wrong try, deleting the code after `SMS_VERIFY_MAX_ATTEMPTS` of them.
    #[tracing::instrument(skip_all)]
    pub async fn consume_code(&self, mobile: &Mobile, typed: &str) -> Result<(), ApiError> {
        let (code_key, attempts_key) = (self.keys.sms_code(mobile), self.keys.verify_attempts(mobile));
        let mut redis = self.redis.clone();
        let stored: Option<String> = redis.get(&code_key).await.errmsg("数据查询失败")?;
        let Some(stored) = stored.map(SmsCode::from_stored) else {
            return Err(ApiError::SmsCodeExpired);
        };
        if bool::from(stored.expose().as_bytes().ct_eq(typed.as_bytes())) {
            let claimed: i64 = CLAIM
                .key(&code_key)
                .key(&attempts_key)
                .arg(stored.expose())
                .invoke_async(&mut redis)
                .await
                .errmsg("数据查询失败")?;
            // Another request with the same code won the race: for this one the code is gone.
            return if claimed == 1 { Ok(()) } else { Err(ApiError::SmsCodeExpired) };
        }
        let used_up: i64 = MISS
            .key(&code_key)
            .key(&attempts_key)
            .arg(self.settings.sms_verify_max_attempts)
            .invoke_async(&mut redis)
            .await
            .errmsg("数据查询失败")?;
        if used_up == 1 { Err(ApiError::TooManyAttempts) } else { Err(ApiError::SmsCodeWrong) }
    }
}
