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
//!   ring of [`ring::BUFFERS`] buffers we lent it only when data arrives,
//!   so an idle client holds no buffer (the notes' `recv(4096)` makes its
//!   bytes only when they come, too) and the receive is never re-armed.
//! - **Send from the same buffer**: the echo goes out of the buffer the
//!   data came in, with no copy, and the buffer goes back to the kernel as
//!   soon as the send completes.
//! - **The pool never waits on a client**: that send is made with
//!   `MSG_DONTWAIT`, so it either goes at once or comes back with `EAGAIN`.
//!   Then, and for a short send, and for bytes that arrive while a send is
//!   in flight, the bytes are copied into the connection's own memory and
//!   the buffer returns to the pool; those bytes go out by sends that wait
//!   for room. Otherwise a client that does not read would keep a 4 KiB
//!   buffer per message it sent, and two of them sending small messages
//!   would hold the whole pool, starving everyone.
//! - **Back-pressure**: past [`MAX_HELD`] bytes of a client not yet echoed
//!   we cancel its receive, and submit it again once half is sent: a client
//!   that does not read stops being read, as in the other models, and
//!   holds at most that much memory.
//! - **Buffers running out** (`ENOBUFS`, more arrivals in one turn than
//!   there are buffers): the receives that found none end, and are
//!   submitted again as buffers come back.
//! - **Fairness**: a turn handles the completions already posted, each at
//!   most one 4 KiB buffer, then submits and waits again. A client that
//!   sends without pause adds completions to the queue as everyone else
//!   does, in the order the data arrived; it cannot keep the loop from the
//!   others' completions behind its own. (`tests/fairness.rs` holds every
//!   model to that.)
//! - Time: the turn's `io_uring_enter` takes a timeout (the next idle
//!   sweep, back-off, `--work wait` timer or `--stats` line); the
//!   shutdown's bell is one poll operation. `--threads N` runs N loops,
//!   one ring each.
//! - `--work` as in the readiness loops (chapter 7): `cpu` and `sleep` run
//!   on the loop and stall it, `wait` is a timer of the loop, and with
//!   `--offload N` a pool thread does the work and rings a doorbell the
//!   ring polls. Bytes that arrive while a chunk is with its work wait in
//!   the connection and become its next chunk, as the selector's next
//!   read would.
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
//! it; only `recycle` gives it back to the kernel. Bytes the connection
//! keeps itself are a `Vec` moved into the send and back out of its
//! completion, the same way. And a socket is closed only when it has no
//! operation in flight: closing a connection shuts its socket down (which
//! ends its receive and any blocked send at once), waits for those
//! completions, and only then drops it. At shutdown the loop waits the
//! same way for every operation before the ring and its memory go.
//!
//! Where it breaks: memory is pinned per loop (4 MiB of provided buffers,
//! whatever the clients do), and it needs Linux 6.1 or later with io_uring
//! allowed (`kernel.io_uring_disabled`, container seccomp profiles often
//! refuse it; then [`available`] says why and points to `--mode async`).
//! And a completion loop that computes stalls like any other: completion
//! changes how the loop waits, not what blocks it.
//!
//! Tutorial: `docs/tutorial/9-completion-instead-of-readiness.md`.

pub mod ring;

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ring::{Buf, Completion, Kind, Outgoing, Ring, Token};

use super::Context;
use super::accept::{Accepted, sort};
use super::live::{Reporter, Traffic};
use super::offload::{Finished, Job, Offload};
use super::selector::sweep_interval;
use super::stall::StallWatch;
use super::work::{Work, WorkKind};
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::stats::Ending;

/// The most bytes one client may have received and not yet had echoed
/// before its receive is cancelled: as the selector's unsent cap.
pub const MAX_HELD: usize = 64 * 1024;

/// Submissions the ring holds at once.
pub(crate) const RING_ENTRIES: u32 = 1024;

/// How long shutdown waits for the kernel to finish what is in flight
/// after every socket was shut down (it takes microseconds).
pub(crate) const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);

/// The environment variable that makes io_uring unavailable, to try the
/// fallback message (and test it) on a machine that has io_uring.
pub const DISABLE_VAR: &str = "ECHO_LAB_NO_IO_URING";

/// Whether this machine lets us run the completion model, and if not, why,
/// in words for a one-line error.
///
/// # Errors
/// Why not: the variable above is set, the kernel is older than 6.1, or
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
    // Multishot receive came in 6.0; DEFER_TASKRUN, which the ring is set
    // up with, in 6.1 (on 6.0 the setup fails with a bare EINVAL).
    if version < (6, 1) {
        return Err(format!(
            "Linux {}.{} is older than 6.1, which the ring's deferred completion work (DEFER_TASKRUN) needs",
            version.0, version.1
        ));
    }
    Ring::new(8).map(drop).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => {
            "the kernel refused io_uring (kernel.io_uring_disabled, or a seccomp filter)".to_owned()
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring".to_owned(),
        Some(libc::EINVAL) => format!(
            "the kernel refused the ring's setup ({e}): it wants SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1) and a provided buffer ring"
        ),
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
    let acceptor = Acceptor::start(&listener, &mut ring)?;
    let plan = match ctx.config.work {
        Some(work) => Some(WorkPlan::new(work, ctx.config.offload, &mut ring)?),
        None => None,
    };
    let mut proactor = Proactor {
        ring,
        acceptor,
        conns: Slots::new(),
        starved: VecDeque::new(),
        next_idle_sweep: ctx
            .config
            .idle_timeout
            .map(|t| Instant::now() + sweep_interval(t)),
        plan,
        jobs_done: 0,
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

/// The token of an operation of `kind` for connection `(slot, generation)`.
pub(crate) fn token(kind: Kind, slot: u32, generation: u32) -> Token {
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
    /// Its multishot receive is in flight.
    receiving: bool,
    /// A send of its bytes is in flight.
    sending: bool,
    /// Bytes to echo after the send in flight, oldest first, in the
    /// connection's own memory: what the socket had no room for, and what
    /// arrived while a send was out. Empty, and holding no memory, for a
    /// client that reads its echoes.
    unsent: VecDeque<Vec<u8>>,
    /// With `--work`: a chunk of it is with its work (a timer or a pool
    /// thread).
    working: bool,
    /// With `--work wait`: that chunk, while its timer runs.
    waiting: Vec<u8>,
    /// With `--work`: bytes that arrived while a chunk was with its work,
    /// the next chunk.
    unworked: Vec<u8>,
    /// Bytes received and not echoed yet, wherever they are.
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

impl Conn {
    /// Queues a copy of `bytes` to echo after everything before them.
    fn keep(&mut self, bytes: &[u8]) {
        match self.unsent.back_mut() {
            Some(last) => last.extend_from_slice(bytes),
            None => self.unsent.push_back(bytes.to_vec()),
        }
    }
}

/// What `--work` needs from the loop: the work, the pool it goes to with
/// `--offload`, and the deadlines of the clients that wait.
struct WorkPlan {
    work: Work,
    /// With `--offload`: the pool.
    pool: Option<Pool>,
    /// Clients waiting out `wait` work: (deadline, slot, generation).
    timers: BTreeSet<(Instant, u32, u32)>,
}

/// `--offload`: the pool threads, where they say a job is done, and the
/// doorbell they ring then (the ring polls it).
struct Pool {
    offload: Offload,
    finished: Finished<(u32, u32)>,
    doorbell: UnixStream,
}

impl WorkPlan {
    fn new(work: Work, offload: usize, ring: &mut Ring) -> io::Result<WorkPlan> {
        let pool = match offload {
            0 => None,
            threads => {
                let (doorbell, ringer) = UnixStream::pair()?;
                doorbell.set_nonblocking(true)?;
                // A full doorbell is already ringing: never block a job.
                ringer.set_nonblocking(true)?;
                let finished = Finished::ringing(move || {
                    let _ = (&ringer).write(&[1]);
                });
                let offload = Offload::start(threads, "completion")?;
                ring.poll_readable(doorbell.as_raw_fd(), token(Kind::Jobs, 0, 0))?;
                Some(Pool {
                    offload,
                    finished,
                    doorbell,
                })
            }
        };
        Ok(WorkPlan {
            work,
            pool,
            timers: BTreeSet::new(),
        })
    }

    /// Whether the loop goes on while a chunk is worked on (a timer, the
    /// pool), rather than doing the work itself.
    fn defers(&self) -> bool {
        self.work.kind == WorkKind::Wait || self.pool.is_some()
    }

    /// Sends `chunk` of client `(slot, generation)` to its work.
    fn start(&mut self, slot: u32, generation: u32, chunk: Vec<u8>, conn: &mut Conn, now: Instant) {
        conn.working = true;
        match &self.pool {
            // `run_in_executor`: the pool works, the loop goes on.
            Some(pool) if self.work.blocks() => pool.offload.submit(Job {
                work: self.work,
                data: chunk,
                done: pool.finished.notifier((slot, generation)),
            }),
            // The notes' `asyncio.sleep`: a timer the loop fires.
            _ => {
                conn.waiting = chunk;
                self.timers
                    .insert((now + self.work.duration, slot, generation));
            }
        }
    }
}

/// The loop and everything it owns.
struct Proactor<'a> {
    ring: Ring,
    acceptor: Acceptor<'a>,
    conns: Slots<Conn>,
    /// Slots whose receive ended for want of buffers.
    starved: VecDeque<(u32, u32)>,
    next_idle_sweep: Option<Instant>,
    /// `--work`, if given; without it the echo path is untouched.
    plan: Option<WorkPlan>,
    /// Jobs the pool finished since the last `--stats` line.
    jobs_done: u64,
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
        let work_timer = self
            .plan
            .as_ref()
            .and_then(|plan| plan.timers.first().map(|&(at, _, _)| at));
        super::until_earliest([
            self.acceptor.paused_until(),
            self.next_idle_sweep,
            work_timer,
            report,
        ])
    }

    fn report(&mut self, now: Instant, last: bool) {
        let open = self.conns.len() as u64;
        let (traffic, turns) = (&self.traffic, &mut self.stall.turns);
        let (in_flight, free) = (
            self.ring.in_flight() as u64,
            self.ring.free_buffers() as u64,
        );
        let timers = self.plan.as_ref().map_or(0, |p| p.timers.len() as u64)
            + u64::from(self.acceptor.paused_until().is_some())
            + u64::from(self.next_idle_sweep.is_some());
        let jobs_done = std::mem::take(&mut self.jobs_done);
        if let Some(reporter) = &mut self.reporter {
            reporter.report(now, last, |line| {
                traffic.fill_loop(line, open, turns.as_mut());
                line.gauge("timers", timers)
                    .count("cross_wakeups", jobs_done)
                    .gauge("in_flight", in_flight)
                    .gauge("free_buffers", free);
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
            Kind::Accept => {
                let accepted = self
                    .acceptor
                    .accepted(&mut self.ring, result, more, self.ctx)?;
                if let Some((stream, peer)) = accepted {
                    self.register(stream, peer)?;
                }
            }
            Kind::Jobs => self.finish_jobs(now)?,
            Kind::Cancel => {}
            Kind::Recv => {
                let Some(conn) = self.conns.live(token) else {
                    // Its connection is gone: give the buffer back.
                    if let Some(buf) = received {
                        self.ring.recycle(buf);
                    }
                    return Ok(());
                };
                if !more {
                    conn.receiving = false;
                }
                match Received::sort(&mut self.ring, result, received) {
                    Received::Data(buf) => {
                        conn.held += buf.len();
                        conn.last_active = now;
                        self.traffic.read(buf.len());
                        self.take_in(token, buf, now)?;
                    }
                    Received::End => conn.read_closed = true,
                    // Cancelled for back-pressure or closing.
                    Received::Cancelled => {}
                    Received::Starved => {
                        conn.paused = true;
                        self.starved.push_back((token.slot, token.generation));
                    }
                    Received::Failed(e) => {
                        conn.ending.get_or_insert(Ending::Failed(e));
                    }
                }
                self.settle(token)?;
            }
            Kind::Send => {
                let sent = sent.expect("a send completion returns its bytes");
                self.sent(token, result, sent, now);
                self.settle(token)?;
            }
        }
        Ok(())
    }

    /// The bytes in `buf`, just received for `token`'s connection: echoed
    /// from the pool buffer when nothing is before them (the common case:
    /// no copy), otherwise kept in the connection's memory, and the buffer
    /// goes back to the pool. With `--work`, worked on first.
    fn take_in(&mut self, token: Token, buf: Buf, now: Instant) -> io::Result<()> {
        let conn = self.conns.live(token).expect("a live connection");
        let bytes = self.ring.bytes(&buf);
        if conn.ending.is_some() {
            // Arrived after it was told to go: nobody will read the echo.
            conn.held -= buf.len();
            self.ring.recycle(buf);
            return Ok(());
        }
        match &mut self.plan {
            Some(plan) if plan.defers() => {
                if conn.working {
                    conn.unworked.extend_from_slice(bytes);
                } else {
                    plan.start(token.slot, token.generation, bytes.to_vec(), conn, now);
                }
                self.ring.recycle(buf);
                return Ok(());
            }
            // On the loop's own thread: every other client waits.
            Some(plan) => plan.work.block(bytes, None),
            None => {}
        }
        if conn.sending || !conn.unsent.is_empty() {
            conn.keep(bytes);
            self.ring.recycle(buf);
            return Ok(());
        }
        conn.sending = true;
        let fd = conn.stream.as_raw_fd();
        let send = self::token(Kind::Send, token.slot, token.generation);
        self.ring.send(fd, Outgoing::Pool(buf), send)
    }

    /// A send of `token`'s connection completed with `result`: count what
    /// went, and keep what did not (a short send, or a pool buffer the
    /// socket had no room for) to go first next time.
    fn sent(&mut self, token: Token, result: i32, sent: Outgoing, now: Instant) {
        let Some(conn) = self.conns.live(token) else {
            self.ring.release(sent);
            return;
        };
        conn.sending = false;
        let n = match result {
            n if n >= 0 => n as usize,
            // The socket had no room: nothing went.
            n if -n == libc::EAGAIN => 0,
            errno => {
                let e = io::Error::from_raw_os_error(-errno);
                conn.ending.get_or_insert(Ending::Failed(e));
                conn.held -= sent.len();
                self.ring.release(sent);
                return;
            }
        };
        conn.held -= n;
        if n > 0 {
            conn.echoed += n as u64;
            conn.last_active = now;
            self.traffic.wrote(n);
        }
        match sent {
            Outgoing::Pool(mut buf) => {
                buf.consume(n);
                if !buf.is_empty() {
                    conn.unsent.push_front(self.ring.bytes(&buf).to_vec());
                }
                self.ring.recycle(buf);
            }
            Outgoing::Own(mut bytes) if n < bytes.len() => {
                bytes.drain(..n);
                conn.unsent.push_front(bytes);
            }
            Outgoing::Own(_) => {}
        }
    }

    /// After any completion for a connection: send what it keeps, pause
    /// or resume its receive, or let it go.
    fn settle(&mut self, token: Token) -> io::Result<()> {
        let (slot, generation) = (token.slot, token.generation);
        let Some(conn) = self.conns.live(token) else {
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
            if let Some(bytes) = conn.unsent.pop_front() {
                conn.sending = true;
                self.ring.send(
                    fd,
                    Outgoing::Own(bytes),
                    self::token(Kind::Send, slot, generation),
                )?;
            }
        }
        let conn = self.conns.live(token).expect("still here");
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

    /// A chunk of client `(slot, generation)` is through its work: it is
    /// echoed, and the bytes that came meanwhile go to theirs.
    fn worked(
        &mut self,
        slot: u32,
        generation: u32,
        chunk: Vec<u8>,
        now: Instant,
    ) -> io::Result<()> {
        let token = token(Kind::Recv, slot, generation);
        let Some(conn) = self.conns.live(token) else {
            return Ok(()); // Gone while it worked: its chunk is dropped.
        };
        if !conn.working {
            return Ok(());
        }
        conn.working = false;
        if conn.unsent.is_empty() {
            conn.unsent.push_back(chunk); // No copy.
        } else {
            conn.keep(&chunk);
        }
        if !conn.unworked.is_empty() {
            let next = std::mem::take(&mut conn.unworked);
            if let Some(plan) = &mut self.plan {
                plan.start(slot, generation, next, conn, now);
            }
        }
        self.settle(token)
    }

    /// The pool rang its doorbell: echoes the chunks whose work is done,
    /// and listens for the bell again.
    fn finish_jobs(&mut self, now: Instant) -> io::Result<()> {
        let Some(Pool {
            finished, doorbell, ..
        }) = self.plan.as_mut().and_then(|p| p.pool.as_mut())
        else {
            return Ok(());
        };
        // Silence the bell before taking the jobs: a job that finishes
        // after this rings it again, and is taken on the next turn.
        let mut rings = [0; 64];
        while matches!(doorbell.read(&mut rings), Ok(n) if n > 0) {}
        let done: Vec<((u32, u32), Vec<u8>)> = finished.take().collect();
        let fd = doorbell.as_raw_fd();
        if !self.ctx.shutdown.is_triggered() {
            self.ring.poll_readable(fd, token(Kind::Jobs, 0, 0))?;
        }
        for ((slot, generation), chunk) in done {
            self.jobs_done += 1;
            self.worked(slot, generation, chunk, now)?;
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
            if self
                .conns
                .live(token(Kind::Recv, slot, generation))
                .is_some()
            {
                self.settle(token(Kind::Recv, slot, generation))?;
            }
        }
        Ok(())
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let fd = stream.as_raw_fd();
        let (slot, generation) = self.conns.insert(Conn {
            stream,
            peer,
            receiving: true,
            sending: false,
            unsent: VecDeque::new(),
            working: false,
            waiting: Vec::new(),
            unworked: Vec::new(),
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

    /// Drops a connection with nothing in flight: its socket closes, its
    /// memory goes, its slot is free.
    fn reap(&mut self, slot: u32) -> io::Result<()> {
        let Some(conn) = self.conns.remove(slot) else {
            return Ok(());
        };
        debug_assert!(
            !conn.receiving && !conn.sending,
            "closing under an operation in flight"
        );
        self.traffic.closed();
        let ending = conn.ending.unwrap_or(Ending::Closed);
        self.ctx.stats.disconnected(conn.peer, conn.echoed, ending);
        Ok(())
    }

    /// Ends `slot` with `ending`, as soon as the kernel lets go of it.
    fn end(&mut self, slot: u32, ending: Ending) -> io::Result<()> {
        let Some(generation) = self.conns.generation(slot) else {
            return Ok(());
        };
        let token = token(Kind::Recv, slot, generation);
        if let Some(conn) = self.conns.live(token) {
            conn.ending.get_or_insert(ending);
        }
        self.settle(token)
    }

    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        while let Some(&(at, slot, generation)) =
            self.plan.as_ref().and_then(|plan| plan.timers.first())
        {
            if at > now {
                break;
            }
            if let Some(plan) = &mut self.plan {
                plan.timers.pop_first();
            }
            let chunk = match self.conns.live(token(Kind::Recv, slot, generation)) {
                Some(conn) => std::mem::take(&mut conn.waiting),
                None => continue,
            };
            self.worked(slot, generation, chunk, now)?;
        }
        self.acceptor.resume_if_due(&mut self.ring, now)?;
        if let (Some(sweep), Some(idle)) = (self.next_idle_sweep, self.ctx.config.idle_timeout) {
            if sweep <= now {
                let idle_slots: Vec<u32> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        // A client whose chunk is with its work is busy, not idle.
                        c.ending.is_none()
                            && !c.working
                            && now.duration_since(c.last_active) >= idle
                    })
                    .map(|(token, _)| token.slot)
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
        if self.plan.as_ref().is_some_and(|p| p.pool.is_some()) {
            let _ = self.ring.cancel(token(Kind::Jobs, 0, 0));
        }
        let slots: Vec<u32> = self.conns.iter().map(|(token, _)| token.slot).collect();
        for slot in slots {
            let _ = self.end(slot, Ending::Shutdown);
        }
        let deadline = Instant::now() + SHUTDOWN_PATIENCE;
        while let Some(batch) = self.ring.drain_round(deadline) {
            for done in batch {
                let _ = self.complete(done, Instant::now());
            }
        }
    }
}

/// What a receive's completion brought.
pub(crate) enum Received {
    /// Bytes, in a pool buffer.
    Data(Buf),
    /// The client sent its last byte.
    End,
    /// The receive was cancelled (back-pressure, or the connection ends).
    Cancelled,
    /// No pool buffer was free: submit the receive again when one is.
    Starved,
    Failed(io::Error),
}

impl Received {
    /// Sorts a receive's `result`; a buffer that came without data goes
    /// back to the kernel.
    pub(crate) fn sort(ring: &mut Ring, result: i32, buf: Option<Buf>) -> Received {
        match (buf, -result) {
            (Some(buf), _) if result > 0 => Received::Data(buf),
            (buf, errno) => {
                if let Some(buf) = buf {
                    ring.recycle(buf);
                }
                match errno {
                    0 => Received::End,
                    libc::ECANCELED => Received::Cancelled,
                    libc::ENOBUFS => Received::Starved,
                    errno => Received::Failed(io::Error::from_raw_os_error(errno)),
                }
            }
        }
    }
}

/// A completion loop's listener: one multishot accept, submitted again
/// when the kernel ends it, and paused for [`ACCEPT_BACKOFF`] when the
/// process runs out of descriptors. The echo loop's and the chat's.
pub(crate) struct Acceptor<'a> {
    socket: &'a TcpListener,
    /// Set while accepting is paused; no accept is in flight then.
    paused_until: Option<Instant>,
}

impl<'a> Acceptor<'a> {
    /// Submits the multishot accept on `socket`.
    ///
    /// # Errors
    /// If the ring refuses the submission.
    pub(crate) fn start(socket: &'a TcpListener, ring: &mut Ring) -> io::Result<Self> {
        let acceptor = Acceptor {
            socket,
            paused_until: None,
        };
        acceptor.submit(ring)?;
        Ok(acceptor)
    }

    fn submit(&self, ring: &mut Ring) -> io::Result<()> {
        ring.accept(self.socket.as_raw_fd(), token(Kind::Accept, 0, 0))
    }

    /// What an accept completion brought: a client to serve, admitted and
    /// prepared, or nothing (one over the limit, one that vanished, a
    /// back-off). Submits the accept again if the kernel ended it.
    ///
    /// # Errors
    /// If the listener is broken (not during shutdown), or the ring fails.
    pub(crate) fn accepted(
        &mut self,
        ring: &mut Ring,
        result: i32,
        more: bool,
        ctx: &Context,
    ) -> io::Result<Option<(TcpStream, SocketAddr)>> {
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
        let mut client = None;
        match sort(accepted, &ctx.stats, Blocking::Yes) {
            Some(Accepted::Client(stream, peer)) => client = Some((stream, peer)),
            Some(Accepted::Empty) | None => {}
            Some(Accepted::BackOff) => {
                // Out of descriptors: the kernel ended the multishot
                // accept; submit it again after a pause, not at once.
                self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                rearm = false;
            }
            Some(Accepted::Fatal(e)) if !ctx.shutdown.is_triggered() => return Err(e),
            Some(Accepted::Fatal(_)) => rearm = false,
        }
        if rearm && self.paused_until.is_none() {
            self.submit(ring)?;
        }
        Ok(client)
    }

    /// When accepting resumes, if it is paused.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Submits the accept again once its pause is over.
    ///
    /// # Errors
    /// If the ring refuses the submission.
    pub(crate) fn resume_if_due(&mut self, ring: &mut Ring, now: Instant) -> io::Result<()> {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            self.submit(ring)?;
        }
        Ok(())
    }
}

/// Connections by slot, as the operations' tokens name them. A slot is
/// reused once its connection is gone, under a new generation, so that a
/// late completion for the old connection is recognised and dropped. The
/// echo loop's table, and the chat's.
pub(crate) struct Slots<T> {
    /// `(generation, connection)` by slot; `None` is vacant.
    entries: Vec<Option<(u32, T)>>,
    /// Vacant slots, and the generation each had last.
    vacant: Vec<(u32, u32)>,
    /// Occupied slots.
    len: usize,
}

impl<T> Slots<T> {
    pub(crate) fn new() -> Self {
        Slots {
            entries: Vec::new(),
            vacant: Vec::new(),
            len: 0,
        }
    }

    /// Puts `conn` in a slot; returns the slot and its generation.
    pub(crate) fn insert(&mut self, conn: T) -> (u32, u32) {
        let (slot, generation) = match self.vacant.pop() {
            Some((slot, last)) => (slot, last.wrapping_add(1)),
            None => {
                self.entries.push(None);
                ((self.entries.len() - 1) as u32, 0)
            }
        };
        self.entries[slot as usize] = Some((generation, conn));
        self.len += 1;
        (slot, generation)
    }

    /// The connection `token` was for, if it is still there (not a newer
    /// one in the same slot).
    pub(crate) fn live(&mut self, token: Token) -> Option<&mut T> {
        match self.entries.get_mut(token.slot as usize) {
            Some(Some((generation, conn))) if *generation == token.generation => Some(conn),
            _ => None,
        }
    }

    /// The generation of `slot`'s connection, if it has one.
    pub(crate) fn generation(&self, slot: u32) -> Option<u32> {
        match self.entries.get(slot as usize) {
            Some(Some((generation, _))) => Some(*generation),
            _ => None,
        }
    }

    /// Takes the connection out of `slot`, and frees the slot.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        let (generation, conn) = self.entries.get_mut(slot as usize)?.take()?;
        self.vacant.push((slot, generation));
        self.len -= 1;
        Some(conn)
    }

    /// Every connection, with its slot and generation.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Token, &T)> {
        self.entries.iter().enumerate().filter_map(|(slot, entry)| {
            let (generation, conn) = entry.as_ref()?;
            Some((token(Kind::Recv, slot as u32, *generation), conn))
        })
    }

    /// How many connections there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
