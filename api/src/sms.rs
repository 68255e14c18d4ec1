//! The send pipeline of `POST /passport/sms_code`, steps 3–10, for an already parsed request:
//! everything it does with Redis, PostgreSQL and the broker. The handler parses; this sends.
//! (The benchmark's bare pipeline calls [`request_code`] directly.)

use std::net::IpAddr;

use secrecy::ExposeSecret;
use shared::{
    db::{self, users},
    domain::{ImageCodeId, Mobile, SmsCode},
    queue::SendJob,
};

use crate::{
    codes::{Attempt, Guard},
    error::{ApiError, ResultExt},
    state::AppState,
};

/// A parsed sms_code request, owned so that it can outlive the connection.
pub struct CodeRequest {
    /// Who the code is for.
    pub mobile: Mobile,
    /// How the fraud guard treats the mobile.
    pub guard: Guard,
    /// Which captcha.
    pub image_code_id: ImageCodeId,
    /// What the user typed.
    pub typed: String,
    /// The client's address.
    pub ip: IpAddr,
    /// The request's `x-request-id`, carried into the job.
    pub request_id: Option<String>,
}

/// [`request_code`] detached from the connection: if the client goes away, the pipeline
/// still ends with its job queued or everything given back.
pub async fn request_code_detached(state: &AppState, request: CodeRequest) -> Result<(), ApiError> {
    let task_state = state.clone();
    state
        .detached
        .run(async move {
            let CodeRequest { mobile, guard, image_code_id, typed, ip, request_id } = request;
            let attempt = Attempt { mobile: &mobile, image_code_id: &image_code_id, typed: &typed, ip, guard: &guard };
            request_code(&task_state, &attempt, request_id).await
        })
        .await
}

/// Why the pipeline stopped after the rate limits were taken: the answer, and the code if
/// one was stored, so that it can be removed as the limits are given back.
struct SendFailure {
    error: ApiError,
    stored: Option<SmsCode>,
}

impl From<ApiError> for SendFailure {
    fn from(error: ApiError) -> Self {
        Self { error, stored: None }
    }
}

/// Steps 3–10: consume the captcha and take the rate limits, then check, store and queue.
/// A failure after the limits were taken gives them back, the fraud guard's send count too:
/// only a queued job counts as a send.
pub async fn request_code(state: &AppState, attempt: &Attempt<'_>, request_id: Option<String>) -> Result<(), ApiError> {
    // 3–5. Refuse a blocked prefix, GETDEL the captcha, compare, take the rate limits, count
    //      the send: one atomic round trip.
    let admission = state.codes.check_captcha_and_limits(attempt).await?;

    match send_code(state, attempt.mobile, attempt.guard, request_id).await {
        Ok(()) => Ok(()),
        Err(SendFailure { error, stored }) => {
            state.codes.give_back(attempt, &admission, stored.as_ref()).await;
            Err(error)
        }
    }
}

/// Steps 6–9. A test number gets its fixed code stored and no job: the captcha, the limits
/// and the registered check are the same as for anyone, so the flow it tests is the real one.
async fn send_code(
    state: &AppState,
    mobile: &Mobile,
    guard: &Guard,
    request_id: Option<String>,
) -> Result<(), SendFailure> {
    // 6. not registered yet
    let exists = db::within(state.settings.dependency_timeout, users::exists(&state.db, mobile))
        .await
        .errmsg("数据库查询错误")?;
    if exists {
        return Err(ApiError::MobileTaken.into());
    }

    // 7. a fresh code from a CSPRNG, or a test number's fixed one
    let code = match guard {
        Guard::TestNumber(fixed) => fixed.clone(),
        Guard::Prefix(_) => SmsCode::generate(),
    };

    // 8. store it (and reset the wrong-try counter of the previous code) in one round trip
    state.codes.store_code(mobile, &code).await?;

    if let Guard::TestNumber(_) = guard {
        tracing::info!(mobile = %mobile.masked(), "test number (SMS_TEST_NUMBERS): fixed code stored, no SMS sent");
        return Ok(());
    }

    // 9. queue the send job (it carries the code's digest, never the code) and wait for the
    //    broker's confirm
    let settings = &state.settings;
    let mut job =
        SendJob::new(mobile.clone(), &code, settings.code_digest_key.expose_secret().as_bytes(), settings.sms_code_ttl);
    job.request_id = request_id;
    if let Err(e) = state.publisher.publish(&job).await {
        return Err(SendFailure { error: ApiError::Broker(e), stored: Some(code) });
    }
    tracing::info!(job_id = %job.id, mobile = %mobile.masked(), "sms job queued");
    Ok(())
}
