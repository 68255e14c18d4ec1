//! `sms_attempts`: one row per provider call, written with the delivery's outcome; read by
//! smsctl (`deliveries --id`, `providers`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A provider call to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// The provider's name.
    pub provider: &'static str,
    /// `sent`, or the failure class (`transient`, `provider`, `recipient`, `number_limited`).
    pub outcome: &'static str,
    /// The provider's code and message, on failure (or a note on success).
    pub error: Option<String>,
    /// The provider's message id, on success.
    pub provider_message_id: Option<String>,
    /// How long the call took.
    pub latency: Duration,
}

/// Provider calls as the column arrays that `unnest` turns back into rows: a batch of calls
/// is written in one statement, whatever its size.
pub(crate) struct Columns<'a> {
    pub(crate) providers: Vec<&'a str>,
    pub(crate) outcomes: Vec<&'a str>,
    pub(crate) errors: Vec<Option<&'a str>>,
    pub(crate) ids: Vec<Option<&'a str>>,
    pub(crate) latencies: Vec<i32>,
}

impl<'a> Columns<'a> {
    pub(crate) fn of(calls: impl Iterator<Item = &'a NewCall> + Clone) -> Self {
        Self {
            providers: calls.clone().map(|c| c.provider).collect(),
            outcomes: calls.clone().map(|c| c.outcome).collect(),
            errors: calls.clone().map(|c| c.error.as_deref()).collect(),
            ids: calls.clone().map(|c| c.provider_message_id.as_deref()).collect(),
            latencies: calls.map(|c| i32::try_from(c.latency.as_millis()).unwrap_or(i32::MAX)).collect(),
        }
    }
}

/// One recorded provider call.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Attempt {
    /// The delivery's attempt number (one per round over the route).
    pub attempt: i32,
    /// The provider called.
    pub provider: String,
    /// `sent` or the failure class.
    pub outcome: String,
    /// The provider's code and message.
    pub error: Option<String>,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// How long the call took.
    pub latency_ms: i32,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// The calls of one delivery, in order.
#[tracing::instrument(skip_all)]
pub async fn of_delivery(db: impl PgExecutor<'_>, delivery_id: Uuid) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select attempt, provider, outcome, error, provider_message_id, latency_ms, created_at
        from sms_attempts
        where delivery_id = $1
        order by id
        "#,
    )
    .bind(delivery_id)
    .fetch_all(db)
    .await
}

/// Calls to one provider over a window.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ProviderStats {
    /// The provider.
    pub provider: String,
    /// Calls made.
    pub calls: i64,
    /// Accepted.
    pub sent: i64,
    /// Transient failures.
    pub transient: i64,
    /// Provider-side refusals.
    pub provider_side: i64,
    /// Recipient refusals.
    pub recipient: i64,
    /// Per-number frequency limits.
    pub number_limited: i64,
    /// Accepted calls the provider reported delivered.
    pub delivered: i64,
    /// Accepted calls the provider reported undelivered.
    pub undelivered: i64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
}

/// Calls per provider created within `since`, busiest first.
#[tracing::instrument(skip_all)]
pub async fn stats_by_provider(db: impl PgExecutor<'_>, since: Duration) -> Result<Vec<ProviderStats>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select provider,
               count(*) as calls,
               count(*) filter (where outcome = 'sent') as sent,
               count(*) filter (where outcome = 'transient') as transient,
               count(*) filter (where outcome = 'provider') as provider_side,
               count(*) filter (where outcome = 'recipient') as recipient,
               count(*) filter (where outcome = 'number_limited') as number_limited,
               count(*) filter (where receipt_status = 'delivered') as delivered,
               count(*) filter (where receipt_status = 'undelivered') as undelivered,
               percentile_cont(0.5) within group (order by latency_ms) as p50_ms,
               percentile_cont(0.95) within group (order by latency_ms) as p95_ms
        from sms_attempts
        where created_at >= $1
        group by provider
        order by calls desc, provider
        "#,
    )
    .bind(super::ago(since))
    .fetch_all(db)
    .await
}
