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
//! **Threads or processes.** With `--offload N` a pool thread does the work
//! itself, under the process's `--global-lock` if there is one: a Python
//! `ThreadPoolExecutor`, whose threads compute one at a time under the GIL.
//! With `--offload-processes N` each pool thread hands its job to a worker
//! process of its own, and waits for the answer: a
//! `ProcessPoolExecutor`. The chunk is copied to the worker through a pipe
//! (its standard input) and back through another (its standard output);
//! every process has its own lock, so the work runs N at once even under
//! `--global-lock`, and pays for it: the chunk copied into a pipe and out
//! of it each way, four system calls a job. The workers are this binary again (`echo-lab offload-worker`,
//! started fresh rather than forked: a `fork` in a process with threads
//! copies only the calling one, and a lock another thread held stays
//! locked in the child). A worker that dies is replaced for the next job,
//! and the job it had is echoed with its work undone: its crash stays in
//! its process. (Python's `ProcessPoolExecutor` instead marks the whole
//! pool broken, `BrokenProcessPool`, and fails every job after.) A worker
//! ends when its pipe closes, so none outlives the server; one still
//! working at shutdown is killed after [`SHUTDOWN_GRACE`].
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
use std::io::{self, BufRead, BufReader, Read, Write};
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::work::{Work, WorkKind};
use crate::poller::Poller;
use crate::serve::Context;

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
    /// With `--offload-processes`: the worker process of each thread, by
    /// process id, while it has one; killed if still there at shutdown.
    workers: Arc<Mutex<Vec<u32>>>,
}

impl Offload {
    /// Starts `threads` pool threads, named after `name`, which do the
    /// work themselves or, with `--offload-processes`, in a worker
    /// process each.
    ///
    /// # Errors
    /// If a thread cannot be started. (A worker process that cannot be
    /// started is said on stderr, and its jobs are echoed undone.)
    pub fn start(ctx: &Context, threads: usize, name: &str) -> io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        let (exit, exited) = crossbeam_channel::bounded(threads);
        let closing = Arc::new(AtomicBool::new(false));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let lock = ctx.config.global_lock.then(|| ctx.global_lock.clone());
        for i in 0..threads {
            let (jobs, exit, closing) = (jobs.clone(), exit.clone(), closing.clone());
            let mut runner = match ctx.config.offload_processes {
                false => Runner::Thread(lock.clone()),
                true => Runner::Process {
                    worker: None,
                    workers: workers.clone(),
                    closing: closing.clone(),
                    retry_at: None,
                },
            };
            thread::Builder::new()
                .name(format!("{name}-offload-{i}"))
                .spawn(move || {
                    for job in jobs {
                        if closing.load(Relaxed) {
                            continue; // Shutting down: queued jobs are dropped.
                        }
                        runner.run(job.work, &job.data);
                        (job.done)(job.data);
                    }
                    drop(runner);
                    let _ = exit.send(());
                })?;
        }
        Ok(Offload {
            queue: Some(queue),
            closing,
            exited,
            threads,
            workers,
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
                // Still working: a thread finishes on its own, unwaited; a
                // worker process is killed (its thread then finds its pipe
                // closed, and reaps it).
                for &pid in self
                    .workers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                {
                    // The pid is a child not yet reaped (its thread forgets
                    // it before reaping it), so it names that child and no
                    // other.
                    let _ = crate::sys::signal(pid, libc::SIGKILL);
                }
                break;
            }
        }
    }
}

/// Where a pool thread does a job's work.
enum Runner {
    /// On the thread itself, under the process's global lock if there is
    /// one.
    Thread(Option<Arc<Mutex<()>>>),
    /// In a worker process of the thread's own, started at its first job
    /// and again after one dies.
    Process {
        worker: Option<Worker>,
        /// The pool's list of live workers, for shutdown.
        workers: Arc<Mutex<Vec<u32>>>,
        /// Set at shutdown, when a worker killed mid-job is no news.
        closing: Arc<AtomicBool>,
        /// After a worker could not be started: when to try again. Jobs
        /// until then are echoed undone, without a line each.
        retry_at: Option<Instant>,
    },
}

/// How long a pool thread waits before it tries again to start a worker
/// process that could not be started.
const RETRY_START: Duration = Duration::from_secs(1);

impl Runner {
    /// Does `work` on `data`, blocking this thread until it is done.
    fn run(&mut self, work: Work, data: &[u8]) {
        match self {
            Runner::Thread(lock) => work.block(data, lock.as_deref()),
            Runner::Process {
                worker,
                workers,
                closing,
                retry_at,
            } => {
                if worker.is_none() {
                    if retry_at.is_some_and(|at| Instant::now() < at) {
                        return;
                    }
                    match Worker::start() {
                        Ok(started) => {
                            workers
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(started.pid());
                            *worker = Some(started);
                            *retry_at = None;
                        }
                        Err(e) => {
                            eprintln!(
                                "echo-lab: cannot start an offload worker process: {e}; its jobs are echoed undone until it can, tried again in {RETRY_START:?}"
                            );
                            *retry_at = Some(Instant::now() + RETRY_START);
                            return;
                        }
                    }
                }
                let Some(Err(e)) = worker.as_mut().map(|w| w.run(work, data)) else {
                    return;
                };
                if let Some(failed) = worker.take() {
                    let pid = failed.pid();
                    let ended = failed.reap(workers, true);
                    if !closing.load(Relaxed) {
                        eprintln!(
                            "echo-lab: offload worker process {pid} failed ({e}; it {ended}): its job is echoed undone, and a new process takes the next"
                        );
                    }
                }
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Runner::Process {
            worker, workers, ..
        } = self
        {
            // Idle between jobs: its input closes, and it exits.
            if let Some(worker) = worker.take() {
                worker.reap(workers, false);
            }
        }
    }
}

/// A worker process: `echo-lab offload-worker`, doing one job at a time.
struct Worker {
    child: Child,
    to: ChildStdin,
    /// Buffered: a reply's length and bytes in one `read` as a rule.
    from: BufReader<ChildStdout>,
}

impl Worker {
    fn start() -> io::Result<Worker> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("no pipes to the worker"));
        };
        Ok(Worker {
            child,
            to,
            from: BufReader::new(from),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the job and waits for its chunk to come back, whole.
    fn run(&mut self, work: Work, data: &[u8]) -> io::Result<()> {
        write_job(&mut self.to, work, data)?;
        let back = read_frame(&mut self.from)?;
        if back != data {
            return Err(io::Error::other("it sent back another chunk"));
        }
        Ok(())
    }

    /// Closes its pipes (and kills it, if `kill`: it failed, and may be
    /// stuck) and waits for it to exit; says how it ended. Forgets its pid
    /// first, so that shutdown never signals a pid that was reused.
    fn reap(self, workers: &Mutex<Vec<u32>>, kill: bool) -> String {
        let pid = self.pid();
        workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&p| p != pid);
        let Worker {
            mut child,
            to,
            from,
        } = self;
        drop((to, from));
        if kill {
            let _ = child.kill();
        }
        match child.wait() {
            Ok(status) => format!("ended with {status}"),
            Err(e) => format!("could not be waited for: {e}"),
        }
    }
}

/// The most bytes a job may carry: far more than any loop reads at once.
const MAX_JOB: usize = 1 << 20;

/// A job on the wire: its kind (a byte), its duration in nanoseconds (8
/// bytes), then the chunk as a frame; written at once, one system call.
fn write_job(to: &mut impl Write, work: Work, data: &[u8]) -> io::Result<()> {
    let kind = match work.kind {
        WorkKind::Cpu => b'c',
        WorkKind::Sleep => b's',
        WorkKind::Wait => b'w',
    };
    let nanos = u64::try_from(work.duration.as_nanos()).unwrap_or(u64::MAX);
    let mut job = vec![kind];
    job.extend_from_slice(&nanos.to_le_bytes());
    append_frame(&mut job, data)?;
    to.write_all(&job)?;
    to.flush()
}

/// A chunk on the wire: its length (4 bytes), then its bytes.
fn append_frame(to: &mut Vec<u8>, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
    to.extend_from_slice(&len.to_le_bytes());
    to.extend_from_slice(data);
    Ok(())
}

/// Reads a frame (a reply cut short is an `UnexpectedEof` error).
fn read_frame(from: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0; 4];
    from.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_JOB {
        return Err(io::Error::other(format!(
            "a chunk of {len} bytes, over {MAX_JOB}"
        )));
    }
    let mut data = vec![0; len];
    from.read_exact(&mut data)?;
    Ok(data)
}

/// Reads a job; `None` at a clean end of input, before the job's first
/// byte.
fn read_job(from: &mut impl BufRead) -> io::Result<Option<(Work, Vec<u8>)>> {
    let ended = loop {
        match from.fill_buf() {
            Ok(buffered) => break buffered.is_empty(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if ended {
        return Ok(None);
    }
    let mut head = [0; 9];
    from.read_exact(&mut head)?;
    let kind = match head[0] {
        b'c' => WorkKind::Cpu,
        b's' => WorkKind::Sleep,
        b'w' => WorkKind::Wait,
        other => return Err(io::Error::other(format!("unknown kind of work {other}"))),
    };
    let nanos = u64::from_le_bytes(head[1..].try_into().unwrap_or_default());
    let work = Work {
        kind,
        duration: Duration::from_nanos(nanos),
    };
    Ok(Some((work, read_frame(from)?)))
}

/// The one argument that makes `echo-lab` an offload worker (read by
/// `main` before the command line is parsed: it is no subcommand).
pub const WORKER_ARG: &str = "offload-worker";

/// `echo-lab offload-worker`: the worker process of `--offload-processes`.
/// Reads jobs from standard input, does each, and writes its chunk back to
/// standard output, until its input ends.
///
/// # Errors
/// If the input is not a job, or a pipe fails.
pub fn worker_main() -> io::Result<()> {
    let (mut input, mut output) = (io::stdin().lock(), io::stdout().lock());
    let mut reply = Vec::new();
    while let Some((work, data)) = read_job(&mut input)? {
        // One job at a time, in a process of its own: its own lock, which
        // nobody else could hold.
        work.block(&data, None);
        reply.clear();
        append_frame(&mut reply, &data)?;
        output.write_all(&reply)?;
        output.flush()?;
    }
    Ok(())
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

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Vec<u8>> {
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
