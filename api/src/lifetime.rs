//! How long a request lives. The send pipeline and registration run detached from the
//! connection, so a client that goes away mid-request cannot leave a captcha consumed and a
//! cooldown taken with no job queued; and every request answers within
//! `API_REQUEST_TIMEOUT_SECS`, with errno JSON rather than an empty status.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// Detached pipelines in flight at most: each is bounded by its dependency timeouts, so an
/// abort storm holds at most this many tasks; further requests wait for a slot (and, while
/// they wait, nothing has started, so dropping them is harmless).
pub const MAX_DETACHED: usize = 1024;

/// Runs request work as tasks of its own, so that dropping the handler (hyper does when the
/// client resets its connection) does not drop the work half-way.
#[derive(Clone)]
pub struct Detached {
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Default for Detached {
    fn default() -> Self {
        Self { slots: Arc::new(Semaphore::new(MAX_DETACHED)), tasks: TaskTracker::new() }
    }
}

impl Detached {
    /// Runs `work` to its end whatever happens to the caller, and returns its result to a
    /// caller that is still there.
    pub async fn run<T>(&self, work: impl Future<Output = Result<T, ApiError>> + Send + 'static) -> Result<T, ApiError>
    where
        T: Send + 'static,
    {
        let slot = self.slots.clone().acquire_owned().await.map_err(|e| ApiError::Internal(e.to_string()))?;
        let task = self.tasks.spawn(async move {
            let result = work.await;
            drop(slot);
            result
        });
        task.await?
    }

    /// Waits for every detached task (on shutdown, after the server stopped taking requests).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Answers errno JSON if the request is not done within `limit` (`API_REQUEST_TIMEOUT_SECS`).
/// Detached work goes on; the limit is set above the worst case of the dependency budget, so
/// this answer means something hung beyond every per-call timeout.
pub async fn answer_in_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}
