//! What `--stats` shows of a chat, besides the traffic every model shows:
//! lines delivered from one client to another, bytes waiting in outboxes,
//! and receivers cut off for being too slow.
//!
//! The counting is the same on every model; only the counter differs: a
//! `Cell` for a loop, whose clients all run on its thread, an atomic for
//! threads.

use std::cell::Cell;

use crate::lab::live::{Counter, Line};

/// A chat's counters between two `--stats` lines.
#[derive(Debug, Default)]
pub struct ChatCounts<C: Counter = Cell<u64>> {
    /// Lines put in another client's outbox (`chat,<name>` once, `chat,*`
    /// once per receiver). Replies to the sender are not deliveries.
    delivered: C,
    /// Receivers cut off for being owed more than
    /// [`MAX_PENDING`](super::room::MAX_PENDING).
    cut_off: C,
}

impl<C: Counter> ChatCounts<C> {
    /// A line was posted; `to_another`: not a reply to its sender;
    /// `cut_off`: it made its receiver too slow.
    pub fn posted(&self, to_another: bool, cut_off: bool) {
        if to_another && !cut_off {
            self.delivered.add(1);
        }
        if cut_off {
            self.cut_off.add(1);
        }
    }

    /// Adds the chat's fields to `line`, with `registered` names and
    /// `outbox_bytes` owed to receivers now, and starts counting afresh.
    /// Returns the lines delivered since the last line.
    pub fn fill(&self, line: &mut Line, registered: u64, outbox_bytes: u64) -> u64 {
        let delivered = self.delivered.take();
        line.gauge("registered", registered)
            .count("delivered", delivered)
            .rate("delivered/s", delivered, 0)
            .gauge("outbox_bytes", outbox_bytes)
            .count("cut_off", self.cut_off.take());
        delivered
    }
}
