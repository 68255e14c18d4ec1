//! The names of one deployment's exchanges and queues, and their idempotent declaration.
//!
//! All names start with `AMQP_PREFIX`, here `sms`:
//! - exchange `sms` (direct, durable): routing key `send` → queue `sms.send`;
//!   routing key `retry.<n>s` → queue `sms.retry.<n>s`, one per step of the retry schedule.
//! - `sms.retry.<n>s` holds messages for a fixed `x-message-ttl` of n seconds, then
//!   dead-letters them to exchange `sms` with routing key `send`: a delay without sleeping
//!   in a consumer and without a broker plugin.
//! - `sms.send` dead-letters what it rejects (poison messages) to exchange `sms.dlx` →
//!   queue `sms.dead`, where ops can look at them.

use std::time::Duration;

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use crate::{Settings, config::QueueType};

/// The names of one deployment's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    quorum_size: u16,
    retry_delays: Vec<Duration>,
}

impl Topology {
    /// The topology of `settings` (`AMQP_PREFIX`, `AMQP_QUEUE_TYPE`, `AMQP_QUORUM_SIZE`,
    /// `SMS_RETRY_SCHEDULE_SECS`).
    pub fn new(settings: &Settings) -> Self {
        // One queue per distinct delay: a schedule may repeat a step ("5,5,5").
        let mut retry_delays = settings.sms_retry_schedule.clone();
        retry_delays.sort();
        retry_delays.dedup();
        Self {
            prefix: settings.amqp_prefix.clone(),
            queue_type: settings.amqp_queue_type,
            quorum_size: settings.amqp_quorum_size,
            retry_delays,
        }
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

    /// Declares everything on `channel` of `connection`; idempotent, so every process runs it
    /// on each (re)connect.
    pub async fn declare(&self, connection: &Connection, channel: &Channel) -> Result<(), lapin::Error> {
        // Durable: exchanges and queues survive a broker restart.
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
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
        self.declare_queue(connection, channel, &self.dead_queue(), std::mem::take(&mut dead_args)).await?;
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
        self.declare_queue(connection, channel, &self.send_queue(), send_args).await?;
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
            if self.queue_type == QueueType::Quorum {
                // The hand-back to the send queue is itself a dead-lettering: at-least-once
                // makes the broker keep the message until the send queue has confirmed it
                // (at-most-once, the default, can drop it), which requires reject-publish.
                args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
                args.insert("x-overflow".into(), long_string("reject-publish"));
            }
            self.declare_queue(connection, channel, &self.retry_queue(*delay), args).await?;
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

    /// Declares one durable queue. A quorum queue is declared on a scratch channel first:
    /// the broker compares `x-quorum-initial-group-size` on a redeclare, so a queue created
    /// before that argument was sent (or with another AMQP_QUORUM_SIZE) refuses the declare,
    /// closing the channel it ran on. Such a queue is then only checked to exist.
    async fn declare_queue(
        &self,
        connection: &Connection,
        channel: &Channel,
        name: &str,
        args: FieldTable,
    ) -> Result<(), lapin::Error> {
        let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
        if self.queue_type != QueueType::Quorum {
            return channel.queue_declare(name.into(), durable_queue, args).await.map(drop);
        }
        let scratch = connection.create_channel().await?;
        if scratch.queue_declare(name.into(), durable_queue, args).await.is_ok() {
            let _ = scratch.close(200, "declared".into()).await;
            return Ok(());
        }
        let passive = QueueDeclareOptions { passive: true, ..durable_queue };
        channel.queue_declare(name.into(), passive, FieldTable::default()).await.map(drop)
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string(self.queue_type.as_str()));
        if self.queue_type == QueueType::Quorum {
            // Replicas of each queue, capped by the broker at the cluster's size. Only read
            // when the queue is created: the broker does not compare it on a redeclare, so a
            // changed AMQP_QUORUM_SIZE applies to new queues (grow old ones with
            // `rabbitmq-queues grow`).
            args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(i32::from(self.quorum_size)));
        }
        args
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}
