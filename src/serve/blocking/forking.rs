//! The process-per-client model: the parent accepts, and forks a child
//! for each client; the child serves that one client with the blocking
//! echo and exits. Python's `socketserver.ForkingTCPServer`, inetd, the
//! oldest Unix server.
//!
//! What a process costs, which this model is here to show: a `fork` per
//! client (the kernel copies the page tables and marks every page
//! copy-on-write), a process the scheduler switches between, and memory
//! that the parent and child share only until either writes. What it
//! buys: a child that crashes (`--crash-on`) takes only its own client.
//!
//! **What a forked child may do.** `fork` copies only the thread that
//! called it. If another thread of the parent held a lock at that moment
//! (the allocator's, stderr's, one of ours), the child's copy of that lock
//! stays held forever, and the child blocks the first time it asks for it.
//! So the child makes only system calls: it reads and writes its socket
//! with a buffer on its stack (the blocking echo allocates nothing), writes
//! one datagram to tell the parent how it went, and leaves with `_exit`,
//! running no destructor. Everything that allocates or prints (the log
//! line, the counters) the parent does, when the child's datagram and its
//! exit status come back. (`--processes` avoids the question another way:
//! its workers are whole new programs.)
//!
//! **Reaping.** A child that exits stays a zombie until its parent waits
//! for it. The parent hears SIGCHLD through a self-pipe in its poller, and
//! asks each child it made, `waitpid(pid, WNOHANG)`, whether it has ended:
//! no zombie outlives a turn of the parent's loop. (`waitpid(-1)` would
//! take any ended child in one call, but also a child that is not ours,
//! such as a server a test started beside this one.) `--max-connections` bounds the children, as it bounds threads
//! elsewhere. The parent keeps its own descriptor of each child's socket
//! (two per client in all): on shutdown it shuts them down, each child's
//! blocked read returns at once and it reports and exits as after a
//! client's close; one that does not is sent SIGTERM (the child's
//! handlers are the default ones), then SIGKILL, and reaped before the
//! parent returns.
//!
//! The lab's part (`src/lab/`, skippable on a first read): a `--stats`
//! line whose traffic arrives as each child ends and reports its bytes.
//!
//! Tutorial: `docs/tutorial/10-threads-or-processes.md`.

use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{Echoed, echo, with_stats};
use crate::lab::live::Line;
use crate::poller::{Events, Interest, Poller};
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::readiness::Listener;
use crate::stats::Ending;
use crate::sys::ChildBell;

/// How long children get to die after the shutdown's SIGTERM before
/// they are killed.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// The keys of the parent's poller.
const LISTENER: usize = 0;
const BELL: usize = 1;
const CHILDREN: usize = 2;
const REPORTS: usize = 3;

/// What a child tells its parent as it exits: its pid, what it echoed,
/// how it ended. One datagram, sent with one system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Report {
    pid: u32,
    echoed: Echoed,
    /// 0 closed, 1 idle timeout, 2 failed with `errno`, 3 reset with
    /// nothing owed.
    how: u8,
    errno: i32,
}

impl Report {
    const SIZE: usize = 25;

    fn encode(self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[..4].copy_from_slice(&self.pid.to_le_bytes());
        out[4..12].copy_from_slice(&self.echoed.bytes.to_le_bytes());
        out[12..20].copy_from_slice(&self.echoed.reads.to_le_bytes());
        out[20] = self.how;
        out[21..].copy_from_slice(&self.errno.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Report> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Report {
            pid: u32::from_le_bytes(bytes[..4].try_into().ok()?),
            echoed: Echoed {
                bytes: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
                reads: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
            },
            how: bytes[20],
            errno: i32::from_le_bytes(bytes[21..].try_into().ok()?),
        })
    }

    fn ending(self) -> Ending {
        match self.how {
            0 => Ending::Closed,
            1 => Ending::IdleTimeout,
            3 => Ending::Reset,
            _ => Ending::Failed(io::Error::from_raw_os_error(self.errno)),
        }
    }
}

/// Serves every client in a process of its own until shutdown.
///
/// # Errors
/// If the listener breaks, or the parent's poller fails.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let poller = Poller::new(ctx.config.poller)?;
    let bell = ctx.shutdown.bell()?;
    let children = ChildBell::new()?;
    let (reports, report_writer) = UnixDatagram::pair()?;
    reports.set_nonblocking(true)?;
    let _bell = poller.register(&bell, BELL, Interest::READ)?;
    let _children = poller.register(&children, CHILDREN, Interest::READ)?;
    let _reports = poller.register(&reports, REPORTS, Interest::READ)?;
    let mut parent = Parent {
        listener: Listener::register(&poller, &listener, LISTENER)?,
        children: HashMap::new(),
        reports: &reports,
        report_writer: &report_writer,
        ctx,
    };
    // --stats: the clients served now are the children alive (each line
    // also counts the processes and their memory).
    let stats = |line: &mut Line| ctx.traffic.fill(line, ctx.stats.active());
    with_stats(ctx, "forking", stats, || {
        let served = parent.serve(&poller, &children);
        parent.stop_all(&poller, &children);
        ctx.shutdown.trigger();
        served
    })
}

/// The parent: its listener, and a visit per child alive.
struct Parent<'a> {
    listener: Listener<'a>,
    /// Each child alive: the visit its client makes, and the parent's own
    /// descriptor of its socket, to shut it down at shutdown.
    children: HashMap<u32, (Visit<'a, AtomicU64>, TcpStream)>,
    reports: &'a UnixDatagram,
    report_writer: &'a UnixDatagram,
    ctx: &'a Context,
}

impl Parent<'_> {
    fn serve(&mut self, poller: &Poller, children: &ChildBell) -> io::Result<()> {
        let mut events = Events::new();
        while !self.ctx.shutdown.is_triggered() {
            let timeout = self
                .listener
                .paused_until()
                .map(|at| at.saturating_duration_since(Instant::now()));
            poller.wait(&mut events, timeout)?;
            for event in events.iter() {
                match event.key {
                    LISTENER => self.accept_clients()?,
                    BELL => self.ctx.shutdown.trigger(),
                    _ => {}
                }
            }
            children.drain();
            self.collect();
            self.listener.resume_if_due(Instant::now())?;
        }
        Ok(())
    }

    /// Accepts every waiting client and forks a child for each.
    fn accept_clients(&mut self) -> io::Result<()> {
        while let Some((stream, peer)) = self.listener.next_client(&self.ctx.stats)? {
            let visit = Visit::new(peer, &self.ctx.traffic, &self.ctx.stats);
            let parent = std::process::id();
            match crate::sys::fork() {
                Ok(Some(pid)) => {
                    self.children.insert(pid, (visit, stream));
                }
                Ok(None) => child(stream, parent, self.report_writer, self.ctx),
                Err(e) => visit.end(Ending::Failed(e)),
            }
        }
        Ok(())
    }

    /// Reads the children's reports, and reaps every child that ended:
    /// its visit ends with what it reported, or how it died.
    fn collect(&mut self) {
        self.read_reports();
        // Only the children it made: the process may have others (a test
        // runs this model beside servers it started as processes).
        let ended: Vec<(u32, ExitStatus)> = self
            .children
            .keys()
            .filter_map(|&pid| Some((pid, crate::sys::reap(pid)?)))
            .collect();
        if !ended.is_empty() {
            // A report sent just before an exit is read before deciding.
            self.read_reports();
        }
        for (pid, status) in ended {
            if let Some((mut visit, _socket)) = self.children.remove(&pid) {
                if let Some(ending) = died(status) {
                    visit.ends(ending);
                } else if self.ctx.shutdown.is_triggered() {
                    visit.ends(Ending::Shutdown);
                }
            }
        }
    }

    fn read_reports(&mut self) {
        let mut datagram = [0; Report::SIZE];
        while let Ok(n) = self.reports.recv(&mut datagram) {
            let Some(report) = Report::decode(&datagram[..n]) else {
                continue;
            };
            if let Some((visit, _)) = self.children.get_mut(&report.pid) {
                visit.bytes = report.echoed.bytes;
                visit.ends(report.ending());
                // --stats: a child's traffic is known when it ends.
                if self.ctx.config.stats.is_some() {
                    let echoed = report.echoed;
                    self.ctx.traffic.reads(echoed.reads, echoed.bytes);
                    self.ctx.traffic.wrote(echoed.bytes as usize);
                }
            }
        }
    }

    /// Shuts every child's socket down, so that each finishes as after a
    /// close, and reaps them all: SIGTERM to those still alive after
    /// [`STOP_PATIENCE`], SIGKILL after twice that.
    fn stop_all(&mut self, poller: &Poller, children: &ChildBell) {
        for (_, socket) in self.children.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        let started = Instant::now();
        let mut signalled = None;
        let mut events = Events::new();
        while !self.children.is_empty() {
            self.collect();
            let waited = started.elapsed();
            let signal = match waited {
                _ if waited >= 2 * STOP_PATIENCE => Some(libc::SIGKILL),
                _ if waited >= STOP_PATIENCE => Some(libc::SIGTERM),
                _ => None,
            };
            if signal.is_some() && signal != signalled {
                for &pid in self.children.keys() {
                    let _ = crate::sys::signal(pid, signal.unwrap_or(libc::SIGKILL));
                }
                signalled = signal;
            }
            let _ = poller.wait(&mut events, Some(Duration::from_millis(100)));
            children.drain();
        }
    }
}

/// How a child that did not exit normally ended, if it did not: killed by
/// our shutdown, or by a crash.
fn died(status: ExitStatus) -> Option<Ending> {
    match status.signal() {
        Some(libc::SIGTERM) => Some(Ending::Shutdown),
        Some(libc::SIGABRT) => Some(Ending::Failed(io::Error::other("its process aborted"))),
        Some(_) => Some(Ending::Failed(io::Error::other("its process was killed"))),
        None => None,
    }
}

/// The child: serves `stream` with the blocking echo, reports, exits.
/// System calls only from here on (see the module's doc).
fn child(stream: TcpStream, parent: u32, reports: &UnixDatagram, ctx: &Context) -> ! {
    crate::sys::default_stop_signals();
    crate::sys::close_other_descriptors([stream.as_raw_fd(), reports.as_raw_fd()]);
    // A parent killed outright (SIGKILL) runs no shutdown: its children
    // end with it, as `--processes` workers end with their master.
    crate::sys::die_with_parent(parent);
    let mut echoed = Echoed::default();
    let served = stream
        .set_nonblocking(false)
        .map_err(Ending::Failed)
        .and_then(|()| echo(&stream, ctx, &mut echoed));
    let (how, errno) = match served {
        Ok(()) => (0, 0),
        Err(Ending::IdleTimeout) => (1, 0),
        Err(Ending::Reset) => (3, 0),
        Err(Ending::Failed(e)) => (2, e.raw_os_error().unwrap_or(0)),
        Err(_) => (2, 0),
    };
    let report = Report {
        pid: std::process::id(),
        echoed,
        how,
        errno,
    };
    let _ = reports.send(&report.encode());
    crate::sys::exit_now(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report is read back as it was written.
    #[test]
    fn reports_make_the_round_trip() {
        let report = Report {
            pid: 42,
            echoed: Echoed {
                bytes: 1 << 40,
                reads: 7,
            },
            how: 2,
            errno: libc::ECONNRESET,
        };
        assert_eq!(Report::decode(&report.encode()), Some(report));
        assert!(Report::decode(&[0; 3]).is_none());
    }
}
