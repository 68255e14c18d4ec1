//! The worker: consumes send jobs, sends them through the SMS provider and records each
//! delivery in PostgreSQL before acking.
//!
//! - [`consumer`]: connection, prefetch, the consume loop and graceful shutdown.
//! - [`handle`]: one job, from the stale-code check to the recorded outcome.
//! - [`retry`]: when to try again (pure).
//! - [`ctl`]: `smsctl`, the ops command line.
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics` on `WORKER_METRICS_ADDR`.
//! - [`providers`]: the `SmsProvider` trait and its implementations.

pub mod consumer;
pub mod ctl;
pub mod handle;
pub mod ops;
pub mod providers;
pub mod retry;

use std::sync::Arc;

use shared::Settings;
use tokio_util::sync::CancellationToken;

pub use providers::SmsProvider;
pub use shared::StartError;

/// Runs the worker with the provider of `SMS_PROVIDER` until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let provider = providers::from_settings(&settings).map_err(|e| StartError::Provider(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(settings.worker_metrics_addr).await?;
    run_with_provider(settings, provider, listener, shutdown).await
}

/// Runs the worker with a given provider (tests pass one pointed at a local fake), serving
/// its endpoints on `listener`.
pub async fn run_with_provider(
    settings: Settings,
    provider: Arc<dyn SmsProvider>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    settings.warn_about_dev_defaults();
    // Installed before the first request, so that no early metric is lost.
    shared::telemetry::metrics();
    let ctx = Arc::new(handle::Ctx::connect(Arc::new(settings), provider, shutdown.clone()).await?);
    tracing::info!(addr = %listener.local_addr()?, "worker endpoints listening");
    let endpoints = tokio::spawn(ops::serve(ctx.clone(), listener, shutdown.clone()));
    consumer::consume(ctx, shutdown).await;
    // The endpoints stop with the same token; a failure there is not a reason to fail the exit.
    if let Ok(Err(e)) = endpoints.await {
        tracing::warn!(error = %e, "worker endpoints stopped with an error");
    }
    Ok(())
}
