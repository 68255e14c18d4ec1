//! The bare end-to-end bound: what this machine can deliver with the same primitives as
//! api + workers and as little code as possible around them. Per message, on the producer
//! side (at the api's concurrency, as the bare pipeline does it): GETDEL of a captcha, the
//! SELECT of the user, SET EX of the code, a confirmed publish; on the consumer side (one
//! connection per worker, the same prefetch): a Redis GET of the code, the same provider
//! call to the same fake, one PostgreSQL insert, an ack. No HTTP, no retry queues, no
//! idempotency, no digest, no rate limits, no metrics, no logs: the real pipeline's overhead
//! is what the ratio to this measures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use providers::{Message, SmsProvider};
use redis::AsyncCommands;
use shared::domain::{Mobile, Recipient, SmsCode};
use tests::ccp_fake::CcpFake;

use crate::Result;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One bare run's shape.
pub struct Shape {
    /// Messages.
    pub n: usize,
    /// Publishes in flight (the api's request concurrency).
    pub concurrency: usize,
    /// Consumer connections (the worker processes of the real run).
    pub consumers: usize,
    /// Unacked messages per consumer.
    pub prefetch: u16,
    /// `quorum` or `classic`.
    pub queue_type: String,
}

/// Runs the bound; returns messages per second from the first publish to the last message
/// the fake received (the real end-to-end figure's span).
pub async fn run(
    shape: &Shape,
    settings: &shared::Settings,
    provider: Arc<dyn SmsProvider>,
    fake: &CcpFake,
    redis: &mut redis::aio::ConnectionManager,
) -> Result<f64> {
    let db = sqlx::PgPool::connect(&settings.database_url).await?;
    sqlx::query(
        "create table if not exists bare_sends (id bigint primary key, mobile text not null, \
         provider_message_id text, sent_at timestamptz not null default now())",
    )
    .execute(&db)
    .await?;
    let prefix = settings.redis_key_prefix.clone();
    let mobiles: Arc<Vec<String>> = Arc::new((0..shape.n).map(|i| format!("136{i:08}")).collect());
    for chunk in (0..shape.n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set_ex(format!("{prefix}ImageCode_bare_{i}"), "ABCD", 600).ignore();
        }
        let () = pipe.query_async(redis).await?;
    }

    let queue = format!("{}.bare", settings.amqp_prefix);
    let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default()).await?;
    let publisher = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(shape.queue_type.as_bytes().to_vec())));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    publisher.queue_declare(queue.as_str().into(), durable, args).await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;

    let received_before = fake.received_count();
    let handled = Arc::new(AtomicUsize::new(0));
    let mut consumer_connections = Vec::new();
    for c in 0..shape.consumers {
        let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(shape.prefetch, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                format!("bare-{c}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (db, redis, provider, mobiles, handled, prefix) =
            (db.clone(), redis.clone(), provider.clone(), mobiles.clone(), handled.clone(), prefix.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let (db, mut redis, provider, mobiles, handled, prefix) =
                    (db.clone(), redis.clone(), provider.clone(), mobiles.clone(), handled.clone(), prefix.clone());
                tokio::spawn(async move {
                    let i: usize = std::str::from_utf8(&delivery.data).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let Some(mobile) = mobiles.get(i) else { return };
                    let code: Option<String> = redis.get(format!("{prefix}SMS_{mobile}")).await.ok().flatten();
                    let (Some(code), Ok(recipient)) = (code, Recipient::parse(&Mobile::from_stored(mobile), 86)) else {
                        return;
                    };
                    let code = SmsCode::from_stored(&code);
                    let message =
                        Message { job_id: uuid::Uuid::new_v4(), recipient: &recipient, code: &code, ttl_minutes: 5 };
                    let Ok(accepted) = provider.send(&message).await else { return };
                    let stored =
                        sqlx::query("insert into bare_sends (id, mobile, provider_message_id) values ($1, $2, $3)")
                            .bind(i64::try_from(i).unwrap_or(i64::MAX))
                            .bind(mobile.as_str())
                            .bind(accepted.message_id)
                            .execute(&db)
                            .await;
                    if stored.is_ok() && delivery.ack(BasicAckOptions::default()).await.is_ok() {
                        handled.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        consumer_connections.push(connection);
    }

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..shape.concurrency)
        .map(|_| {
            let (channel, next, queue, n) = (publisher.clone(), next.clone(), queue.clone(), shape.n);
            let (db, mut redis, mobiles, prefix) = (db.clone(), redis.clone(), mobiles.clone(), prefix.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(mobile) = mobiles.get(i).filter(|_| i < n) else {
                        return Ok::<(), Error>(());
                    };
                    let captcha: Option<String> = redis.get_del(format!("{prefix}ImageCode_bare_{i}")).await?;
                    let taken: bool = sqlx::query_scalar("select exists (select 1 from users where mobile = $1)")
                        .bind(mobile.as_str())
                        .fetch_one(&db)
                        .await?;
                    if captcha.is_none() || taken {
                        return Err("bare end to end: a captcha was missing or a mobile taken".into());
                    }
                    let () = redis.set_ex(format!("{prefix}SMS_{mobile}"), "123456", 600).await?;
                    let properties = BasicProperties::default().with_delivery_mode(2);
                    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                    channel
                        .basic_publish("".into(), queue.as_str().into(), options, i.to_string().as_bytes(), properties)
                        .await?
                        .await?;
                }
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    let target = received_before + shape.n;
    let deadline = Instant::now() + Duration::from_secs(600);
    while fake.received_count() < target {
        if Instant::now() > deadline {
            return Err(format!(
                "bare end to end: {} of {} delivered",
                fake.received_count() - received_before,
                shape.n
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = shape.n as f64 / started.elapsed().as_secs_f64();
    // Wait for the last inserts and acks before tearing down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::Relaxed) < shape.n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    for c in consumer_connections {
        let _ = c.close(200, "done".into()).await;
    }
    let _ = connection.close(200, "done".into()).await;
    db.close().await;
    Ok(rate)
}
