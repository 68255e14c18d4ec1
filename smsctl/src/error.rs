//! Why a command could not run at all (exit status 2).

use shared::StartError;

/// A failure that stops the command.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Could not connect.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Could not write the output.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// Could not encode JSON output.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
