//! `--offload N`: a pool of N threads beside a one-thread loop, where its
//! handlers send the work that would block it. The notes'
//! `loop.run_in_executor(pool, job)`, and tokio's `spawn_blocking`.
//!
//! A handler submits a [`Job`]: the work, a copy of the chunk it works on,
//! and what to do when it is done. A pool thread runs it and calls `done`
//! with the chunk, from the pool thread. What `done` does is the loop's
//! affair, and each model does it its own way:
//! - the selector and the statemachine queue a token on a [`Finished`]
//!   channel and ring the loop's poller (`Poller::notify`), so the loop
//!   wakes from its wait, takes the token, and echoes the chunk then; the
//!   completion loop does the same with a doorbell its ring polls;
//! - async stores the chunk where an `offload(..).await` future finds it and
//!   wakes its task's waker, which queues the task and rings the poller.
//!
//! No one polls a queue on a timer: a finished job wakes the loop once.
//!
//! A connection has at most one job at a time and does not read while it
//! waits for it, so its bytes stay in order. If it disconnects meanwhile,
//! the job still runs to its end; its token then finds no connection, and
//! the chunk is dropped. Shutdown (dropping the pool) lets running jobs end
//! for at most [`SHUTDOWN_GRACE`], drops the queued ones, and leaves a job
//! that runs longer to finish on its own: its result is dropped.
//!
//! Tutorial: `docs/tutorial/7-when-the-loop-stalls.md`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::work::Work;
use crate::poller::Poller;

/// How long dropping the pool waits for jobs still running: the server's
/// whole shutdown must take under two seconds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Work sent to the pool.
pub struct Job {
    /// What to do.
    pub work: Work,
    /// The chunk to work on; given back to `done`.
    pub data: Vec<u8>,
    /// Called on the pool thread once the work is done.
    pub done: Box<dyn FnOnce(Vec<u8>) + Send>,
}

/// The pool: N threads taking jobs from one queue.
pub struct Offload {
    /// `None` once the pool is closing.
    queue: Option<Sender<Job>>,
    /// Set at shutdown: threads drop the jobs still queued.
    closing: Arc<AtomicBool>,
    /// Each thread sends one message here as it exits.
    exited: Receiver<()>,
    threads: usize,
}

impl Offload {
    /// Starts `threads` pool threads, named after `name`.
    ///
    /// # Errors
    /// If a thread cannot be started.
    pub fn start(threads: usize, name: &str) -> std::io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        let (exit, exited) = crossbeam_channel::bounded(threads);
        let closing = Arc::new(AtomicBool::new(false));
        for i in 0..threads {
            let (jobs, exit, closing) = (jobs.clone(), exit.clone(), closing.clone());
            thread::Builder::new()
                .name(format!("{name}-offload-{i}"))
                .spawn(move || {
                    for job in jobs {
                        if closing.load(Relaxed) {
                            continue; // Shutting down: queued jobs are dropped.
                        }
                        job.work.block(&job.data, None);
                        (job.done)(job.data);
                    }
                    let _ = exit.send(());
                })?;
        }
        Ok(Offload {
            queue: Some(queue),
            closing,
            exited,
            threads,
        })
    }

    /// Queues `job` for the next free pool thread.
    pub fn submit(&self, job: Job) {
        if let Some(queue) = &self.queue {
            // The threads only stop when the queue is dropped, in `drop`.
            let _ = queue.send(job);
        }
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        self.closing.store(true, Relaxed);
        // Dropping the sender ends each thread's loop after its job.
        self.queue = None;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for _ in 0..self.threads {
            if self.exited.recv_deadline(deadline).is_err() {
                // Still working: it finishes on its own, unwaited.
                break;
            }
        }
    }
}

/// Where a pool thread tells a loop that a job is done: a channel of tokens
/// `T` (saying whose job it was) with the chunk worked on, and a bell that
/// wakes the loop from its wait.
pub struct Finished<T> {
    sender: Sender<(T, Vec<u8>)>,
    receiver: Receiver<(T, Vec<u8>)>,
    ring: Arc<dyn Fn() + Send + Sync>,
}

impl<T: Send + 'static> Finished<T> {
    /// A channel that rings a readiness loop's `poller`.
    pub fn new(poller: Arc<Poller>) -> Self {
        Finished::ringing(move || {
            let _ = poller.notify();
        })
    }

    /// A channel that calls `ring` after queueing each token: whatever
    /// wakes the loop (the completion loop's doorbell).
    pub fn ringing(ring: impl Fn() + Send + Sync + 'static) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Finished {
            sender,
            receiver,
            ring: Arc::new(ring),
        }
    }

    /// A job's `done` for the job of `token`: queue the token and the
    /// chunk, then wake the loop.
    pub fn notifier(&self, token: T) -> Box<dyn FnOnce(Vec<u8>) + Send> {
        let (sender, ring) = (self.sender.clone(), self.ring.clone());
        Box::new(move |data| {
            let _ = sender.send((token, data));
            ring();
        })
    }

    /// The jobs finished since the last call: their tokens and chunks.
    pub fn take(&self) -> crossbeam_channel::TryIter<'_, (T, Vec<u8>)> {
        self.receiver.try_iter()
    }
}

impl Offload {
    /// Runs `work` on `data` in the pool, as a future that resolves to the
    /// chunk when the job is done: `await loop.run_in_executor(pool, job)`.
    /// A pool thread wakes the awaiting task's waker, which may be used
    /// from any thread. Dropping the future (the task was cancelled) lets
    /// the job finish and its chunk be dropped.
    pub fn run(&self, work: Work, data: Vec<u8>) -> Offloaded {
        let slot = Arc::new(Mutex::new(JobSlot::default()));
        let filled = slot.clone();
        self.submit(Job {
            work,
            data,
            done: Box::new(move |data| {
                let mut slot = filled.lock().unwrap_or_else(PoisonError::into_inner);
                slot.data = Some(data);
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }),
        });
        Offloaded { slot }
    }
}

/// Where a finished job leaves its chunk for the future that awaits it.
#[derive(Default)]
struct JobSlot {
    data: Option<Vec<u8>>,
    waker: Option<Waker>,
}

/// The future of [`Offload::run`].
pub struct Offloaded {
    slot: Arc<Mutex<JobSlot>>,
}

impl Future for Offloaded {
    type Output = Vec<u8>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<u8>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.data.take() {
            Some(data) => Poll::Ready(data),
            None => {
                // Checked and stored under one lock: the pool thread either
                // filled the slot before this, or finds this waker after.
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
