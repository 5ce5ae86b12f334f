//! The skeleton every one-thread loop turns on, echo and chat alike, on
//! readiness or on completions: wait for a batch (or the next timer),
//! handle it, run what comes after (deliveries, timers), write a
//! `--stats` line when one is due; at shutdown, close every client and
//! write the last line. A family's kit says how its loops wait and handle
//! a batch (`readiness::run`, `completion::kit::run`), a loop says the
//! rest, and [`run`] says when, once for all of them.

use std::io;
use std::time::Instant;

use crate::lab::meter::Meter;
use crate::shutdown::Shutdown;

/// One loop's steps.
pub(crate) trait Turns<'a> {
    /// The loop's meter: stalls past `--slow-handler`, turns for `--stats`.
    fn meter(&mut self) -> &mut Meter<'a>;
    /// Waits until something is ready, or until the next timer.
    ///
    /// # Errors
    /// If the poller or the ring fails.
    fn wait(&mut self) -> io::Result<()>;
    /// Handles what the wait brought (readiness events, completions);
    /// returns how many there were.
    ///
    /// # Errors
    /// If the loop cannot go on (the listener broke, say).
    fn handle(&mut self, now: Instant) -> io::Result<usize>;
    /// What comes after a batch: deliveries, the timers due at `now`.
    ///
    /// # Errors
    /// As [`Turns::handle`].
    fn after(&mut self, now: Instant) -> io::Result<()>;
    /// Writes a `--stats` line (the final one if `last`).
    fn report(&mut self, now: Instant, last: bool);
    /// Closes every client, at shutdown.
    fn close_all(&mut self);
}

/// Turns `turns` until `shutdown` is triggered, then closes every client
/// and writes the last `--stats` line.
///
/// # Errors
/// Whatever stopped the loop before the shutdown.
pub(crate) fn run<'a>(turns: &mut impl Turns<'a>, shutdown: &Shutdown) -> io::Result<()> {
    let served = turn_until_stopped(turns, shutdown);
    turns.close_all();
    turns.report(Instant::now(), true);
    served
}

fn turn_until_stopped<'a>(turns: &mut impl Turns<'a>, shutdown: &Shutdown) -> io::Result<()> {
    while !shutdown.is_triggered() {
        turns.meter().waiting();
        turns.wait()?;
        // One clock reading per batch, not per message: it dates activity
        // for the idle sweeps, which are coarser anyway.
        let now = Instant::now();
        let handled = turns.handle(now)?;
        turns.meter().woke(now, handled);
        turns.after(now)?;
        if turns.meter().due(now) {
            turns.report(now, false);
        }
    }
    Ok(())
}
