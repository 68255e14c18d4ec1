//! `smsctl`: what on-call engineers run to see deliveries and to resend the failed ones
//! whose code is still live, without writing SQL.

use std::{io::Write, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use serde::Serialize;
use shared::{
    Settings, StartError,
    db::DeliveryStatus,
    domain::{Mobile, SmsCode},
    keys::Keys,
    queue::{Publisher, SendJob},
};
use sqlx::PgPool;
use uuid::Uuid;

/// smsctl: list, count and replay SMS deliveries (the `sms_deliveries` table).
///
/// Reads the same environment as api and worker (DATABASE_URL, REDIS_URL, AMQP_URL,
/// AMQP_PREFIX, REDIS_KEY_PREFIX, CODE_DIGEST_KEY).
///
/// Provider outage drill: `smsctl stats --since 1h` shows the failed count; `smsctl
/// deliveries --status failed --since 1h` shows why (last_error); once the provider is back,
/// `smsctl replay --status failed --since 1h --dry-run` shows what would be resent, and the
/// same without --dry-run resends it. Codes live 5 minutes: older failures are reported as
/// expired and skipped, never resent.
#[derive(Debug, Parser)]
#[command(name = "smsctl", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List deliveries, newest first.
    Deliveries {
        /// Only this status: sending, sent, retrying, failed, expired or superseded.
        #[arg(long, value_parser = DeliveryStatus::from_str)]
        status: Option<DeliveryStatus>,
        /// Only this mobile.
        #[arg(long)]
        mobile: Option<String>,
        /// Only deliveries created within this window, e.g. 30m, 1h, 2d.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resend failed deliveries whose code is still live in Redis, as new jobs linked by
    /// replay_of. A code that expired or was replaced by a newer one is reported and
    /// skipped; a delivery is never replayed twice (safe to run twice or concurrently).
    /// Exits 1 when a replay failed.
    Replay {
        /// These deliveries (repeat --id for several).
        #[arg(long = "id", required_unless_present = "status", conflicts_with = "status")]
        ids: Vec<Uuid>,
        /// Every delivery with this status within --since (only `failed` is replayed).
        #[arg(long, value_parser = DeliveryStatus::from_str)]
        status: Option<DeliveryStatus>,
        /// With --status: the window, e.g. 15m, 1h.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        since: Duration,
        /// With --status: only this mobile.
        #[arg(long)]
        mobile: Option<String>,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Count deliveries by status over a window.
    Stats {
        /// The window, e.g. 1h, 24h, 7d.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        since: Duration,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Could not connect.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Could not write the output.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// Could not encode JSON output.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
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
    /// Provider name.
    pub provider: String,
    /// Status.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// The delivery this one replays.
    pub replay_of: Option<Uuid>,
    /// `code_digest` (not printed).
    #[serde(skip)]
    pub code_digest: String,
}

/// Runs `cli`, writing to `out`. `Ok(false)` when something failed (exit status 1).
pub async fn run(cli: Cli, settings: &Settings, out: &mut impl Write) -> Result<bool, CtlError> {
    // smsctl only reads and writes a few rows: no migrations, a small pool.
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(settings.dependency_timeout)
        .connect(&settings.database_url)
        .await
        .map_err(StartError::from)?;
    match cli.command {
        Command::Deliveries { status, mobile, since, limit, json } => {
            let rows = list(&db, status, mobile.as_deref(), since, limit).await?;
            print_deliveries(out, &rows, json)?;
            Ok(true)
        }
        Command::Stats { since, json } => {
            stats(&db, since, json, out).await?;
            Ok(true)
        }
        Command::Replay { ids, status, since, mobile, dry_run } => {
            let candidates = if ids.is_empty() {
                list(&db, status, mobile.as_deref(), Some(since), i64::MAX).await?
            } else {
                by_ids(&db, &ids).await?
            };
            let missing = ids.iter().filter(|id| !candidates.iter().any(|c| c.id == **id)).count();
            for id in ids.iter().filter(|id| !candidates.iter().any(|c| c.id == **id)) {
                writeln!(out, "failed   {id}: no such delivery")?;
            }
            let redis = shared::cache::connect(settings).map_err(StartError::from)?;
            let ctx = Replayer {
                db,
                redis,
                keys: Keys::new(settings.redis_key_prefix.clone()),
                publisher: Publisher::new(Arc::new(settings.clone()), "smsctl"),
                digest_key: settings.code_digest_key.expose_secret().as_bytes().to_vec(),
            };
            let mut summary = Summary { failed: missing, ..Summary::default() };
            for delivery in &candidates {
                let outcome = ctx.replay(delivery, dry_run).await;
                summary.count(&outcome);
                writeln!(out, "{}", outcome.line(delivery, dry_run))?;
            }
            writeln!(
                out,
                "replay{}: {} replayed, {} skipped, {} failed",
                if dry_run { " (dry run)" } else { "" },
                summary.replayed,
                summary.skipped,
                summary.failed
            )?;
            Ok(summary.failed == 0)
        }
    }
}

#[tracing::instrument(skip_all)]
async fn by_ids(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as::<_, Delivery>(
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

#[tracing::instrument(skip_all)]
async fn list(
    db: &PgPool,
    status: Option<DeliveryStatus>,
    mobile: Option<&str>,
    since: Option<Duration>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let since = since.map(|d| Utc::now() - chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX));
    sqlx::query_as::<_, Delivery>(
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
    .bind(status.map(DeliveryStatus::as_str))
    .bind(mobile)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}

fn print_deliveries(out: &mut impl Write, rows: &[Delivery], json: bool) -> Result<(), CtlError> {
    if json {
        for row in rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<13}  {:<10}  {:>3}  {:<20}  {:<36}  last_error",
        "id", "mobile", "status", "try", "created_at", "replay_of"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<36}  {:<13}  {:<10}  {:>3}  {:<20}  {:<36}  {}",
            r.id,
            r.mobile,
            r.status,
            r.attempts,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.replay_of.map(|id| id.to_string()).unwrap_or_default(),
            r.last_error.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out, "{} deliveries", rows.len())?;
    Ok(())
}

async fn stats(db: &PgPool, since: Duration, json: bool, out: &mut impl Write) -> Result<(), CtlError> {
    let from = Utc::now() - chrono::TimeDelta::from_std(since).unwrap_or(chrono::TimeDelta::MAX);
    let counts: Vec<(String, i64)> = sqlx::query_as(
        r#"
        select status, count(*)
        from sms_deliveries
        where created_at >= $1
        group by status
        order by status
        "#,
    )
    .bind(from)
    .fetch_all(db)
    .await?;
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            counts.iter().map(|(s, n)| (s.clone(), serde_json::Value::from(*n))).collect();
        writeln!(out, "{}", serde_json::to_string(&map)?)?;
    } else {
        writeln!(out, "deliveries created in the last {}", humantime::format_duration(since))?;
        for (status, n) in &counts {
            writeln!(out, "{status:<11} {n}")?;
        }
        writeln!(out, "{:<11} {}", "total", counts.iter().map(|(_, n)| n).sum::<i64>())?;
    }
    Ok(())
}

struct Replayer {
    db: PgPool,
    redis: ConnectionManager,
    keys: Keys,
    publisher: Publisher,
    digest_key: Vec<u8>,
}

/// What became of one candidate.
enum Outcome {
    Replayed(Uuid),
    Skipped(String),
    Failed(String),
}

impl Outcome {
    fn line(&self, d: &Delivery, dry_run: bool) -> String {
        let mobile = Mobile::from_stored(d.mobile.as_str()).masked();
        match self {
            Outcome::Replayed(_) if dry_run => format!("would replay {} ({mobile})", d.id),
            Outcome::Replayed(new) => format!("replayed {} -> {new} ({mobile})", d.id),
            Outcome::Skipped(why) => format!("skipped  {} ({mobile}): {why}", d.id),
            Outcome::Failed(why) => format!("failed   {} ({mobile}): {why}", d.id),
        }
    }
}

#[derive(Default)]
struct Summary {
    replayed: usize,
    skipped: usize,
    failed: usize,
}

impl Summary {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Replayed(_) => self.replayed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

impl Replayer {
    async fn replay(&self, d: &Delivery, dry_run: bool) -> Outcome {
        match self.try_replay(d, dry_run).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn try_replay(&self, d: &Delivery, dry_run: bool) -> Result<Outcome, String> {
        if DeliveryStatus::from_str(&d.status) != Ok(DeliveryStatus::Failed) {
            return Ok(Outcome::Skipped(format!("status {}: only failed deliveries are replayed", d.status)));
        }
        let replayed: Option<Uuid> = sqlx::query_scalar("select id from sms_deliveries where replay_of = $1")
            .bind(d.id)
            .fetch_optional(&self.db)
            .await
            .map_err(|e| format!("database: {e}"))?;
        if let Some(new) = replayed {
            return Ok(Outcome::Skipped(format!("already replayed as {new}")));
        }

        // Is the live code still this delivery's? Compare digests: the code is not stored.
        let mobile = Mobile::from_stored(d.mobile.as_str());
        let key = self.keys.sms_code(&mobile);
        let (live, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let Some(live) = live.map(SmsCode::from_stored) else {
            return Ok(Outcome::Skipped("code expired".into()));
        };
        if live.digest(&self.digest_key, d.id) != d.code_digest {
            return Ok(Outcome::Skipped("code superseded by a newer one".into()));
        }
        if ttl_ms < 1000 {
            return Ok(Outcome::Skipped("code expires in less than a second".into()));
        }
        if dry_run {
            return Ok(Outcome::Replayed(d.id));
        }

        let mut job = SendJob::new(
            mobile,
            live,
            d.template_id.clone(),
            Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        );
        let digest = job.code.digest(&self.digest_key, job.id);
        // The unique index on replay_of makes this the lock: a concurrent smsctl loses here.
        let claimed: Option<Uuid> = sqlx::query_scalar(
            r#"
            insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest, replay_of)
            values ($1, $2, $3, $4, 'retrying', 0, $5, $6)
            on conflict do nothing
            returning id
            "#,
        )
        .bind(job.id)
        .bind(job.mobile.as_str())
        .bind(&job.template_id)
        .bind(&d.provider)
        .bind(&digest)
        .bind(d.id)
        .fetch_optional(&self.db)
        .await
        .map_err(|e| format!("database: {e}"))?;
        if claimed.is_none() {
            return Ok(Outcome::Skipped("already replayed (concurrently)".into()));
        }
        job.request_id = Some(format!("replay-of-{}", d.id));
        if let Err(e) = self.publisher.publish(&job).await {
            // Not queued: remove the claim so that a later replay can try again.
            let _ = sqlx::query("delete from sms_deliveries where id = $1").bind(job.id).execute(&self.db).await;
            return Err(format!("not queued: {e}"));
        }
        Ok(Outcome::Replayed(job.id))
    }
}
