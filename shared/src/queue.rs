//! The RabbitMQ contract: topology names and declaration, the send job, and a publisher
//! that waits for the broker's confirm.
//!
//! Topology (all names start with `AMQP_PREFIX`, here `sms`):
//! - exchange `sms` (direct, durable): routing key `send` → queue `sms.send`;
//!   routing key `retry.<n>s` → queue `sms.retry.<n>s`, one per step of the retry schedule.
//! - `sms.retry.<n>s` holds messages for a fixed `x-message-ttl` of n seconds, then
//!   dead-letters them to exchange `sms` with routing key `send`: a delay without sleeping
//!   in a consumer and without a broker plugin.
//! - `sms.send` dead-letters what it rejects (poison messages) to exchange `sms.dlx` →
//!   queue `sms.dead`, where ops can look at them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    Settings,
    config::QueueType,
    domain::{Mobile, SmsCode},
};

/// The version written in every job (`"v"`); a consumer rejects versions it does not know.
pub const JOB_VERSION: u32 = 1;

/// A send job: SPEC's JSON, plus the version `v`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendJob {
    /// Job format version, [`JOB_VERSION`].
    pub v: u32,
    /// Job id: the `sms_deliveries` id and the AMQP `message_id`.
    pub id: Uuid,
    /// Recipient.
    pub mobile: Mobile,
    /// The code to send (never logged: its `Debug` is masked).
    pub code: SmsCode,
    /// Provider template id.
    pub template_id: String,
    /// Lifetime of the code from `created_at`: no attempt is made after it.
    pub ttl_secs: u64,
    /// When the api stored the code.
    pub created_at: DateTime<Utc>,
    /// Attempts already made (0 on the first delivery).
    pub attempt: u32,
    /// The `x-request-id` of the api request that created the job, for following it in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Why a message body is not a job this version can handle.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the job's shape.
    #[error("malformed job: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A job version this consumer does not know.
    #[error("unknown job version {0}")]
    UnknownVersion(u32),
}

impl SendJob {
    /// A new job for a code just stored in Redis.
    pub fn new(mobile: Mobile, code: SmsCode, template_id: String, ttl: Duration) -> Self {
        Self {
            v: JOB_VERSION,
            id: Uuid::new_v4(),
            mobile,
            code,
            template_id,
            ttl_secs: ttl.as_secs(),
            created_at: Utc::now(),
            attempt: 0,
            request_id: None,
        }
    }

    /// Parses a message body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let Version { v } = serde_json::from_slice(body)?;
        if v != JOB_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        Ok(serde_json::from_slice(body)?)
    }

    /// When the code stops being valid.
    pub fn expires_at(&self) -> DateTime<Utc> {
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX);
        self.created_at + chrono::TimeDelta::try_seconds(ttl).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// The names of one deployment's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    retry_delays: Vec<Duration>,
}

impl Topology {
    /// The topology of `settings` (`AMQP_PREFIX`, `AMQP_QUEUE_TYPE`, `SMS_RETRY_SCHEDULE_SECS`).
    pub fn new(settings: &Settings) -> Self {
        // One queue per distinct delay: a schedule may repeat a step ("5,5,5").
        let mut retry_delays = settings.sms_retry_schedule.clone();
        retry_delays.sort();
        retry_delays.dedup();
        Self { prefix: settings.amqp_prefix.clone(), queue_type: settings.amqp_queue_type, retry_delays }
    }

    /// The main exchange, `<prefix>`.
    pub fn exchange(&self) -> &str {
        &self.prefix
    }

    /// The send queue, `<prefix>.send`.
    pub fn send_queue(&self) -> String {
        format!("{}.send", self.prefix)
    }

    /// Routing key of the send queue.
    pub const SEND_KEY: &'static str = "send";

    /// The exchange poison messages are dead-lettered to, `<prefix>.dlx`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// Where poison messages end up, `<prefix>.dead`.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The retry queue of one delay, `<prefix>.retry.<n>s`.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.{}", self.prefix, Self::retry_key(delay))
    }

    /// Routing key of the retry queue of one delay, `retry.<n>s`.
    pub fn retry_key(delay: Duration) -> String {
        format!("retry.{}s", delay.as_secs())
    }

    /// Every queue of the topology (for tests and clean-up).
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.send_queue(), self.dead_queue()];
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        queues
    }

    /// Declares everything; idempotent, so every process runs it on each (re)connect.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        // Durable: exchanges and queues survive a broker restart.
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(self.exchange().into(), ExchangeKind::Direct, durable_exchange, FieldTable::default())
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        let mut dead_args = self.queue_args();
        channel.queue_declare(self.dead_queue().into(), durable_queue, std::mem::take(&mut dead_args)).await?;
        channel
            .queue_bind(
                self.dead_queue().into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let mut send_args = self.queue_args();
        // A rejected message goes to `<prefix>.dead` instead of vanishing.
        send_args.insert("x-dead-letter-exchange".into(), long_string(&self.dead_letter_exchange()));
        if self.queue_type == QueueType::Quorum {
            // A message redelivered this often (a worker crashing on it each time) is
            // dead-lettered instead of looping forever.
            send_args.insert("x-delivery-limit".into(), AMQPValue::LongInt(20));
        }
        channel.queue_declare(self.send_queue().into(), durable_queue, send_args).await?;
        channel
            .queue_bind(
                self.send_queue().into(),
                self.exchange().into(),
                Self::SEND_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for delay in &self.retry_delays {
            let mut args = self.queue_args();
            let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            // Each retry queue holds messages for exactly its delay, then dead-letters them
            // back to the send queue. One TTL per queue keeps expiry in FIFO order.
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
            args.insert("x-dead-letter-exchange".into(), long_string(self.exchange()));
            args.insert("x-dead-letter-routing-key".into(), long_string(Self::SEND_KEY));
            channel.queue_declare(self.retry_queue(*delay).into(), durable_queue, args).await?;
            channel
                .queue_bind(
                    self.retry_queue(*delay).into(),
                    self.exchange().into(),
                    Self::retry_key(*delay).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert("x-queue-type".into(), long_string(kind));
        args
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Opens a connection to `AMQP_URL`, giving up after `DEPENDENCY_TIMEOUT_MS`. The connection
/// is named `<name> <AMQP_PREFIX>` in the broker's management tools.
pub async fn connect(settings: &Settings, name: &str) -> Result<Connection, lapin::Error> {
    let name = format!("{name} {}", settings.amqp_prefix);
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name.into_bytes()));
    match tokio::time::timeout(settings.dependency_timeout, Connection::connect(&settings.amqp_url, properties)).await {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out connecting to the broker",
        ))))),
    }
}

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
/// declaring the topology each time.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    settings: Arc<Settings>,
    topology: Topology,
    name: String,
    live: std::sync::RwLock<Option<Live>>,
    /// Held while (re)connecting, so that one task connects and the others wait for it.
    reconnect: tokio::sync::Mutex<()>,
    /// When the last connection attempt failed: callers within [`RECONNECT_PAUSE`] fail fast
    /// instead of queueing up behind new attempts against a broker that is down.
    last_failure: std::sync::Mutex<Option<std::time::Instant>>,
    next: AtomicUsize,
}

struct Live {
    _connection: Connection,
    channels: Vec<Channel>,
}

/// Channels per publisher: a few, so one slow confirm does not hold up the others.
const CHANNELS: usize = 4;

/// How long after a failed connection attempt publishes fail without a new attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

impl Publisher {
    /// A publisher for `settings`; connects lazily.
    pub fn new(settings: Arc<Settings>, name: &str) -> Self {
        let topology = Topology::new(&settings);
        Self {
            inner: Arc::new(PublisherInner {
                settings,
                topology,
                name: name.to_owned(),
                live: std::sync::RwLock::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                last_failure: std::sync::Mutex::new(None),
                next: AtomicUsize::new(0),
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
        match tokio::time::timeout(limit, self.publish_bytes(key, &payload, job.id, expiration_ms)).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout(limit)),
        }
    }

    async fn publish_bytes(
        &self,
        routing_key: &str,
        payload: &[u8],
        id: Uuid,
        expiration_ms: Option<u64>,
    ) -> Result<(), PublishError> {
        let channel = self.channel().await?;
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

    /// A connected channel: one of the live ones, or a fresh connection's.
    async fn channel(&self) -> Result<Channel, PublishError> {
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
                let channel = live.channels.first().cloned();
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

    /// The next live channel, round robin; `None` when there is no healthy connection.
    fn pick(&self) -> Option<Channel> {
        let live = self.inner.live.read().ok()?;
        let channels = &live.as_ref()?.channels;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % channels.len().max(1);
        channels.get(i).filter(|c| c.status().connected()).cloned()
    }

    async fn open(&self) -> Result<Live, lapin::Error> {
        let connection = connect(&self.inner.settings, &self.inner.name).await?;
        let mut channels = Vec::with_capacity(CHANNELS);
        for _ in 0..CHANNELS {
            let channel = connection.create_channel().await?;
            if channels.is_empty() {
                self.inner.topology.declare(&channel).await?;
            }
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(channel);
        }
        Ok(Live { _connection: connection, channels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_unknown_versions_are_refused() -> Result<(), DecodeError> {
        let job = SendJob::new(
            Mobile::from_stored("13812345678"),
            SmsCode::from_stored("012345"),
            "1".into(),
            Duration::from_secs(300),
        );
        let body = serde_json::to_vec(&job)?;
        let back = SendJob::decode(&body)?;
        assert_eq!(back.id, job.id);
        assert_eq!(back.code.expose(), "012345");
        assert_eq!((back.expires_at() - back.created_at).num_seconds(), 300);

        let mut value: serde_json::Value = serde_json::from_slice(&body)?;
        value["v"] = 2.into();
        let newer = serde_json::to_vec(&value)?;
        assert!(matches!(SendJob::decode(&newer), Err(DecodeError::UnknownVersion(2))));
        assert!(matches!(SendJob::decode(b"not json"), Err(DecodeError::Malformed(_))));
        Ok(())
    }
}
