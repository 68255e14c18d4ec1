//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' own types.

use utoipa::OpenApi;

use crate::{
    error::Reply,
    receipts::Refusal,
    routes::{ops, page, passport, receipts},
};

/// The document's skeleton; the errno table is added from `shared::Errno` at run time.
#[derive(OpenApi)]
#[openapi(
    info(title = "smscode", description = "SMS verification codes for web signup."),
    paths(
        passport::image_code,
        passport::sms_code,
        passport::register,
        receipts::receipt,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
        page::signup,
    ),
    components(schemas(Reply, Refusal, passport::SmsCodeRequest, passport::RegisterRequest)),
    tags(
        (name = "passport", description = "The signup flow (JSON answers `{errno, errmsg}`)"),
        (name = "receipts", description = "Delivery reports pushed by the SMS providers"),
        (name = "ops"),
    )
)]
pub struct ApiDoc;

/// The complete document, with the errno table in its description.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut description = String::from(
        "SMS verification codes for web signup. Every `/passport` answer is JSON `{\"errno\", \"errmsg\"}`.\n\n\
         | errno | meaning |\n|---|---|\n",
    );
    for errno in shared::Errno::ALL {
        description.push_str(&format!("| {} | {} |\n", errno.code(), errno.default_message()));
    }
    doc.info.description = Some(description);
    doc
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
