//! The stall warning of the one-thread loops, as asyncio's debug mode warns
//! of a slow callback: a loop that spends longer than `--slow-handler`
//! between two waits has kept every other client waiting that long.
//!
//! The loop reports each wake-up and each wait to its [`StallWatch`]; the
//! time between the two is what its handlers (or task polls) took. A stall
//! writes one line to stderr, `--quiet` or not, at most one a second: the
//! stalls in between are counted into the next line, and all of them into
//! the server's summary.
//!
//! Tutorial: `docs/tutorial/7-when-the-loop-stalls.md`.

use std::time::{Duration, Instant};

use super::live::Turns;
use crate::stats::Stats;

/// At most one warning line per this long.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Watches one loop for turns that last longer than a threshold.
pub struct StallWatch<'a> {
    /// The model, for the warning.
    model: &'static str,
    /// `None`: the watch is off (`--slow-handler 0`).
    threshold: Option<Duration>,
    /// When the loop last came back from its wait.
    woke: Instant,
    /// When the last warning line was written.
    warned: Option<Instant>,
    /// Stalls since that line.
    unreported: u64,
    stats: &'a Stats,
    /// What the warning advises: the remedies for blocking work, or, when
    /// the loop runs none, what else keeps a loop from waiting.
    advice: Advice,
    /// With `--stats`: the turns counted for the next line.
    pub turns: Option<Turns>,
}

/// Why a loop may have run long without waiting, as far as it can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Its handlers do blocking `--work` on the loop's own thread: that is
    /// the likely stall.
    BlockingWork,
    /// `--naive-send`: each echo is a blocking `sendall` on the loop's
    /// thread, which waits for as long as its client does not read.
    BlockingSend,
    /// Nothing it runs blocks: its ready work never ran out (clients that
    /// never pause, or very many ready at once).
    NeverIdle,
    /// As `NeverIdle`, in the async model with its cooperative budget off:
    /// one task may keep the loop to itself.
    NoBudget,
}

impl Advice {
    fn text(self) -> &'static str {
        match self {
            Advice::BlockingWork => {
                "Move blocking work off the loop (--offload N), wait without blocking (--work wait:...), \
                 or run more loops (--threads N)."
            }
            Advice::BlockingSend => {
                "A handler blocked in its send: --naive-send writes each echo with a blocking sendall, \
                 which waits until the client takes every byte; a client that does not read holds the \
                 whole loop. Without --naive-send the loop keeps unsent bytes and waits for writability."
            }
            Advice::NeverIdle => {
                "No handler blocked (there is no blocking --work on this loop): it never ran out of ready \
                 clients to serve, as when clients send without pause or very many are ready at once; \
                 more loops (--threads N) share them."
            }
            Advice::NoBudget => {
                "No handler blocked: with --budget 0 a task whose client sends without pause never \
                 yields, and keeps the loop to itself; the default budget makes it take turns."
            }
        }
    }
}

impl<'a> StallWatch<'a> {
    /// A watch for `model`'s loop; `threshold` `None` turns it off.
    pub fn new(model: &'static str, threshold: Option<Duration>, stats: &'a Stats) -> Self {
        StallWatch {
            model,
            threshold,
            woke: Instant::now(),
            warned: None,
            unreported: 0,
            stats,
            advice: Advice::BlockingWork,
            turns: None,
        }
    }

    /// What its warning advises.
    pub fn advising(mut self, advice: Advice) -> Self {
        self.advice = advice;
        self
    }

    /// Also counts the loop's turns, for `--stats`.
    pub fn counting_turns(mut self, on: bool) -> Self {
        self.turns = on.then(Turns::default);
        self
    }

    /// Whether it reads the clock at all.
    fn active(&self) -> bool {
        self.threshold.is_some() || self.turns.is_some()
    }

    /// The loop came back from its wait at `now` (a clock reading it takes
    /// anyway) with `events` events.
    pub fn woke(&mut self, now: Instant, events: usize) {
        self.woke = now;
        if let Some(turns) = &mut self.turns {
            turns.woke(now, events);
        }
    }

    /// The loop came back from its wait now: one clock reading, none when
    /// the watch is off.
    pub fn woke_now(&mut self, events: usize) {
        if self.active() {
            self.woke(Instant::now(), events);
        }
    }

    /// The loop is about to wait again: if it ran for longer than the
    /// threshold since it woke, that is a stall. One clock reading; nothing
    /// when the watch is off.
    pub fn waiting(&mut self) {
        if !self.active() {
            return;
        }
        let now = Instant::now();
        if let Some(turns) = &mut self.turns {
            turns.waiting(now);
        }
        let ran = now.saturating_duration_since(self.woke);
        if self.threshold.is_some_and(|threshold| ran > threshold) {
            self.stalled(ran, now);
        }
    }

    fn stalled(&mut self, ran: Duration, now: Instant) {
        self.stats.stalled();
        if self.warned.is_some_and(|at| now - at < WARNING_INTERVAL) {
            self.unreported += 1;
            return;
        }
        let others = match std::mem::take(&mut self.unreported) {
            0 => String::new(),
            n => format!(" ({n} more since the last warning)"),
        };
        eprintln!(
            "warning: the {} loop ran {}ms without waiting: every other client of it waited as long{others}. {}",
            self.model,
            ran.as_millis(),
            self.advice.text()
        );
        self.warned = Some(now);
    }
}
