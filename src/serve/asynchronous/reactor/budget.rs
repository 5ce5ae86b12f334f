//! The cooperative budget: performance, and fairness, on top of the
//! reactor's core. A reader may skip it on a first read; `--budget 0`
//! turns it off, and chapter 5 shows what happens then.

use std::cell::Cell;

/// The cooperative budget (tokio's `coop`): a task may complete at most
/// `per_poll` I/O operations each time it is polled. Spent, every `Async`
/// operation answers `Pending` (after waking its task), so the task's
/// `await` returns to the executor and the task goes to the back of the
/// ready queue, behind everyone else who is ready.
///
/// Why it is needed: an I/O future returns `Pending` only when the kernel
/// says `WouldBlock`. A client that sends without pause and reads its
/// echoes at once keeps its socket readable and writable forever, so its
/// task's `recv` and `write_all` always complete, its `loop` never
/// suspends, and nobody else runs. asyncio's streams escape this by design
/// (a `StreamReader` waits for the loop's callback to fill its buffer,
/// once a turn), but the notes' `loop.sock_recv` does not: it returns
/// without yielding while the socket is ready (chapter 5). Our futures
/// talk to the socket directly, as tokio's do, and so need what tokio
/// has: a budget.
pub(crate) struct Budget {
    /// Operations allowed per poll; `None` (`--budget 0`) turns it off.
    pub(super) per_poll: Cell<Option<u32>>,
    /// Operations left for the task being polled.
    pub(super) left: Cell<u32>,
}

impl Budget {
    /// Refills the budget before a task is polled.
    pub(crate) fn refill(&self) {
        if let Some(per_poll) = self.per_poll.get() {
            self.left.set(per_poll);
        }
    }

    /// Whether the task may do one more operation.
    pub(super) fn allows(&self) -> bool {
        self.per_poll.get().is_none() || self.left.get() > 0
    }

    /// One operation completed.
    pub(super) fn spend(&self) {
        self.left.set(self.left.get().saturating_sub(1));
    }
}
