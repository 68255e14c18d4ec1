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
    let mut redis = state.redis.clone();
    let (redis_ok, db_ok, broker_ok) = tokio::join!(
        async { redis::cmd("PING").query_async::<String>(&mut redis).await.is_ok() },
        async {
            tokio::time::timeout(state.settings.dependency_timeout, sqlx::query("select 1").execute(&state.db))
                .await
                .is_ok_and(|r| r.is_ok())
        },
        state.publisher.is_ready(),
    );
    let failing: Vec<&str> = [("redis", redis_ok), ("postgres", db_ok), ("rabbitmq", broker_ok)]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "failing": failing })))
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared::telemetry::render_metrics())
}
