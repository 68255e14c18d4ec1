//! Delivery reports and conversions: a provider's report moves a `sent` delivery to
//! `delivered` or `undelivered`; a register that used a delivery's code marks it verified;
//! smsctl reads the funnel sent → delivered → verified from here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A final report on one provider message, to record.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The provider that pushed it (`sms_attempts.provider`).
    pub provider: &'a str,
    /// The provider's message id (`sms_attempts.provider_message_id`).
    pub message_id: &'a str,
    /// Delivered to the handset, else undelivered.
    pub delivered: bool,
    /// The carrier's code, when undelivered.
    pub error_code: Option<&'a str>,
    /// When the provider says it happened.
    pub reported_at: Option<DateTime<Utc>>,
}

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recorded {
    /// No provider call of ours has that message id.
    Unknown,
    /// The call already had a final report (a duplicate, or a late one after the first
    /// final): nothing changed.
    AlreadyFinal,
    /// The report is now on its call; the delivery moved from `sent` if it was still there,
    /// in which case `seconds_to_report` is the time from sent to the report.
    Recorded {
        /// The delivery moved (it was `sent`).
        moved: bool,
        /// From `sent_at` to the report, when it moved.
        seconds_to_report: Option<f64>,
    },
}

/// Records `report`, in one statement, idempotent and order-proof: the first final report of
/// a call wins (its `receipt_status` is set once; a duplicate or a contrary later report
/// changes nothing), and the delivery moves only out of `sent`, so a final status is never
/// replaced. `delivered_at` is set for delivered only: the provider's time of the report,
/// kept between `sent_at` and now (a provider clock ahead or behind cannot make it
/// earlier than the send or later than our knowing it); `undelivered` keeps it null, its
/// time is the call's `receipt_at`. The carrier's code goes to `last_error` and, with our
/// word for the outcome (`delivered`/`undelivered`), to the call's `receipt_error` and
/// `receipt_status`.
#[tracing::instrument(skip_all, fields(provider = report.provider))]
pub async fn record(db: impl PgExecutor<'_>, report: &Report<'_>) -> Result<Recorded, sqlx::Error> {
    let status = if report.delivered { "delivered" } else { "undelivered" };
    // The `receipt_status is null` condition sits on the updated row itself, so PostgreSQL
    // re-checks it after waiting for a concurrent duplicate's lock: only one of two wins.
    let (matched, recorded, moved, seconds): (i64, i64, bool, Option<f64>) = sqlx::query_as(
        r#"
        with attempt as (
            update sms_attempts
            set receipt_status = $3,
                receipt_error = $4,
                receipt_at = now()
            where provider = $1
              and provider_message_id = $2
              and receipt_status is null
            returning delivery_id
        ),
        delivery as (
            update sms_deliveries d
            set status = $3,
                last_error = case when $3 = 'undelivered' then $4 else d.last_error end,
                delivered_at = case when $3 = 'delivered'
                    then least(greatest(coalesce($5, now()), coalesce(d.sent_at, now())), now())
                    end,
                updated_at = now()
            from attempt
            where d.id = attempt.delivery_id
              and d.status = 'sent'
            returning d.sent_at, d.delivered_at
        )
        select (select count(*) from sms_attempts where provider = $1 and provider_message_id = $2),
               (select count(*) from attempt),
               exists (select 1 from delivery),
               (select extract(epoch from (coalesce(delivered_at, now()) - sent_at))::float8 from delivery limit 1)
        "#,
    )
    .bind(report.provider)
    .bind(report.message_id)
    .bind(status)
    .bind(report.error_code)
    .bind(report.reported_at)
    .fetch_one(db)
    .await?;
    Ok(match (matched, recorded) {
        (0, _) => Recorded::Unknown,
        (_, 0) => Recorded::AlreadyFinal,
        _ => Recorded::Recorded { moved, seconds_to_report: seconds },
    })
}

/// A delivery a register may have used: its id, provider and `code_digest`.
#[derive(Debug, sqlx::FromRow)]
pub struct Candidate {
    /// Job id.
    pub id: Uuid,
    /// The provider of its latest attempt.
    pub provider: String,
    /// HMAC of job id and code.
    pub code_digest: String,
}

/// The deliveries to `mobile` created within `within` (the code's lifetime) and not yet
/// verified, newest first: the register's code is one of theirs.
#[tracing::instrument(skip_all)]
pub async fn verify_candidates(
    db: impl PgExecutor<'_>,
    mobile: &str,
    within: Duration,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select id, provider, code_digest
        from sms_deliveries
        where mobile = $1
          and created_at >= $2
          and verified_at is null
        order by created_at desc
        limit 50
        "#,
    )
    .bind(mobile)
    .bind(super::ago(within))
    .fetch_all(db)
    .await
}

/// Sets `verified_at` on delivery `id` if it has none; whether it did.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn mark_verified(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        r#"
        update sms_deliveries
        set verified_at = now()
        where id = $1
          and verified_at is null
        "#,
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The funnel of the deliveries to one mobile's group (a provider, a country) over a window.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Funnel {
    /// Accepted by a provider (`sent_at` set).
    pub sent: i64,
    /// Reported delivered.
    pub delivered: i64,
    /// Reported undelivered.
    pub undelivered: i64,
    /// Their code was used by a register.
    pub verified: i64,
}

/// One row of the funnel query: per provider and mobile, so that the caller can group by
/// the mobile's country (which needs the phone-number metadata, not SQL).
#[derive(Debug, sqlx::FromRow)]
pub struct FunnelRow {
    /// The provider.
    pub provider: String,
    /// The mobile, as stored.
    pub mobile: String,
    /// See [`Funnel`].
    pub sent: i64,
    /// See [`Funnel`].
    pub delivered: i64,
    /// See [`Funnel`].
    pub undelivered: i64,
    /// See [`Funnel`].
    pub verified: i64,
}

impl FunnelRow {
    /// Its counts.
    pub fn funnel(&self) -> Funnel {
        Funnel { sent: self.sent, delivered: self.delivered, undelivered: self.undelivered, verified: self.verified }
    }
}

impl std::ops::AddAssign<Funnel> for Funnel {
    fn add_assign(&mut self, other: Funnel) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.undelivered += other.undelivered;
        self.verified += other.verified;
    }
}

/// The funnel of the deliveries created within `since`, per provider and mobile.
#[tracing::instrument(skip_all)]
pub async fn funnel(db: impl PgExecutor<'_>, since: Duration) -> Result<Vec<FunnelRow>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select provider,
               mobile,
               count(*) filter (where sent_at is not null) as sent,
               count(*) filter (where status = 'delivered') as delivered,
               count(*) filter (where status = 'undelivered') as undelivered,
               count(*) filter (where verified_at is not null) as verified
        from sms_deliveries
        where created_at >= $1
        group by provider, mobile
        "#,
    )
    .bind(super::ago(since))
    .fetch_all(db)
    .await
}
