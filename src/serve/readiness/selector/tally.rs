//! `--stats` on the selector, counted where it happens: the traffic, the
//! writes the socket took only part of, the reads that found nothing; and
//! the line the loop reports. The reader may skip it on a first read.

use std::cell::Cell;
use std::time::Instant;

use super::Selector;
use super::work::WorkPlan;
use crate::lab::live::{Counter, Traffic};

/// What the loop counts for `--stats`, where it happens: the traffic
/// (which each client's [`Visit`] also counts in and out), and the calls
/// that did less than asked, since the last line.
pub(super) struct Tally<'a> {
    pub(super) traffic: &'a Traffic,
    /// Writes the socket took only part of: the case the notes' `sendall`
    /// never meets, because it blocks instead.
    pub(super) short_writes: Cell<u64>,
    /// Reads that found nothing (`WouldBlock`): a wake-up for nothing,
    /// which a readiness backend rarely gives and `--poller spin` gives
    /// every turn.
    pub(super) would_block: Cell<u64>,
}

impl Tally<'_> {
    /// A write took `written` of `offered` bytes.
    pub(super) fn wrote(&self, written: usize, offered: usize) {
        self.traffic.wrote(written);
        if written < offered {
            self.short_writes.add(1);
        }
    }
}

impl Selector<'_> {
    /// One `--stats` line: traffic, turns, timers, jobs come back.
    pub(super) fn stats_line(&mut self, now: Instant, last: bool) {
        let open = self.handlers.len().saturating_sub(2) as u64;
        let timers = self.plan.as_ref().map_or(0, WorkPlan::held)
            + usize::from(self.listener.paused_until().is_some())
            + usize::from(self.idle.is_some());
        let jobs_done = std::mem::take(&mut self.jobs_done);
        let (short_writes, would_block) = (
            self.tally.short_writes.take(),
            self.tally.would_block.take(),
        );
        self.meter
            .report(now, last, self.tally.traffic, open, |line| {
                line.gauge("timers", timers as u64)
                    .count("cross_wakeups", jobs_done)
                    .count("short_writes", short_writes)
                    .count("would_block", would_block);
            });
    }
}
