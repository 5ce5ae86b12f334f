//! The loop of steps 7 and 8, the notes' second `EventLoopNoIO`: it runs
//! every task that can run; when none can, it asks the selector which
//! sockets are ready and queues the tasks that wait on them. A task says
//! what it waits for by what it yields (`('WAIT_READ', sock)`), and the
//! loop registers that socket for that wait alone, as the notes do.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::rc::Rc;

use polling::{Event, Events, Poller};

use super::Watched;

/// What a task yields: `(op, sock)`, or `StopIteration`.
pub enum Next {
    /// `yield 'WAIT_READ', sock`.
    WaitRead(Rc<dyn AsFd>),
    /// `yield 'WAIT_WRITE', sock`.
    WaitWrite(Rc<dyn AsFd>),
    /// The generator returned.
    Stopped,
}

/// A generator, as the loop sees it: `next(task)`.
pub trait Task {
    /// Runs it to its next `yield`; `tasks` is `loop.create_task`'s queue.
    fn resume(&mut self, tasks: &mut VecDeque<Box<dyn Task>>) -> Next;
}

/// A task waiting, and the registration of the socket it waits on.
type Waiting<'p> = (Watched<'p, Rc<dyn AsFd>>, Box<dyn Task>);

/// A closure that runs to its next `yield` is a task too.
impl<F: FnMut(&mut VecDeque<Box<dyn Task>>) -> Next> Task for F {
    fn resume(&mut self, tasks: &mut VecDeque<Box<dyn Task>>) -> Next {
        self(tasks)
    }
}

/// The notes' second `EventLoopNoIO.run()`: run every task that can run;
/// when none can, `select()`, and queue the tasks whose sockets are ready.
pub fn run_loop(first: Box<dyn Task>) -> anyhow::Result<()> {
    let sel = Poller::new()?;
    let mut tasks_to_run: VecDeque<Box<dyn Task>> = VecDeque::from([first]);
    // Each waiting task, with its registration, by key.
    let mut waiting: HashMap<usize, Waiting<'_>> = HashMap::new();
    let mut next_key = 0;
    let mut events = Events::new();
    loop {
        while let Some(mut task) = tasks_to_run.pop_front() {
            // self.sel.register(sock, EVENT_READ or EVENT_WRITE, task)
            let (sock, interest) = match task.resume(&mut tasks_to_run) {
                Next::WaitRead(sock) => (sock, Event::readable(next_key)),
                Next::WaitWrite(sock) => (sock, Event::writable(next_key)),
                Next::Stopped => continue,
            };
            waiting.insert(next_key, (Watched::new(&sel, sock, interest)?, task));
            next_key += 1;
        }
        // for key, event in self.sel.select():
        events.clear();
        sel.wait(&mut events, None)?;
        for event in events.iter() {
            // self.sel.unregister(sock) (dropping the registration);
            // self.create_task(task)
            if let Some((_, task)) = waiting.remove(&event.key) {
                tasks_to_run.push_back(task);
            }
        }
    }
}
