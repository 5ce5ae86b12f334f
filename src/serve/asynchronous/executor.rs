//! The executor: the half of a runtime that runs tasks. A task is a boxed
//! future; the executor polls it when it is woken, and the reactor is what
//! wakes it.
//!
//! The pieces, with their asyncio counterparts:
//! - [`Executor::spawn`] is `loop.create_task`: box the future, give it a
//!   waker, queue it to run.
//! - The ready queue is `loop._ready`; waking a task is `call_soon(task.__step)`.
//! - Polling a task once is `Task.__step`: run the coroutine until it awaits
//!   something not ready, which returns `Pending` after leaving the task's
//!   waker where the awaited event will find it (`add_done_callback`).
//! - [`Executor::block_on`] is `run_until_complete`: run ready tasks; when
//!   none is ready, block in the reactor until something happens.
//!
//! A waker holds only the task's id and the ready queue, so it is `Send` and
//! `Sync` (as [`std::task::Wake`] requires): a thread that is not the
//! executor's may wake a task, and then calls `Poller::notify()` to interrupt
//! the executor's wait. Wakes from the executor's own thread never need that.
//!
//! Fairness comes from two bounds. A task may complete only so many I/O
//! operations per poll (the reactor's cooperative budget, `--budget`):
//! then its `await` answers `Pending`, it wakes itself, and it runs again in
//! the next tick, behind every task that was ready before it. And a tick
//! polls at most `POLLS_PER_TICK` tasks before the executor asks the
//! reactor what else became ready, so readiness is heard even while the
//! ready queue never empties. Without the budget, a client that sends
//! without pause keeps its task's `recv` and `write_all` completing at
//! once, the task never suspends, and every other client waits for as long
//! as that client keeps sending (chapter 5 shows it).
//!
//! A production runtime would add work stealing across threads and join
//! handles.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

use super::reactor::Reactor;
use crate::serve::live::{Line, ReadyQueue as ReadyQueueStats, Traffic};
use crate::serve::meter::Meter;
use std::time::Instant;

type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The id the future given to [`Executor::block_on`] is woken with.
const MAIN: usize = usize::MAX;

/// Task polls per tick at most, before the executor asks the reactor
/// (without blocking) what became ready. A tick already polls only the
/// tasks that were ready when it began; this bounds it when thousands are
/// (tokio checks for I/O every 61 polls). With the cooperative budget it
/// bounds how long readiness can go unheard: 128 polls of at most
/// [`DEFAULT_BUDGET`](super::reactor::DEFAULT_BUDGET) operations each.
const POLLS_PER_TICK: usize = 128;

/// Runs futures on this thread until the one given to `block_on` completes.
/// Tasks may borrow anything that outlives `'a`; any still running when the
/// executor is dropped are dropped with it (cancelled).
pub struct Executor<'a> {
    reactor: Rc<Reactor>,
    tasks: RefCell<Slab<Slot<'a>>>,
    spawner: Spawner<'a>,
    ready: Arc<ReadyQueue>,
    /// The ids taken from the ready queue for one tick (kept to reuse its
    /// memory).
    tick: RefCell<VecDeque<usize>>,
    /// Stalls past `--slow-handler`; ticks and lines for `--stats`, with
    /// the traffic the tasks count into and what the protocol adds.
    meter: RefCell<Option<Metered<'a>>>,
    /// The ready queue's length at each tick, and polls per wake.
    queue: RefCell<ReadyQueueStats>,
    /// With `--trace`: tasks spawned and not yet polled, so that their
    /// first poll is told apart from a wake.
    fresh: RefCell<HashSet<usize>>,
}

/// A meter, and what its lines show besides the executor's own fields.
struct Metered<'a> {
    meter: Meter<'a>,
    traffic: &'a Traffic,
    more: Box<dyn Fn(&mut Line) + 'a>,
}

/// A task and its waker.
struct Slot<'a> {
    /// The future and the waker it is polled with; `None` while it is
    /// being polled. The waker is made once, so that polling a task costs
    /// no reference count.
    running: Option<(Task<'a>, Waker)>,
    /// The same waker's state, to mark the task as no longer queued.
    state: Arc<TaskWaker>,
}

/// A handle that spawns tasks onto an [`Executor`] from inside its tasks.
#[derive(Clone)]
pub struct Spawner<'a> {
    new_tasks: Rc<RefCell<Vec<Task<'a>>>>,
}

impl<'a> Spawner<'a> {
    /// Queues `future` as a new task: the notes' `loop.create_task`.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'a) {
        self.new_tasks.borrow_mut().push(Box::pin(future));
    }
}

/// Task ids ready to be polled. Behind a mutex because wakers may be used
/// from any thread.
struct ReadyQueue {
    ids: Mutex<VecDeque<usize>>,
    /// Set while the executor blocks in the reactor: only then must a wake
    /// interrupt it.
    sleeping: AtomicBool,
    reactor_poller: Arc<crate::poller::Poller>,
    /// Wakes that had to interrupt the wait: they came from another
    /// thread (an offload pool's), for `--stats`.
    notified: AtomicU64,
}

impl ReadyQueue {
    fn push(&self, id: usize) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(id);
        if self.sleeping.load(Ordering::SeqCst) {
            self.notified.fetch_add(1, Ordering::Relaxed);
            let _ = self.reactor_poller.notify();
        }
    }

    fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// What a [`Waker`] of ours is: a task id and where to queue it.
struct TaskWaker {
    id: usize,
    /// Already in the ready queue: waking again changes nothing.
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}

impl<'a> Executor<'a> {
    /// An executor whose tasks wait on `reactor`.
    pub fn new(reactor: Rc<Reactor>) -> Self {
        let ready = Arc::new(ReadyQueue {
            ids: Mutex::new(VecDeque::new()),
            sleeping: AtomicBool::new(false),
            reactor_poller: reactor.poller().clone(),
            notified: AtomicU64::new(0),
        });
        Executor {
            reactor,
            tasks: RefCell::new(Slab::new()),
            spawner: Spawner {
                new_tasks: Rc::new(RefCell::new(Vec::new())),
            },
            ready,
            tick: RefCell::new(VecDeque::new()),
            meter: RefCell::new(None),
            queue: RefCell::new(ReadyQueueStats::default()),
            fresh: RefCell::new(HashSet::new()),
        }
    }

    /// Has `meter` watch the ticks and write `--stats` lines with the
    /// `traffic` the tasks count into, then what `more` adds.
    pub fn metered(
        self,
        meter: Meter<'a>,
        traffic: &'a Traffic,
        more: impl Fn(&mut Line) + 'a,
    ) -> Self {
        *self.meter.borrow_mut() = Some(Metered {
            meter,
            traffic,
            more: Box::new(more),
        });
        self
    }

    /// Writes a `--stats` line if one is due at `now` (or `last`, the
    /// final one at shutdown).
    pub fn report(&self, now: Instant, last: bool) {
        let mut metered = self.meter.borrow_mut();
        let Some(Metered {
            meter,
            traffic,
            more,
        }) = metered.as_mut()
        else {
            return;
        };
        if !last && !meter.due(now) {
            return;
        }
        // The accept loop is the main future, not a task: every task is a
        // client.
        let tasks = self.tasks() as u64;
        let mut queue = self.queue.borrow_mut();
        meter.report(now, last, *traffic, tasks, |line| {
            line.gauge("tasks", tasks)
                .gauge("timers", self.reactor.timers() as u64)
                .count(
                    "cross_wakeups",
                    self.ready.notified.swap(0, Ordering::Relaxed),
                )
                .count("would_block", self.reactor.take_would_block());
            queue.fill(line);
            more(line);
        });
    }

    /// Drops every task (cancels it), running each one's destructors now.
    pub fn cancel_all(&self) {
        let trace = self.reactor.trace();
        for (id, _) in self.tasks.borrow().iter() {
            trace.task(
                id,
                format_args!(
                    "dropped while Pending at shutdown: cancelled (asyncio's Task.cancel() raises CancelledError at its await and lets it run its handlers; Rust runs none of its code again, only the destructors of what it holds: its socket closes)"
                ),
            );
        }
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
        self.spawner.new_tasks.borrow_mut().clear();
    }

    /// When the next `--stats` line is due, if any.
    fn report_deadline(&self) -> Option<Instant> {
        self.meter
            .borrow()
            .as_ref()
            .and_then(|m| m.meter.deadline())
    }

    /// A handle for spawning tasks from inside tasks.
    pub fn spawner(&self) -> Spawner<'a> {
        self.spawner.clone()
    }

    /// Queues `future` as a new task.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'a) {
        self.spawner.spawn(future);
    }

    /// Tasks that have not completed.
    pub fn tasks(&self) -> usize {
        self.tasks.borrow().len() + self.spawner.new_tasks.borrow().len()
    }

    /// Runs `main` and every spawned task until `main` completes, and
    /// returns its output. Tasks still running stay in the executor.
    ///
    /// # Errors
    /// If waiting in the reactor fails.
    pub fn block_on<F: Future>(&self, main: F) -> io::Result<F::Output> {
        let mut main = pin!(main);
        let main_waker = Arc::new(TaskWaker {
            id: MAIN,
            queued: AtomicBool::new(true),
            ready: self.ready.clone(),
        });
        let waker = Waker::from(main_waker.clone());
        self.ready.push(MAIN);
        self.admit_new_tasks();
        loop {
            // One tick: poll every task that was ready when it began. Tasks
            // woken during the tick run in the next one, after the reactor
            // has been asked (without blocking) what else is ready.
            let mut tick = self.tick.borrow_mut();
            std::mem::swap(
                &mut *tick,
                &mut *self
                    .ready
                    .ids
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            {
                let mut queue = self.queue.borrow_mut();
                queue.turn(tick.len());
                queue.wakes += tick.len() as u64;
            }
            let mut polls = 0;
            while let Some(id) = tick.pop_front() {
                if polls == POLLS_PER_TICK {
                    // Enough for one tick: the rest go first in the next
                    // one, after the reactor has been asked what is ready.
                    tick.push_front(id);
                    self.requeue_first(&mut tick);
                    break;
                }
                polls += 1;
                self.reactor.budget().refill();
                if id == MAIN {
                    self.queue.borrow_mut().polls += 1;
                    main_waker.queued.store(false, Ordering::Release);
                    if let Poll::Ready(output) =
                        main.as_mut().poll(&mut Context::from_waker(&waker))
                    {
                        // Unpolled ids stay queued for a later block_on.
                        self.ready
                            .ids
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .extend(tick.drain(..));
                        return Ok(output);
                    }
                } else {
                    self.poll_task(id);
                }
            }
            drop(tick);
            // Tasks spawned during the tick are queued before the wait
            // below, which then only checks for readiness: they run next.
            self.admit_new_tasks();
            self.ready.sleeping.store(true, Ordering::SeqCst);
            // Checked after announcing the sleep, so that a wake from
            // another thread either is seen here or notifies the poller.
            let timeout = match self.report_deadline() {
                _ if !self.ready.is_empty() => Some(std::time::Duration::ZERO),
                Some(due) => Some(due.saturating_duration_since(Instant::now())),
                None => None,
            };
            if let Some(metered) = self.meter.borrow_mut().as_mut() {
                metered.meter.waiting();
            }
            let waited = self.reactor.wait(timeout);
            if let Some(metered) = self.meter.borrow_mut().as_mut() {
                metered.meter.woke_now(*waited.as_ref().unwrap_or(&0));
            }
            // Awake again: wakes from here on need no notify().
            self.ready.sleeping.store(false, Ordering::SeqCst);
            waited?;
            self.reactor.dispatch();
            if self.report_deadline().is_some() {
                self.report(Instant::now(), false);
            }
        }
    }

    /// Puts the ids left in `tick` back at the front of the ready queue, in
    /// their order, ahead of the tasks woken during the tick.
    fn requeue_first(&self, tick: &mut VecDeque<usize>) {
        let mut ready = self
            .ready
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(id) = tick.pop_back() {
            ready.push_front(id);
        }
    }

    /// Moves newly spawned tasks into the table and queues them to run.
    fn admit_new_tasks(&self) {
        let mut new_tasks = self.spawner.new_tasks.borrow_mut();
        if new_tasks.is_empty() {
            return;
        }
        let mut tasks = self.tasks.borrow_mut();
        for future in new_tasks.drain(..) {
            let entry = tasks.vacant_entry();
            let state = Arc::new(TaskWaker {
                id: entry.key(),
                queued: AtomicBool::new(true),
                ready: self.ready.clone(),
            });
            self.ready.push(entry.key());
            if self.reactor.trace().is_on() {
                self.reactor.trace().task(
                    entry.key(),
                    format_args!("spawned (asyncio's create_task): queued to be polled"),
                );
                self.fresh.borrow_mut().insert(entry.key());
            }
            entry.insert(Slot {
                running: Some((future, Waker::from(state.clone()))),
                state,
            });
        }
    }

    /// `Task.__step`: polls a task once; drops it if it completed.
    fn poll_task(&self, id: usize) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            // A stale wake-up of a task that already completed.
            let Some(slot) = tasks.get_mut(id) else {
                return;
            };
            let Some(running) = slot.running.take() else {
                return;
            };
            slot.state.queued.store(false, Ordering::Release);
            running
        };
        // No borrow is held while the task runs: it may spawn, or drop
        // sockets that deregister from the reactor.
        self.queue.borrow_mut().polls += 1;
        let trace = self.reactor.trace();
        trace.running(id);
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        if trace.is_on() {
            self.trace_poll(id, poll.is_ready());
        }
        trace.stopped();
        match poll {
            Poll::Ready(()) => {
                self.tasks.borrow_mut().remove(id);
                drop(future);
            }
            Poll::Pending => self.tasks.borrow_mut()[id].running = Some((future, waker)),
        }
    }

    /// The `--trace` line of one poll: what brought the task here (spawned,
    /// or its waker called), and how the poll ended.
    fn trace_poll(&self, id: usize, finished: bool) {
        let how = if self.fresh.borrow_mut().remove(&id) {
            "polled for the first time"
        } else {
            "woken (its waker queued it), polled"
        };
        let outcome = if finished {
            "Ready: it returned, the executor drops it"
        } else {
            "Pending: suspended at an .await, its waker left with what it awaits"
        };
        self.reactor
            .trace()
            .task(id, format_args!("{how} → {outcome}"));
    }
}

impl Drop for Executor<'_> {
    fn drop(&mut self) {
        // Drop the tasks outside of the RefCell borrow: their destructors
        // may use the reactor.
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
        let new_tasks = std::mem::take(&mut *self.spawner.new_tasks.borrow_mut());
        drop(new_tasks);
    }
}

/// Gives other tasks a turn: `Pending` once, after waking itself
/// (asyncio's `await asyncio.sleep(0)`).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// The result of [`select`]: which future finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future finished first.
    Left(A),
    /// The second future finished first.
    Right(B),
}

/// Waits for whichever of two futures finishes first and drops the other.
pub async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(output) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::reactor::{Async, sleep};
    use super::*;
    use std::cell::Cell;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn executor<'a>() -> (Rc<Reactor>, Executor<'a>) {
        let reactor = Reactor::new(crate::poller::Backend::default()).unwrap();
        let executor = Executor::new(reactor.clone());
        (reactor, executor)
    }

    /// Spawned tasks run to completion and leave the table.
    #[test]
    fn tasks_run_to_completion() {
        // Declared before the executor, so that it outlives the tasks.
        let done = Cell::new(0);
        let (_reactor, executor) = executor();
        for _ in 0..3 {
            executor.spawn(async {
                yield_now().await;
                done.set(done.get() + 1);
            });
        }
        executor
            .block_on(async {
                while done.get() < 3 {
                    yield_now().await;
                }
            })
            .unwrap();
        assert_eq!(done.get(), 3);
        assert_eq!(executor.tasks(), 0);
    }

    /// A task spawned from inside a task runs too.
    #[test]
    fn a_task_spawned_from_a_task_runs() {
        let inner_ran = Cell::new(false);
        let (_reactor, executor) = executor();
        let spawner = executor.spawner();
        let inner_ran = &inner_ran;
        let inner_spawner = spawner.clone();
        spawner.spawn(async move {
            inner_spawner.spawn(async move { inner_ran.set(true) });
        });
        executor
            .block_on(async {
                while !inner_ran.get() {
                    yield_now().await;
                }
            })
            .unwrap();
        assert!(inner_ran.get());
    }

    /// A pending task is polled again when, and only when, it is woken, and
    /// a wake from another thread interrupts the executor's wait.
    #[test]
    fn a_woken_task_is_polled_exactly_when_woken() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (_reactor, executor) = executor();
            let polls = Cell::new(0);
            let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
            let woken = Arc::new(AtomicBool::new(false));
            let flag = woken.clone();
            let waker_thread = std::thread::spawn(move || {
                let waker = waker_rx.recv().unwrap();
                // Wake only after the executor had every chance to poll
                // spuriously; it must not have.
                std::thread::sleep(Duration::from_millis(100));
                flag.store(true, Ordering::SeqCst);
                waker.wake();
            });
            executor
                .block_on(poll_fn(|cx| {
                    polls.set(polls.get() + 1);
                    if polls.get() == 1 {
                        waker_tx.send(cx.waker().clone()).unwrap();
                    }
                    if woken.load(Ordering::SeqCst) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }))
                .unwrap();
            waker_thread.join().unwrap();
            tx.send(polls.get()).unwrap();
        });
        let polls = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the executor woke up");
        thread.join().unwrap();
        assert_eq!(polls, 2, "polled once at first and once when woken");
    }

    /// A connection's task ends when the peer closes, and its socket leaves
    /// the reactor.
    #[test]
    fn a_dropped_connection_task_is_cleaned_up() {
        let (reactor, executor) = executor();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        let stream = Async::new(server_side, &reactor).unwrap();
        let got = Rc::new(Cell::new(None));
        let result = got.clone();
        executor.spawn(async move {
            let mut total = 0;
            while let Ok(data) = stream.recv().await {
                if data.is_empty() {
                    break;
                }
                total += data.len();
            }
            result.set(Some(total));
        });
        assert_eq!(reactor.sources(), 1);
        client.write_all(b"bye").unwrap();
        drop(client);
        executor
            .block_on(async {
                while got.get().is_none() {
                    sleep(&reactor, Duration::from_millis(1)).await;
                }
            })
            .unwrap();
        assert_eq!(got.get(), Some(3));
        assert_eq!(executor.tasks(), 0);
        assert_eq!(reactor.sources(), 0);
    }

    /// A task whose socket is always ready yields once its budget is
    /// spent: with a budget of 2, ten operations take five polls after the
    /// one that waits for the first readiness (without a budget: one).
    #[test]
    fn a_spent_budget_makes_a_task_yield() {
        let polls = Rc::new(Cell::new(0));
        let done = Rc::new(Cell::new(false));
        let (reactor, executor) = executor();
        reactor.set_budget(2);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        client.write_all(b"x").unwrap();
        let stream = Async::new(server_side, &reactor).unwrap();
        let (counted, finished) = (polls.clone(), done.clone());
        executor.spawn(async move {
            let operations = async {
                for _ in 0..10 {
                    stream.readable().await.unwrap();
                }
            };
            let mut operations = pin!(operations);
            poll_fn(|cx| {
                counted.set(counted.get() + 1);
                operations.as_mut().poll(cx)
            })
            .await;
            finished.set(true);
        });
        executor
            .block_on(async {
                while !done.get() {
                    yield_now().await;
                }
            })
            .unwrap();
        assert_eq!(polls.get(), 6);
    }

    /// Timers fire in the order of their deadlines, not of their creation.
    #[test]
    fn timers_fire_in_order() {
        let order = RefCell::new(Vec::new());
        let (reactor, executor) = executor();
        for ms in [30, 10, 20] {
            let (reactor, order) = (reactor.clone(), &order);
            executor.spawn(async move {
                sleep(&reactor, Duration::from_millis(ms)).await;
                order.borrow_mut().push(ms);
            });
        }
        executor
            .block_on(sleep(&reactor, Duration::from_millis(40)))
            .unwrap();
        // Even on a stalled machine every timer is due by now, and due
        // timers are woken earliest first.
        while order.borrow().len() < 3 {
            executor.block_on(yield_now()).unwrap();
        }
        assert_eq!(*order.borrow(), [10, 20, 30]);
    }
}
