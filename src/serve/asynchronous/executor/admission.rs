//! Early admission, the one exception to "ask the reactor after every
//! tick" (the executor's module doc says when it applies): the tasks
//! spawned during a tick are moved into the table and queued here, and
//! `block_on` runs them before its next wait when nothing else was woken.
//! Performance: a burst of new clients is echoed without a wait between
//! accepting and reading. A reader may skip it on a first read.

use super::{Executor, MAIN};

impl Executor<'_> {
    /// Moves newly spawned tasks into the table and queues them to run;
    /// says whether there were any.
    pub(super) fn admit_new_tasks(&self) -> bool {
        let mut new_tasks = self.spawner.new_tasks.borrow_mut();
        if new_tasks.is_empty() {
            return false;
        }
        let mut tasks = self.tasks.borrow_mut();
        for future in new_tasks.drain(..) {
            let entry = tasks.vacant_entry();
            assert!(entry.key() < MAIN, "fewer than 2^32 - 1 tasks at once");
            self.ready.borrow_mut().push(entry.key());
            if self.reactor.trace().is_on() {
                self.reactor.trace().task(
                    entry.key(),
                    format_args!("spawned (asyncio's create_task): queued to be polled"),
                );
                self.fresh.borrow_mut().insert(entry.key());
            }
            entry.insert(future);
        }
        true
    }
}
