//! Extractors whose rejections are `ApiError`s, so that a bad request never gets axum's
//! plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A request body that must be a JSON object (else HTTP 400, errno 4103), read into the
/// handler's request type `T`. A field of the wrong type is the handler's errno answer
/// (4103 参数不全), not a rejection with axum's plain-text message.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Bytes honours DefaultBodyLimit: an oversized body is a rejection here.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::MalformedBody(e.body_text()))?;
        // A struct would also deserialize from a JSON array: only an object is a body.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::MalformedBody("not a JSON object".into()));
        }
        // One parse on the normal path; only a failure looks again, to tell a malformed
        // body (HTTP 400) from a well-formed object with a mistyped field (errno 4103).
        serde_json::from_slice::<T>(&bytes).map(Self).map_err(|e| match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(_)) => ApiError::MissingParams,
            _ => ApiError::MalformedBody(e.to_string()),
        })
    }
}

/// The value of a required text field: `None` when absent or empty (the seed's `not all(...)`).
pub fn required(field: &str) -> Option<&str> {
    Some(field).filter(|f| !f.is_empty())
}

/// The client's IP: the peer address, or the first `X-Forwarded-For` entry when
/// `TRUST_PROXY_HEADERS=true` (only behind a proxy that sets that header itself).
pub struct ClientIp(pub IpAddr);

/// Whether to believe `X-Forwarded-For` (`TRUST_PROXY_HEADERS`), taken from the app state.
#[derive(Clone, Copy, Debug)]
pub struct ProxyTrust(pub bool);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    ProxyTrust: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if ProxyTrust::from_ref(state).0 {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Ok(Self(ip));
            }
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self(addr.ip()))
            .ok_or_else(|| ApiError::Internal("no peer address: serve with connect info".into()))
    }
}
