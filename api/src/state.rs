//! `AppState`: what every handler shares. Cloned per request; everything inside is a handle.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use shared::{Settings, keys::Keys, queue::Publisher};
use sqlx::PgPool;

use crate::{StartError, limits::Scripts, verify::VerifyScripts};

/// Pools and configuration, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    /// Configuration, parsed at start-up.
    pub settings: Arc<Settings>,
    /// Redis key builders (with `REDIS_KEY_PREFIX`).
    pub keys: Keys,
    /// The one multiplexed Redis connection.
    pub redis: ConnectionManager,
    /// The PostgreSQL pool.
    pub db: PgPool,
    /// Confirmed publishing of send jobs.
    pub publisher: Publisher,
    /// The Lua scripts of the captcha check and rate limits.
    pub scripts: Arc<Scripts>,
    /// The Lua scripts of the SMS code check.
    pub verify_scripts: Arc<VerifyScripts>,
}

/// PostgreSQL connections per api process: requests hold one for a single short query.
const DB_POOL_SIZE: u32 = 16;

impl AppState {
    /// Connects to PostgreSQL (creating the database and migrating), and prepares Redis and
    /// the broker, which connect lazily so that the api can start while they are down.
    pub async fn connect(settings: Arc<Settings>) -> Result<Self, StartError> {
        let db = shared::db::connect_and_migrate(&settings, DB_POOL_SIZE).await?;
        let redis = shared::cache::connect(&settings)?;
        let publisher = Publisher::new(settings.clone(), "smscode-api");
        Ok(Self {
            keys: Keys::new(settings.redis_key_prefix.clone()),
            settings,
            redis,
            db,
            publisher,
            scripts: Arc::new(Scripts::default()),
            verify_scripts: Arc::new(VerifyScripts::default()),
        })
    }
}
