//! `/passport/*`: the captcha, the SMS code request and registration (the seed's Flask
//! views). Handlers parse and answer; the work is in `sms.rs`, `account.rs` and `codes/`.

use axum::{
    Extension,
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use shared::domain::{ImageCodeId, Mobile};
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, ToSchema};

use crate::{
    account::{self, Registration},
    captcha,
    codes::Guard,
    error::{ApiError, Reply},
    extract::{ClientIp, JsonBody, required},
    sms::{self, CodeRequest},
    state::AppState,
};

/// Query of `GET /passport/image_code`.
#[derive(Deserialize, IntoParams)]
pub struct ImageCodeQuery {
    /// The id the frontend generated for this captcha: 1–64 characters of `[A-Za-z0-9_-]`.
    image_code_id: Option<String>,
    /// The original frontend's name for the same parameter.
    #[serde(rename = "imageCodeId")]
    #[param(rename = "imageCodeId")]
    image_code_id_alias: Option<String>,
}

/// A PNG image, for the OpenAPI document: a binary string, not JSON.
pub struct Png;

impl utoipa::PartialSchema for Png {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("image/png")
            .into()
    }
}

impl ToSchema for Png {}

/// `GET /passport/image_code?image_code_id=ID`: a PNG captcha whose text is stored as
/// `ImageCode_<ID>` for `IMAGE_CODE_TTL_SECS`, at most `IMAGE_CODE_HOURLY_LIMIT_PER_IP` per
/// client IP and hour.
#[utoipa::path(
    get,
    path = "/passport/image_code",
    tag = "passport",
    params(ImageCodeQuery),
    responses(
        (status = 200, description = "The captcha as `image/png` (`Cache-Control: no-store`); or JSON errno 4103 (missing or malformed id), 4001 (Redis), 4500",
            content((Png = "image/png"), (Reply = "application/json"))),
        (status = 429, description = "errno 4201: `IMAGE_CODE_HOURLY_LIMIT_PER_IP` captchas this hour from the client IP, or every drawing slot busy",
            body = Reply, headers(("Retry-After" = u64, description = "Seconds until the limit lets a request through"))),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn image_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: Result<Query<ImageCodeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::MissingParams);
    };
    let raw = query.image_code_id.or(query.image_code_id_alias).filter(|s| !s.is_empty());
    let Some(raw) = raw else {
        return Err(ApiError::MissingParams);
    };
    let id = ImageCodeId::parse(&raw).map_err(|_| ApiError::InvalidParam("图片验证码编号不正确"))?;

    // The cheap refusal first: a client over its budget costs one Redis call, no drawing.
    state.codes.take_captcha_budget(ip).await?;
    let generated = captcha::render(state.settings.dependency_timeout).await?;
    state.codes.store_captcha(&id, &generated.text).await?;

    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], generated.png).into_response())
}

/// Body of `POST /passport/sms_code`.
#[derive(Deserialize, ToSchema)]
pub struct SmsCodeRequest {
    /// The mobile to send the code to (`MOBILE_PATTERN`, by default `^1[3-9]\d{9}$`).
    #[serde(default)]
    #[schema(example = "13812345678")]
    pub mobile: String,
    /// The captcha text as the user typed it (case does not matter).
    #[serde(default)]
    #[schema(example = "F4Ud")]
    pub image_code: String,
    /// The id the captcha was fetched with (`imageCodeId` is accepted too).
    #[serde(default, alias = "imageCodeId")]
    #[schema(example = "0b8f2a1c-58b4-4a46-9d7f-3f1c2e5f4e10")]
    pub image_code_id: String,
}

/// `POST /passport/sms_code {"mobile", "image_code", "image_code_id"}`: steps 1–2 here, 3–10
/// in [`sms::request_code`] (`docs/http-api.md` lists them).
#[utoipa::path(
    post,
    path = "/passport/sms_code",
    tag = "passport",
    request_body = SmsCodeRequest,
    responses(
        (status = 200, description = "errno 0 发送成功 once the send job is confirmed by the broker (for a test number of `SMS_TEST_NUMBERS`: once its fixed code is stored; no SMS is sent); or 4103, 4004 (also: a number outside `SMS_ALLOWED_COUNTRIES`), 4002, 4003, 4001, 4301", body = Reply),
        (status = 400, description = "errno 4103: the `Content-Type` is not `application/json`, or the body is not a JSON object or is larger than 16 KiB", body = Reply),
        (status = 429, description = "errno 4201: resend cooldown, daily cap per mobile, hourly cap per IP, or the number's prefix is blocked by the fraud guard (the captcha is kept)",
            body = Reply, headers(("Retry-After" = u64, description = "Seconds until the limit lets a request through"))),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn sms_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request_id: Option<Extension<RequestId>>,
    JsonBody(body): JsonBody<SmsCodeRequest>,
) -> Result<Response, ApiError> {
    // 1. every field present, a non-empty string
    let (Some(mobile), Some(image_code), Some(image_code_id)) =
        (required(&body.mobile), required(&body.image_code), required(&body.image_code_id))
    else {
        return Err(ApiError::MissingParams);
    };
    // 2. mobile format
    let mobile = Mobile::parse(mobile, &state.settings.mobile_pattern).map_err(|_| ApiError::BadMobile)?;
    // 2. (cont.) its country is one we send to; test numbers are exempt
    let guard = Guard::of(&state.settings, &mobile)?;
    // No captcha can exist under an id that is not of the issued form.
    let image_code_id = ImageCodeId::parse(image_code_id).map_err(|_| ApiError::ImageCodeExpired)?;

    let request_id = request_id.and_then(|Extension(id)| id.header_value().to_str().ok().map(str::to_owned));
    let request = CodeRequest { mobile, guard, image_code_id, typed: image_code.to_owned(), ip, request_id };
    sms::request_code_detached(&state, request).await?;
    Ok(Reply::ok("发送成功"))
}

/// Body of `POST /passport/register`.
#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// The mobile the SMS code was sent to.
    #[serde(default)]
    #[schema(example = "13812345678")]
    pub mobile: String,
    /// The 6-digit code from the SMS (`smscode`, the seed's name, is accepted too).
    #[serde(default, alias = "smscode")]
    #[schema(example = "123456")]
    pub sms_code: String,
    /// 8–128 characters.
    #[serde(default)]
    #[schema(example = "correct-horse-9", min_length = 8, max_length = 128)]
    pub password: String,
}

/// `POST /passport/register {"mobile", "sms_code" (or "smscode"), "password"}`: checks the SMS
/// code, then creates the user with an argon2id password hash.
#[utoipa::path(
    post,
    path = "/passport/register",
    tag = "passport",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "errno 0 注册成功; or 4103, 4004, 4002, 4003, 4001", body = Reply),
        (status = 400, description = "errno 4103: the `Content-Type` is not `application/json`, or the body is not a JSON object or is larger than 16 KiB", body = Reply),
        (status = 429, description = "errno 4201: too many wrong codes (the code is gone: ask for a new one), or too many wrong codes from the client IP",
            body = Reply, headers(("Retry-After" = u64, description = "Seconds until a new code can be asked for, or the limit lets a request through"))),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let (Some(mobile), Some(sms_code), Some(password)) =
        (required(&body.mobile), required(&body.sms_code), required(&body.password))
    else {
        return Err(ApiError::MissingParams);
    };
    let mobile = Mobile::parse(mobile, &state.settings.mobile_pattern).map_err(|_| ApiError::BadMobile)?;
    let registration = Registration { mobile, sms_code: sms_code.to_owned(), password: password.to_owned(), ip };
    account::register(&state, registration).await?;
    Ok(Reply::ok("注册成功"))
}
