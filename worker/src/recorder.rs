//! Group commit: the starts and the outcomes of the sends in flight are written to
//! PostgreSQL in batches, one statement each, instead of one statement per send. A send
//! hands its row to the recorder and waits for the statement that carries it, so every
//! guarantee of the one-row form holds (a send starts only once its `sending` row is
//! committed; a message is acked only once its outcome is): only the round trips, pool
//! checkouts and commits are shared.
//!
//! One batch of each kind is in flight at a time; whatever arrives meanwhile makes the next
//! batch. Under a light load a batch is one row and waits for nothing; under a heavy one the
//! batches grow with it. A batch that fails is retried row by row, so each send gets its own
//! error (a database that is down, or a row of its own that is refused).

use std::{collections::HashSet, future::Future, time::Duration};

use shared::db::{
    self, Db,
    attempts::NewCall,
    deliveries::{self, AttemptOutcome, AttemptStart, Finish, NewAttempt},
};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most rows one statement carries.
const MAX_BATCH: usize = 128;

/// A job's row, to start an attempt on.
pub struct Start {
    /// The job id.
    pub id: Uuid,
    /// The recipient, as the job has it.
    pub mobile: String,
    /// The provider template.
    pub template_id: String,
    /// The first provider of the route.
    pub provider: &'static str,
    /// `code_digest` of job id and code.
    pub code_digest: String,
}

/// An attempt's outcome, to record.
pub struct Outcome {
    /// The job id.
    pub id: Uuid,
    /// The attempt number the start gave.
    pub attempt: i32,
    /// What came of it.
    pub record: AttemptOutcome,
    /// The provider calls it made.
    pub calls: Vec<NewCall>,
}

struct Request<T, R> {
    row: T,
    reply: oneshot::Sender<Result<R, sqlx::Error>>,
}

/// Hands rows to the two batching tasks; cheap to share.
pub struct Recorder {
    starts: mpsc::UnboundedSender<Request<Start, AttemptStart>>,
    outcomes: mpsc::UnboundedSender<Request<Outcome, bool>>,
}

impl Recorder {
    /// Starts the batching tasks on `db`; `takeover_after` as in
    /// [`deliveries::start_attempt`]. They end when the recorder is dropped.
    pub fn spawn(db: Db, takeover_after: Duration) -> Self {
        let (starts, start_rx) = mpsc::unbounded_channel();
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        tokio::spawn(batches(start_rx, db.clone(), takeover_after));
        tokio::spawn(batches(outcome_rx, db, takeover_after));
        Self { starts, outcomes }
    }

    /// [`deliveries::start_attempt`], batched with the other sends' starts.
    pub async fn start(&self, row: Start) -> Result<AttemptStart, sqlx::Error> {
        submit(&self.starts, row).await
    }

    /// [`deliveries::finish_attempt`], batched with the other sends' outcomes: whether the row
    /// was still this attempt's.
    pub async fn finish(&self, row: Outcome) -> Result<bool, sqlx::Error> {
        submit(&self.outcomes, row).await
    }
}

async fn submit<T, R>(tx: &mpsc::UnboundedSender<Request<T, R>>, row: T) -> Result<R, sqlx::Error> {
    let (reply, answer) = oneshot::channel();
    // The tasks live as long as the recorder: a closed channel means the runtime is going
    // away, which the caller treats like a lost database.
    let gone = || sqlx::Error::PoolClosed;
    tx.send(Request { row, reply }).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// A row kind the recorder batches: identified by its job id (a batch holds each id once),
/// written many at a time.
trait Row: Sized + Send + Sync + 'static {
    /// What each row's sender gets back.
    type Out: Send + 'static;

    fn key(&self) -> Uuid;

    /// Writes `rows` in one statement; one answer per row, in order.
    fn write<'a>(
        db: &'a Db,
        rows: &'a [&'a Self],
        takeover_after: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Out>, sqlx::Error>> + Send + 'a;
}

impl Row for Start {
    type Out = AttemptStart;

    fn key(&self) -> Uuid {
        self.id
    }

    async fn write<'a>(
        db: &'a Db,
        rows: &'a [&'a Self],
        takeover_after: Duration,
    ) -> Result<Vec<AttemptStart>, sqlx::Error> {
        let attempts: Vec<NewAttempt<'_>> = rows
            .iter()
            .map(|s| NewAttempt {
                id: s.id,
                mobile: &s.mobile,
                template_id: &s.template_id,
                provider: s.provider,
                code_digest: &s.code_digest,
            })
            .collect();
        deliveries::start_attempts(db, &attempts, takeover_after).await
    }
}

impl Row for Outcome {
    type Out = bool;

    fn key(&self) -> Uuid {
        self.id
    }

    async fn write<'a>(db: &'a Db, rows: &'a [&'a Self], _: Duration) -> Result<Vec<bool>, sqlx::Error> {
        let finishes: Vec<Finish<'_>> =
            rows.iter().map(|o| Finish { id: o.id, attempt: o.attempt, outcome: &o.record, calls: &o.calls }).collect();
        deliveries::finish_attempts(db, &finishes).await
    }
}

/// The batching loop of one kind: takes what is waiting (each job once; a second row of the
/// same job waits for the next batch), writes it with `write`, answers each sender.
async fn batches<T: Row>(mut rx: mpsc::UnboundedReceiver<Request<T, T::Out>>, db: Db, takeover_after: Duration) {
    let mut held: Vec<Request<T, T::Out>> = Vec::new();
    loop {
        let mut batch: Vec<Request<T, T::Out>> = Vec::new();
        let mut ids = HashSet::new();
        let mut later = Vec::new();
        for request in held.drain(..) {
            if batch.len() < MAX_BATCH && ids.insert(request.row.key()) {
                batch.push(request);
            } else {
                later.push(request);
            }
        }
        held = later;
        if batch.is_empty() {
            match rx.recv().await {
                Some(request) => {
                    ids.insert(request.row.key());
                    batch.push(request);
                }
                None => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) if ids.insert(request.row.key()) => batch.push(request),
                Ok(request) => held.push(request),
                Err(_) => break,
            }
        }
        let rows: Vec<&T> = batch.iter().map(|r| &r.row).collect();
        let written = T::write(&db, &rows, takeover_after).await;
        drop(rows);
        match written {
            Ok(results) if results.len() == batch.len() => {
                for (request, result) in batch.into_iter().zip(results) {
                    let _ = request.reply.send(Ok(result));
                }
            }
            Err(e) if batch.len() == 1 || db::is_unavailable(&e) => {
                // The database is unreachable (every row would wait out the same timeout),
                // or the one row's own error: each sender gets it, and waits and retries as
                // it would have alone.
                let kind = std::io::ErrorKind::ConnectionAborted;
                let message = e.to_string();
                let mut first = Some(e);
                for request in batch {
                    let error =
                        first.take().unwrap_or_else(|| sqlx::Error::Io(std::io::Error::new(kind, message.clone())));
                    let _ = request.reply.send(Err(error));
                }
            }
            _ => {
                // A row of the batch was refused: row by row, so that each send gets its own
                // answer.
                for request in batch {
                    let result = T::write(&db, &[&request.row], takeover_after)
                        .await
                        .and_then(|mut r| r.pop().ok_or_else(|| sqlx::Error::Protocol("no row for the job".into())));
                    let _ = request.reply.send(result);
                }
            }
        }
    }
}
