//! One send job, start to finish: idempotency check, stale-code check, one round over the
//! number's route of providers, then one decision (status, provider, message id, error,
//! retry) recorded once with every provider call. The outcome is committed to PostgreSQL
//! before the caller acks the message.

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use providers::{Message, Round, Routed};
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use shared::{
    config::ProviderName,
    db::{
        self,
        attempts::NewCall,
        deliveries::{AttemptOutcome, AttemptStart, DeliveryStatus},
    },
    domain::{Recipient, SmsCode},
    queue::{PublishError, SendJob},
};

use crate::{
    backoff::Backoff,
    recorder::{self, Start},
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
    /// Another handler is sending this job right now: nothing sent; look again later.
    InFlight,
    /// Sent or refused, but the row was taken over meanwhile (this handler was too slow):
    /// the calls are recorded, the status is the other handler's, no retry is queued.
    TakenOver,
}

/// How long past a round's own time budget a `sending` row must sit still before another
/// handler may take it over (its handler is then taken to have died).
pub(crate) const TAKEOVER_MARGIN: Duration = Duration::from_secs(5);

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
    fn new(status: DeliveryStatus, last_error: Option<String>) -> Self {
        let record = AttemptOutcome { status, provider: None, provider_message_id: None, last_error };
        Self { record, retry: None }
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
    let recipient = Recipient::parse(&job.mobile, state.settings.default_country_code);
    let first = recipient.as_ref().ok().and_then(|r| state.router.first_for(r.country_code()));
    let digest_key = state.settings.code_digest_key.expose_secret().as_bytes();
    let digest = job.digest(digest_key);
    // Redis first: while it is down the job waits without spending an attempt.
    let live = live_code(state, job, digest_key).await?;
    let start = recorded(state, || {
        state.recorder.start(Start {
            id: job.id,
            mobile: job.mobile.as_str().to_owned(),
            template_id: job.template_id.clone().unwrap_or_else(|| state.settings.provider_template_id().to_owned()),
            provider: first.map_or("none", ProviderName::as_str),
            code_digest: digest.clone(),
        })
    })
    .await?;
    let attempts = match start {
        AttemptStart::Proceed { attempts } => attempts,
        AttemptStart::AlreadyFinal(status) => {
            tracing::info!(status = status.as_str(), "job already handled; not sending again");
            return Ok(Outcome::AlreadyDone(status));
        }
        AttemptStart::InFlight => {
            tracing::info!("another handler is sending this job; looking again later");
            return Ok(Outcome::InFlight);
        }
    };
    let attempt_no = u32::try_from(attempts).unwrap_or(u32::MAX);

    let mut calls = Vec::new();
    let decision = match (live, &recipient) {
        // A code that expired or was replaced is useless to the user and costs money.
        (Err(status), _) => Decision::new(status, None),
        (Ok(_), Err(_)) => Decision::new(DeliveryStatus::Failed, Some("recipient: not a valid phone number".into())),
        (Ok(code), Ok(recipient)) => {
            let message =
                Message { job_id: job.id, recipient, code: &code, ttl_minutes: state.settings.sms_code_ttl_minutes() };
            let round = state.router.send(&message).await;
            calls = round.calls.iter().map(new_call).collect();
            decide(&state.settings.sms_retry_schedule, job, attempt_no, &round, recipient, Utc::now())
        }
    };

    // Recorded before the retry is queued: a crash in between redelivers this message,
    // which then counts one more attempt.
    let owned = recorded(state, || {
        state.recorder.finish(recorder::Outcome {
            id: job.id,
            attempt: attempts,
            record: decision.record.clone(),
            calls: calls.clone(),
        })
    })
    .await?;
    if !owned {
        tracing::warn!("the row was taken over while this attempt ran; its outcome is not written");
        return Ok(Outcome::TakenOver);
    }
    if let Some(delay) = decision.retry {
        state.publisher.publish_retry(delay, &SendJob { attempt: attempt_no, ..job.clone() }).await?;
        metrics::counter!("smscode_worker_retries_scheduled_total").increment(1);
    }

    let status = decision.record.status;
    let provider = decision.record.provider.map_or("none", ProviderName::as_str);
    tracing::info!(status = status.as_str(), provider, calls = calls.len(), "delivery recorded");
    metrics::counter!("smscode_worker_deliveries_total", "status" => status.as_str(), "provider" => provider)
        .increment(1);
    Ok(Outcome::Recorded(status))
}

/// The code to send: the live one in Redis, if it is this job's (its digest matches). Else why
/// not: gone or past the job's expiry (`Expired`), or replaced by a newer one (`Superseded`).
async fn live_code(
    state: &WorkerState,
    job: &SendJob,
    digest_key: &[u8],
) -> Result<Result<SmsCode, DeliveryStatus>, DeliverError> {
    let live: Option<String> = state.redis.clone().get(state.keys.sms_code(&job.mobile)).await?;
    Ok(match live.map(SmsCode::from_stored) {
        None => Err(DeliveryStatus::Expired),
        Some(live) if !job.is_code(&live, digest_key) => Err(DeliveryStatus::Superseded),
        Some(_) if Utc::now() >= job.expires_at() => Err(DeliveryStatus::Expired),
        Some(live) => Ok(live),
    })
}

/// A provider call as `sms_attempts` records it.
fn new_call(call: &providers::Call) -> NewCall {
    let (outcome, error, provider_message_id) = match &call.result {
        Ok(accepted) => ("sent", accepted.note.clone(), accepted.message_id.clone()),
        Err(e) => (e.class(), Some(e.reason().to_owned()), None),
    };
    NewCall { provider: call.provider.as_str(), outcome, error, provider_message_id, latency: call.latency }
}

/// The decision for a round after `attempts` attempts (this one included).
fn decide(
    schedule: &[Duration],
    job: &SendJob,
    attempts: u32,
    round: &Round,
    recipient: &Recipient,
    now: DateTime<Utc>,
) -> Decision {
    let last = round.last();
    let mut decision = match (&round.routed, last.map(|c| &c.result)) {
        (Routed::Sent, Some(Ok(accepted))) => Decision {
            record: AttemptOutcome {
                status: DeliveryStatus::Sent,
                provider: None,
                provider_message_id: accepted.message_id.clone(),
                last_error: accepted.note.clone(),
            },
            retry: None,
        },
        (Routed::Refused, Some(Err(e))) => Decision::new(DeliveryStatus::Failed, Some(e.reason().to_owned())),
        (Routed::NoRoute, _) => Decision::new(
            DeliveryStatus::Failed,
            Some(format!("no provider in SMS_PROVIDERS serves +{}", recipient.country_code())),
        ),
        _ => {
            let reason = match last.map(|c| &c.result) {
                Some(Err(e)) if round.skipped.is_empty() => e.reason().to_owned(),
                Some(Err(e)) => format!("{}; breaker open: {}", e.reason(), names(&round.skipped)),
                _ => format!("every provider of the route has its breaker open: {}", names(&round.skipped)),
            };
            match retry::next_step(schedule, attempts, now, job.expires_at()) {
                Next::RetryIn(delay) => {
                    Decision { retry: Some(delay), ..Decision::new(DeliveryStatus::Retrying, Some(reason)) }
                }
                Next::Exhausted => {
                    Decision::new(DeliveryStatus::Failed, Some(format!("retries exhausted; last: {reason}")))
                }
                Next::PastExpiry => Decision::new(
                    DeliveryStatus::Expired,
                    Some(format!("code expires before the next retry; last: {reason}")),
                ),
            }
        }
    };
    decision.record.provider = last.map(|c| c.provider);
    decision
}

fn names(providers: &[ProviderName]) -> String {
    providers.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
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
    use providers::{Accepted, Call, SendError};
    use shared::domain::Mobile;

    use super::*;

    fn job(ttl_secs: u64) -> SendJob {
        let mobile = Mobile::from_stored("13812345678");
        SendJob::new(mobile, &SmsCode::from_stored("123456"), b"key", Duration::from_secs(ttl_secs))
    }

    fn recipient() -> Recipient {
        Recipient::parse(&Mobile::from_stored("13812345678"), 86).expect("a valid number")
    }

    fn round(routed: Routed, results: Vec<(ProviderName, Result<Accepted, SendError>)>) -> Round {
        let calls = results
            .into_iter()
            .map(|(provider, result)| Call { provider, result, latency: Duration::from_millis(5) })
            .collect();
        Round { calls, routed, skipped: Vec::new() }
    }

    fn transient(provider: ProviderName) -> (ProviderName, Result<Accepted, SendError>) {
        (provider, Err(SendError::Transient(format!("{provider} http 500"))))
    }

    #[test]
    fn each_round_is_decided_once_with_its_status_provider_id_and_error() {
        let schedule = [Duration::from_secs(2), Duration::from_secs(10)];
        let (job, to) = (job(300), recipient());
        let now = job.created_at;

        let accepted = Ok(Accepted { message_id: Some("m1".into()), note: None });
        let failed_over = round(Routed::Sent, vec![transient(ProviderName::Ccp), (ProviderName::Tencent, accepted)]);
        let sent = decide(&schedule, &job, 1, &failed_over, &to, now);
        assert_eq!(sent.record.status, DeliveryStatus::Sent);
        assert_eq!(sent.record.provider, Some(ProviderName::Tencent), "the provider of the last call");
        assert_eq!(sent.record.provider_message_id.as_deref(), Some("m1"));
        assert_eq!(sent.retry, None);

        let barred = Err(SendError::Recipient("ccp 160042: 号码格式有误".into()));
        let refused = decide(&schedule, &job, 1, &round(Routed::Refused, vec![(ProviderName::Ccp, barred)]), &to, now);
        assert_eq!(refused.record.status, DeliveryStatus::Failed);
        assert_eq!(refused.record.last_error.as_deref(), Some("ccp 160042: 号码格式有误"));

        let all_failed =
            round(Routed::RoundFailed, vec![transient(ProviderName::Ccp), transient(ProviderName::Tencent)]);
        let retry = decide(&schedule, &job, 2, &all_failed, &to, now);
        assert_eq!(retry.record.status, DeliveryStatus::Retrying);
        assert_eq!(retry.retry, Some(Duration::from_secs(10)));
        assert_eq!(retry.record.last_error.as_deref(), Some("tencent http 500"));

        let exhausted = decide(&schedule, &job, 3, &all_failed, &to, now);
        assert_eq!(exhausted.record.status, DeliveryStatus::Failed);
        assert_eq!(exhausted.record.last_error.as_deref(), Some("retries exhausted; last: tencent http 500"));
        assert_eq!(exhausted.retry, None);

        let nowhere = decide(&schedule, &job, 1, &round(Routed::NoRoute, vec![]), &to, now);
        assert_eq!(nowhere.record.last_error.as_deref(), Some("no provider in SMS_PROVIDERS serves +86"));
    }

    #[test]
    fn a_round_with_every_breaker_open_waits_in_the_schedule() {
        let job = job(300);
        let mut skipped = round(Routed::RoundFailed, vec![]);
        skipped.skipped = vec![ProviderName::Ccp, ProviderName::Tencent];
        let decision = decide(&[Duration::from_secs(2)], &job, 1, &skipped, &recipient(), job.created_at);
        assert_eq!(decision.record.status, DeliveryStatus::Retrying);
        assert_eq!(decision.retry, Some(Duration::from_secs(2)));
        assert_eq!(decision.record.provider, None, "no call was made");
    }

    #[test]
    fn a_retry_after_the_codes_expiry_is_recorded_expired() {
        let job = job(5);
        let failed = round(Routed::RoundFailed, vec![transient(ProviderName::Ccp)]);
        let decision = decide(&[Duration::from_secs(10)], &job, 1, &failed, &recipient(), job.created_at);
        assert_eq!(decision.record.status, DeliveryStatus::Expired);
        assert_eq!(decision.retry, None);
    }
}
