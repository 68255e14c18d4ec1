//! Extractors whose rejections are `ApiError`s, so that a bad request never gets axum's
//! plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde_json::{Map, Value};

use crate::{AppState, error::ApiError};

/// A request body that must be a JSON object (else HTTP 400, errno 4103). Fields are read
/// with [`JsonObject::str`], so that a missing or mistyped field is the handler's errno
/// answer rather than a rejection.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Bytes honours DefaultBodyLimit: an oversized body is a rejection here.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::MalformedBody(e.body_text()))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::MalformedBody("not a JSON object".into())),
            Err(e) => Err(ApiError::MalformedBody(e.to_string())),
        }
    }
}

impl JsonObject {
    /// The first of `names` present as a non-empty string (`None` when absent, empty or not
    /// a string: the seed's `not all([...])`).
    pub fn str(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| self.0.get(*name)).and_then(Value::as_str).filter(|s| !s.is_empty())
    }
}

/// The client's IP: the peer address, or the first `X-Forwarded-For` entry when
/// `TRUST_PROXY_HEADERS=true` (only behind a proxy that sets that header itself).
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if state.settings.trust_proxy_headers {
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
