//! The consume loop: prefetch-limited concurrent deliveries, ack after the outcome is
//! recorded, reconnect with backoff, and a graceful drain on shutdown.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use shared::queue::{Nodes, SendJob, Topology};
use tokio_util::task::TaskTracker;

use crate::{
    backoff::Backoff,
    deliver::{self, DeliverError, Outcome},
    state::WorkerState,
};

/// Consumes the send queue until shutdown, over as many broker connections as it takes.
pub struct Consumer {
    state: Arc<WorkerState>,
    topology: Topology,
    /// The broker nodes, tried in turn when the connection is lost.
    nodes: Nodes,
    /// Every delivery in flight, so that shutdown waits for them.
    tracker: TaskTracker,
}

impl Consumer {
    /// A consumer for `state`'s deployment.
    pub fn new(state: Arc<WorkerState>) -> Self {
        let topology = Topology::new(&state.settings);
        let nodes = Nodes::new(&state.settings);
        Self { state, topology, nodes, tracker: TaskTracker::new() }
    }

    /// Consumes until `state.shutdown` is cancelled, reconnecting whenever the broker goes
    /// away. Returns after every send in flight has been recorded and acked.
    pub async fn run(self) {
        let shutdown = self.state.shutdown.clone();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            match self.session(&mut backoff).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next_pause(), "broker connection lost");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        self.drain().await;
        tracing::info!("worker stopped; every send in flight recorded");
    }

    /// One connection's life: open, consume until it fails or shutdown, close. A connection
    /// that opened resets `backoff`: after losing a node, the next one is tried at once.
    async fn session(&self, backoff: &mut Backoff) -> Result<(), lapin::Error> {
        let mut session = Session::open(&self.state, &self.topology, &self.nodes).await?;
        backoff.reset();
        self.state.consuming.store(true, Ordering::Relaxed);
        let result = self.consume(&mut session).await;
        self.state.consuming.store(false, Ordering::Relaxed);
        result
    }

    /// Hands each message to its own task until the stream fails or shutdown.
    async fn consume(&self, session: &mut Session) -> Result<(), lapin::Error> {
        loop {
            tokio::select! {
                _ = self.state.shutdown.cancelled() => {
                    // Stop receiving; deliveries already handed out finish and ack on this
                    // channel, so it closes only after them.
                    let _ = session.channel.basic_cancel(session.tag.as_str().into(), BasicCancelOptions::default()).await;
                    self.drain().await;
                    session.close().await;
                    return Ok(());
                }
                next = session.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let state = self.state.clone();
                        self.tracker.spawn(async move {
                            let in_flight = metrics::gauge!("smscode_worker_sends_in_flight");
                            in_flight.increment(1.0);
                            process(&state, delivery).await;
                            in_flight.decrement(1.0);
                        });
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer stream ended").into()),
                }
            }
        }
    }

    async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A broker connection with a consumer on the send queue.
struct Session {
    connection: Connection,
    channel: Channel,
    tag: String,
    consumer: lapin::Consumer,
}

impl Session {
    /// Connects, declares the topology and starts consuming.
    async fn open(state: &WorkerState, topology: &Topology, nodes: &Nodes) -> Result<Self, lapin::Error> {
        let connection = nodes.connect(&state.settings, "smscode-worker").await?;
        let channel = connection.create_channel().await?;
        topology.declare(&connection, &channel).await?;
        // At most WORKER_PREFETCH unacked messages: the number of sends in flight.
        channel.basic_qos(state.settings.worker_prefetch, BasicQosOptions::default()).await?;
        let tag = format!("smscode-worker-{}", uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(
                topology.send_queue().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %topology.send_queue(), prefetch = state.settings.worker_prefetch, "consuming");
        Ok(Self { connection, channel, tag, consumer })
    }

    async fn close(&self) {
        let _ = self.channel.close(200, "worker shutting down".into()).await;
        let _ = self.connection.close(200, "worker shutting down".into()).await;
    }
}

/// Decodes, delivers, then acks, parks or dead-letters one message. Every path ends the
/// message one way or another: none is left unacked on a live channel, where it would hold a
/// prefetch slot for good.
async fn process(state: &WorkerState, delivery: Delivery) {
    let job = match SendJob::decode(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            // Poison: dead-lettered to `<prefix>.dead` once, never requeued into a hot loop.
            tracing::error!(error = %e, "undecodable job; dead-lettering it");
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return;
        }
    };
    let handled = AssertUnwindSafe(deliver::deliver(state, &job)).catch_unwind().await;
    match handled {
        // The outcome is committed: only now is the message done.
        Ok(Ok(Outcome::Recorded(_) | Outcome::AlreadyDone(_) | Outcome::TakenOver)) => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(job_id = %job.id, error = %e, "ack failed; the job will be redelivered and found done");
            }
        }
        Ok(Ok(Outcome::InFlight)) => park(state, &job, delivery, "in_flight").await,
        Ok(Err(e @ DeliverError::Database(_))) if state.shutdown.is_cancelled() => {
            // Shutting down while PostgreSQL is unreachable: leave the message unacked; it
            // goes back to the queue when the channel closes.
            tracing::warn!(job_id = %job.id, error = %e, "outcome not recorded; job left for redelivery");
        }
        Ok(Err(e)) => {
            tracing::error!(job_id = %job.id, error = %e, "job not handled; retrying it later");
            let reason = match e {
                DeliverError::Database(_) => "database",
                DeliverError::Redis(_) => "redis",
                DeliverError::Broker(_) => "broker",
            };
            park(state, &job, delivery, reason).await;
        }
        Err(_) => {
            // A bug, not an outage: dead-letter the job for a look rather than loop on it.
            tracing::error!(job_id = %job.id, "handling the job panicked; dead-lettering it");
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
        }
    }
}

/// Parks a job in the first retry queue (not at the head of the send queue, where a dead
/// dependency would make it spin) without counting an attempt. If even that fails (the
/// broker refuses publishes), the message goes back to the send queue after a pause.
async fn park(state: &WorkerState, job: &SendJob, delivery: Delivery, reason: &'static str) {
    metrics::counter!("smscode_worker_jobs_parked_total", "reason" => reason).increment(1);
    let parked = match state.settings.sms_retry_schedule.first() {
        Some(delay) => state.publisher.publish_retry(*delay, job).await.is_ok(),
        None => false,
    };
    if parked {
        let _ = delivery.ack(BasicAckOptions::default()).await;
        return;
    }
    tracing::warn!(job_id = %job.id, "could not park the job; requeueing it after a pause");
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = tokio::time::sleep(REQUEUE_PAUSE) => {}
    }
    let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
}

/// How long a job that could not be parked waits before it goes back to the send queue.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);
