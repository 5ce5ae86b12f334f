//! `serve --processes N`: N worker processes, each running the model on
//! the same listening socket, and a master that supervises them. nginx's
//! master and workers, Apache's prefork (`sequential` × N) and worker
//! (`threadpool` × N) MPMs, gunicorn's workers; the notes' remedy for the
//! GIL, `multiprocessing`, applied to a server.
//!
//! **How the workers are made.** The master binds the listener, then
//! starts each worker by executing this very binary again with the same
//! arguments, the listener passed down as an inherited descriptor and the
//! worker's number in the environment ([`WORKER_ENV`]). It does not
//! `fork` and carry on in the child: `fork` copies only the calling
//! thread, and any lock another thread held at that moment (the allocator's,
//! stderr's, one of ours) stays locked forever in the child. A fresh
//! `exec` starts the worker as clean as any server, whatever threads the
//! master has; the price is one program start per worker, paid once.
//!
//! **How they share the port.** A listener per worker, all bound to one
//! port with SO_REUSEPORT (on Linux; elsewhere one listener, shared): the
//! kernel hashes each new connection to one of them, so the workers share
//! the clients whatever each is doing. With one shared listener (nginx's
//! default) the first worker back in `accept()` takes every client of a
//! burst: a thread pool whose acceptor never waits takes all eight of a
//! `bench -c 8` while its sibling idles. nginx's other answers are an
//! accept mutex (`accept_mutex`, a lock in shared memory) and
//! `EPOLLEXCLUSIVE`, which the `polling` crate cannot ask for and the
//! blocking models do not use. The master keeps every listener: a worker
//! that dies leaves its listener, and the clients waiting in its queue, to
//! the worker that replaces it, which is also why a stopping worker must
//! never shut its listener down (see `blocking`). The cost: while a seat
//! is empty (a second at most), the clients hashed to it wait in its
//! queue.
//!
//! **Supervision.** The master waits on two bells: the shutdown's (SIGINT
//! or SIGTERM) and a self-pipe rung by SIGCHLD. A worker that dies is
//! logged with why (its exit status or signal) and started again at once,
//! or after a second if it lived less than a second (a worker that cannot
//! start must not spin). On shutdown the master sends SIGTERM to every
//! worker, waits for them (each finishes as a server does, within its
//! usual time), kills any still running after [`STOP_PATIENCE`], and
//! prints one summary: each worker writes its counts to its standard
//! output as it exits, and the master adds them up, and says how many
//! clients each worker served. A worker killed outright takes its counts
//! with it, and the master says whose are missing. A SIGTERM while the
//! workers are still starting stops the start at once. At most
//! [`max_processes`] workers: beyond a few per CPU they only queue for a
//! core. On Linux a
//! worker is also told to stop when the master dies, however it dies: no
//! worker outlives its master.
//!
//! Each worker has its own counters, its own `--max-connections` and its
//! own `--global-lock`, as each CPython process has its own GIL.
//!
//! Tutorial: `docs/tutorial/10-threads-or-processes.md`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Context;
use crate::lab::live::Line;
use crate::poller::{Events, Interest, Poller};
use crate::stats::Totals;
use crate::sys::ChildBell;

/// The environment variable that makes a process a worker: `INDEX:FD`, its
/// number and the descriptor of the listener it inherited.
pub const WORKER_ENV: &str = "ECHO_LAB_WORKER";

/// How long workers get to stop after the master's SIGTERM before they
/// are killed: longer than any model's own shutdown (the chat gives a
/// leaving client 5 s to take what it is owed).
pub const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// A worker that lived less than this is started again only after it.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The line a worker ends its standard output with: its counts.
const TOTALS: &str = "totals ";

/// Workers per CPU that `--processes` accepts at most: Apache's prefork
/// serves each client with a process and defaults to 256 of them
/// (`MaxRequestWorkers`) on any machine; 64 a CPU allows that on four.
pub const PROCESSES_PER_CPU: usize = 64;

/// The most workers `--processes` accepts on this machine.
pub fn max_processes() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    PROCESSES_PER_CPU * cpus
}

/// Refuses a count of workers this machine cannot sensibly run.
///
/// # Errors
/// `count` is over [`max_processes`].
pub fn check_count(count: usize) -> anyhow::Result<()> {
    let most = max_processes();
    if count > most {
        anyhow::bail!(
            "--processes {count} is more than this machine can sensibly run: at most {most} ({PROCESSES_PER_CPU} per CPU); beyond a few per CPU, workers only queue for a core, each with its own process, memory and descriptors"
        );
    }
    Ok(())
}

/// What a worker process knows of itself.
pub struct Seat {
    /// Its number, from 1.
    pub index: usize,
    /// The listener it inherited from the master.
    pub listener: TcpListener,
}

/// This process's seat, if it is a worker.
///
/// # Errors
/// The variable is set but does not name an inherited listener.
pub fn seat() -> anyhow::Result<Option<Seat>> {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    let parsed = value
        .split_once(':')
        .and_then(|(index, fd)| Some((index.parse().ok()?, fd.parse().ok()?)));
    let Some((index, fd)) = parsed else {
        anyhow::bail!("{WORKER_ENV}={value} should be INDEX:FD");
    };
    let listener = crate::sys::adopt_listener(fd)
        .with_context(|| format!("taking the listener passed down as descriptor {fd}"))?;
    Ok(Some(Seat { index, listener }))
}

/// A worker's last words to its master: its counts, on its standard
/// output. A master that is gone (killed) cannot read them: the write
/// fails, and the worker exits all the same.
pub fn report_totals(totals: &Totals) {
    if let Ok(json) = serde_json::to_string(totals) {
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "{TOTALS}{json}").and_then(|()| stdout.flush());
    }
}

/// One worker process, as the master sees it.
struct Worker {
    child: Child,
    started: Instant,
}

/// Starts a worker on each of `seats` (a listener each) and supervises
/// them until the shutdown; their counts end up in `ctx.stats`, and what
/// the summary should add (clients per worker, counts lost) in the
/// returned [`Roll`].
///
/// # Errors
/// The first worker cannot be started, or the master's own poller fails.
pub fn supervise(seats: Vec<TcpListener>, ctx: &Context) -> anyhow::Result<Roll> {
    let poller = Poller::new(ctx.config.poller).context("starting the master's poller")?;
    let bell = ctx.shutdown.bell()?;
    let children = ChildBell::new().context("watching for workers that end")?;
    let _bell = poller.register(&bell, 0, Interest::READ)?;
    let _children = poller.register(&children, 1, Interest::READ)?;
    let restarted = AtomicU64::new(0);
    let mut master = Master {
        seats,
        workers: BTreeMap::new(),
        roll: Roll::default(),
        restarts: BTreeMap::new(),
        restarted: &restarted,
        ctx,
    };
    // --stats: the master's line is the whole server's memory, its workers
    // included, and how often a worker had to be replaced.
    let stats = |line: &mut Line| {
        line.count("restarts", restarted.swap(0, Relaxed));
    };
    super::blocking::with_stats(ctx, "master", stats, || {
        let served = master.serve(&poller, &children);
        master.stop_all(&poller, &children);
        ctx.shutdown.trigger();
        served.map(|()| master.roll)
    })
}

/// What the master's summary adds to the counts: the clients each worker
/// served (every worker of that number, replacements included), and the
/// workers whose counts were lost with them.
#[derive(Debug, Default)]
pub struct Roll {
    /// Clients served, by worker number.
    pub served: BTreeMap<usize, u64>,
    /// Each worker that ended without leaving its counts, and how it ended.
    pub lost: Vec<String>,
}

impl std::fmt::Display for Roll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let served: Vec<String> = self
            .served
            .iter()
            .map(|(index, clients)| format!("{index}: {clients}"))
            .collect();
        write!(f, "clients per worker: {}", served.join(", "))?;
        for lost in &self.lost {
            write!(
                f,
                "\nmissing from the counts: worker {lost} before it could report them"
            )?;
        }
        Ok(())
    }
}

struct Master<'a> {
    /// A listener per worker number, kept here for each worker of that
    /// number in turn.
    seats: Vec<TcpListener>,
    /// What the summary adds.
    roll: Roll,
    /// Running workers, by number.
    workers: BTreeMap<usize, Worker>,
    /// Workers to start again, and when.
    restarts: BTreeMap<usize, Instant>,
    /// Workers started again since the last `--stats` line.
    restarted: &'a AtomicU64,
    ctx: &'a Context,
}

impl Master<'_> {
    /// Starts the workers, then restarts any that dies, until the shutdown.
    fn serve(&mut self, poller: &Poller, children: &ChildBell) -> anyhow::Result<()> {
        let mut events = Events::new();
        for index in 1..=self.seats.len() {
            self.roll.served.insert(index, 0);
            // A stop asked for while the workers start stops the start.
            if poller.wait(&mut events, Some(Duration::ZERO))? > 0
                && events.iter().any(|event| event.key == 0)
            {
                self.ctx.shutdown.trigger();
                return Ok(());
            }
            self.start(index)?;
        }
        while !self.ctx.shutdown.is_triggered() {
            let next_restart = self.restarts.values().min().copied();
            let timeout = next_restart.map(|at| at.saturating_duration_since(Instant::now()));
            poller.wait(&mut events, timeout)?;
            if events.iter().any(|event| event.key == 0) {
                self.ctx.shutdown.trigger();
            }
            children.drain();
            self.reap(true);
            self.restart_due();
        }
        Ok(())
    }

    /// Starts worker `index`: this binary again, with the same arguments.
    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let fd = self.seats[index - 1].as_raw_fd();
        let exe = std::env::current_exe().context("finding echo-lab itself")?;
        let mut command = Command::new(exe);
        command
            .args(std::env::args_os().skip(1))
            .env(WORKER_ENV, format!("{index}:{fd}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        crate::sys::pass_down(&mut command, fd);
        let child = command
            .spawn()
            .with_context(|| format!("starting worker {index}"))?;
        eprintln!("worker {index} started (pid {})", child.id());
        let started = Instant::now();
        self.workers.insert(index, Worker { child, started });
        Ok(())
    }

    /// Collects every worker that has ended: logs why, adds its counts,
    /// and (unless stopping) plans its restart.
    fn reap(&mut self, restart: bool) {
        let ended: Vec<(usize, ExitStatus)> = self
            .workers
            .iter_mut()
            .filter_map(|(&index, worker)| Some((index, worker.child.try_wait().ok()??)))
            .collect();
        for (index, status) in ended {
            let Some(mut worker) = self.workers.remove(&index) else {
                continue;
            };
            let counted = self.collect(index, &mut worker);
            if !counted {
                self.roll.lost.push(format!(
                    "{index} (pid {}) {}",
                    worker.child.id(),
                    describe(status)
                ));
            }
            if !restart {
                continue;
            }
            let lost = if counted {
                ""
            } else {
                ": its counts are lost with it"
            };
            eprintln!(
                "worker {index} (pid {}) {}{lost}; starting another",
                worker.child.id(),
                describe(status)
            );
            let at = if worker.started.elapsed() < RESTART_PAUSE {
                Instant::now() + RESTART_PAUSE
            } else {
                Instant::now()
            };
            self.restarts.insert(index, at);
        }
    }

    /// Adds an ended worker's counts to the master's; whether it left any.
    fn collect(&mut self, index: usize, worker: &mut Worker) -> bool {
        let mut output = String::new();
        if let Some(mut stdout) = worker.child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        let totals = output
            .lines()
            .filter_map(|line| line.strip_prefix(TOTALS))
            .filter_map(|json| serde_json::from_str::<Totals>(json).ok())
            .next_back();
        match totals {
            Some(totals) => {
                self.ctx.stats.absorb(&totals);
                *self.roll.served.entry(index).or_default() += totals.served;
                true
            }
            None => false,
        }
    }

    /// Starts the workers whose pause is over.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .restarts
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&index, _)| index)
            .collect();
        for index in due {
            self.restarts.remove(&index);
            self.restarted.fetch_add(1, Relaxed);
            if let Err(e) = self.start(index) {
                eprintln!("worker {index}: {e:#}; trying again in a second");
                self.restarts.insert(index, now + RESTART_PAUSE);
            }
        }
    }

    /// SIGTERM to every worker, then waits for them all; kills those still
    /// running after [`STOP_PATIENCE`].
    fn stop_all(&mut self, poller: &Poller, children: &ChildBell) {
        for worker in self.workers.values() {
            let _ = crate::sys::signal(worker.child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_PATIENCE;
        let mut events = Events::new();
        loop {
            self.reap(false);
            if self.workers.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = poller.wait(&mut events, Some(left));
            children.drain();
        }
        for (index, worker) in &mut self.workers {
            eprintln!(
                "worker {index} (pid {}) did not stop in {}s: killed",
                worker.child.id(),
                STOP_PATIENCE.as_secs()
            );
            let _ = worker.child.kill();
            let _ = worker.child.wait();
            self.roll.lost.push(format!(
                "{index} (pid {}), killed when it did not stop,",
                worker.child.id()
            ));
        }
    }
}

/// Why a worker ended, in words.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        _ => format!("ended ({status})"),
    }
}

/// The usual name of a signal a worker may die of.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT: it aborted",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        _ => "another signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The master says how a worker ended in words a reader knows.
    #[test]
    fn endings_are_described() {
        assert_eq!(
            describe(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    /// What a worker writes is what its master reads back.
    #[test]
    fn totals_make_the_round_trip() {
        let totals = Totals {
            served: 3,
            bytes: 40,
            ..Totals::default()
        };
        let line = format!("{TOTALS}{}", serde_json::to_string(&totals).unwrap());
        let read: Totals = serde_json::from_str(line.strip_prefix(TOTALS).unwrap()).unwrap();
        assert_eq!(read, totals);
    }
}
