//! Everything the `api`, the `worker` and `smsctl` agree on.
//!
//! - [`config`]: `Settings`, parsed once from the environment at start-up.
//! - [`errno`]: the errno table of the JSON contract (numbers and messages).
//! - [`keys`]: Redis key builders (`ImageCode_<id>`, `SMS_<mobile>`, rate-limit keys).
//! - [`domain`]: newtypes made by `parse()` (mobile, image-code id, SMS code).
//! - [`fraud`]: the fraud guard's per-prefix window in Redis (its Lua, listing, unblocking).
//! - [`names`]: the text form of configuration and column enums.
//! - [`cache`]: the Redis handle, to one server or to the primary a Sentinel group names.
//! - [`db`]: the PostgreSQL pool (`Db`, fit for PgBouncer) and migrations, and the stores (`users`, `deliveries`)
//!   that hold every SQL statement.
//! - [`queue`]: the RabbitMQ contract: send job, topology, confirming publisher.
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, served by api and worker alike.
//! - [`telemetry`], [`shutdown`]: logging and metrics set-up, and the SIGTERM/SIGINT token.

pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod errno;
pub mod fraud;
pub mod health;
pub mod keys;
pub mod names;
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
    /// The address a variable names cannot be listened on (in use, not local, no permission).
    #[error("{var}: cannot listen on {addr}: {source}")]
    Listen {
        /// The variable that names the address (`API_ADDR`, `WORKER_METRICS_ADDR`).
        var: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// A setting is not allowed in this process (see `Settings::refuse_dev_providers`).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The SMS provider could not be set up.
    #[error("SMS_PROVIDER: {0}")]
    Provider(String),
}

/// Listens on `addr`, the value of the variable `var`: a failure (most often "address already
/// in use") names both, so that the operator knows which setting to change. Port 0 picks a free
/// port; the caller logs the one it got.
pub async fn listen(var: &'static str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen { var, addr, source })
}

/// Beijing time (UTC+8, no daylight saving): "per day" limits and the provider's timestamps
/// follow it.
pub const BEIJING: chrono::FixedOffset = match chrono::FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};
pub use errno::Errno;
