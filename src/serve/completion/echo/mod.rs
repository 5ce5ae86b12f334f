//! The echo on the completion loop: one ring, a multishot receive per
//! client into the pool's buffers, the echo sent from the buffer it came
//! in (see the module above for the whole design). The chat's completion
//! loop stands on the same [`kit`]. The lab's part (`src/lab/`,
//! skippable on a first read): `--work` (a chunk held or offloaded until
//! its work is done) in `work.rs`, the meter and traffic for `--stats`.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::kit::{self, Acceptor, Completions, RING_ENTRIES, Received, Slots, token};
use super::ring::{Buf, Kind, Outgoing, Ring, Token};
use super::{available, unavailable};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::readiness::deadlines::IdleSweep;
use crate::stats::Ending;

mod work;

use work::{WorkPlan, start_plan};

/// The most bytes one client may have received and not yet had echoed
/// before its receive is cancelled: as the selector's unsent cap.
pub const MAX_HELD: usize = 64 * 1024;

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
    let (plan, doorbell) = match ctx.config.work {
        Some(work) => {
            let (plan, doorbell) = start_plan(work, ctx, &mut ring)?;
            (Some(plan), doorbell)
        }
        None => (None, None),
    };
    let traffic = Traffic::default();
    let mut proactor = Proactor {
        ring,
        acceptor,
        conns: Slots::new(),
        starved: VecDeque::new(),
        idle: IdleSweep::new(ctx.config.idle_timeout),
        plan,
        doorbell,
        jobs_done: 0,
        meter: Meter::new(ctx, "completion"),
        traffic: &traffic,
        ctx,
    };
    kit::run(&mut proactor, &ctx.shutdown)
}

impl<'a> Completions<'a> for Proactor<'a> {
    fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    fn timeout(&self) -> Option<Duration> {
        let work_timer = self.plan.as_ref().and_then(WorkPlan::deadline);
        crate::serve::readiness::deadlines::until_earliest([
            self.acceptor.paused_until(),
            self.idle.as_ref().map(IdleSweep::next),
            work_timer,
            self.meter.deadline(),
        ])
    }

    fn end_all(&mut self) {
        if self.doorbell.is_some() {
            let _ = self.ring.cancel(token(Kind::Jobs, 0, 0));
        }
        let slots: Vec<u32> = self.conns.iter().map(|(token, _)| token.slot).collect();
        for slot in slots {
            let _ = self.end(slot, Ending::Shutdown);
        }
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let fd = stream.as_raw_fd();
        let visit = Visit::new(peer, self.traffic, &self.ctx.stats);
        let (slot, generation) = self.conns.insert(Conn::new(stream, visit));
        self.ring.install(slot, fd);
        self.ring.receive(fd, token(Kind::Recv, slot, generation))
    }

    fn receiving(&mut self, token: Token) -> Option<&mut bool> {
        self.conns.live(token).map(|conn| &mut conn.receiving)
    }

    fn meter(&mut self) -> &mut Meter<'a> {
        &mut self.meter
    }

    /// What a receive brought: bytes to echo, the end of the stream, or
    /// why it stopped.
    fn on_received(&mut self, token: Token, got: Received, now: Instant) -> io::Result<()> {
        let Some(conn) = self.conns.live(token) else {
            return Ok(());
        };
        match got {
            Received::Data(buf) => {
                conn.held += buf.len();
                conn.last_active = now;
                self.traffic.read(buf.len());
                crate::lab::crash::check(self.ring.bytes(&buf));
                self.take_in(token, buf, now)?;
            }
            Received::End => conn.read_closed = true,
            // Cancelled for back-pressure or closing.
            Received::Cancelled => {}
            Received::Starved => {
                conn.paused = true;
                self.starved.push_back((token.slot, token.generation));
            }
            // A reset with nothing held is the client leaving.
            Received::Failed(e) if conn.held == 0 => {
                conn.ending.get_or_insert(Ending::from_read_error(e));
            }
            Received::Failed(e) => {
                conn.ending.get_or_insert(Ending::Failed(e));
            }
        }
        self.settle(token)
    }

    fn report(&mut self, now: Instant, last: bool) {
        let open = self.conns.len() as u64;
        let (in_flight, free) = (
            self.ring.in_flight() as u64,
            self.ring.free_buffers() as u64,
        );
        let timers = self.plan.as_ref().map_or(0, |p| p.held() as u64)
            + u64::from(self.acceptor.paused_until().is_some())
            + u64::from(self.idle.is_some());
        let jobs_done = std::mem::take(&mut self.jobs_done);
        self.meter.report(now, last, self.traffic, open, |line| {
            line.gauge("timers", timers)
                .count("cross_wakeups", jobs_done)
                .gauge("in_flight", in_flight)
                .gauge("free_buffers", free);
        });
    }

    fn on_sent(
        &mut self,
        token: Token,
        result: i32,
        sent: Outgoing,
        now: Instant,
    ) -> io::Result<()> {
        self.sent(token, result, sent, now);
        self.settle(token)
    }

    fn on_jobs(&mut self, now: Instant) -> io::Result<()> {
        self.finish_jobs(now)
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.rearm_starved()?;
        self.run_timers(now)
    }

    fn acceptor(&mut self) -> (&mut Acceptor<'a>, &mut Ring, &'a Context) {
        (&mut self.acceptor, &mut self.ring, self.ctx)
    }
}

/// One client, and what of it is with the kernel.
struct Conn<'a> {
    /// Closed only once `receiving` and `sending` are both false.
    stream: TcpStream,
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
    last_active: Instant,
    /// Who it is and the bytes echoed to it: counted out and logged when
    /// the connection is dropped, after its socket.
    visit: Visit<'a>,
}

impl<'a> Conn<'a> {
    /// A connection just accepted: its receive about to start, nothing
    /// held.
    fn new(stream: TcpStream, visit: Visit<'a>) -> Self {
        Conn {
            stream,
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
            last_active: Instant::now(),
            visit,
        }
    }

    /// Queues a copy of `bytes` to echo after everything before them.
    fn keep(&mut self, bytes: &[u8]) {
        match self.unsent.back_mut() {
            Some(last) => last.extend_from_slice(bytes),
            None => self.unsent.push_back(bytes.to_vec()),
        }
    }
}

/// The loop and everything it owns.
struct Proactor<'a> {
    ring: Ring,
    acceptor: Acceptor<'a>,
    conns: Slots<Conn<'a>>,
    /// Slots whose receive ended for want of buffers.
    starved: VecDeque<(u32, u32)>,
    idle: Option<IdleSweep>,
    /// `--work`, if given; without it the echo path is untouched.
    plan: Option<WorkPlan>,
    /// With `--offload`: what the pool rings when a job is done.
    doorbell: Option<UnixStream>,
    /// Jobs the pool finished since the last `--stats` line.
    jobs_done: u64,
    /// Stalls past `--slow-handler`; turns and lines for `--stats`.
    meter: Meter<'a>,
    /// What the clients did, for `--stats`; each client's [`Visit`]
    /// counts it in and out.
    traffic: &'a Traffic,
    ctx: &'a Context,
}

impl Proactor<'_> {
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
                    conn.defer(plan, (token.slot, token.generation), bytes, now);
                }
                self.ring.recycle(buf);
                return Ok(());
            }
            // On the loop's own thread: every other client waits.
            Some(plan) => drop(plan.start((token.slot, token.generation), bytes, now)),
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
            conn.visit.bytes += n as u64;
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

    /// Drops a connection with nothing in flight: its socket closes, its
    /// memory goes, its slot is free.
    fn reap(&mut self, slot: u32) -> io::Result<()> {
        let Some(mut conn) = self.conns.remove(slot) else {
            return Ok(());
        };
        debug_assert!(
            !conn.receiving && !conn.sending,
            "closing under an operation in flight"
        );
        conn.visit
            .ends(conn.ending.take().unwrap_or(Ending::Closed));
        // The ring's table lets go of the socket, which then closes; then
        // the connection is counted out and logged.
        self.ring.uninstall(slot);
        drop(conn);
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
        while let Some((slot, generation)) = self.plan.as_mut().and_then(|plan| plan.due(now)) {
            let chunk = match self.conns.live(token(Kind::Recv, slot, generation)) {
                Some(conn) => std::mem::take(&mut conn.waiting),
                None => continue,
            };
            self.worked(slot, generation, chunk, now)?;
        }
        self.acceptor.resume_if_due(&mut self.ring, now)?;
        if let Some(idle) = self.idle.as_mut().and_then(|idle| idle.due(now)) {
            // A client whose chunk is with its work is busy, not idle.
            let idle_slots: Vec<u32> = (self.conns.iter())
                .filter(|(_, c)| {
                    c.ending.is_none() && !c.working && idle.is_idle(c.last_active, now)
                })
                .map(|(token, _)| token.slot)
                .collect();
            for slot in idle_slots {
                self.end(slot, Ending::IdleTimeout)?;
            }
        }
        Ok(())
    }
}
