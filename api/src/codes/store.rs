//! `CodeStore`: the api's handle on Redis, and the plain (script-free) writes.

use std::sync::Arc;

use redis::{AsyncCommands, aio::ConnectionManager};
use shared::{
    Settings,
    domain::{ImageCodeId, Mobile, SmsCode},
    keys::Keys,
};

use crate::error::{ApiError, ResultExt};

/// Redis, its keys and the settings of the limits the scripts enforce. Cheap to clone. The
/// script-backed operations are in `admission.rs` and `verify.rs`.
#[derive(Clone)]
pub struct CodeStore {
    pub(super) redis: ConnectionManager,
    pub(super) keys: Keys,
    pub(super) settings: Arc<Settings>,
}

impl CodeStore {
    /// A store on `redis` for the deployment of `settings`.
    pub fn new(redis: ConnectionManager, settings: Arc<Settings>) -> Self {
        Self { redis, keys: Keys::from(settings.as_ref()), settings }
    }

    /// The Redis connection (for readiness checks).
    pub fn connection(&self) -> &ConnectionManager {
        &self.redis
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
