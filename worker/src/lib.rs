//! The worker: consumes send jobs, sends them through the SMS provider and records each
//! delivery in PostgreSQL before acking.
//!
//! - [`consumer`]: connection, prefetch, the consume loop and graceful shutdown.
//! - [`handle`]: one job, from the stale-code check to the recorded outcome.
//! - [`retry`]: when to try again (pure).
//! - [`providers`]: the `SmsProvider` trait and its implementations.

pub mod consumer;
pub mod handle;
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
    run_with_provider(settings, provider, shutdown).await
}

/// Runs the worker with a given provider (tests pass one pointed at a local fake).
pub async fn run_with_provider(
    settings: Settings,
    provider: Arc<dyn SmsProvider>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let ctx = handle::Ctx::connect(Arc::new(settings), provider).await?;
    consumer::consume(Arc::new(ctx), shutdown).await;
    Ok(())
}
