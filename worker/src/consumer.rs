//! The consume loop: prefetch-limited concurrent handling, ack after the outcome is
//! recorded, reconnect with backoff, and a graceful drain on shutdown.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions},
    types::FieldTable,
};
use shared::queue::{self, SendJob, Topology};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::handle::{self, Ctx};

/// Consumes until `shutdown` is cancelled, reconnecting whenever the broker goes away.
/// Returns after every send in flight has been recorded and acked.
pub async fn consume(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume_once(&ctx, &tracker, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "broker connection lost");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!("worker stopped; every send in flight recorded");
}

/// One connection's life: declare, consume, hand each delivery to a task.
async fn consume_once(ctx: &Arc<Ctx>, tracker: &TaskTracker, shutdown: &CancellationToken) -> Result<(), lapin::Error> {
    let topology = Topology::new(&ctx.settings);
    let connection = queue::connect(&ctx.settings, "smscode-worker").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    // At most WORKER_PREFETCH unacked messages: the number of sends in flight.
    channel.basic_qos(ctx.settings.worker_prefetch, BasicQosOptions::default()).await?;
    let tag = format!("smscode-worker-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            topology.send_queue().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %topology.send_queue(), prefetch = ctx.settings.worker_prefetch, "consuming");
    ctx.consuming.store(true, Ordering::Relaxed);
    let result = consume_deliveries(ctx, tracker, shutdown, &channel, &connection, &tag, &mut consumer).await;
    ctx.consuming.store(false, Ordering::Relaxed);
    result
}

async fn consume_deliveries(
    ctx: &Arc<Ctx>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    channel: &Channel,
    connection: &Connection,
    tag: &str,
    consumer: &mut lapin::Consumer,
) -> Result<(), lapin::Error> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Stop receiving; deliveries already handed out finish and ack on this channel.
                let _ = channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                tracker.close();
                tracker.wait().await;
                close(channel, connection).await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move {
                        let in_flight = metrics::gauge!("smscode_worker_sends_in_flight");
                        in_flight.increment(1.0);
                        process(&ctx, delivery).await;
                        in_flight.decrement(1.0);
                    });
                }
                Some(Err(e)) => return Err(e),
                None => return Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer stream ended").into()),
            }
        }
    }
}

async fn close(channel: &Channel, connection: &Connection) {
    let _ = channel.close(200, "worker shutting down".into()).await;
    let _ = connection.close(200, "worker shutting down".into()).await;
}

/// Decodes, handles, then acks (or dead-letters) one delivery.
async fn process(ctx: &Ctx, delivery: Delivery) {
    let job = match SendJob::decode(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            // Poison: dead-lettered to `<prefix>.dead` once, never requeued into a hot loop.
            tracing::error!(error = %e, "undecodable job; dead-lettering it");
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return;
        }
    };
    match handle::handle(ctx, &job).await {
        // The outcome is committed: only now is the message done.
        Ok(_) => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(job_id = %job.id, error = %e, "ack failed; the job will be redelivered and found done");
            }
        }
        Err(e @ handle::HandleError::Database(_)) => {
            // Shutting down while PostgreSQL is unreachable: leave the message unacked; it
            // goes back to the queue when the channel closes.
            tracing::warn!(job_id = %job.id, error = %e, "outcome not recorded; job left for redelivery");
        }
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "job not handled; retrying it later");
            // Park it in the first retry queue rather than requeue it at the head, where a
            // dead dependency would make it spin.
            let parked = match ctx.settings.sms_retry_schedule.first() {
                Some(delay) => ctx.publisher.publish_retry(*delay, &job).await.is_ok(),
                None => false,
            };
            let _ = if parked {
                delivery.ack(BasicAckOptions::default()).await
            } else {
                delivery.reject(BasicRejectOptions { requeue: false }).await
            };
        }
    }
}
