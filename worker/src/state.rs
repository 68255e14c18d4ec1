//! `WorkerState`: what every delivery shares, built once at start-up.

use std::sync::{Arc, atomic::AtomicBool};

use providers::Router;
use shared::cache::Redis;
use shared::db::Db;
use shared::{Settings, StartError, db, keys::Keys, queue::Publisher};
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

/// Pools, the provider and configuration.
pub struct WorkerState {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Redis key builders.
    pub keys: Keys,
    /// PostgreSQL pool.
    pub db: Db,
    /// Writes the starts and outcomes of the sends in flight, batched (group commit).
    pub recorder: Recorder,
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
        // The sends in flight share two batched statements (the recorder) and a few
        // retries' reads; PostgreSQL's connection limit is shared by every worker and api.
        let pool_size = u32::from(settings.worker_prefetch).min(16) + 2;
        let db = db::connect_and_migrate(&settings, pool_size).await?;
        let redis = shared::cache::connect(&settings)?;
        let recorder = Recorder::spawn(db.clone(), router.round_budget() + crate::deliver::TAKEOVER_MARGIN);
        Ok(Self {
            recorder,
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
