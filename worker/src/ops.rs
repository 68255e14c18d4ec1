//! The worker's own HTTP endpoints on `WORKER_METRICS_ADDR`: `/healthz`, `/readyz` (Redis,
//! PostgreSQL and the broker consumer) and `/metrics`.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handle::Ctx;

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, Json<Value>) {
    let consuming = ctx.consuming.load(Ordering::Relaxed);
    let failing = shared::health::failing(&ctx.redis, &ctx.db, ctx.settings.dependency_timeout, consuming).await;
    let (ok, body) = shared::health::report(&failing);
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared::telemetry::render_metrics())
}
