//! A reconnecting publisher that sends jobs with `mandatory` set and waits for the broker's
//! confirm before it reports success.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use rand::Rng;
use uuid::Uuid;

use super::{connection::Nodes, job::SendJob, topology::Topology};
use crate::Settings;

/// Why a job was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker is unreachable or the connection/channel failed.
    #[error("broker unavailable: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker did not confirm in time.
    #[error("broker did not confirm within {0:?}")]
    Timeout(Duration),
    /// The broker refused the message (nack).
    #[error("broker refused the message")]
    Nacked,
    /// No queue is bound for the routing key (the topology is missing).
    #[error("message was unroutable and returned by the broker")]
    Returned,
    /// The job could not be serialised.
    #[error("could not encode the job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Publishes jobs with `mandatory` set and waits for the broker's confirm.
///
/// One connection with a few confirm-mode channels, shared by every request (a lapin
/// channel takes concurrent publishes and resolves each confirm on its own): nothing is
/// opened per publish. The connection is opened on first use and again after it dies,
/// to the next node of `AMQP_URL` that answers, declaring the topology each time.
///
/// With several broker nodes, a publish whose connection dies before its confirm arrives, or
/// that the broker nacks, is published again on a new connection, [`REPUBLISH_PAUSE`] apart,
/// for as long as the budget (`DEPENDENCY_TIMEOUT_MS`) lasts: an earlier copy may or may not have reached the queue, and
/// another copy with the same job id is harmless, since the worker sends a job id at most
/// once. Success is still only ever reported for a confirmed copy.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    settings: Arc<Settings>,
    topology: Topology,
    nodes: Nodes,
    name: String,
    live: std::sync::RwLock<Option<Live>>,
    /// Held while (re)connecting, so that one task connects and the others wait for it.
    reconnect: tokio::sync::Mutex<()>,
    /// When the last connection attempt failed: callers within [`RECONNECT_PAUSE`] fail fast
    /// instead of queueing up behind new attempts against a broker that is down.
    last_failure: std::sync::Mutex<Option<std::time::Instant>>,
    next: AtomicUsize,
    /// Numbers the connections, so that a publish that failed drops its own connection and
    /// not the one another publish has opened since.
    generation: AtomicU64,
}

struct Live {
    generation: u64,
    connection: Connection,
    channels: Vec<Channel>,
}

/// Channels per publisher: a few, so one slow confirm does not hold up the others.
const CHANNELS: usize = 4;

/// With several broker nodes, the pause between two publishes of one job (all within
/// `DEPENDENCY_TIMEOUT_MS`).
const REPUBLISH_PAUSE: Duration = Duration::from_millis(100);

/// How long after a failed connection attempt publishes fail without a new attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

impl Publisher {
    /// A publisher for `settings`; connects lazily.
    pub fn new(settings: Arc<Settings>, name: &str) -> Self {
        let topology = Topology::new(&settings);
        Self {
            inner: Arc::new(PublisherInner {
                nodes: Nodes::new(&settings),
                settings,
                topology,
                name: name.to_owned(),
                live: std::sync::RwLock::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                last_failure: std::sync::Mutex::new(None),
                next: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Connects now (declaring the topology) instead of on the first publish.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.channel().await.map(drop)
    }

    /// Whether the broker connection is up (connecting if it is not).
    pub async fn is_ready(&self) -> bool {
        self.connect().await.is_ok()
    }

    /// Publishes `job` to the send queue and waits for the confirm.
    #[tracing::instrument(skip_all, fields(job_id = %job.id))]
    pub async fn publish(&self, job: &SendJob) -> Result<(), PublishError> {
        self.publish_with_key(Topology::SEND_KEY, job, None).await
    }

    /// Publishes `job` to the retry queue of `delay` and waits for the confirm.
    ///
    /// Jittered: the message's own expiration is up to 10% shorter than the queue's TTL, so
    /// jobs that failed together do not all come back at the same instant. (A message can
    /// only leave a TTL queue early, never late: the queue's TTL bounds the delay.)
    #[tracing::instrument(skip_all, fields(job_id = %job.id))]
    pub async fn publish_retry(&self, delay: Duration, job: &SendJob) -> Result<(), PublishError> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let jitter = rand::rng().random_range(0..=delay_ms / 10);
        self.publish_with_key(&Topology::retry_key(delay), job, Some(delay_ms - jitter)).await
    }

    async fn publish_with_key(&self, key: &str, job: &SendJob, expiration_ms: Option<u64>) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(job)?;
        let limit = self.inner.settings.dependency_timeout;
        let attempts = async {
            loop {
                let published = match self.channel().await {
                    Ok((channel, generation)) => self
                        .publish_on(&channel, key, &payload, job.id, expiration_ms)
                        .await
                        .map_err(|e| (e, Some(generation))),
                    Err(e) => Err((e, None)),
                };
                match published {
                    // The connection or channel died under the publish (a node went away), or
                    // the broker nacked it: again, on a fresh connection to whichever node
                    // answers now, while the budget lasts. A channel opened while a quorum
                    // queue was electing its new leader keeps nacking that queue's messages
                    // until the lost node returns (RabbitMQ 3.10), so a nack drops the
                    // connection rather than reuse it.
                    Err((e @ (PublishError::Broker(_) | PublishError::Nacked), generation))
                        if self.inner.nodes.len() > 1 =>
                    {
                        tracing::warn!(error = %e, "publish failed on this broker connection; publishing again on a new one");
                        if let Some(generation) = generation {
                            self.drop_connection(generation);
                        }
                        tokio::time::sleep(REPUBLISH_PAUSE).await;
                    }
                    Ok(()) => return Ok(()),
                    Err((e, _)) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(limit, attempts).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout(limit)),
        }
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        routing_key: &str,
        payload: &[u8],
        id: Uuid,
        expiration_ms: Option<u64>,
    ) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // 2 = persistent: the message survives a broker restart.
            .with_delivery_mode(2)
            .with_message_id(id.to_string().into())
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0));
        if let Some(ms) = expiration_ms {
            properties = properties.with_expiration(ms.to_string().into());
        }
        // mandatory: an unroutable message comes back instead of being dropped silently.
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = channel
            .basic_publish(self.inner.topology.exchange().into(), routing_key.into(), options, payload, properties)
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Returned);
        }
        Ok(())
    }

    /// A connected channel (one of the live ones, or a fresh connection's) and its
    /// connection's generation.
    async fn channel(&self) -> Result<(Channel, u64), PublishError> {
        if let Some(channel) = self.pick() {
            return Ok(channel);
        }
        let _reconnecting = self.inner.reconnect.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(channel) = self.pick() {
            return Ok(channel);
        }
        let recently_failed =
            self.inner.last_failure.lock().map(|t| t.is_some_and(|t| t.elapsed() < RECONNECT_PAUSE)).unwrap_or(false);
        if recently_failed {
            return Err(PublishError::Broker(
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into(),
            ));
        }
        match self.open().await {
            Ok(live) => {
                let channel = live.channels.first().cloned().map(|c| (c, live.generation));
                if let Ok(mut slot) = self.inner.live.write() {
                    *slot = Some(live);
                }
                channel.ok_or(PublishError::Broker(
                    lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into(),
                ))
            }
            Err(e) => {
                if let Ok(mut t) = self.inner.last_failure.lock() {
                    *t = Some(std::time::Instant::now());
                }
                Err(e.into())
            }
        }
    }

    /// Forgets the current connection (closing it in the background), so that the next
    /// publish opens a new one.
    fn drop_connection(&self, generation: u64) {
        let live = self.inner.live.write().ok().and_then(|mut slot| {
            if slot.as_ref().is_some_and(|l| l.generation == generation) { slot.take() } else { None }
        });
        if let Some(live) = live {
            tokio::spawn(async move {
                let _ = live.connection.close(200, "replaced after a failed publish".into()).await;
            });
        }
    }

    /// The next live channel, round robin, and its connection's generation; `None` when there
    /// is no healthy connection.
    fn pick(&self) -> Option<(Channel, u64)> {
        let live = self.inner.live.read().ok()?;
        let live = live.as_ref()?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % live.channels.len().max(1);
        live.channels.get(i).filter(|c| c.status().connected()).cloned().map(|c| (c, live.generation))
    }

    async fn open(&self) -> Result<Live, lapin::Error> {
        let connection = self.inner.nodes.connect(&self.inner.settings, &self.inner.name).await?;
        let mut channels = Vec::with_capacity(CHANNELS);
        for _ in 0..CHANNELS {
            let channel = connection.create_channel().await?;
            if channels.is_empty() {
                self.inner.topology.declare(&connection, &channel).await?;
            }
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(channel);
        }
        Ok(Live { generation: self.inner.generation.fetch_add(1, Ordering::Relaxed), connection, channels })
    }
}
