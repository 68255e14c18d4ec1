//! When to try a failed send again: pure, so the schedule is tested without a broker.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What to do after a transient failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// The schedule is used up: the delivery has failed.
    Exhausted,
    /// The next step would come after the code expires: a late code is useless.
    PastExpiry,
}

/// The next step after `attempts_made` attempts (1 after the first failure). Each delay is
/// one retry queue's fixed TTL, so the broker, not a sleeping consumer, does the waiting.
pub fn next_step(schedule: &[Duration], attempts_made: u32, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Next {
    let step = usize::try_from(attempts_made).ok().and_then(|n| n.checked_sub(1)).and_then(|i| schedule.get(i));
    let Some(delay) = step.copied() else {
        return Next::Exhausted;
    };
    match chrono::TimeDelta::from_std(delay) {
        Ok(delta) if now + delta < expires_at => Next::RetryIn(delay),
        _ => Next::PastExpiry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn steps_follow_the_schedule_then_stop() {
        let now = Utc::now();
        let far = now + chrono::TimeDelta::hours(1);
        let schedule = secs(&[2, 10, 30]);
        assert_eq!(next_step(&schedule, 1, now, far), Next::RetryIn(Duration::from_secs(2)));
        assert_eq!(next_step(&schedule, 3, now, far), Next::RetryIn(Duration::from_secs(30)));
        assert_eq!(next_step(&schedule, 4, now, far), Next::Exhausted);
        assert_eq!(next_step(&schedule, 0, now, far), Next::Exhausted);
    }

    #[test]
    fn no_retry_is_scheduled_past_expiry() {
        let now = Utc::now();
        let soon = now + chrono::TimeDelta::seconds(20);
        let schedule = secs(&[2, 30]);
        assert_eq!(next_step(&schedule, 1, now, soon), Next::RetryIn(Duration::from_secs(2)));
        assert_eq!(next_step(&schedule, 2, now, soon), Next::PastExpiry);
    }
}
