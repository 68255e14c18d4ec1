//! The HTTP api: captcha, SMS code request, registration, delivery reports, health. The contract is
//! `docs/http-api.md`.
//!
//! - `routes`: the handlers, which parse and answer; [`openapi`]: their OpenAPI document.
//! - [`sms`]: the send pipeline (captcha and limits, checks, store, queue).
//! - `account`: registering a user (code check, argon2id hash, insert); `conversion`: which
//!   delivery's code a register used.
//! - [`receipts`]: the delivery reports the providers push.
//! - `codes`: `CodeStore`, everything in Redis (captchas, codes, rate limits, their scripts).
//! - `state`: `AppState`, the handles every handler shares.
//! - `error`: `ApiError`, the one place errno and HTTP status are chosen.
//! - `extract`: the JSON-object body and client-IP extractors.
//! - `captcha`: PNG captcha drawing; `metrics`: request metrics.

mod account;
mod captcha;
mod codes;
mod conversion;
mod error;
mod extract;
mod lifetime;
mod metrics;
pub mod openapi;
pub mod receipts;
mod routes;
mod server;
pub mod sms;
mod state;

use std::sync::Arc;

use axum::{Router, http::HeaderName, middleware, routing::get};
use shared::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use codes::{Admission, Attempt, CodeStore, Guard};
pub use error::{ApiError, Reply};
pub use extract::MAX_BODY_BYTES;
pub use shared::StartError;
pub use state::AppState;

/// The request-id header: taken from the client or generated, echoed in the answer,
/// carried into the send job and the worker's logs.
pub const REQUEST_ID: &str = "x-request-id";

/// The router with every route and layer, over `state`.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings.api_request_timeout;
    let request_id = HeaderName::from_static(REQUEST_ID);
    routes::router()
        .route("/openapi.json", get(openapi::openapi_json))
        // Every dependency call has its own shorter timeout and errno answer; this is the
        // last resort against a request that hangs anyway.
        .layer(middleware::from_fn_with_state(timeout, lifetime::answer_in_time))
        .layer(middleware::from_fn(metrics::record))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = request.uri().path(), request_id = id)
        }))
        // Outermost: the id exists before the trace span opens and is echoed on every answer.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves the api on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(settings: Settings, listener: TcpListener, shutdown: CancellationToken) -> Result<(), StartError> {
    settings.warn_about_dev_defaults();
    // Installed before the first request, so that no early metric is lost.
    shared::telemetry::metrics();
    let state = AppState::connect(Arc::new(settings)).await?;
    // In the background: a slow or refusing Redis must not hold up start-up.
    let codes = state.codes.clone();
    tokio::spawn(async move { codes.warn_unless_noeviction().await });
    if let Err(e) = state.publisher.connect().await {
        // Not fatal: requests answer 4301 until the broker is back, and the publisher
        // reconnects on its own.
        tracing::warn!(error = %e, "broker not reachable at start-up");
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    let detached = state.detached.clone();
    let limits = server::Limits {
        header_timeout: state.settings.api_header_timeout,
        max_connections: state.settings.api_max_connections,
        drain: state.settings.api_request_timeout,
    };
    server::serve(listener, router(state), limits, shutdown).await?;
    // Requests whose client went away may still be running: let them finish (job queued or
    // everything given back) before the process exits.
    detached.drain().await;
    Ok(())
}
