//! Registering a user: the SMS code checked and taken, the password hashed with argon2id off
//! the async runtime, the user created where the unique constraint decides. Runs detached from
//! the connection, and puts the code back when our own failure comes after taking it.

use std::net::IpAddr;

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

/// A parsed register request, owned so that it can outlive the connection.
pub struct Registration {
    /// The mobile.
    pub mobile: Mobile,
    /// The code as typed.
    pub sms_code: String,
    /// The password as typed.
    pub password: String,
    /// The client's address (wrong codes are limited per IP).
    pub ip: IpAddr,
}

/// Creates the user if the code is the mobile's live one, detached from the connection: a
/// client that goes away cannot leave its code taken and no user created.
pub async fn register(state: &AppState, registration: Registration) -> Result<(), ApiError> {
    let chars = registration.password.chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
        return Err(ApiError::InvalidParam("密码长度应为8-128位"));
    }
    let task_state = state.clone();
    state.detached.run(async move { create(&task_state, registration).await }).await
}

async fn create(state: &AppState, r: Registration) -> Result<(), ApiError> {
    let claimed = state.codes.consume_code(&r.mobile, &r.sms_code, r.ip).await?;
    match hash_and_insert(state, &r.mobile, r.password).await {
        Ok(()) => {
            tracing::info!(mobile = %r.mobile.masked(), "user registered");
            // The code did its job: its delivery is marked verified (the funnel), and its
            // prefix counts one used code (the fraud guard). Both best effort.
            tokio::join!(
                crate::conversion::mark_verified(state, &r.mobile, &r.sms_code),
                state.codes.count_verified(&r.mobile),
            );
            Ok(())
        }
        // The code did its job: the mobile is registered (by a concurrent request, or before).
        Err(e @ ApiError::MobileTaken) => Err(e),
        Err(e) => {
            // Our failure, not the user's: the code must not be lost with it.
            state.codes.put_back(&r.mobile, &claimed).await;
            Err(e)
        }
    }
}

async fn hash_and_insert(state: &AppState, mobile: &Mobile, password: String) -> Result<(), ApiError> {
    // Hashing takes tens of milliseconds of CPU: off the async runtime.
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::Internal(format!("argon2: {e}")))?;

    // The unique constraint decides: two concurrent registers cannot both create the user.
    let created = db::within(state.settings.dependency_timeout, users::create(&state.db, mobile, &hash))
        .await
        .errmsg("数据保存失败")?;
    if created { Ok(()) } else { Err(ApiError::MobileTaken) }
}
