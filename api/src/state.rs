//! `AppState`: what every handler shares. Cloned per request; everything inside is a handle.

use std::sync::Arc;

use axum::extract::FromRef;
use shared::db::Db;
use shared::{Settings, StartError, queue::Publisher};

use crate::{codes::CodeStore, extract::ProxyTrust, lifetime::Detached};

/// Pools and configuration, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    /// Configuration, parsed at start-up.
    pub settings: Arc<Settings>,
    /// Captchas, SMS codes and rate limits in Redis.
    pub codes: CodeStore,
    /// The PostgreSQL pool.
    pub db: Db,
    /// Confirmed publishing of send jobs.
    pub publisher: Publisher,
    /// Runs the send pipeline and registration detached from the connection.
    pub detached: Detached,
}

/// PostgreSQL connections per api process: requests hold one for a single short query.
const DB_POOL_SIZE: u32 = 16;

impl AppState {
    /// Connects to PostgreSQL (creating the database and migrating), and prepares Redis and
    /// the broker, which connect lazily so that the api can start while they are down.
    pub async fn connect(settings: Arc<Settings>) -> Result<Self, StartError> {
        let db = shared::db::connect_and_migrate(&settings, DB_POOL_SIZE).await?;
        let codes = CodeStore::new(shared::cache::connect(&settings)?, settings.clone());
        let publisher = Publisher::new(settings.clone(), "smscode-api");
        Ok(Self { settings, codes, db, publisher, detached: Detached::default() })
    }
}

impl FromRef<AppState> for ProxyTrust {
    fn from_ref(state: &AppState) -> Self {
        Self { trust: state.settings.trust_proxy_headers, hops: state.settings.trusted_proxy_hops }
    }
}
