//! The worker's own HTTP endpoints on `WORKER_METRICS_ADDR`: `/healthz`, `/readyz` (Redis,
//! PostgreSQL and the broker consumer) and `/metrics`.

use std::sync::{Arc, atomic::Ordering};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::Value;
use shared::health;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::WorkerState;

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(state: Arc<WorkerState>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn readyz(State(state): State<Arc<WorkerState>>) -> (StatusCode, Json<Value>) {
    let consuming = state.consuming.load(Ordering::Relaxed);
    health::readyz(&state.redis, &state.db, state.settings.dependency_timeout, consuming).await
}
