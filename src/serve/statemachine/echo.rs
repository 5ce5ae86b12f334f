//! The echo task of the statemachine model: the notes' `handle_client`
//! generator, written by hand as a state machine (see the module above for
//! why), and the model's `run`, which hands the runtime one of these per
//! client. The chat's task stands on the same runtime.
//!
//! The lab's part (`src/lab/`, skippable on a first read): the traffic
//! each task counts for `--stats`, `--work` (a task yields `Sleep` or
//! `Offload` for it), `--crash-on`.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::{Coroutine, Resume, Step, Wait, serve};
use crate::lab::live::Traffic;
use crate::lab::work::{Work, WorkKind};
use crate::net::{interrupted, would_block};
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::buffers::{BufferPool, Lease};
use crate::stats::Ending;

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let shared = Shared {
        ctx,
        buffers: BufferPool::new(),
        traffic: Traffic::default(),
        would_block: Cell::new(0),
    };
    let fatal = Cell::new(None);
    serve(
        &listener,
        ctx,
        &shared.traffic,
        |line| {
            line.count("would_block", shared.would_block.take());
        },
        &fatal,
        |stream, visit| Box::new(Echo::new(stream, visit, &shared)),
    )
}

/// What every client task of one loop shares, behind one reference in
/// each task (every byte of a task is in every idle client).
struct Shared<'a> {
    /// The settings (`--idle-timeout`, `--work`, `--offload`), read where
    /// they are used.
    ctx: &'a Context,
    /// The read buffers, lent to a task while it holds data.
    buffers: BufferPool,
    /// The loop's `--stats` traffic.
    traffic: Traffic,
    /// Reads and writes that met `WouldBlock` since the last `--stats`
    /// line: system calls that found nothing to do.
    would_block: Cell<u64>,
}

impl Shared<'_> {
    /// When a task that starts waiting now gives up, with `--idle-timeout`.
    fn idle_deadline(&self) -> Option<Instant> {
        self.ctx.config.idle_timeout.map(|t| Instant::now() + t)
    }

    /// A read or write met `WouldBlock`.
    fn missed(&self) {
        self.would_block.set(self.would_block.get() + 1);
    }
}

/// Where a client task is suspended: the points of the generator above.
#[derive(Debug)]
pub enum EchoState<'a> {
    /// Created, not yet run: the generator before its first `next()`.
    Start,
    /// At `yield 'WAIT_READ', sock`.
    WaitRead,
    /// At `yield 'WAIT_WRITE', sock`, with the generator's local `data`,
    /// of which `data[sent..]` is still to send.
    WaitWrite {
        /// The bytes received, in a buffer borrowed from the loop.
        data: Lease<'a>,
        /// Bytes of `data` already written.
        sent: usize,
    },
    /// With `--work`, between `recv` and `sendall`: at `yield 'SLEEP',
    /// until` (wait work) or `yield 'RUN_IN_EXECUTOR', job` (offloaded
    /// work), holding the `data` it will echo when resumed.
    Working {
        /// The bytes received, to echo once the work is done.
        data: Lease<'a>,
    },
}

/// The notes' `handle_client` generator, as a state machine.
struct Echo<'a> {
    state: EchoState<'a>,
    sock: TcpStream,
    /// The settings, the buffers and the counters.
    shared: &'a Shared<'a>,
    /// The job handed to the loop with [`Wait::Offload`], until it takes it.
    job: Option<(Work, Vec<u8>)>,
    /// Who it is, the bytes echoed to it, and how the task ended: logged
    /// when the task is dropped (by the loop at shutdown, if it had not
    /// ended), after its socket closed.
    visit: Visit<'a>,
}

impl<'a> Echo<'a> {
    fn new(sock: TcpStream, visit: Visit<'a>, shared: &'a Shared<'a>) -> Self {
        Echo {
            state: EchoState::Start,
            sock,
            shared,
            job: None,
            visit,
        }
    }

    /// Starts `--work` on the chunk just received, which the task holds in
    /// [`EchoState::Working`]. Returns what to yield, or `None` if the work
    /// was done right here, on the loop's thread, and the chunk can go.
    fn start_work(&mut self, work: Work, data: &[u8]) -> Option<Wait> {
        match work.kind {
            // The notes' `yield` of a deadline: the loop resumes us then.
            WorkKind::Wait => Some(Wait::Sleep(Instant::now() + work.duration)),
            // `run_in_executor`: the pool works on a copy, the loop goes on.
            _ if self.shared.ctx.config.offload > 0 => {
                self.job = Some((work, data.to_vec()));
                Some(Wait::Offload)
            }
            // On the loop's own thread: every other task waits.
            _ => {
                work.block(data, None);
                None
            }
        }
    }

    /// `yield 'WAIT_READ', sock`, with the idle deadline if there is one.
    fn wait_read(&self) -> Wait {
        Wait::Read {
            until: self.shared.idle_deadline(),
        }
    }

    /// `yield 'WAIT_WRITE', sock`, with the idle deadline if there is one.
    fn wait_write(&self) -> Wait {
        Wait::Write {
            until: self.shared.idle_deadline(),
        }
    }

    fn finish(&mut self, ending: Ending) -> Wait {
        self.visit.ends(ending);
        Wait::Done
    }
}

impl<'a> Coroutine<'a> for Echo<'a> {
    fn resume(&mut self, how: Resume, _step: &mut Step<'_, 'a>) -> Wait {
        let working = matches!(self.state, EchoState::Working { .. });
        if how == Resume::TimedOut && !working {
            return self.finish(Ending::IdleTimeout);
        }
        loop {
            match &mut self.state {
                // Resumed after the work: on to `sendall(data)`.
                EchoState::Working { .. } => {
                    let state = std::mem::replace(&mut self.state, EchoState::WaitRead);
                    if let EchoState::Working { data } = state {
                        self.state = EchoState::WaitWrite { data, sent: 0 };
                    }
                }
                EchoState::Start => {
                    self.state = EchoState::WaitRead;
                    return self.wait_read();
                }
                // Resumed after `yield 'WAIT_READ'`: `data = sock.recv(4096)`.
                EchoState::WaitRead => {
                    let mut data = self.shared.buffers.lend();
                    match self.sock.read(&mut data) {
                        // `if not data: break`
                        Ok(0) => return self.finish(Ending::Closed),
                        // On to `yield 'WAIT_WRITE'`, but try the write first.
                        Ok(len) => {
                            data.truncate(len);
                            self.shared.traffic.read(len);
                            crate::lab::crash::check(&data);
                            if let Some(work) = self.shared.ctx.config.work {
                                // `--work` first (see chapter 7).
                                let wait = self.start_work(work, &data);
                                self.state = EchoState::Working { data };
                                if let Some(wait) = wait {
                                    return wait;
                                }
                                continue;
                            }
                            self.state = EchoState::WaitWrite { data, sent: 0 };
                        }
                        // Woken, but not readable after all: wait again.
                        Err(e) if would_block(&e) => {
                            self.shared.missed();
                            return self.wait_read();
                        }
                        Err(e) if interrupted(&e) => {}
                        // Nothing is held while it reads.
                        Err(e) => return self.finish(Ending::from_read_error(e)),
                    }
                }
                // `sock.sendall(data)`, one write at a time.
                EchoState::WaitWrite { data, sent } => match self.sock.write(&data[*sent..]) {
                    Ok(n) => {
                        self.visit.bytes += n as u64;
                        self.shared.traffic.wrote(n);
                        *sent += n;
                        if *sent == data.len() {
                            // Back to the top of `while True`; dropping
                            // `data` gives its buffer back to the loop.
                            self.state = EchoState::WaitRead;
                            return self.wait_read();
                        }
                    }
                    Err(e) if would_block(&e) => {
                        self.shared.missed();
                        return self.wait_write();
                    }
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return self.finish(Ending::Failed(e)),
                },
            }
        }
    }

    fn source(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn take_job(&mut self) -> Option<(Work, Vec<u8>)> {
        self.job.take()
    }
}
