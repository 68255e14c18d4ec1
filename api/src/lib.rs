//! The HTTP api: captcha, SMS code request, health.
//!
//! - [`state`]: `AppState`, the pools every handler shares.
//! - [`error`]: `ApiError`, the one place errno and HTTP status are chosen.
//! - [`extract`]: the JSON-object body and client-IP extractors.
//! - [`limits`]: the Redis scripts behind the captcha check and the rate limits.
//! - [`verify`]: the SMS code check of the register step.
//! - [`captcha`]: PNG captcha generation.
//! - [`routes`]: the handlers.

pub mod captcha;
pub mod error;
pub mod extract;
pub mod limits;
pub mod routes;
pub mod state;
pub mod verify;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode};
use shared::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};

pub use shared::StartError;
pub use state::AppState;

/// The largest request body accepted; larger ones get HTTP 400 with errno 4103.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The router with every route and layer, over `state`.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings.api_request_timeout;
    routes::router()
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Every dependency call has its own shorter timeout and errno answer; this is the
        // last resort against a request that hangs anyway.
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the api on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(settings: Settings, listener: TcpListener, shutdown: CancellationToken) -> Result<(), StartError> {
    let state = AppState::connect(Arc::new(settings)).await?;
    if let Err(e) = state.publisher.connect().await {
        // Not fatal: requests answer 4301 until the broker is back, and the publisher
        // reconnects on its own.
        tracing::warn!(error = %e, "broker not reachable at start-up");
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
