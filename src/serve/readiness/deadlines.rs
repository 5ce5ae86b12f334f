//! When a loop must wake, whichever family it belongs to: the readiness
//! loops and the completion loops both sweep for idle clients, and both
//! wait no longer than their earliest deadline.

use std::time::{Duration, Instant};

/// Idle clients are found by a sweep over every connection; sweeping four
/// times per timeout closes a client between 1 and 1.25 timeouts after its
/// last activity, and costs one pass over the table per quarter timeout.
pub fn sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).max(Duration::from_millis(1))
}

/// A loop's sweep for idle clients, with `--idle-timeout`: when the next
/// one is due, and who counts as idle then.
#[derive(Debug)]
pub struct IdleSweep {
    timeout: Duration,
    next: Instant,
}

impl IdleSweep {
    /// The sweep for `timeout`, if one is set.
    pub fn new(timeout: Option<Duration>) -> Option<IdleSweep> {
        timeout.map(|timeout| IdleSweep {
            timeout,
            next: Instant::now() + sweep_interval(timeout),
        })
    }

    /// When the next sweep is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Itself, if a sweep is due at `now` (the one after is scheduled
    /// then), to ask who [is idle](IdleSweep::is_idle).
    pub fn due(&mut self, now: Instant) -> Option<&IdleSweep> {
        if self.next > now {
            return None;
        }
        self.next = now + sweep_interval(self.timeout);
        Some(self)
    }

    /// Whether a client last active at `last_active` is idle at `now`.
    pub fn is_idle(&self, last_active: Instant, now: Instant) -> bool {
        now.duration_since(last_active) >= self.timeout
    }
}

/// How long a loop may wait for its next event: until the earliest of
/// `deadlines` that is set, or forever when none is.
pub fn until_earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Duration> {
    let next = deadlines.into_iter().flatten().min()?;
    Some(next.saturating_duration_since(Instant::now()))
}
