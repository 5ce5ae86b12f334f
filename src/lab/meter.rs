//! The meter of a one-thread loop: everything a loop tells about itself,
//! fed from three places in its turn and nowhere else.
//!
//! ```text
//! meter.waiting();               // about to wait: the turn is over
//! let n = poller.wait(...);
//! meter.woke(now, n);            // back, with n events
//! ...handlers...
//! if meter.due(now) { report }   // a --stats line when one is due
//! ```
//!
//! Behind those calls are the stall warning ([`StallWatch`], past
//! `--slow-handler`) and, with `--stats`, the turns counted and the
//! [`Reporter`] that writes the line. Without either, `waiting` and
//! `woke` do nothing at all: no clock is read.
//!
//! Tutorial: `docs/tutorial/7-when-the-loop-stalls.md`.

use std::time::Instant;

use super::live::{Counter, Line, Reporter, Traffic};
use super::stall::StallWatch;
use crate::serve::Context;

/// What a loop tells about itself: stalls, turns, `--stats` lines.
pub struct Meter<'a> {
    stall: StallWatch<'a>,
    /// With `--stats`: when the next line is due.
    reporter: Option<Reporter>,
}

impl<'a> Meter<'a> {
    /// The meter of the loop called `model` (`selector`, `async`, ...).
    pub fn new(ctx: &'a Context, model: &'static str) -> Self {
        Meter {
            stall: ctx.stall_watch(model),
            reporter: ctx.reporter(model),
        }
    }

    /// The loop is about to wait: its turn is over.
    pub fn waiting(&mut self) {
        self.stall.waiting();
    }

    /// The loop came back from its wait at `now` with `events` events.
    pub fn woke(&mut self, now: Instant, events: usize) {
        self.stall.woke(now, events);
    }

    /// As [`Meter::woke`], for a loop that has not read the clock: reads
    /// it only if the meter needs it.
    pub fn woke_now(&mut self, events: usize) {
        self.stall.woke_now(events);
    }

    /// When the next `--stats` line is due: the loop's wait must end by
    /// then. `None` without `--stats`.
    pub fn deadline(&self) -> Option<Instant> {
        self.reporter.as_ref().map(Reporter::deadline)
    }

    /// Whether a `--stats` line is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.reporter.as_ref().is_some_and(|r| r.due(now))
    }

    /// Writes a `--stats` line (the final one if `last`): the loop's
    /// `traffic` with `open` clients, its turns, then the fields `more`
    /// adds in the model's own terms. Nothing without `--stats`.
    pub fn report<C: Counter>(
        &mut self,
        now: Instant,
        last: bool,
        traffic: &Traffic<C>,
        open: u64,
        more: impl FnOnce(&mut Line),
    ) {
        let Meter { stall, reporter } = self;
        if let Some(reporter) = reporter {
            reporter.report(now, last, |line| {
                traffic.fill_loop(line, open, stall.turns.as_mut());
                more(line);
            });
        }
    }
}
