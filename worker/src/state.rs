//! `WorkerState`: what every delivery shares, built once at start-up.

use std::sync::{Arc, atomic::AtomicBool};

use providers::Router;
use shared::cache::Redis;
use shared::db::Db;
use shared::{Settings, StartError, db, keys::Keys, queue::Publisher};
use tokio_util::sync::CancellationToken;

/// Pools, the provider and configuration.
pub struct WorkerState {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Redis key builders.
    pub keys: Keys,
    /// PostgreSQL pool.
    pub db: Db,
    /// Redis connection.
    pub redis: Redis,
    /// The providers messages go out through, with failover and circuit breakers.
    pub router: Router,
    /// Publishes retries to the delay queues.
    pub publisher: Publisher,
    /// Whether a consumer is attached to the send queue right now (for `/readyz`).
    pub consuming: AtomicBool,
    /// Cancelled on shutdown: stops waiting for a dependency that is down.
    pub shutdown: CancellationToken,
}

impl WorkerState {
    /// Connects to PostgreSQL (migrating) and prepares Redis and the retry publisher.
    pub async fn connect(
        settings: Arc<Settings>,
        router: Router,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        // A send holds a connection only for two short statements, so a few serve many sends
        // in flight; PostgreSQL's connection limit is shared by every worker and api.
        let pool_size = u32::from(settings.worker_prefetch).min(16) + 2;
        let db = db::connect_and_migrate(&settings, pool_size).await?;
        let redis = shared::cache::connect(&settings)?;
        Ok(Self {
            keys: Keys::from(settings.as_ref()),
            publisher: Publisher::new(settings.clone(), "smscode-worker-retry"),
            settings,
            db,
            redis,
            router,
            consuming: AtomicBool::new(false),
            shutdown,
        })
    }
}
