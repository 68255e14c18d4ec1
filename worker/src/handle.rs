//! One send job, start to finish: idempotency check, stale-code check, send, record.
//! The outcome is committed to PostgreSQL before the caller acks the message.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use chrono::Utc;
use redis::{AsyncCommands, aio::ConnectionManager};
use secrecy::ExposeSecret;
use shared::{
    Settings,
    db::{self, AttemptStart, DeliveryStatus, NewAttempt},
    keys::Keys,
    queue::{Publisher, SendJob},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    StartError,
    providers::{Message, SendError, SmsProvider},
    retry::{self, Next},
};

/// What every job handler shares.
pub struct Ctx {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Redis key builders.
    pub keys: Keys,
    /// PostgreSQL pool.
    pub db: PgPool,
    /// Redis connection.
    pub redis: ConnectionManager,
    /// The provider messages go out through.
    pub provider: Arc<dyn SmsProvider>,
    /// Publishes retries to the delay queues.
    pub publisher: Publisher,
    /// Whether a consumer is attached to the send queue right now (for `/readyz`).
    pub consuming: AtomicBool,
    /// Cancelled on shutdown: stops waiting for a database that is down.
    pub shutdown: CancellationToken,
}

impl Ctx {
    /// Connects to PostgreSQL (migrating) and prepares Redis and the retry publisher.
    pub async fn connect(
        settings: Arc<Settings>,
        provider: Arc<dyn SmsProvider>,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        // A send holds a connection only for two short statements, so a few serve many sends
        // in flight; PostgreSQL's connection limit is shared by every worker and api.
        let pool_size = u32::from(settings.worker_prefetch).min(16) + 2;
        let db = db::connect_and_migrate(&settings, pool_size).await?;
        let redis = shared::cache::connect(&settings)?;
        Ok(Self {
            keys: Keys::new(settings.redis_key_prefix.clone()),
            publisher: Publisher::new(settings.clone(), "smscode-worker-retry"),
            settings,
            db,
            redis,
            provider,
            consuming: AtomicBool::new(false),
            shutdown,
        })
    }
}

/// What became of a job; always recorded before it is returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded with this final or retrying status.
    Recorded(DeliveryStatus),
    /// The job was already final (a redelivery): nothing sent, nothing changed.
    AlreadyDone(DeliveryStatus),
}

/// The job could not be handled now because a dependency failed; nothing was sent after
/// the failure, and the message must not be acked as done.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// PostgreSQL failed: the outcome cannot be recorded.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed: the code cannot be checked.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The retry could not be queued.
    #[error("broker: {0}")]
    Broker(#[from] shared::queue::PublishError),
}

/// Handles one job. Nothing is sent twice for a job already recorded `sent`.
#[tracing::instrument(skip_all, fields(
    job_id = %job.id,
    request_id = job.request_id.as_deref().unwrap_or(""),
    mobile = %job.mobile.masked(),
    attempt = job.attempt,
))]
pub async fn handle(ctx: &Ctx, job: &SendJob) -> Result<Outcome, HandleError> {
    let digest = job.code.digest(ctx.settings.code_digest_key.expose_secret().as_bytes(), job.id);
    let attempt = NewAttempt {
        id: job.id,
        mobile: job.mobile.as_str(),
        template_id: &job.template_id,
        provider: ctx.provider.name(),
        code_digest: &digest,
    };
    let attempts = match recorded(ctx, || db::start_attempt(&ctx.db, &attempt)).await? {
        AttemptStart::AlreadyFinal(status) => {
            tracing::info!(status = status.as_str(), "job already handled; not sending again");
            return Ok(Outcome::AlreadyDone(status));
        }
        AttemptStart::Proceed { attempts } => attempts,
    };

    // A code that expired or was replaced is useless to the user and costs money.
    let mut redis = ctx.redis.clone();
    let live: Option<String> = redis.get(ctx.keys.sms_code(&job.mobile)).await?;
    let stale = match live {
        None => Some(DeliveryStatus::Expired),
        Some(live) if live != job.code.expose() => Some(DeliveryStatus::Superseded),
        Some(_) if Utc::now() >= job.expires_at() => Some(DeliveryStatus::Expired),
        Some(_) => None,
    };
    if let Some(status) = stale {
        finish(ctx, job.id, status, None, None).await?;
        tracing::info!(status = status.as_str(), "code no longer live; not sent");
        count(ctx, status);
        return Ok(Outcome::Recorded(status));
    }

    let message = Message {
        job_id: job.id,
        mobile: &job.mobile,
        code: &job.code,
        ttl_minutes: ctx.settings.sms_code_ttl_minutes(),
        template_id: &job.template_id,
    };
    let started = Instant::now();
    let result = tokio::time::timeout(ctx.settings.sms_provider_timeout, ctx.provider.send(&message))
        .await
        .unwrap_or_else(|_| Err(SendError::Transient("provider timed out".into())));
    metrics::histogram!("smscode_worker_provider_duration_seconds", "provider" => ctx.provider.name())
        .record(started.elapsed().as_secs_f64());

    let status = match result {
        Ok(accepted) => {
            finish(ctx, job.id, DeliveryStatus::Sent, accepted.message_id.as_deref(), accepted.note.as_deref()).await?;
            DeliveryStatus::Sent
        }
        Err(SendError::Permanent(reason)) => {
            finish(ctx, job.id, DeliveryStatus::Failed, None, Some(&reason)).await?;
            DeliveryStatus::Failed
        }
        Err(SendError::Transient(reason)) => {
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            match retry::next_step(&ctx.settings.sms_retry_schedule, attempts, Utc::now(), job.expires_at()) {
                Next::RetryIn(delay) => {
                    // Recorded before the retry is queued: a crash in between redelivers
                    // this message, which then counts one more attempt.
                    finish(ctx, job.id, DeliveryStatus::Retrying, None, Some(&reason)).await?;
                    let next = SendJob { attempt: attempts, ..job.clone() };
                    ctx.publisher.publish_retry(delay, &next).await?;
                    metrics::counter!("smscode_worker_retries_scheduled_total").increment(1);
                    DeliveryStatus::Retrying
                }
                Next::Exhausted => {
                    let reason = format!("retries exhausted; last: {reason}");
                    finish(ctx, job.id, DeliveryStatus::Failed, None, Some(&reason)).await?;
                    DeliveryStatus::Failed
                }
                Next::PastExpiry => {
                    let reason = format!("code expires before the next retry; last: {reason}");
                    finish(ctx, job.id, DeliveryStatus::Expired, None, Some(&reason)).await?;
                    DeliveryStatus::Expired
                }
            }
        }
    };
    tracing::info!(status = status.as_str(), "delivery recorded");
    count(ctx, status);
    Ok(Outcome::Recorded(status))
}

fn count(ctx: &Ctx, status: DeliveryStatus) {
    metrics::counter!("smscode_worker_deliveries_total", "status" => status.as_str(), "provider" => ctx.provider.name())
        .increment(1);
}

/// Records an outcome, waiting out a PostgreSQL outage (see [`recorded`]).
async fn finish(
    ctx: &Ctx,
    id: uuid::Uuid,
    status: DeliveryStatus,
    provider_message_id: Option<&str>,
    last_error: Option<&str>,
) -> Result<(), HandleError> {
    recorded(ctx, || db::finish_attempt(&ctx.db, id, status, provider_message_id, last_error)).await
}

/// Runs a database step until it succeeds: while PostgreSQL is unreachable the job neither
/// goes on nor is acked, so nothing is sent that cannot be recorded and nothing recorded is
/// lost. Gives up only on shutdown (the unacked message then goes back to the queue) or on
/// an error that waiting will not fix.
async fn recorded<T, F, Fut>(ctx: &Ctx, mut step: F) -> Result<T, HandleError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(e) if is_outage(&e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "database unavailable; holding the job");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Err(e.into()),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a database error means "unreachable right now" (worth waiting for) rather than a
/// bug or bad data.
fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P0x: the server is shutting down or terminated us.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}
