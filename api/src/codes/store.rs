//! `CodeStore`: the api's handle on Redis, the plain writes, the captcha budget per IP and
//! the start-up check of Redis's eviction policy.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, LazyLock},
};

use chrono::Utc;
use redis::{AsyncCommands, Script};
use shared::cache::Redis;
use shared::{
    Settings,
    domain::{ImageCodeId, Mobile, SmsCode},
    keys::{self, Keys},
};

use crate::error::{ApiError, Limit, ResultExt};

/// Takes one captcha from a client IP's hourly budget. KEYS: the IP's hourly count.
/// ARGV: limit, window ms. Returns {0, 0} when taken, {1, retry_after_ms} when used up.
/// The count and its expiry are set together, so a counter can never be left without one.
const TAKE_CAPTCHA_LUA: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {1, redis.call('PTTL', KEYS[1])} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {0, 0}
"#;

// A program constant, hashed once (see admission.rs).
static TAKE_CAPTCHA: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_CAPTCHA_LUA));

/// The `maxmemory-policy` the api needs: with any other, Redis under memory pressure may
/// evict captchas, live codes and rate-limit counters, silently lifting the limits.
pub const REQUIRED_EVICTION_POLICY: &str = "noeviction";

/// Redis, its keys and the settings of the limits the scripts enforce. Cheap to clone. The
/// script-backed operations are in `admission.rs` and `verify.rs`.
#[derive(Clone)]
pub struct CodeStore {
    pub(super) redis: Redis,
    pub(super) keys: Keys,
    pub(super) settings: Arc<Settings>,
}

impl CodeStore {
    /// A store on `redis` for the deployment of `settings`.
    pub fn new(redis: Redis, settings: Arc<Settings>) -> Self {
        Self { redis, keys: Keys::from(settings.as_ref()), settings }
    }

    /// The Redis connection (for readiness checks).
    pub fn connection(&self) -> &Redis {
        &self.redis
    }

    /// Takes one captcha from the hourly budget of the client `ip`
    /// (`IMAGE_CODE_HOURLY_LIMIT_PER_IP`, IPv6 per /64), in one round trip; 4201 once used up.
    #[tracing::instrument(skip_all)]
    pub async fn take_captcha_budget(&self, ip: IpAddr) -> Result<(), ApiError> {
        let now = Utc::now();
        let (status, retry_after_ms): (i64, i64) = TAKE_CAPTCHA
            .key(self.keys.image_code_ip_hourly(ip, now))
            .arg(self.settings.image_code_hourly_limit_per_ip)
            .arg(keys::secs_until_hour_end(now) * 1000)
            .invoke_async(&mut self.redis.clone())
            .await
            .errmsg("保存图片验证码失败")?;
        if status == 0 {
            return Ok(());
        }
        let retry_after_secs = u64::try_from(retry_after_ms).unwrap_or(0).div_ceil(1000);
        Err(ApiError::RateLimited { limit: Limit::ImageCodesPerIp, retry_after_secs })
    }

    /// Redis's `maxmemory-policy` (`CONFIG GET`; `None` if it names none), or why it could
    /// not be read: `CONFIG` is often renamed away or denied by an ACL on managed Redis.
    pub async fn eviction_policy(&self) -> redis::RedisResult<Option<String>> {
        let mut config: HashMap<String, String> =
            redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut self.redis.clone()).await?;
        Ok(config.remove("maxmemory-policy"))
    }

    /// Logs a warning naming `maxmemory-policy` unless Redis runs with `noeviction`; a Redis
    /// that refuses `CONFIG` or is down only gets a note. Called once at start-up; never fails.
    pub async fn warn_unless_noeviction(&self) {
        match self.eviction_policy().await {
            Ok(Some(policy)) if policy == REQUIRED_EVICTION_POLICY => {}
            Ok(Some(policy)) => tracing::warn!(
                %policy,
                "Redis maxmemory-policy is not noeviction: under memory pressure Redis may evict captchas, \
                 SMS codes and rate-limit counters; set maxmemory-policy noeviction"
            ),
            Ok(None) => tracing::info!("Redis did not report maxmemory-policy; make sure it is noeviction"),
            Err(e) => tracing::info!(
                error = %e,
                "could not read Redis maxmemory-policy (CONFIG GET); make sure it is noeviction"
            ),
        }
    }

    /// Stores a captcha's text as `ImageCode_<id>` for `IMAGE_CODE_TTL_SECS`.
    #[tracing::instrument(skip_all)]
    pub async fn store_captcha(&self, id: &ImageCodeId, text: &str) -> Result<(), ApiError> {
        let ttl = self.settings.image_code_ttl.as_secs();
        self.redis.clone().set_ex(self.keys.image_code(id), text, ttl).await.errmsg("保存图片验证码失败")
    }

    /// Stores `code` as `SMS_<mobile>` for `SMS_CODE_TTL_SECS` and resets the wrong-try
    /// counter of the previous code, in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn store_code(&self, mobile: &Mobile, code: &SmsCode) -> Result<(), ApiError> {
        redis::pipe()
            .atomic()
            .set_ex(self.keys.sms_code(mobile), code.expose(), self.settings.sms_code_ttl.as_secs())
            .ignore()
            .del(self.keys.verify_attempts(mobile))
            .ignore()
            .query_async(&mut self.redis.clone())
            .await
            .errmsg("保存短信验证码失败")
    }
}
