//! Delivery reports pushed by the providers (`POST /receipts/{provider}`): authenticated
//! (Twilio's signature, the others' `token` query parameter), read by the provider's own
//! parser in the `providers` crate, recorded entry by entry, answered as the provider expects.

use axum::{
    Json,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use providers::receipts::{self as format, Entry, Push};
use secrecy::ExposeSecret;
use serde::Serialize;
use shared::{
    config::{ProviderName, ReceiptSettings},
    db::{self, receipts},
};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::state::AppState;

/// The largest push accepted. Above the 16 KiB of the `/passport` bodies: a Tencent push
/// carries up to 100 reports of about 250 bytes each.
pub const MAX_RECEIPT_BODY_BYTES: usize = 64 * 1024;

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Refusal {
    /// Why, in a few words (never what the secret should have been).
    #[schema(example = "forbidden")]
    pub error: &'static str,
}

/// Why a push is refused. None of them is a 5xx but [`ReceiptError::Unavailable`], which
/// asks the provider to push again later.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// An unknown provider, or one whose receipts are not configured: 404.
    #[error("no receipt endpoint for this provider")]
    NotFound,
    /// A missing or wrong token or signature: 403, nothing recorded.
    #[error("not authenticated")]
    Forbidden,
    /// A body larger than [`MAX_RECEIPT_BODY_BYTES`]: 413.
    #[error("body larger than the limit")]
    TooLarge,
    /// A body the provider's format cannot read: 400.
    #[error("{0}")]
    Malformed(String),
    /// PostgreSQL failed: 503, so that the provider pushes again (Aliyun documents retries
    /// on any non-200 and recommends a 5xx when processing fails).
    #[error("database: {0}")]
    Unavailable(#[from] sqlx::Error),
}

impl IntoResponse for ReceiptError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not found"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed body"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "try again later"),
        };
        match &self {
            Self::Unavailable(_) => tracing::error!(error = %self, "receipt not recorded"),
            _ => tracing::debug!(error = %self, "receipt refused"),
        }
        (status, Json(Refusal { error })).into_response()
    }
}

/// The push of `provider` as received: its query string, headers and body.
pub struct Incoming {
    /// The `{provider}` path segment.
    pub provider: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body, not read yet.
    pub body: Body,
}

/// Checks, reads and records one push; the answer is the provider's success answer, even when
/// some of its entries were unknown or unreadable (a retry would not make them better).
pub async fn receive(state: &AppState, incoming: Incoming) -> Result<Response, ReceiptError> {
    let provider = match incoming.provider.parse::<ProviderName>() {
        Ok(ProviderName::Log) | Err(_) => return Err(ReceiptError::NotFound),
        Ok(provider) => provider,
    };
    let config = &state.settings.receipts;
    let Some(auth) = Auth::of(provider, config) else {
        return Err(ReceiptError::NotFound);
    };
    // The token is checked before a byte of the body is read; Twilio signs the body, so its
    // check comes after.
    if let Auth::Token(expected) = auth
        && !token_matches(incoming.query.as_deref(), expected)
    {
        return Err(forbidden(provider));
    }
    let body = axum::body::to_bytes(incoming.body, MAX_RECEIPT_BODY_BYTES).await.map_err(|_| ReceiptError::TooLarge)?;
    let push = match auth {
        Auth::Token(_) => {
            let content_type = incoming.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            providers::parse_push(provider, content_type, &body).map_err(|e| malformed(provider, e))?
        }
        Auth::Twilio { auth_token, callback } => {
            let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
                .map_err(|e| malformed(provider, format::Malformed(format!("form: {e}"))))?;
            // The URL Twilio signed is the StatusCallback we gave it: RECEIPT_BASE_URL and
            // this route, whatever a proxy in front of us rewrote the path to.
            let url = match incoming.query.as_deref() {
                Some(query) => format!("{callback}?{query}"),
                None => callback,
            };
            let signature = incoming.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !providers::twilio::verify_callback(auth_token, &url, &params, signature) {
                return Err(forbidden(provider));
            }
            providers::twilio::receipts(&params)
        }
    };
    record(state, provider, &push).await?;
    Ok(answer(&push))
}

/// How a provider's pushes are authenticated; `None`: not configured.
enum Auth<'a> {
    /// The `token` query parameter must equal `RECEIPT_TOKEN`.
    Token(&'a str),
    /// `X-Twilio-Signature` under `TWILIO_AUTH_TOKEN` over the callback URL we gave Twilio.
    Twilio { auth_token: &'a str, callback: String },
}

impl<'a> Auth<'a> {
    fn of(provider: ProviderName, config: &'a ReceiptSettings) -> Option<Self> {
        match provider {
            ProviderName::Twilio => Some(Self::Twilio {
                auth_token: config.twilio_auth_token.as_ref()?.expose_secret(),
                callback: config.twilio_callback()?,
            }),
            _ => {
                config.token.as_ref().map(|t| Self::Token(t.expose_secret())).filter(|t| !matches!(t, Self::Token("")))
            }
        }
    }
}

/// Whether the query's `token` is `expected`, compared in constant time.
fn token_matches(query: Option<&str>, expected: &str) -> bool {
    let pairs: Vec<(String, String)> = query.and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let mut tokens = pairs.iter().filter(|(name, _)| name == "token");
    match (tokens.next(), tokens.next()) {
        (Some((_, token)), None) => bool::from(token.as_bytes().ct_eq(expected.as_bytes())),
        // None, or two (which one would a proxy have checked?).
        _ => false,
    }
}

fn forbidden(provider: ProviderName) -> ReceiptError {
    count(provider, "forbidden");
    ReceiptError::Forbidden
}

fn malformed(provider: ProviderName, e: format::Malformed) -> ReceiptError {
    count(provider, "malformed");
    ReceiptError::Malformed(e.0)
}

fn count(provider: ProviderName, status: &'static str) {
    metrics::counter!("smscode_api_receipts_total", "provider" => provider.as_str(), "status" => status).increment(1);
}

/// Records each entry with its own statement (a batch with a bad entry keeps the good ones),
/// and counts it: `delivered`, `undelivered`, `duplicate` (already final: a repeat, or a late
/// contrary report), `unknown` (no call of ours has that id), `ignored`, `malformed`.
async fn record(state: &AppState, provider: ProviderName, push: &Push) -> Result<(), ReceiptError> {
    let limit = state.settings.dependency_timeout;
    for entry in &push.entries {
        let receipt = match entry {
            Entry::Receipt(receipt) => receipt,
            Entry::Ignored => {
                count(provider, "ignored");
                continue;
            }
            Entry::Malformed(why) => {
                tracing::debug!(provider = provider.as_str(), why, "unreadable receipt entry");
                count(provider, "malformed");
                continue;
            }
        };
        let report = receipts::Report {
            provider: provider.as_str(),
            message_id: &receipt.message_id,
            delivered: receipt.delivered,
            error_code: receipt.error_code.as_deref(),
            reported_at: receipt.reported_at,
        };
        let recorded = db::within(limit, receipts::record(&state.db, &report)).await?;
        let status = match recorded {
            receipts::Recorded::Unknown => "unknown",
            receipts::Recorded::AlreadyFinal => "duplicate",
            receipts::Recorded::Recorded { .. } if receipt.delivered => "delivered",
            receipts::Recorded::Recorded { .. } => "undelivered",
        };
        tracing::debug!(provider = provider.as_str(), status, provider_status = receipt.status, "receipt");
        count(provider, status);
        if let receipts::Recorded::Recorded { moved: true, seconds_to_report: Some(seconds) } = recorded
            && receipt.delivered
        {
            metrics::histogram!("smscode_api_receipt_delivery_seconds", "provider" => provider.as_str())
                .record(seconds.max(0.0));
        }
    }
    Ok(())
}

/// The provider's success answer.
fn answer(push: &Push) -> Response {
    let status = StatusCode::from_u16(push.answer.status).unwrap_or(StatusCode::OK);
    if push.answer.body.is_empty() {
        return status.into_response();
    }
    let mut response = (status, push.answer.body).into_response();
    if let Some(content_type) = push.answer.content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_be_there_once_and_equal() {
        assert!(token_matches(Some("token=s3cret"), "s3cret"));
        assert!(token_matches(Some("a=1&token=s%33cret"), "s3cret"));
        for query in
            [None, Some(""), Some("token="), Some("token=s3cre"), Some("token=s3cret&token=s3cret"), Some("t=s3cret")]
        {
            assert!(!token_matches(query, "s3cret"), "{query:?}");
        }
    }
}
