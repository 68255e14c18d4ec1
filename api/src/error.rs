//! `ApiError`: every way a `/passport` request can fail, and the one place where an errno,
//! its message and the HTTP status are chosen. Internal causes are logged, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use shared::{Errno, queue::PublishError};
use utoipa::ToSchema;

/// The body of every `/passport` JSON answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reply {
    /// 0 on success; otherwise one of the errno values listed in the API description.
    #[schema(example = 0)]
    pub errno: u16,
    /// A message for the user, in Chinese as in the seed.
    #[schema(example = "发送成功")]
    pub errmsg: &'static str,
}

impl Reply {
    /// A success answer with `errmsg`.
    pub fn ok(errmsg: &'static str) -> Response {
        let mut response = Json(Self { errno: Errno::Ok.code(), errmsg }).into_response();
        response.extensions_mut().insert(Errno::Ok);
        response
    }
}

/// Which rate limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `SMS_RESEND_INTERVAL_SECS` per mobile.
    ResendCooldown,
    /// `SMS_DAILY_LIMIT_PER_MOBILE`.
    DailyPerMobile,
    /// `SMS_HOURLY_LIMIT_PER_IP`.
    HourlyPerIp,
    /// `IMAGE_CODE_HOURLY_LIMIT_PER_IP`: captchas issued to one client IP.
    ImageCodesPerIp,
    /// Every captcha-drawing slot stayed busy for `DEPENDENCY_TIMEOUT_MS` (a flood).
    CaptchaRenders,
    /// `REGISTER_HOURLY_FAILURES_PER_IP`: wrong SMS codes from one client IP.
    RegisterFailuresPerIp,
    /// The fraud guard blocked the mobile's number prefix (`FRAUD_BLOCK_SECS`).
    FraudBlock,
}

/// A failed `/passport` request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a JSON object, or its `Content-Type` is not JSON: HTTP 400.
    #[error("malformed body: {0}")]
    MalformedBody(String),
    /// The body is larger than `MAX_BODY_BYTES`: HTTP 400, and the connection is closed once
    /// the rest of the body has been read and dropped (see `extract::JsonBody`).
    #[error("body larger than the limit")]
    BodyTooLarge,
    /// A required field is missing, empty or not a string.
    #[error("missing parameter")]
    MissingParams,
    /// A parameter has a bad value (`errmsg` says which).
    #[error("invalid parameter: {0}")]
    InvalidParam(&'static str),
    /// The mobile does not match `MOBILE_PATTERN`.
    #[error("bad mobile")]
    BadMobile,
    /// The mobile's calling code is not in `SMS_ALLOWED_COUNTRIES` (or has none): to the
    /// client, a bad mobile.
    #[error("mobile outside SMS_ALLOWED_COUNTRIES")]
    CountryNotAllowed,
    /// No captcha under that id (expired, used, or never issued).
    #[error("image code expired")]
    ImageCodeExpired,
    /// The captcha text does not match.
    #[error("image code wrong")]
    ImageCodeWrong,
    /// A rate limit refused the request: HTTP 429 with `Retry-After`.
    #[error("rate limited ({limit:?}), retry after {retry_after_secs}s")]
    RateLimited {
        /// Which limit.
        limit: Limit,
        /// Seconds until the limit lets the request through.
        retry_after_secs: u64,
    },
    /// No live SMS code for the mobile (expired, used, or never sent).
    #[error("sms code expired")]
    SmsCodeExpired,
    /// The SMS code does not match.
    #[error("sms code wrong")]
    SmsCodeWrong,
    /// Too many wrong SMS codes: the code was deleted. HTTP 429 with `Retry-After`, as every
    /// 4201.
    #[error("too many wrong sms codes, retry after {retry_after_secs}s")]
    TooManyAttempts {
        /// When a new code can be asked for: `SMS_RESEND_INTERVAL_SECS`, the longest the
        /// cooldown of the deleted code can still run.
        retry_after_secs: u64,
    },
    /// The mobile is already registered.
    #[error("mobile already registered")]
    MobileTaken,
    /// Redis failed; `errmsg` names the step.
    #[error("redis: {errmsg}: {source}")]
    Redis {
        /// The step's message.
        errmsg: &'static str,
        /// The cause (logged only).
        source: redis::RedisError,
    },
    /// PostgreSQL failed; `errmsg` names the step.
    #[error("database: {errmsg}: {source}")]
    Database {
        /// The step's message.
        errmsg: &'static str,
        /// The cause (logged only).
        source: sqlx::Error,
    },
    /// The send job was not queued.
    #[error("broker: {0}")]
    Broker(#[from] PublishError),
    /// The request did not finish within `API_REQUEST_TIMEOUT_SECS`.
    #[error("request timed out")]
    Timeout,
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for ApiError {
    /// A blocking task (captcha drawing, password hashing) panicked or was cancelled.
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Turns a dependency's error into the `ApiError` that answers with `errmsg` (errno 4001),
/// keeping the cause for the log: `redis.get(key).await.errmsg("数据查询失败")?`.
pub trait ResultExt<T> {
    /// The error, as the answer `errmsg` names.
    fn errmsg(self, errmsg: &'static str) -> Result<T, ApiError>;
}

impl<T> ResultExt<T> for Result<T, redis::RedisError> {
    fn errmsg(self, errmsg: &'static str) -> Result<T, ApiError> {
        self.map_err(|source| ApiError::Redis { errmsg, source })
    }
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn errmsg(self, errmsg: &'static str) -> Result<T, ApiError> {
        self.map_err(|source| ApiError::Database { errmsg, source })
    }
}

impl ApiError {
    /// The errno this error answers with.
    pub fn errno(&self) -> Errno {
        self.parts().0
    }

    /// The errno, HTTP status and message of this error.
    fn parts(&self) -> (Errno, StatusCode, &'static str) {
        use ApiError::*;
        match self {
            MalformedBody(_) | BodyTooLarge => (Errno::ParamErr, StatusCode::BAD_REQUEST, "参数错误"),
            MissingParams => (Errno::ParamErr, StatusCode::OK, "参数不全"),
            InvalidParam(msg) => (Errno::ParamErr, StatusCode::OK, msg),
            BadMobile | CountryNotAllowed => (Errno::DataErr, StatusCode::OK, "手机号不正确"),
            ImageCodeExpired => (Errno::NoData, StatusCode::OK, "验证码已过期"),
            ImageCodeWrong => (Errno::DataErr, StatusCode::OK, "验证码输入错误"),
            RateLimited { limit, .. } => (
                Errno::ReqErr,
                StatusCode::TOO_MANY_REQUESTS,
                match limit {
                    Limit::ResendCooldown => "发送过于频繁，请稍后再试",
                    Limit::DailyPerMobile => "该手机号今日发送次数已达上限",
                    Limit::HourlyPerIp | Limit::ImageCodesPerIp => "请求次数过多，请稍后再试",
                    Limit::CaptchaRenders => "系统繁忙，请稍后再试",
                    Limit::RegisterFailuresPerIp => "验证码错误次数过多，请稍后再试",
                    Limit::FraudBlock => "该号段暂时无法接收验证码，请稍后再试",
                },
            ),
            SmsCodeExpired => (Errno::NoData, StatusCode::OK, "短信验证码已过期"),
            SmsCodeWrong => (Errno::DataErr, StatusCode::OK, "短信验证码错误"),
            TooManyAttempts { .. } => (Errno::ReqErr, StatusCode::TOO_MANY_REQUESTS, "验证码错误次数过多，请重新获取"),
            MobileTaken => (Errno::DataExist, StatusCode::OK, "该手机已被注册"),
            Redis { errmsg, .. } | Database { errmsg, .. } => (Errno::DbErr, StatusCode::OK, errmsg),
            Broker(_) => (Errno::ThirdErr, StatusCode::OK, "发送短信失败"),
            Timeout => (Errno::ServerErr, StatusCode::OK, "请求超时，请稍后再试"),
            Internal(_) => (Errno::ServerErr, StatusCode::OK, Errno::ServerErr.default_message()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (errno, status, errmsg) = self.parts();
        match errno {
            Errno::DbErr | Errno::ThirdErr | Errno::ServerErr => {
                // `{:#}`-style chain: the Display of each variant includes its source.
                tracing::error!(errno = errno.code(), error = %self, "request failed");
            }
            _ => tracing::debug!(errno = errno.code(), error = %self, "request refused"),
        }
        if errno == Errno::ThirdErr {
            metrics::counter!("smscode_api_publish_failures_total").increment(1);
        }
        let mut response = (status, Json(Reply { errno: errno.code(), errmsg })).into_response();
        // For the request metrics, which label answers by errno.
        response.extensions_mut().insert(errno);
        match self {
            ApiError::RateLimited { retry_after_secs, .. } | ApiError::TooManyAttempts { retry_after_secs } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            // The rest of the body is read and dropped, then the connection ends: say so.
            ApiError::BodyTooLarge => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
