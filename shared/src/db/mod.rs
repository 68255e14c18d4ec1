//! PostgreSQL: the pool, the migrations, and the stores: every SQL statement of the product
//! lives in one of these modules.
//!
//! - [`users`]: the registered mobiles.
//! - [`deliveries`]: `sms_deliveries`, one row per send job.
//! - [`attempts`]: `sms_attempts`, one row per provider call.
//! - [`receipts`]: delivery reports and conversions on those rows, and the funnel they make.
//! - [`Db`] (`handle.rs`): the pool, fit for a transaction pooler when
//!   `DATABASE_PREPARED_STATEMENTS=false`.

pub mod attempts;
pub mod deliveries;
mod handle;
pub mod receipts;
pub mod users;

pub use handle::Db;

use std::{future::Future, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::Settings;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database when it is missing (a developer machine needs no manual
/// `createdb`) and applies the migrations, both over `DATABASE_MIGRATION_URL`, then connects
/// the pool to `DATABASE_URL`.
///
/// The migrations take a session-level advisory lock, which a transaction pooler such as
/// PgBouncer cannot carry: hence a direct connection of their own, closed once they ran.
/// The existence check and the creation open connections of their own, outside the pool and
/// its acquire timeout: each is bounded by `DEPENDENCY_TIMEOUT_MS`, so that a server that
/// accepts the connection but never answers (a blackholed address, a hung server) stops
/// start-up with an error instead of hanging it.
pub async fn connect_and_migrate(settings: &Settings, max_connections: u32) -> Result<Db, sqlx::Error> {
    let url = &settings.database_migration_url;
    let limit = settings.dependency_timeout;
    if !at_start_up(limit, "checking that the database exists", Postgres::database_exists(url)).await? {
        // Another process (the worker next to this api) may win the race: fine.
        if let Err(e) = at_start_up(limit, "creating the database", Postgres::create_database(url)).await
            && !at_start_up(limit, "checking that the database exists", Postgres::database_exists(url)).await?
        {
            return Err(e);
        }
    }
    let pool = pool_options(settings, max_connections).idle_timeout(Duration::from_secs(300));
    if settings.database_migration_url == settings.database_url && settings.database_prepared_statements {
        let pool = pool.connect_with(connect_options(settings, url)?).await?;
        MIGRATOR.run(&pool).await?;
        return Ok(Db::new(pool, settings));
    }
    let direct = pool_options(settings, 1).connect_with(PgConnectOptions::from_str(url)?).await?;
    MIGRATOR.run(&direct).await?;
    direct.close().await;
    let pool = pool.connect_with(connect_options(settings, &settings.database_url)?).await?;
    Ok(Db::new(pool, settings))
}

/// The options of the pool's connections to `url`: without the named-statement cache when
/// `DATABASE_PREPARED_STATEMENTS=false`.
fn connect_options(settings: &Settings, url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(if settings.database_prepared_statements { options } else { options.statement_cache_capacity(0) })
}

/// A pooled connection idle this long is pinged before it is handed out: long enough idle
/// to have been cut (a server restart, a firewall's or a pooler's idle timeout).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

fn pool_options(settings: &Settings, max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(settings.dependency_timeout)
        // sqlx pings every connection it hands out by default: one more round trip per
        // statement, half of PostgreSQL's messages under load. Only a connection that sat
        // idle is checked; a busy one that died fails its statement, which the api answers
        // 4001 and the worker retries (`is_unavailable`), and the pool drops it.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

/// Runs one start-up step against PostgreSQL, failing with an I/O "timed out" error naming
/// the step after `limit`.
async fn at_start_up<T>(
    limit: Duration,
    step: &str,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms (DEPENDENCY_TIMEOUT_MS) while {step}", limit.as_millis()),
        ))),
    }
}

/// Connects to an existing, migrated database without migrating it (smsctl: a short-lived
/// command that only reads and writes a few rows).
pub async fn connect(settings: &Settings, max_connections: u32) -> Result<Db, sqlx::Error> {
    let pool = pool_options(settings, max_connections)
        .connect_with(connect_options(settings, &settings.database_url)?)
        .await?;
    Ok(Db::new(pool, settings))
}

/// Runs a query, giving up after `limit` (`DEPENDENCY_TIMEOUT_MS`) as if the pool had timed
/// out: a request path never waits longer than its budget for PostgreSQL.
pub async fn within<T>(limit: Duration, query: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
    tokio::time::timeout(limit, query).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Whether an error means "PostgreSQL is unreachable right now" (worth waiting for) rather
/// than a bug or bad data.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
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

/// The instant `window` ago (the distant past for a window too large to subtract).
fn ago(window: Duration) -> DateTime<Utc> {
    let window = chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
    Utc::now().checked_sub_signed(window).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
