//! Everything the `api`, the `worker` and `smsctl` agree on.
//!
//! - [`config`]: `Settings`, parsed once from the environment at start-up.
//! - [`errno`]: the errno table of the JSON contract (numbers and messages).
//! - [`keys`]: Redis key builders (`ImageCode_<id>`, `SMS_<mobile>`, rate-limit keys).
//! - [`domain`]: newtypes made by `parse()` (mobile, image-code id, SMS code).
//! - [`cache`]: the Redis connection manager.
//! - [`db`]: the PostgreSQL pool, migrations and the queries both processes run.
//! - [`queue`]: the RabbitMQ topology, the send job and the confirming publisher.
//! - [`health`]: the readiness checks of `/readyz`.
//! - [`telemetry`], [`shutdown`]: logging set-up and the SIGTERM/SIGINT token.

pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod errno;
pub mod health;
pub mod keys;
pub mod queue;
pub mod shutdown;
pub mod telemetry;

pub use config::Settings;

/// Why a process (api, worker, smsctl) could not start: each names the variable to check.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL unreachable, or the migrations failed.
    #[error("DATABASE_URL: {0}")]
    Database(#[from] sqlx::Error),
    /// `REDIS_URL` is not a valid Redis URL.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// Listening or serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// The SMS provider could not be set up.
    #[error("SMS_PROVIDER: {0}")]
    Provider(String),
}

/// Beijing time (UTC+8, no daylight saving): "per day" limits and the provider's timestamps
/// follow it.
pub const BEIJING: chrono::FixedOffset = match chrono::FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};
pub use errno::Errno;
