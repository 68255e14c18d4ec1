//! `POST /receipts/{provider}`: delivery reports pushed by the providers. The handler takes
//! the request apart; checking, reading and recording are in `receipts.rs`.

use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    http::HeaderMap,
    response::Response,
};

use crate::{
    receipts::{self, Incoming, ReceiptError, Refusal},
    state::AppState,
};

/// `POST /receipts/{provider}`: a delivery report from `ccp`, `aliyun`, `tencent` (each with
/// `?token=RECEIPT_TOKEN`) or `twilio` (signed with `X-Twilio-Signature`), answered as that
/// provider expects.
#[utoipa::path(
    post,
    path = "/receipts/{provider}",
    tag = "receipts",
    params(
        ("provider" = String, Path, description = "`ccp`, `aliyun`, `tencent` or `twilio`"),
        ("token" = Option<String>, Query, description = "`RECEIPT_TOKEN` (ccp, aliyun, tencent)"),
        ("X-Twilio-Signature" = Option<String>, Header, description = "Twilio's signature of the push (twilio)"),
    ),
    request_body(
        description = "The provider's own format: CCP `SMSArrived` as XML `<Request>` or JSON `{\"Request\": {…}}`; \
                       Aliyun and Tencent a JSON array of reports; Twilio a status-callback form",
        content(
            (Object = "application/json"),
            (String = "application/xml"),
            (Object = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 200, description = "Taken (unknown message ids and unreadable entries of a batch included): \
            CCP `{\"statusCode\":\"000000\"}` or its XML form, Aliyun `{\"code\":0,\"msg\":\"接收成功\"}`, \
            Tencent `{\"result\":0,\"errmsg\":\"OK\"}`",
            content((Object = "application/json"), (String = "application/xml"))),
        (status = 204, description = "Taken (Twilio)"),
        (status = 400, description = "A body the provider's format cannot read", body = Refusal),
        (status = 403, description = "Missing or wrong `token`, or a bad Twilio signature: nothing recorded", body = Refusal),
        (status = 404, description = "Unknown provider, or its receipts are not configured", body = Refusal),
        (status = 413, description = "A body over 64 KiB", body = Refusal),
        (status = 503, description = "The database failed: push again later", body = Refusal),
    )
)]
#[tracing::instrument(skip_all, fields(provider = %provider))]
pub async fn receipt(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ReceiptError> {
    receipts::receive(&state, Incoming { provider, query, headers, body }).await
}
