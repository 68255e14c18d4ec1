//! One send job, start to finish: idempotency check, stale-code check, send, then one
//! decision (status, provider message id, error, retry) recorded once. The outcome is
//! committed to PostgreSQL before the caller acks the message.

use std::{future::Future, time::Duration, time::Instant};

use chrono::{DateTime, Utc};
use providers::{Accepted, Message, SendError};
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use shared::{
    db::{
        self,
        deliveries::{self, AttemptOutcome, AttemptStart, DeliveryStatus, NewAttempt},
    },
    queue::{PublishError, SendJob},
};

use crate::{
    backoff::Backoff,
    retry::{self, Next},
    state::WorkerState,
};

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
pub enum DeliverError {
    /// PostgreSQL failed: the outcome cannot be recorded.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed: the code cannot be checked.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The retry could not be queued.
    #[error("broker: {0}")]
    Broker(#[from] PublishError),
}

/// What an attempt comes to: the row to record and, for a transient failure with time
/// left, the delay before the next attempt.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    record: AttemptOutcome,
    retry: Option<Duration>,
}

impl Decision {
    fn new(status: DeliveryStatus, provider_message_id: Option<String>, last_error: Option<String>) -> Self {
        Self { record: AttemptOutcome { status, provider_message_id, last_error }, retry: None }
    }
}

/// Handles one job. Nothing is sent twice for a job already recorded `sent`.
#[tracing::instrument(skip_all, fields(
    job_id = %job.id,
    request_id = job.request_id.as_deref().unwrap_or(""),
    mobile = %job.mobile.masked(),
    attempt = job.attempt,
))]
pub async fn deliver(state: &WorkerState, job: &SendJob) -> Result<Outcome, DeliverError> {
    let digest = job.code.digest(state.settings.code_digest_key.expose_secret().as_bytes(), job.id);
    let attempt = NewAttempt {
        id: job.id,
        mobile: job.mobile.as_str(),
        template_id: &job.template_id,
        provider: state.provider.name().as_str(),
        code_digest: &digest,
    };
    let attempts = match recorded(state, || deliveries::start_attempt(&state.db, &attempt)).await? {
        AttemptStart::AlreadyFinal(status) => {
            tracing::info!(status = status.as_str(), "job already handled; not sending again");
            return Ok(Outcome::AlreadyDone(status));
        }
        AttemptStart::Proceed { attempts } => u32::try_from(attempts).unwrap_or(u32::MAX),
    };

    let decision = match stale(state, job).await? {
        // A code that expired or was replaced is useless to the user and costs money.
        Some(status) => Decision::new(status, None, None),
        None => decide(&state.settings.sms_retry_schedule, job, attempts, send(state, job).await, Utc::now()),
    };

    // Recorded before the retry is queued: a crash in between redelivers this message,
    // which then counts one more attempt.
    recorded(state, || deliveries::finish_attempt(&state.db, job.id, &decision.record)).await?;
    if let Some(delay) = decision.retry {
        state.publisher.publish_retry(delay, &SendJob { attempt: attempts, ..job.clone() }).await?;
        metrics::counter!("smscode_worker_retries_scheduled_total").increment(1);
    }

    let status = decision.record.status;
    tracing::info!(status = status.as_str(), "delivery recorded");
    metrics::counter!(
        "smscode_worker_deliveries_total",
        "status" => status.as_str(),
        "provider" => state.provider.name().as_str(),
    )
    .increment(1);
    Ok(Outcome::Recorded(status))
}

/// Why the job's code must not be sent: gone or past its expiry (`Expired`), or replaced by
/// a newer one (`Superseded`); `None` when it is still the live code.
async fn stale(state: &WorkerState, job: &SendJob) -> Result<Option<DeliveryStatus>, DeliverError> {
    let live: Option<String> = state.redis.clone().get(state.keys.sms_code(&job.mobile)).await?;
    Ok(match live {
        None => Some(DeliveryStatus::Expired),
        Some(live) if live != job.code.expose() => Some(DeliveryStatus::Superseded),
        Some(_) if Utc::now() >= job.expires_at() => Some(DeliveryStatus::Expired),
        Some(_) => None,
    })
}

/// One provider call, bounded by `SMS_PROVIDER_TIMEOUT_SECS`.
async fn send(state: &WorkerState, job: &SendJob) -> Result<Accepted, SendError> {
    let message = Message {
        job_id: job.id,
        mobile: &job.mobile,
        code: &job.code,
        ttl_minutes: state.settings.sms_code_ttl_minutes(),
        template_id: &job.template_id,
    };
    let started = Instant::now();
    let result = tokio::time::timeout(state.settings.sms_provider_timeout, state.provider.send(&message))
        .await
        .unwrap_or_else(|_| Err(SendError::Transient("provider timed out".into())));
    metrics::histogram!("smscode_worker_provider_duration_seconds", "provider" => state.provider.name().as_str())
        .record(started.elapsed().as_secs_f64());
    result
}

/// The decision for a provider's answer after `attempts` attempts.
fn decide(
    schedule: &[Duration],
    job: &SendJob,
    attempts: u32,
    result: Result<Accepted, SendError>,
    now: DateTime<Utc>,
) -> Decision {
    match result {
        Ok(accepted) => Decision::new(DeliveryStatus::Sent, accepted.message_id, accepted.note),
        Err(SendError::Permanent(reason)) => Decision::new(DeliveryStatus::Failed, None, Some(reason)),
        Err(SendError::Transient(reason)) => match retry::next_step(schedule, attempts, now, job.expires_at()) {
            Next::RetryIn(delay) => {
                Decision { retry: Some(delay), ..Decision::new(DeliveryStatus::Retrying, None, Some(reason)) }
            }
            Next::Exhausted => {
                Decision::new(DeliveryStatus::Failed, None, Some(format!("retries exhausted; last: {reason}")))
            }
            Next::PastExpiry => Decision::new(
                DeliveryStatus::Expired,
                None,
                Some(format!("code expires before the next retry; last: {reason}")),
            ),
        },
    }
}

/// Runs a database step until it succeeds: while PostgreSQL is unreachable the job neither
/// goes on nor is acked, so nothing is sent that cannot be recorded and nothing recorded is
/// lost. Gives up only on shutdown (the unacked message then goes back to the queue) or on
/// an error that waiting will not fix.
async fn recorded<T, F, Fut>(state: &WorkerState, mut step: F) -> Result<T, DeliverError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(e) if db::is_unavailable(&e) => {
                tracing::warn!(error = %e, retry_in = ?backoff.next_pause(), "database unavailable; holding the job");
                if !backoff.wait(&state.shutdown).await {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::{Mobile, SmsCode};

    use super::*;

    fn job(ttl_secs: u64) -> SendJob {
        let mobile = Mobile::from_stored("13812345678");
        SendJob::new(mobile, SmsCode::from_stored("123456"), "1".into(), Duration::from_secs(ttl_secs))
    }

    fn transient() -> Result<Accepted, SendError> {
        Err(SendError::Transient("ccp http 500".into()))
    }

    #[test]
    fn each_answer_is_decided_once_with_its_status_id_and_error() {
        let schedule = [Duration::from_secs(2), Duration::from_secs(10)];
        let job = job(300);
        let now = job.created_at;

        let accepted = Ok(Accepted { message_id: Some("m1".into()), note: None });
        let sent = decide(&schedule, &job, 1, accepted, now);
        assert_eq!(sent, Decision::new(DeliveryStatus::Sent, Some("m1".into()), None));

        let refused = decide(&schedule, &job, 1, Err(SendError::Permanent("ccp 160042".into())), now);
        assert_eq!(refused, Decision::new(DeliveryStatus::Failed, None, Some("ccp 160042".into())));

        let retry = decide(&schedule, &job, 2, transient(), now);
        assert_eq!(retry.record.status, DeliveryStatus::Retrying);
        assert_eq!(retry.retry, Some(Duration::from_secs(10)));

        let exhausted = decide(&schedule, &job, 3, transient(), now);
        assert_eq!(exhausted.record.status, DeliveryStatus::Failed);
        assert_eq!(exhausted.record.last_error.as_deref(), Some("retries exhausted; last: ccp http 500"));
        assert_eq!(exhausted.retry, None);
    }

    #[test]
    fn a_retry_after_the_codes_expiry_is_recorded_expired() {
        let job = job(5);
        let decision = decide(&[Duration::from_secs(10)], &job, 1, transient(), job.created_at);
        assert_eq!(decision.record.status, DeliveryStatus::Expired);
        assert_eq!(decision.retry, None);
    }
}
