//! `sms_deliveries`: one row per send job. The worker records each attempt and its outcome
//! here before it acks; smsctl lists, counts and replays from here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use sqlx::{
    Decode, Encode, PgExecutor, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, types::PgInterval},
};
use uuid::Uuid;

use super::attempts::{self, NewCall};
use crate::{config::ProviderName, names::text_enum};

text_enum! {
    /// The status of a delivery, as stored in `sms_deliveries.status` (a check-constrained
    /// text column).
    pub enum DeliveryStatus {
        /// A worker is sending it now (or crashed while doing so: the job will be redelivered).
        Sending = "sending",
        /// The provider accepted it.
        Sent = "sent",
        /// A transient failure; a retry is scheduled.
        Retrying = "retrying",
        /// Given up: permanent failure or retries exhausted.
        Failed = "failed",
        /// The code expired before it could be sent.
        Expired = "expired",
        /// A newer code replaced this one before it could be sent.
        Superseded = "superseded",
        /// The provider reported the message delivered to the handset.
        Delivered = "delivered",
        /// The provider reported that the carrier could not deliver it.
        Undelivered = "undelivered",
    }
}

impl Type<Postgres> for DeliveryStatus {
    fn type_info() -> PgTypeInfo {
        <&str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DeliveryStatus {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl Decode<'_, Postgres> for DeliveryStatus {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}

impl Serialize for DeliveryStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One row of `sms_deliveries`.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// Job id.
    pub id: Uuid,
    /// Recipient.
    pub mobile: String,
    /// Provider template.
    pub template_id: String,
    /// The provider of the latest attempt.
    pub provider: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// Why the last attempt failed (or a note on its success).
    pub last_error: Option<String>,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When its provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When a register used its code.
    pub verified_at: Option<DateTime<Utc>>,
    /// The delivery this one replays.
    pub replay_of: Option<Uuid>,
    /// HMAC of job id and code under `CODE_DIGEST_KEY` (never printed).
    #[serde(skip)]
    pub code_digest: String,
}

/// What the worker knows of a job when it starts an attempt.
pub struct NewAttempt<'a> {
    /// The job id (`sms_deliveries.id`).
    pub id: Uuid,
    /// The recipient.
    pub mobile: &'a str,
    /// The provider template.
    pub template_id: &'a str,
    /// The provider's name.
    pub provider: &'a str,
    /// `code_digest` of job id and code.
    pub code_digest: &'a str,
}

/// How an attempt may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    /// The row is now `sending`; this is attempt number `attempts`.
    Proceed {
        /// Attempts made so far, this one included.
        attempts: i32,
    },
    /// The job already reached a final status (a redelivery): do not send again.
    AlreadyFinal(DeliveryStatus),
    /// Another handler is sending it right now (a redelivery while the first is still
    /// running): do not send it twice; look again later.
    InFlight,
}

/// Records the start of an attempt: inserts the row, or moves a `retrying` row to `sending`
/// and counts the attempt. A `sending` row is taken over only when it has not moved for
/// `takeover_after` (longer than any live handler's round takes: its handler died);
/// otherwise it is reported in flight. A row already final is left alone and reported.
pub async fn start_attempt(
    db: &super::Db,
    attempt: &NewAttempt<'_>,
    takeover_after: Duration,
) -> Result<AttemptStart, sqlx::Error> {
    let mut started = start_attempts(db, std::slice::from_ref(attempt), takeover_after).await?;
    started.pop().ok_or_else(|| sqlx::Error::Protocol("start_attempts returned no row".into()))
}

/// [`start_attempt`] for many jobs in one statement (the worker's group commit): one answer
/// per attempt, in order. The ids must be distinct (PostgreSQL refuses to update a row twice
/// in one statement).
#[tracing::instrument(skip_all, fields(jobs = attempts.len()))]
pub async fn start_attempts(
    db: &super::Db,
    attempts: &[NewAttempt<'_>],
    takeover_after: Duration,
) -> Result<Vec<AttemptStart>, sqlx::Error> {
    // A row that was neither inserted nor updated is reported with the status this
    // statement's snapshot saw; none when another handler inserted it meanwhile (it is in
    // flight there).
    let rows: Vec<(Uuid, Option<i32>, Option<DeliveryStatus>)> = sqlx::query_as(
        r#"
        with input as (
            select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                as i (id, mobile, template_id, provider, code_digest)
        ), started as (
            insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest)
            select id, mobile, template_id, provider, 'sending', 1, code_digest from input
            on conflict (id) do update
            set status = 'sending', attempts = sms_deliveries.attempts + 1, provider = excluded.provider,
                updated_at = now()
            where sms_deliveries.status = 'retrying'
               or (sms_deliveries.status = 'sending' and sms_deliveries.updated_at < now() - $6::interval)
            returning id, attempts
        )
        select input.id, started.attempts, existing.status
        from input
        left join started on started.id = input.id
        left join sms_deliveries existing on existing.id = input.id and started.id is null
        "#,
    )
    .bind(attempts.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.mobile).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.template_id).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.provider).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.code_digest).collect::<Vec<_>>())
    .bind(PgInterval::try_from(takeover_after).unwrap_or(PgInterval { months: 0, days: 1, microseconds: 0 }))
    .fetch_all(db)
    .await?;
    let by_id: std::collections::HashMap<Uuid, AttemptStart> = rows
        .into_iter()
        .map(|(id, attempts, status)| {
            let start = match (attempts, status) {
                (Some(attempts), _) => AttemptStart::Proceed { attempts },
                (None, None | Some(DeliveryStatus::Sending | DeliveryStatus::Retrying)) => AttemptStart::InFlight,
                (None, Some(done)) => AttemptStart::AlreadyFinal(done),
            };
            (id, start)
        })
        .collect();
    attempts
        .iter()
        .map(|a| {
            by_id.get(&a.id).cloned().ok_or_else(|| sqlx::Error::Protocol(format!("no start row for job {}", a.id)))
        })
        .collect()
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The new status.
    pub status: DeliveryStatus,
    /// The provider of the attempt's last call (`None`: no call was made; the row keeps the
    /// provider it names).
    pub provider: Option<ProviderName>,
    /// The provider's id for the message, when it accepted it.
    pub provider_message_id: Option<String>,
    /// Why it failed, or a note on its acceptance.
    pub last_error: Option<String>,
}

/// One attempt's outcome to record: the delivery, its attempt number, what came of it and
/// the provider calls it made.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// The job id.
    pub id: Uuid,
    /// The attempt number [`start_attempt`] gave.
    pub attempt: i32,
    /// What came of it.
    pub outcome: &'a AttemptOutcome,
    /// The provider calls it made, in order.
    pub calls: &'a [NewCall],
}

/// Records the outcome of attempt `attempt` and its provider calls. Must be committed before
/// the job is acked. The status is written only if the row is still this attempt's
/// (`sending`, `attempts` = `attempt`): a handler that was taken over, or a row that smsctl
/// changed, does not overwrite it. Returns whether it was.
pub async fn finish_attempt(
    db: &super::Db,
    id: Uuid,
    attempt: i32,
    outcome: &AttemptOutcome,
    calls: &[NewCall],
) -> Result<bool, sqlx::Error> {
    let owned = finish_attempts(db, &[Finish { id, attempt, outcome, calls }]).await?;
    Ok(owned.first().copied().unwrap_or(false))
}

/// [`finish_attempt`] for many attempts in one statement (one round trip, atomic like a
/// transaction: PostgreSQL runs a statement's data-modifying CTEs together or not at all):
/// whether each was written, in order. The ids must be distinct.
#[tracing::instrument(skip_all, fields(jobs = finishes.len()))]
pub async fn finish_attempts(db: &super::Db, finishes: &[Finish<'_>]) -> Result<Vec<bool>, sqlx::Error> {
    let mut call_ids = Vec::new();
    let mut call_attempts = Vec::new();
    let mut all_calls = Vec::new();
    for finish in finishes {
        for call in finish.calls {
            call_ids.push(finish.id);
            call_attempts.push(finish.attempt);
            all_calls.push(call);
        }
    }
    let calls = attempts::Columns::of(all_calls.iter().copied());
    // The calls were made whoever owns the row now: they are recorded either way.
    let owned: Vec<Uuid> = sqlx::query_scalar(
        r#"
        with input as (
            select * from unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])
                as i (id, attempt, status, provider_message_id, last_error, provider)
        ), updated as (
            update sms_deliveries d
            set status = input.status,
                provider_message_id = coalesce(input.provider_message_id, d.provider_message_id),
                last_error = input.last_error,
                provider = coalesce(input.provider, d.provider),
                sent_at = case when input.status = 'sent' then now() else d.sent_at end,
                updated_at = now()
            from input
            where d.id = input.id and d.status = 'sending' and d.attempts = input.attempt
            returning d.id
        ), calls as (
            insert into sms_attempts (delivery_id, attempt, provider, outcome, error, provider_message_id, latency_ms)
            select delivery_id, attempt, provider, outcome, error, provider_message_id, latency_ms
            from unnest($7::uuid[], $8::int[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int[])
                with ordinality as c (delivery_id, attempt, provider, outcome, error, provider_message_id, latency_ms, n)
            order by n
        )
        select id from updated
        "#,
    )
    .bind(finishes.iter().map(|f| f.id).collect::<Vec<_>>())
    .bind(finishes.iter().map(|f| f.attempt).collect::<Vec<_>>())
    .bind(finishes.iter().map(|f| f.outcome.status.as_str()).collect::<Vec<_>>())
    .bind(finishes.iter().map(|f| f.outcome.provider_message_id.as_deref()).collect::<Vec<_>>())
    .bind(finishes.iter().map(|f| f.outcome.last_error.as_deref()).collect::<Vec<_>>())
    .bind(finishes.iter().map(|f| f.outcome.provider.map(ProviderName::as_str)).collect::<Vec<_>>())
    .bind(call_ids)
    .bind(call_attempts)
    .bind(calls.providers)
    .bind(calls.outcomes)
    .bind(calls.errors)
    .bind(calls.ids)
    .bind(calls.latencies)
    .fetch_all(db)
    .await?;
    Ok(finishes.iter().map(|f| owned.contains(&f.id)).collect())
}

/// Which deliveries to list.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this mobile.
    pub mobile: Option<&'a str>,
    /// Only rows created within this window.
    pub since: Option<Duration>,
    /// At most this many rows (all when `None`).
    pub limit: Option<i64>,
}

/// Deliveries matching `filter`, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(db: impl PgExecutor<'_>, filter: &Filter<'_>) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select *
        from sms_deliveries
        where ($1::text is null or status = $1)
          and ($2::text is null or mobile = $2)
          and ($3::timestamptz is null or created_at >= $3)
        order by created_at desc
        limit $4
        "#,
    )
    .bind(filter.status)
    .bind(filter.mobile)
    .bind(filter.since.map(super::ago))
    .bind(filter.limit)
    .fetch_all(db)
    .await
}

/// Deliveries left `sending` or `retrying` that have not moved for `still_for`: their job
/// was lost (a parked job the broker dropped, a worker gone with it), oldest first.
#[tracing::instrument(skip_all)]
pub async fn stale(db: impl PgExecutor<'_>, still_for: Duration) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select *
        from sms_deliveries
        where status in ('sending', 'retrying')
          and updated_at < $1
        order by created_at
        "#,
    )
    .bind(super::ago(still_for))
    .fetch_all(db)
    .await
}

/// The deliveries with these ids, oldest first.
#[tracing::instrument(skip_all)]
pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select *
        from sms_deliveries
        where id = any($1)
        order by created_at
        "#,
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// How many deliveries were created within `since`, by status.
#[tracing::instrument(skip_all)]
pub async fn count_by_status(
    db: impl PgExecutor<'_>,
    since: Duration,
) -> Result<Vec<(DeliveryStatus, i64)>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select status, count(*)
        from sms_deliveries
        where created_at >= $1
        group by status
        order by status
        "#,
    )
    .bind(super::ago(since))
    .fetch_all(db)
    .await
}

/// The delivery that replays `id`, if there is one.
#[tracing::instrument(skip_all)]
pub async fn replayed_as(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        select id
        from sms_deliveries
        where replay_of = $1
        "#,
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A replay of a failed delivery, about to be queued.
pub struct NewReplay<'a> {
    /// The new job's id.
    pub id: Uuid,
    /// The delivery it replays.
    pub replay_of: Uuid,
    /// The recipient.
    pub mobile: &'a str,
    /// The provider template.
    pub template_id: &'a str,
    /// The provider of the replayed delivery.
    pub provider: &'a str,
    /// `code_digest` of the new job id and the code.
    pub code_digest: &'a str,
}

/// Claims the replay of a delivery by inserting its `retrying` row; `false` when another
/// replay of the same delivery exists (the unique index on `replay_of` decides, so two
/// concurrent smsctl runs cannot both claim it).
#[tracing::instrument(skip_all, fields(job_id = %replay.id))]
pub async fn claim_replay(db: impl PgExecutor<'_>, replay: &NewReplay<'_>) -> Result<bool, sqlx::Error> {
    let claimed: Option<Uuid> = sqlx::query_scalar(
        r#"
        insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest, replay_of)
        values ($1, $2, $3, $4, 'retrying', 0, $5, $6)
        on conflict do nothing
        returning id
        "#,
    )
    .bind(replay.id)
    .bind(replay.mobile)
    .bind(replay.template_id)
    .bind(replay.provider)
    .bind(replay.code_digest)
    .bind(replay.replay_of)
    .fetch_optional(db)
    .await?;
    Ok(claimed.is_some())
}

/// Removes a delivery row (a replay claim whose job could not be queued).
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        delete from sms_deliveries
        where id = $1
        "#,
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// How `last_error` starts on a replay claim whose job the broker did not confirm: the job
/// may be queued or not, so the claim is kept (a re-run must not send a second SMS).
pub const UNCONFIRMED_REPLAY: &str = "unconfirmed replay";

/// The replay of a delivery, as a later smsctl run finds it.
#[derive(Debug, sqlx::FromRow)]
pub struct ReplayClaim {
    /// The replay's job id.
    pub id: Uuid,
    /// Its publish was not confirmed and no worker has taken the job since: it may never
    /// have been queued.
    pub unconfirmed: bool,
}

/// The replay of delivery `id`, if there is one.
#[tracing::instrument(skip_all)]
pub async fn replay_claim(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ReplayClaim>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select id,
               status = 'retrying' and attempts = 0 and coalesce(starts_with(last_error, $2), false) as unconfirmed
        from sms_deliveries
        where replay_of = $1
        "#,
    )
    .bind(id)
    .bind(UNCONFIRMED_REPLAY)
    .fetch_optional(db)
    .await
}

/// Records that the broker did not confirm replay `id` (`why`), in `last_error`, where
/// `smsctl deliveries` shows it. Only while no worker has taken the job (`retrying`, no
/// attempt yet): a worker's own record is never overwritten.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn mark_replay_unconfirmed(db: impl PgExecutor<'_>, id: Uuid, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        update sms_deliveries
        set last_error = $2 || ': ' || $3,
            updated_at = now()
        where id = $1
          and status = 'retrying'
          and attempts = 0
        "#,
    )
    .bind(id)
    .bind(UNCONFIRMED_REPLAY)
    .bind(why)
    .execute(db)
    .await?;
    Ok(())
}
