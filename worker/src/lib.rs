//! The worker: consumes send jobs, sends them through the SMS provider and records each
//! delivery in PostgreSQL before acking.
//!
//! - `state`: `WorkerState`, what every delivery shares.
//! - `consumer`: connection, prefetch, the consume loop and graceful shutdown.
//! - `deliver`: one job, from the stale-code check to the recorded outcome.
//! - `recorder`: the group commit of the sends' starts and outcomes.
//! - `retry`: when to try again (pure); `backoff`: waiting out a dependency that is down.
//! - `endpoints`: `/healthz`, `/readyz` and `/metrics` on `WORKER_METRICS_ADDR`.
//!
//! The providers themselves are the `providers` crate; the ops command line is `smsctl`.

mod backoff;
mod consumer;
mod deliver;
mod endpoints;
mod recorder;
mod retry;
mod state;

use std::sync::Arc;

use providers::{Router, SmsProvider};
use shared::{Settings, StartError, config::Countries};
use tokio_util::sync::CancellationToken;

/// Runs the worker with the providers of `SMS_PROVIDERS` until `shutdown` is cancelled,
/// serving its endpoints on `WORKER_METRICS_ADDR`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let listener = shared::listen("WORKER_METRICS_ADDR", settings.worker_metrics_addr).await?;
    serve(settings, listener, shutdown).await
}

/// Runs the worker with the providers of `SMS_PROVIDERS`, serving its endpoints on `listener`.
pub async fn serve(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    settings.refuse_dev_providers()?;
    let router = Router::from_settings(&settings).map_err(|e| StartError::Provider(e.to_string()))?;
    run_with_router(settings, router, listener, shutdown).await
}

/// Runs the worker with one given provider serving every number (tests pass a client
/// pointed at a local fake), serving its endpoints on `listener`.
pub async fn run_with_provider(
    settings: Settings,
    provider: Arc<dyn SmsProvider>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let router = Router::new(vec![(provider, Countries::Any)], &settings);
    run_with_router(settings, router, listener, shutdown).await
}

async fn run_with_router(
    settings: Settings,
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    settings.warn_about_dev_defaults();
    // Installed before the first request, so that no early metric is lost.
    shared::telemetry::metrics();
    let state = Arc::new(state::WorkerState::connect(Arc::new(settings), router, shutdown.clone()).await?);
    tracing::info!(addr = %listener.local_addr()?, "worker endpoints listening");
    let endpoints = tokio::spawn(endpoints::serve(state.clone(), listener, shutdown));
    consumer::Consumer::new(state).run().await;
    // The endpoints stop with the same token; a failure there is not a reason to fail the exit.
    if let Ok(Err(e)) = endpoints.await {
        tracing::warn!(error = %e, "worker endpoints stopped with an error");
    }
    Ok(())
}
