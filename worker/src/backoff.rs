//! Waiting between tries of something that is down (the broker, PostgreSQL): doubling
//! pauses up to a cap, cut short by shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Doubling pauses from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses of `first`, then twice as long each time, never longer than `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, next: first }
    }

    /// The pause the next [`wait`](Self::wait) will take.
    pub fn next_pause(&self) -> Duration {
        self.next
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the next pause and doubles the one after; `false` when `shutdown` was
    /// cancelled first (the caller then stops trying).
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_double_up_to_the_cap_and_reset() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(5));
        let mut pauses = Vec::new();
        for _ in 0..4 {
            pauses.push(backoff.next_pause().as_millis());
            assert!(backoff.wait(&shutdown).await);
        }
        assert_eq!(pauses, [2, 4, 5, 5]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_millis(2));
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await, "a cancelled shutdown ends the wait");
    }
}
