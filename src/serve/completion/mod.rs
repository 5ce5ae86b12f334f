//! The completion model: one thread, one io_uring, and no readiness at all.
//!
//! Every other loop asks the kernel *"tell me when I can read"* and then
//! reads: readiness, two system calls per echoed message at best (a read
//! and a write, plus a share of the wait). This one says *"read into
//! buffers I gave you, and tell me when it is done"*: completion, the
//! design of Windows' IOCP behind asyncio's `ProactorEventLoop`, which the
//! notes name in passing. Linux has it as io_uring: two rings shared with
//! the kernel, one where we queue operations, one where the kernel posts
//! their completions. A turn of the loop is one `io_uring_enter`: it
//! submits everything queued and waits for at least one completion.
//!
//! What the kernel offers, and why each is here:
//! - **Multishot accept**: one submission accepts every client until it is
//!   cancelled; each client is a completion carrying its descriptor. No
//!   accept call per client, no listener readiness.
//! - **Multishot receive into a provided buffer ring**: one submission per
//!   connection receives every message. The kernel takes a buffer from a
//!   ring of [`ring::BUFFERS`] buffers we lent it only when data arrives, so an
//!   idle client holds no buffer (the notes' `recv(4096)` makes its bytes
//!   only when they come, too) and the receive is never re-armed.
//! - **Send from the same buffer**: the echo goes out of the buffer the
//!   data came in, with no copy. A short send is resubmitted for the rest;
//!   the buffer goes back to the kernel once every byte is out.
//! - **Back-pressure**: a client that does not read leaves its buffers with
//!   us; past [`MAX_HELD`] bytes we cancel its receive, and submit it again
//!   once half is sent: it stops being read, as in the other models.
//! - **Buffers running out** (`ENOBUFS`, every buffer held by clients that
//!   do not read): the receives that found none end, and are submitted
//!   again as buffers come back.
//! - Time: the turn's `io_uring_enter` takes a timeout (the next idle
//!   sweep, back-off, or `--stats` line); the shutdown's bell is one poll
//!   operation. `--threads N` runs N loops, one ring each.
//!
//! **Who owns a buffer.** While an operation is in flight the kernel owns
//! its memory: it may write into a receive buffer, or read a send's bytes,
//! at any moment until the completion comes. Freeing, reusing or moving
//! that memory meanwhile is a use-after-free that no borrow checker sees,
//! because no Rust reference is held: the kernel holds a raw address.
//! (This is the hard part of every io_uring runtime: a future that owns a
//! buffer and is dropped mid-operation frees memory the kernel still
//! writes, the cancellation problems of tokio-uring and monoio.) Our rule:
//! memory handed to the kernel belongs to the [`ring::Ring`] until the
//! completion hands it back. A received buffer is a [`ring::Buf`] that
//! cannot be copied; `send` takes it by value and the completion returns
//! it; only `recycle` gives it back to the kernel. And a socket is closed
//! only when it has no operation in flight: closing a connection shuts
//! its socket down (which ends its receive and any blocked send at once),
//! waits for those completions, and only then drops it. At shutdown the
//! loop waits the same way for every operation before the ring and its
//! memory go.
//!
//! Where it breaks: memory is pinned per loop (1 MiB of provided buffers,
//! whatever the clients do), it needs Linux 6.0 or later with io_uring
//! allowed (`kernel.io_uring_disabled`, container seccomp profiles often
//! refuse it; then [`available`] says why and points to `--mode async`),
//! and `--work` is not offered: a completion loop that computes stalls like
//! any other, and chapter 7 shows that on the readiness loops.
//!
//! Tutorial: `docs/tutorial/9-completion-instead-of-readiness.md`.

pub mod ring;

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use ring::{Buf, Completion, Kind, Ring, Token};

use super::Context;
use super::accept::{Accepted, sort};
use super::live::{Reporter, Traffic};
use super::selector::sweep_interval;
use super::stall::StallWatch;
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::stats::Ending;

/// The most bytes one client may have received and not yet had echoed
/// before its receive is cancelled: as the selector's unsent cap.
pub const MAX_HELD: usize = 64 * 1024;

/// Submissions the ring holds at once.
const RING_ENTRIES: u32 = 1024;

/// How long shutdown waits for the kernel to finish what is in flight
/// after every socket was shut down (it takes microseconds).
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);

/// The environment variable that makes io_uring unavailable, to try the
/// fallback message (and test it) on a machine that has io_uring.
pub const DISABLE_VAR: &str = "ECHO_LAB_NO_IO_URING";

/// Whether this machine lets us run the completion model, and if not, why,
/// in words for a one-line error.
///
/// # Errors
/// Why not: the variable above is set, the kernel is older than 6.0, or
/// it refuses io_uring or its buffer ring.
pub fn available() -> Result<(), String> {
    if std::env::var_os(DISABLE_VAR).is_some() {
        return Err(format!("{DISABLE_VAR} is set"));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (6, 0) {
        return Err(format!(
            "Linux {}.{} is older than 6.0, which multishot receive needs",
            version.0, version.1
        ));
    }
    Ring::new(8).map(drop).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => {
            "the kernel refused io_uring (kernel.io_uring_disabled, or a seccomp filter)".to_owned()
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring".to_owned(),
        _ => format!("the kernel refused an io_uring: {e}"),
    })
}

/// The one-line error for a machine without io_uring.
pub fn unavailable(why: &str) -> io::Error {
    io::Error::other(format!(
        "io_uring is not available here: {why}; --mode async serves the same clients with readiness"
    ))
}

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If io_uring is not available, or the ring or the listener fails.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    available().map_err(|why| unavailable(&why))?;
    let bell = ctx.shutdown.bell()?;
    let mut ring = Ring::new(RING_ENTRIES)?;
    ring.poll_readable(bell.as_raw_fd(), token(Kind::Bell, 0, 0))?;
    ring.accept(listener.as_raw_fd(), token(Kind::Accept, 0, 0))?;
    let mut proactor = Proactor {
        ring,
        listener: &listener,
        conns: Vec::new(),
        vacant: Vec::new(),
        starved: VecDeque::new(),
        accept_paused_until: None,
        next_idle_sweep: ctx
            .config
            .idle_timeout
            .map(|t| Instant::now() + sweep_interval(t)),
        stall: ctx.stall_watch("completion"),
        reporter: ctx.reporter("completion"),
        traffic: Traffic::default(),
        ctx,
    };
    let served = proactor.serve();
    proactor.close_all();
    proactor.report(Instant::now(), true);
    served
}

fn token(kind: Kind, slot: u32, generation: u32) -> Token {
    Token {
        kind,
        slot,
        generation,
    }
}

/// One client, and what of it is with the kernel.
struct Conn {
    /// Closed only once `receiving` and `sending` are both false.
    stream: TcpStream,
    peer: SocketAddr,
    /// Bumped each time the slot is reused.
    generation: u32,
    /// Its multishot receive is in flight.
    receiving: bool,
    /// Its head buffer is out in a send.
    sending: bool,
    /// Received, not yet echoed, oldest first (the one being sent is
    /// with the ring, not here).
    queue: VecDeque<Buf>,
    /// Bytes received and not echoed yet (including the one in a send).
    held: usize,
    /// Its receive was cancelled for back-pressure, or ran out of buffers:
    /// submit it again when that passes.
    paused: bool,
    /// The client sent its last byte.
    read_closed: bool,
    /// Set once it must go; it goes when nothing of it is in flight.
    ending: Option<Ending>,
    /// Its socket was shut down and its receive cancelled, to end them.
    shut: bool,
    echoed: u64,
    last_active: Instant,
}

/// The loop and everything it owns.
struct Proactor<'a> {
    ring: Ring,
    listener: &'a TcpListener,
    /// Connections by slot; `None` is a vacant slot.
    conns: Vec<Option<Conn>>,
    /// Vacant slots, and the generation each had last.
    vacant: Vec<(u32, u32)>,
    /// Slots whose receive ended for want of buffers.
    starved: VecDeque<(u32, u32)>,
    accept_paused_until: Option<Instant>,
    next_idle_sweep: Option<Instant>,
    stall: StallWatch<'a>,
    reporter: Option<Reporter>,
    traffic: Traffic,
    ctx: &'a Context,
}

impl Proactor<'_> {
    fn serve(&mut self) -> io::Result<()> {
        while !self.ctx.shutdown.is_triggered() {
            self.stall.waiting();
            self.ring.submit_and_wait(self.timeout())?;
            let now = Instant::now();
            let mut completions = 0;
            while let Some(completion) = self.ring.next_completion() {
                completions += 1;
                self.complete(completion, now)?;
            }
            self.stall.woke(now, completions);
            self.rearm_starved()?;
            self.run_timers(now)?;
            if self.reporter.as_ref().is_some_and(|r| r.due(now)) {
                self.report(now, false);
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Option<Duration> {
        let report = self.reporter.as_ref().map(Reporter::deadline);
        let next = [self.accept_paused_until, self.next_idle_sweep, report]
            .into_iter()
            .flatten()
            .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn report(&mut self, now: Instant, last: bool) {
        let open = self.conns.iter().flatten().count() as u64;
        let (traffic, turns) = (&self.traffic, &mut self.stall.turns);
        let (in_flight, free) = (
            self.ring.in_flight() as u64,
            self.ring.free_buffers() as u64,
        );
        let timers = u64::from(self.accept_paused_until.is_some())
            + u64::from(self.next_idle_sweep.is_some());
        if let Some(reporter) = &mut self.reporter {
            reporter.report(now, last, |line, seconds| {
                traffic.fill(line, seconds, open);
                if let Some(turns) = turns {
                    turns.fill(line, seconds);
                }
                // Nothing wakes this loop from another thread.
                line.count("timers", timers)
                    .count("cross_wakeups", 0)
                    .count("in_flight", in_flight)
                    .count("free_buffers", free);
            });
        }
    }

    /// What one completion means.
    fn complete(&mut self, done: Completion, now: Instant) -> io::Result<()> {
        let Completion {
            token,
            result,
            more,
            received,
            sent,
        } = done;
        match token.kind {
            Kind::Bell => self.ctx.shutdown.trigger(),
            Kind::Accept => self.accepted(result, more)?,
            Kind::Cancel => {}
            Kind::Recv => {
                let Some(conn) = live(&mut self.conns, token) else {
                    // Its connection is gone: give the buffer back.
                    if let Some(buf) = received {
                        self.ring.recycle(buf);
                    }
                    return Ok(());
                };
                if !more {
                    conn.receiving = false;
                }
                match received {
                    Some(buf) if result > 0 => {
                        conn.held += buf.len();
                        conn.queue.push_back(buf);
                        conn.last_active = now;
                        self.traffic.read(result as usize);
                    }
                    buf => {
                        match -result {
                            0 => conn.read_closed = true,
                            // Cancelled for back-pressure or closing.
                            libc::ECANCELED => {}
                            libc::ENOBUFS => {
                                conn.paused = true;
                                self.starved.push_back((token.slot, token.generation));
                            }
                            errno => {
                                let e = io::Error::from_raw_os_error(errno);
                                conn.ending.get_or_insert(Ending::Failed(e));
                            }
                        }
                        if let Some(buf) = buf {
                            self.ring.recycle(buf);
                        }
                    }
                }
                self.settle(token)?;
            }
            Kind::Send => {
                let mut buf = sent.expect("a send completion returns its buffer");
                let Some(conn) = live(&mut self.conns, token) else {
                    self.ring.recycle(buf);
                    return Ok(());
                };
                conn.sending = false;
                if result < 0 {
                    let e = io::Error::from_raw_os_error(-result);
                    conn.ending.get_or_insert(Ending::Failed(e));
                    conn.held -= buf.len();
                    self.ring.recycle(buf);
                } else {
                    let n = result as usize;
                    buf.consume(n);
                    conn.held -= n;
                    conn.echoed += n as u64;
                    conn.last_active = now;
                    self.traffic.wrote(n);
                    if buf.is_empty() {
                        self.ring.recycle(buf);
                    } else {
                        // A short send: the rest goes first.
                        conn.queue.push_front(buf);
                    }
                }
                self.settle(token)?;
            }
        }
        Ok(())
    }

    /// After any completion for a connection: send the next buffer,
    /// pause or resume its receive, or let it go.
    fn settle(&mut self, token: Token) -> io::Result<()> {
        let (slot, generation) = (token.slot, token.generation);
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        let fd = conn.stream.as_raw_fd();
        if conn.ending.is_none() && conn.read_closed && conn.held == 0 && !conn.receiving {
            // Half-closed, and every byte is back: done.
            conn.ending = Some(Ending::Closed);
        }
        if conn.ending.is_some() {
            if !conn.receiving && !conn.sending {
                return self.reap(slot);
            }
            if !std::mem::replace(&mut conn.shut, true) {
                // Its receive and any send end at once.
                let _ = conn.stream.shutdown(Shutdown::Both);
                if conn.receiving {
                    self.ring
                        .cancel(self::token(Kind::Recv, slot, generation))?;
                }
            }
            return Ok(());
        }
        if !conn.sending {
            if let Some(buf) = conn.queue.pop_front() {
                conn.sending = true;
                self.ring
                    .send(fd, buf, self::token(Kind::Send, slot, generation))?;
            }
        }
        let conn = self.conns[slot as usize].as_mut().expect("still here");
        if conn.receiving && conn.held >= MAX_HELD && !conn.paused {
            // Back-pressure: stop reading a client that does not read.
            conn.paused = true;
            self.ring
                .cancel(self::token(Kind::Recv, slot, generation))?;
        } else if !conn.receiving && !conn.read_closed && conn.held < MAX_HELD / 2 {
            let starved = conn.paused && self.ring.free_buffers() == 0;
            if !starved {
                conn.paused = false;
                conn.receiving = true;
                self.ring
                    .receive(fd, self::token(Kind::Recv, slot, generation))?;
            }
        }
        Ok(())
    }

    /// Submits again the receives that ran out of buffers, while there
    /// are buffers to receive into.
    fn rearm_starved(&mut self) -> io::Result<()> {
        while self.ring.free_buffers() > 0 {
            let Some((slot, generation)) = self.starved.pop_front() else {
                break;
            };
            if live(&mut self.conns, token(Kind::Recv, slot, generation)).is_some() {
                self.settle(token(Kind::Recv, slot, generation))?;
            }
        }
        Ok(())
    }

    /// A client accepted by the kernel (or the accept's failure).
    fn accepted(&mut self, result: i32, more: bool) -> io::Result<()> {
        let accepted = if result >= 0 {
            // SAFETY: the kernel just created this descriptor for us, and
            // nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(result) };
            // A multishot accept does not say who connected; a client that
            // reset already cannot say either. It is served like any other
            // (its receive fails at once), as `accept()` serves it in the
            // other models.
            let peer = stream
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            Ok((stream, peer))
        } else {
            Err(io::Error::from_raw_os_error(-result))
        };
        let mut rearm = !more;
        match sort(accepted, &self.ctx.stats, Blocking::Yes) {
            Some(Accepted::Client(stream, peer)) => self.register(stream, peer)?,
            Some(Accepted::Empty) | None => {}
            Some(Accepted::BackOff) => {
                // Out of descriptors: the kernel ended the multishot
                // accept; submit it again after a pause, not at once.
                self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                rearm = false;
            }
            Some(Accepted::Fatal(e)) if !self.ctx.shutdown.is_triggered() => return Err(e),
            Some(Accepted::Fatal(_)) => rearm = false,
        }
        if rearm {
            return self.rearm_accept();
        }
        Ok(())
    }

    /// Submits the accept again (the kernel ended it), unless accepting is
    /// paused.
    fn rearm_accept(&mut self) -> io::Result<()> {
        if self.accept_paused_until.is_some() {
            return Ok(());
        }
        self.ring
            .accept(self.listener.as_raw_fd(), token(Kind::Accept, 0, 0))
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let (slot, generation) = match self.vacant.pop() {
            Some((slot, last)) => (slot, last.wrapping_add(1)),
            None => {
                self.conns.push(None);
                ((self.conns.len() - 1) as u32, 0)
            }
        };
        let fd = stream.as_raw_fd();
        self.conns[slot as usize] = Some(Conn {
            stream,
            peer,
            generation,
            receiving: true,
            sending: false,
            queue: VecDeque::new(),
            held: 0,
            paused: false,
            read_closed: false,
            ending: None,
            shut: false,
            echoed: 0,
            last_active: Instant::now(),
        });
        self.traffic.accepted();
        self.ring.receive(fd, token(Kind::Recv, slot, generation))
    }

    /// Drops a connection with nothing in flight: its buffers go back to
    /// the kernel, its socket closes, its slot is free.
    fn reap(&mut self, slot: u32) -> io::Result<()> {
        let Some(conn) = self.conns[slot as usize].take() else {
            return Ok(());
        };
        debug_assert!(
            !conn.receiving && !conn.sending,
            "closing under an operation in flight"
        );
        for buf in conn.queue {
            self.ring.recycle(buf);
        }
        self.vacant.push((slot, conn.generation));
        self.traffic.closed();
        let ending = conn.ending.unwrap_or(Ending::Closed);
        self.ctx.stats.disconnected(conn.peer, conn.echoed, ending);
        Ok(())
    }

    /// Ends `slot` with `ending`, as soon as the kernel lets go of it.
    fn end(&mut self, slot: u32, ending: Ending) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        conn.ending.get_or_insert(ending);
        let token = token(Kind::Recv, slot, conn.generation);
        self.settle(token)
    }

    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.ring
                .accept(self.listener.as_raw_fd(), token(Kind::Accept, 0, 0))?;
        }
        if let (Some(sweep), Some(idle)) = (self.next_idle_sweep, self.ctx.config.idle_timeout) {
            if sweep <= now {
                let idle_slots: Vec<u32> = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, conn)| match conn {
                        Some(c)
                            if c.ending.is_none() && now.duration_since(c.last_active) >= idle =>
                        {
                            Some(slot as u32)
                        }
                        _ => None,
                    })
                    .collect();
                for slot in idle_slots {
                    self.end(slot, Ending::IdleTimeout)?;
                }
                self.next_idle_sweep = Some(now + sweep_interval(idle));
            }
        }
        Ok(())
    }

    /// At shutdown: ends every connection and the accept, then waits until
    /// the kernel has finished with every operation, so that no memory or
    /// descriptor goes while it is still in use.
    fn close_all(&mut self) {
        let _ = self.ring.cancel(token(Kind::Accept, 0, 0));
        let _ = self.ring.cancel(token(Kind::Bell, 0, 0));
        for slot in 0..self.conns.len() as u32 {
            let _ = self.end(slot, Ending::Shutdown);
        }
        let deadline = Instant::now() + SHUTDOWN_PATIENCE;
        while self.ring.in_flight() > 0 && Instant::now() < deadline {
            if self
                .ring
                .submit_and_wait(Some(Duration::from_millis(100)))
                .is_err()
            {
                break;
            }
            while let Some(completion) = self.ring.next_completion() {
                let _ = self.complete(completion, Instant::now());
            }
        }
    }
}

/// The live connection `token` was for, if it is still the same one (not a
/// newer one in the same slot).
fn live(conns: &mut [Option<Conn>], token: Token) -> Option<&mut Conn> {
    match conns.get_mut(token.slot as usize) {
        Some(Some(conn)) if conn.generation == token.generation => Some(conn),
        _ => None,
    }
}
