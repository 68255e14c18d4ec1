//! The operational endpoints api and worker both serve: `/healthz`, `/readyz` and `/metrics`.

use std::time::Duration;

use crate::cache::Redis;
use crate::db::Db;
use axum::{
    Json,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::{Value, json};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: pings Redis and PostgreSQL (each within `timeout`) and takes the broker's
/// state as `broker_ok`. 200 `{"status":"ready"}`, or 503 `{"status":"unavailable",
/// "failing":[…]}` naming the dependencies that did not answer.
pub async fn readyz(redis: &Redis, db: &Db, timeout: Duration, broker_ok: bool) -> (StatusCode, Json<Value>) {
    let mut redis = redis.clone();
    let (redis_ok, db_ok) = tokio::join!(
        async {
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut redis))
                .await
                .is_ok_and(|r| r.is_ok())
        },
        async { tokio::time::timeout(timeout, sqlx::query("select 1").execute(db)).await.is_ok_and(|r| r.is_ok()) },
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

/// `GET /metrics`: the Prometheus text exposition of every metric recorded so far.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render_metrics())
}
