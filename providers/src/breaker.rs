//! A circuit breaker per provider, per worker: after `PROVIDER_BREAKER_FAILURES` failures in
//! a row the provider is skipped for `PROVIDER_BREAKER_OPEN_SECS`; then one probe request
//! decides whether it closes again.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// What the breaker shows (the metrics gauge's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through.
    Closed = 0,
    /// Requests are skipped.
    Open = 1,
    /// One probe request is allowed.
    HalfOpen = 2,
}

/// Whether a request may go to the provider now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Go,
    /// Go ahead: this request is the probe that decides whether the breaker closes.
    Probe,
    /// Skip the provider.
    Skip,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One provider's breaker. Cheap: a mutex held for a few instructions, never across an await.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `failures_to_open` failures in a row, for `open_for`.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self { failures_to_open: failures_to_open.max(1), open_for, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// Whether a request may go at `now`. An open breaker whose time is up lets exactly one
    /// probe through; the others skip until the probe's answer is recorded.
    pub fn admit(&self, now: Instant) -> Admission {
        let Ok(mut state) = self.state.lock() else {
            return Admission::Go;
        };
        match *state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if now < until => Admission::Skip,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::HalfOpen { probing: true } => Admission::Skip,
        }
    }

    /// Records the answer of an admitted request: `healthy` when the provider answered as a
    /// working provider does (accepted, or refused the recipient), `false` for a transient or
    /// provider-side failure. Returns the state after it.
    pub fn record(&self, healthy: bool, now: Instant) -> BreakerState {
        let Ok(mut state) = self.state.lock() else {
            return BreakerState::Closed;
        };
        *state = match (&*state, healthy) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            (_, false) => State::Open { until: now + self.open_for },
        };
        shown(&state)
    }

    /// The state now (an open breaker whose time is up shows half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state.lock() {
            Ok(state) => match *state {
                State::Open { until } if now >= until => BreakerState::HalfOpen,
                ref other => shown(other),
            },
            Err(_) => BreakerState::Closed,
        }
    }
}

fn shown(state: &State) -> BreakerState {
    match state {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_in_a_row_and_a_success_resets_the_count() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        let t = Instant::now();
        breaker.record(false, t);
        breaker.record(false, t);
        breaker.record(true, t);
        assert_eq!(breaker.record(false, t), BreakerState::Closed);
        assert_eq!(breaker.record(false, t), BreakerState::Closed);
        assert_eq!(breaker.record(false, t), BreakerState::Open);
        assert_eq!(breaker.admit(t + Duration::from_secs(29)), Admission::Skip);
    }

    #[test]
    fn after_the_open_period_one_probe_decides() {
        let breaker = Breaker::new(1, Duration::from_secs(30));
        let t = Instant::now();
        breaker.record(false, t);
        let later = t + Duration::from_secs(30);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(later), Admission::Probe);
        assert_eq!(breaker.admit(later), Admission::Skip, "one probe at a time");
        assert_eq!(breaker.record(false, later), BreakerState::Open, "a failed probe reopens it");
        assert_eq!(breaker.admit(later + Duration::from_secs(1)), Admission::Skip);

        let again = later + Duration::from_secs(30);
        assert_eq!(breaker.admit(again), Admission::Probe);
        assert_eq!(breaker.record(true, again), BreakerState::Closed);
        assert_eq!(breaker.admit(again), Admission::Go);
    }
}
