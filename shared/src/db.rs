//! PostgreSQL: the pool, the migrations, and the queries api, worker and smsctl share.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgExecutor, PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::Settings;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects to `DATABASE_URL`, creating the database when it is missing (a developer
/// machine needs no manual `createdb`), and applies the migrations.
pub async fn connect_and_migrate(settings: &Settings, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let url = &settings.database_url;
    if !Postgres::database_exists(url).await? {
        // Another process (the worker next to this api) may win the race: fine.
        if let Err(e) = Postgres::create_database(url).await
            && !Postgres::database_exists(url).await?
        {
            return Err(e);
        }
    }
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(settings.dependency_timeout)
        .idle_timeout(Duration::from_secs(300))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Whether a user with this mobile exists (step 6 of sms_code).
#[tracing::instrument(skip_all)]
pub async fn user_exists(db: impl PgExecutor<'_>, mobile: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        select exists (select 1 from users where mobile = $1)
        "#,
    )
    .bind(mobile)
    .fetch_one(db)
    .await
}

/// Creates a user; `false` when the mobile is already registered (the unique constraint
/// decides, so concurrent registrations cannot both succeed).
#[tracing::instrument(skip_all)]
pub async fn create_user(db: impl PgExecutor<'_>, mobile: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar(
        r#"
        insert into users (mobile, password_hash)
        values ($1, $2)
        on conflict (mobile) do nothing
        returning id
        "#,
    )
    .bind(mobile)
    .bind(password_hash)
    .fetch_optional(db)
    .await?;
    Ok(id.is_some())
}

/// The status of a delivery, as stored in `sms_deliveries.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// A worker is sending it now (or crashed while doing so: the job will be redelivered).
    Sending,
    /// The provider accepted it.
    Sent,
    /// A transient failure; a retry is scheduled.
    Retrying,
    /// Given up: permanent failure or retries exhausted.
    Failed,
    /// The code expired before it could be sent.
    Expired,
    /// A newer code replaced this one before it could be sent.
    Superseded,
}

impl DeliveryStatus {
    /// The column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "retrying" => Self::Retrying,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "superseded" => Self::Superseded,
            other => return Err(format!("unknown delivery status {other:?}")),
        })
    }
}

/// What the worker knows of a job when it starts an attempt.
pub struct NewAttempt<'a> {
    /// The job id (`sms_deliveries.id`).
    pub id: Uuid,
    /// The recipient.
    pub mobile: &'a str,
    /// The provider template.
    pub template_id: &'a str,
    /// The provider's name (`log`, `ccp`).
    pub provider: &'a str,
    /// `code_digest` of job id and code.
    pub code_digest: &'a str,
}

/// How an attempt may proceed.
#[derive(Debug, PartialEq, Eq)]
pub enum AttemptStart {
    /// The row is now `sending`; this is attempt number `attempts`.
    Proceed {
        /// Attempts made so far, this one included.
        attempts: i32,
    },
    /// The job already reached a final status (a redelivery): do not send again.
    AlreadyFinal(DeliveryStatus),
}

/// Records the start of an attempt: inserts the row, or moves a `sending`/`retrying` row to
/// `sending` and counts the attempt. A row already final is left alone and reported.
#[tracing::instrument(skip_all, fields(job_id = %attempt.id))]
pub async fn start_attempt(db: &PgPool, attempt: &NewAttempt<'_>) -> Result<AttemptStart, sqlx::Error> {
    let attempts: Option<i32> = sqlx::query_scalar(
        r#"
        insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest)
        values ($1, $2, $3, $4, 'sending', 1, $5)
        on conflict (id) do update
        set status = 'sending', attempts = sms_deliveries.attempts + 1, provider = excluded.provider, updated_at = now()
        where sms_deliveries.status in ('sending', 'retrying')
        returning attempts
        "#,
    )
    .bind(attempt.id)
    .bind(attempt.mobile)
    .bind(attempt.template_id)
    .bind(attempt.provider)
    .bind(attempt.code_digest)
    .fetch_optional(db)
    .await?;
    if let Some(attempts) = attempts {
        return Ok(AttemptStart::Proceed { attempts });
    }
    let status: String = sqlx::query_scalar(
        r#"
        select status from sms_deliveries where id = $1
        "#,
    )
    .bind(attempt.id)
    .fetch_one(db)
    .await?;
    let status = status.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    Ok(AttemptStart::AlreadyFinal(status))
}

/// Records the outcome of an attempt. Must be committed before the job is acked.
#[tracing::instrument(skip_all, fields(job_id = %id, status = status.as_str()))]
pub async fn finish_attempt(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: DeliveryStatus,
    provider_message_id: Option<&str>,
    last_error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        update sms_deliveries
        set status = $2,
            provider_message_id = coalesce($3, provider_message_id),
            last_error = $4,
            sent_at = case when $2 = 'sent' then now() else sent_at end,
            updated_at = now()
        where id = $1
        "#,
    )
    .bind(id)
    .bind(status.as_str())
    .bind(provider_message_id)
    .bind(last_error)
    .execute(db)
    .await?;
    Ok(())
}
