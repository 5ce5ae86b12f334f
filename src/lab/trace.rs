//! `--trace`: each task's life, line by line, in the notes' words.
//!
//! The statemachine loop says what the notes' generator loop does to a
//! task: created, `next()`, `yield WAIT_READ`, resumed with what became
//! ready (`send(...)`), `close()`. The async executor says what asyncio's
//! does to a coroutine: spawned (`create_task`), polled until `Pending`,
//! woken, and dropped, which is Rust's cancellation. Chapters 4 and 5 run
//! both.
//!
//! A trace must not become the load it describes: at most
//! [`LINES_PER_SECOND`] lines are written in any second, and the lines
//! left out are counted and said when writing resumes.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// Trace lines written per second at most.
pub const LINES_PER_SECOND: u32 = 200;

/// One loop's trace: off, or on with its throttle.
#[derive(Debug)]
pub struct Trace {
    on: Cell<bool>,
    /// The task being run, which lines without a task of their own name.
    current: Cell<Option<usize>>,
    /// When the current one-second window began, and the lines written and
    /// left out in it.
    window: Cell<Option<Instant>>,
    written: Cell<u32>,
    skipped: Cell<u64>,
}

impl Trace {
    /// A trace that writes if `on`.
    pub fn new(on: bool) -> Self {
        Trace {
            on: Cell::new(on),
            current: Cell::new(None),
            window: Cell::new(None),
            written: Cell::new(0),
            skipped: Cell::new(0),
        }
    }

    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Turns the trace on or off.
    pub fn set_on(&self, on: bool) {
        self.on.set(on);
    }

    /// One line about task `id`.
    pub fn task(&self, id: usize, what: fmt::Arguments<'_>) {
        if self.is_on() && self.admit() {
            eprintln!("trace: task {id} {what}");
        }
    }

    /// One line about the task running now (or the loop itself, if none
    /// is): for a task's own code, which does not know its id.
    pub fn here(&self, what: fmt::Arguments<'_>) {
        match self.current.get() {
            Some(id) => self.task(id, what),
            None if self.is_on() && self.admit() => eprintln!("trace: {what}"),
            None => {}
        }
    }

    /// Marks task `id` as running until [`Trace::stopped`].
    pub fn running(&self, id: usize) {
        if self.is_on() {
            self.current.set(Some(id));
        }
    }

    /// No task is running.
    pub fn stopped(&self) {
        self.current.set(None);
    }

    /// Whether one more line fits in this second; says how many were left
    /// out of the last one when a new one begins.
    fn admit(&self) -> bool {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> bool {
        let fresh = self
            .window
            .get()
            .is_none_or(|began| now.duration_since(began) >= Duration::from_secs(1));
        if fresh {
            let skipped = self.skipped.replace(0);
            if skipped > 0 {
                eprintln!("trace: {skipped} lines left out (at most {LINES_PER_SECOND} a second)");
            }
            self.window.set(Some(now));
            self.written.set(0);
        }
        if self.written.get() >= LINES_PER_SECOND {
            self.skipped.set(self.skipped.get() + 1);
            return false;
        }
        self.written.set(self.written.get() + 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_admits_so_many_lines_and_counts_the_rest() {
        let trace = Trace::new(true);
        let start = Instant::now();
        let admitted = (0..LINES_PER_SECOND + 50)
            .filter(|_| trace.admit_at(start))
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert_eq!(trace.skipped.get(), 50);
        // A second later, a new window: the count of those left out is
        // said and reset, and lines are written again.
        assert!(trace.admit_at(start + Duration::from_secs(1)));
        assert_eq!(trace.skipped.get(), 0);
        assert_eq!(trace.written.get(), 1);
    }

    #[test]
    fn an_off_trace_counts_nothing() {
        let trace = Trace::new(false);
        trace.task(1, format_args!("created"));
        trace.running(1);
        assert_eq!(trace.written.get(), 0);
        assert_eq!(trace.current.get(), None);
    }
}
