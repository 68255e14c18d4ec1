//! Operational endpoints: liveness, readiness and metrics (the worker serves the same, from
//! `shared::health`; these wrappers carry the OpenAPI description).

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::Value;
use shared::health;

use crate::state::AppState;

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    health::healthz().await
}

/// `GET /readyz`: Redis, PostgreSQL and RabbitMQ reachable; 503 naming the failing ones.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Every dependency answers"),
    (status = 503, description = "`{\"failing\": [\"redis\" | \"postgres\" | \"rabbitmq\"]}`"),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker_ok = state.publisher.is_ready().await;
    health::readyz(state.codes.connection(), &state.db, state.settings.dependency_timeout, broker_ok).await
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    health::metrics().await
}
