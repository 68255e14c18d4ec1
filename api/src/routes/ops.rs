//! Operational endpoints: liveness and readiness.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::{Value, json};

use crate::AppState;

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis, PostgreSQL and RabbitMQ reachable; 503 naming the failing ones.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Every dependency answers"),
    (status = 503, description = "`{\"failing\": [\"redis\" | \"postgres\" | \"rabbitmq\"]}`"),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker_ok = state.publisher.is_ready().await;
    let failing = shared::health::failing(&state.redis, &state.db, state.settings.dependency_timeout, broker_ok).await;
    let (ok, body) = shared::health::report(&failing);
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared::telemetry::render_metrics())
}
