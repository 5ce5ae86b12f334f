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

/// How long a loop may wait for its next event: until the earliest of
/// `deadlines` that is set, or forever when none is.
pub fn until_earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Duration> {
    let next = deadlines.into_iter().flatten().min()?;
    Some(next.saturating_duration_since(Instant::now()))
}
