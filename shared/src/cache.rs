//! The Redis connection: one multiplexed, auto-reconnecting `ConnectionManager` per process.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::Settings;

/// A lazily connected manager for `REDIS_URL`: the process starts even while Redis is down,
/// and every command gives up after `DEPENDENCY_TIMEOUT_MS`.
pub fn connect(settings: &Settings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.redis_url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.dependency_timeout))
        .set_response_timeout(Some(settings.dependency_timeout))
        // Reconnects happen in the background on the next command; do not stall a request
        // retrying here.
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config)
}
