//! Registering a user: the SMS code checked and used up, the password hashed with argon2id
//! off the async runtime, the user created where the unique constraint decides.

use argon2::{Argon2, password_hash::PasswordHasher};
use shared::{
    db::{self, users},
    domain::Mobile,
};

use crate::{
    error::{ApiError, ResultExt},
    state::AppState,
};

/// Passwords shorter than this are refused.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Passwords longer than this are refused (argon2 cost grows with length).
pub const PASSWORD_MAX_CHARS: usize = 128;

/// Creates the user `mobile` with `password` if `sms_code` is its live code.
pub async fn register(state: &AppState, mobile: &Mobile, sms_code: &str, password: &str) -> Result<(), ApiError> {
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&password.chars().count()) {
        return Err(ApiError::InvalidParam("密码长度应为8-128位"));
    }

    state.codes.consume_code(mobile, sms_code).await?;

    // Hashing takes tens of milliseconds of CPU: off the async runtime.
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::Internal(format!("argon2: {e}")))?;

    // The unique constraint decides: two concurrent registers cannot both create the user.
    let created = db::within(state.settings.dependency_timeout, users::create(&state.db, mobile, &hash))
        .await
        .errmsg("数据保存失败")?;
    if !created {
        return Err(ApiError::MobileTaken);
    }
    tracing::info!(mobile = %mobile.masked(), "user registered");
    Ok(())
}
