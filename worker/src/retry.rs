//! When to try a failed send again: pure, so the schedule is tested without a broker.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The delay before the next attempt, or `None` when the schedule is exhausted or the next
/// attempt would come after the code expires (a late code is useless).
///
/// `attempts_made` counts attempts so far (1 after the first failure). Each delay is one
/// retry queue's fixed TTL, so the broker, not a sleeping consumer, does the waiting.
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Option<Duration> {
    let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
    let delay = *schedule.get(index)?;
    let at = now + chrono::TimeDelta::from_std(delay).ok()?;
    (at < expires_at).then_some(delay)
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
        assert_eq!(next_delay(&schedule, 1, now, far), Some(Duration::from_secs(2)));
        assert_eq!(next_delay(&schedule, 3, now, far), Some(Duration::from_secs(30)));
        assert_eq!(next_delay(&schedule, 4, now, far), None);
        assert_eq!(next_delay(&schedule, 0, now, far), None);
    }

    #[test]
    fn no_retry_is_scheduled_past_expiry() {
        let now = Utc::now();
        let soon = now + chrono::TimeDelta::seconds(20);
        let schedule = secs(&[2, 30]);
        assert_eq!(next_delay(&schedule, 1, now, soon), Some(Duration::from_secs(2)));
        assert_eq!(next_delay(&schedule, 2, now, soon), None);
    }
}
