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

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL unreachable, or the migrations failed.
    #[error("DATABASE_URL: {0}")]
    Database(#[from] sqlx::Error),
    /// `REDIS_URL` is not a valid Redis URL.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// The provider's HTTP client could not be built.
    #[error("SMS_PROVIDER: {0}")]
    Provider(#[from] reqwest::Error),
}

/// Runs the worker with the provider of `SMS_PROVIDER` until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let provider = providers::from_settings(&settings)?;
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
