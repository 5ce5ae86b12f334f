//! `--trace` for the statemachine loop: each resume told in the notes'
//! words (`next()`, `send(readable)`, `yield WAIT_READ`), so a trace reads
//! like the generator loop it mirrors. An instrument: the loop calls
//! [`trace_step`] once per resume, and nothing else here runs untraced.

use super::{Resume, Slot, Wait};
use crate::lab::trace::Trace;
use crate::poller::{Interest, Watchlist};

impl Wait {
    /// What the notes' generator would have done, for `--trace`.
    pub(super) fn in_the_notes_words(self) -> &'static str {
        match self {
            Wait::Read { until: None } => "yield WAIT_READ",
            Wait::Read { until: Some(_) } => "yield WAIT_READ (until its idle deadline)",
            Wait::Write { until: None } => "yield WAIT_WRITE",
            Wait::Write { until: Some(_) } => "yield WAIT_WRITE (until its idle deadline)",
            Wait::ReadOrWrite { .. } => "yield WAIT_READ or WAIT_WRITE",
            Wait::Sleep(_) => "yield SLEEP",
            Wait::Offload => "yield RUN_IN_EXECUTOR",
            Wait::Done => "returned (StopIteration): the loop drops it, its socket closes",
        }
    }
}

impl Resume {
    /// How the notes' loop would resume the generator, for `--trace`:
    /// `next()` the first time, then with what became ready, read from
    /// what the task's socket is registered for.
    pub(super) fn in_the_notes_words(self, registered: Option<Interest>) -> &'static str {
        match (self, registered) {
            (Resume::Ready, None) => "next()",
            (Resume::Ready, Some(Interest::READ)) => "send(readable)",
            (Resume::Ready, Some(Interest::WRITE)) => "send(writable)",
            (Resume::Ready, Some(Interest::NONE)) => "send(job done)",
            (Resume::Ready, Some(_)) => "send(ready)",
            (Resume::TimedOut, _) => "send(deadline passed)",
            (Resume::Woken, _) => "send(woken)",
        }
    }
}

/// One `--trace` line for a resume: how the loop resumed the task and what
/// it yielded, or, for a task resumed at its deadline that then ends, the
/// notes' `close()`.
pub(super) fn trace_step(
    trace: &Trace,
    key: usize,
    tasks: &Watchlist<Slot<'_>>,
    how: Resume,
    wait: Wait,
) {
    let name = tasks[key].task.name();
    if how == Resume::TimedOut && wait == Wait::Done {
        trace.task(
            key,
            format_args!(
                "{name}: close() at its idle deadline: in Python, GeneratorExit raised at its yield and its cleanup run; here the loop drops it and its socket closes"
            ),
        );
        return;
    }
    let resumed = how.in_the_notes_words(tasks.watching(key));
    let yielded = wait.in_the_notes_words();
    trace.task(key, format_args!("{name}: {resumed} → {yielded}"));
}
