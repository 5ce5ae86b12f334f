//! The chat on the completion loop: one thread, one io_uring, and the
//! whole chat as plain data the loop owns, as on the selector.
//!
//! The loop is the echo completion loop's: a turn submits what is queued
//! and waits for completions in one `io_uring_enter`. Each client has one
//! multishot receive; what it brings goes to the [`Room`] at once and its
//! pool buffer straight back to the kernel, since the room keeps what it
//! needs (an unfinished line). After each batch of completions, every
//! client that was posted to and has no send in flight gets one: its whole
//! outbox, taken out into memory the send owns until its completion (the
//! thread-per-client writer takes it the same way), so lines are never
//! interleaved and the outbox's bound still holds for what is queued
//! behind it.
//!
//! A client that stops sending (quit, end of stream, expelled, or cut off
//! as too slow) has its receive cancelled and gets [`CLOSE_GRACE`] to take
//! what it is owed. Its socket closes only once nothing of it is in
//! flight, as in the echo loop.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::CLOSE_GRACE;
use super::room::{After, Room};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::completion;
use crate::serve::completion::kit::{
    self, Acceptor, Completions, RING_ENTRIES, Received, Slots, token,
};
use crate::serve::completion::ring::{Kind, Outgoing, Ring, Token};
use crate::stats::Ending;

/// Serves the chat from this thread until shutdown.
///
/// # Errors
/// If io_uring is not available, or the ring or the listener fails.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    completion::available().map_err(|why| completion::unavailable(&why))?;
    let bell = ctx.shutdown.bell()?;
    let mut ring = Ring::new(RING_ENTRIES)?;
    ring.poll_readable(bell.as_raw_fd(), token(Kind::Bell, 0, 0))?;
    let acceptor = Acceptor::start(&listener, &mut ring)?;
    let traffic = Traffic::default();
    let mut chat = Chat {
        ring,
        acceptor,
        clients: Slots::new(),
        room: Room::default(),
        closing: VecDeque::new(),
        starved: VecDeque::new(),
        posted: Vec::new(),
        meter: Meter::new(ctx, "completion"),
        traffic: &traffic,
        ctx,
    };
    kit::run(&mut chat, &ctx.shutdown)
}

impl<'a> Completions<'a> for Chat<'a> {
    fn ring(&mut self) -> &mut Ring {
        &mut self.ring
    }

    fn timeout(&self) -> Option<Duration> {
        let grace = self.closing.front().map(|&(at, _, _)| at);
        let report = self.meter.deadline();
        crate::serve::readiness::deadlines::until_earliest([
            self.acceptor.paused_until(),
            grace,
            report,
        ])
    }

    fn end_all(&mut self) {
        let tokens: Vec<Token> = self.clients.iter().map(|(token, _)| token).collect();
        for token in tokens {
            if let Some(client) = self.clients.live(token) {
                client.ending.get_or_insert(Ending::Shutdown);
            }
            let _ = self.settle(token);
        }
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let fd = stream.as_raw_fd();
        let (slot, generation) = self.clients.insert(Client {
            stream,
            member: None,
            receiving: true,
            sending: false,
            stopped: None,
            ending: None,
            unheard: false,
            shut: false,
            visit: Visit::new(peer, self.traffic, &self.ctx.stats),
        });
        let member = self.room.join(slot);
        let token = token(Kind::Recv, slot, generation);
        if let Some(client) = self.clients.live(token) {
            client.member = Some(member);
        }
        self.ring.install(slot, fd);
        self.ring.receive(fd, token)
    }

    fn receiving(&mut self, token: Token) -> Option<&mut bool> {
        self.clients.live(token).map(|client| &mut client.receiving)
    }

    fn meter(&mut self) -> &mut Meter<'a> {
        &mut self.meter
    }

    /// What a client said: lines for the room, the end of its stream, or
    /// why it stopped.
    fn on_received(&mut self, token: Token, got: Received, now: Instant) -> io::Result<()> {
        let Some(client) = self.clients.live(token) else {
            return Ok(());
        };
        let speaking = client.stopped.is_none();
        match (got, client.member) {
            (Received::Data(buf), Some(member)) if speaking => {
                // The room keeps what it needs; the buffer goes back.
                let data = self.ring.bytes(&buf);
                self.traffic.read(data.len());
                let after = self.room.receive(member, data);
                if after != After::Continue {
                    stop(client, after, &mut self.closing, token, now);
                }
                self.ring.recycle(buf);
            }
            // What a client says after it stopped does not count.
            (Received::Data(buf), _) => self.ring.recycle(buf),
            (Received::End, Some(member)) if speaking => {
                self.room.leave(member);
                stop(client, After::Quit, &mut self.closing, token, now);
            }
            (Received::End | Received::Cancelled, _) => {}
            (Received::Starved, _) => {
                self.starved.push_back((token.slot, token.generation));
            }
            (Received::Failed(e), _) => {
                client.ending.get_or_insert(Ending::Failed(e));
            }
        }
        self.settle(token)
    }

    /// One `--stats` line: traffic, turns, and the chat's own fields.
    fn report(&mut self, now: Instant, last: bool) {
        let open = self.clients.len() as u64;
        let room = &self.room;
        self.meter
            .report(now, last, self.traffic, open, |line| room.fill(line));
    }

    fn on_sent(
        &mut self,
        token: Token,
        result: i32,
        sent: Outgoing,
        _now: Instant,
    ) -> io::Result<()> {
        self.sent(token, result, sent)?;
        self.settle(token)
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.deliver()?;
        self.rearm_starved()?;
        self.run_timers(now)
    }

    fn acceptor(&mut self) -> (&mut Acceptor<'a>, &mut Ring, &'a Context) {
        (&mut self.acceptor, &mut self.ring, self.ctx)
    }
}

/// One client, and what of it is with the kernel.
struct Client<'a> {
    /// Closed only once `receiving` and `sending` are both false.
    stream: TcpStream,
    /// Its key in the room; `None` once it left the room (it is ending).
    member: Option<usize>,
    /// Its multishot receive is in flight.
    receiving: bool,
    /// A send of its outbox is in flight.
    sending: bool,
    /// `None` while it may send; otherwise why it stopped, and it is only
    /// owed the rest of its outbox.
    stopped: Option<After>,
    /// Set once it must go; it goes when nothing of it is in flight.
    ending: Option<Ending>,
    /// Its receive was cancelled (it stopped, or it is ending).
    unheard: bool,
    /// Its socket was shut down, to end what is in flight.
    shut: bool,
    /// Who it is and the bytes written to it: counted out and logged
    /// when the client is dropped, after its socket.
    visit: Visit<'a>,
}

/// The loop and everything it owns, the chat included.
struct Chat<'a> {
    ring: Ring,
    acceptor: Acceptor<'a>,
    clients: Slots<Client<'a>>,
    /// The registry, sessions and outboxes; a member's handle is its
    /// client's slot.
    room: Room<u32>,
    /// Clients that stopped sending, by deadline: (deadline, slot,
    /// generation). Deadlines are `now + CLOSE_GRACE`, so they come in
    /// order.
    closing: VecDeque<(Instant, u32, u32)>,
    /// Slots whose receive ended for want of buffers.
    starved: VecDeque<(u32, u32)>,
    /// Slots posted to in this turn (kept to reuse).
    posted: Vec<u32>,
    /// Stalls past `--slow-handler`; turns and lines for `--stats`.
    meter: Meter<'a>,
    /// What the clients did, for `--stats`; each client's [`Visit`]
    /// counts it in and out.
    traffic: &'a Traffic,
    ctx: &'a Context,
}

impl Chat<'_> {
    /// A send of client `token` completed: count what went, send the
    /// rest of the same bytes if the socket took only part.
    fn sent(&mut self, token: Token, result: i32, sent: Outgoing) -> io::Result<()> {
        let Some(client) = self.clients.live(token) else {
            return Ok(());
        };
        client.sending = false;
        let mut bytes = match sent {
            Outgoing::Own(bytes) => bytes,
            // The chat sends only bytes of its own.
            pool => {
                self.ring.release(pool);
                return Ok(());
            }
        };
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            client.ending.get_or_insert(Ending::Failed(e));
            return Ok(());
        }
        let n = result as usize;
        client.visit.bytes += n as u64;
        self.traffic.wrote(n);
        if n < bytes.len() && client.ending.is_none() {
            // A short send: the rest goes before anything newer.
            bytes.drain(..n);
            client.sending = true;
            let fd = client.stream.as_raw_fd();
            let send = self::token(Kind::Send, token.slot, token.generation);
            self.ring.send(fd, Outgoing::Own(bytes), send)?;
        }
        Ok(())
    }

    /// Every client posted to in this turn gets a send, unless one is in
    /// flight (its completion sends what came meanwhile).
    fn deliver(&mut self) -> io::Result<()> {
        let mut posted = std::mem::take(&mut self.posted);
        self.room.take_woken(|_, member| posted.push(member.handle));
        for &slot in &posted {
            if let Some(generation) = self.clients.generation(slot) {
                self.settle(token(Kind::Send, slot, generation))?;
            }
        }
        posted.clear();
        self.posted = posted;
        Ok(())
    }

    /// After any completion for a client: cut it off if it is too slow,
    /// send what it is owed, or let it go.
    fn settle(&mut self, token: Token) -> io::Result<()> {
        let (slot, generation) = (token.slot, token.generation);
        let Some(client) = self.clients.live(token) else {
            return Ok(());
        };
        let fd = client.stream.as_raw_fd();
        if let Some(member) = client.member {
            let outbox = &mut self.room.member(member).outbox;
            if outbox.is_too_slow() && client.stopped.is_none() {
                // Cut off: its last bytes get the close grace, as after a
                // quit.
                let now = Instant::now();
                stop(client, After::TooSlow, &mut self.closing, token, now);
            }
            if client.ending.is_none() && !client.sending && !outbox.is_empty() {
                client.sending = true;
                let send = self::token(Kind::Send, slot, generation);
                self.ring.send(fd, Outgoing::Own(outbox.take()), send)?;
            }
            let owed = client.sending || !outbox.is_empty();
            if let (Some(after), false) = (client.stopped, owed) {
                client.ending.get_or_insert(after.ending());
            }
        }
        if client.ending.is_some() {
            if let Some(member) = client.member.take() {
                // Its name is free now, and nobody can post to it.
                self.room.remove(member);
            }
            if !client.receiving && !client.sending {
                return self.reap(slot);
            }
            if !std::mem::replace(&mut client.shut, true) {
                // Its receive and any send end at once.
                let _ = client.stream.shutdown(Shutdown::Both);
            }
        } else if client.stopped.is_none() {
            if !client.receiving && self.ring.free_buffers() > 0 {
                // Its receive ran out of buffers: submit it again.
                client.receiving = true;
                self.ring
                    .receive(fd, self::token(Kind::Recv, slot, generation))?;
            }
            return Ok(());
        }
        if client.receiving && !std::mem::replace(&mut client.unheard, true) {
            // Stopped or ending: nothing it says counts any more.
            self.ring
                .cancel(self::token(Kind::Recv, slot, generation))?;
        }
        Ok(())
    }

    /// Drops a client with nothing in flight: its socket closes, its slot
    /// is free.
    fn reap(&mut self, slot: u32) -> io::Result<()> {
        let Some(mut client) = self.clients.remove(slot) else {
            return Ok(());
        };
        client
            .visit
            .ends(client.ending.take().unwrap_or(Ending::Closed));
        // The ring's table lets go of the socket, which then closes; then
        // the client is counted out and logged.
        self.ring.uninstall(slot);
        drop(client);
        Ok(())
    }

    /// Submits again the receives that ran out of buffers.
    fn rearm_starved(&mut self) -> io::Result<()> {
        while self.ring.free_buffers() > 0 {
            let Some((slot, generation)) = self.starved.pop_front() else {
                break;
            };
            self.settle(token(Kind::Recv, slot, generation))?;
        }
        Ok(())
    }

    /// Resumes accepting after a back-off; ends clients whose grace is
    /// over.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        self.acceptor.resume_if_due(&mut self.ring, now)?;
        while let Some(&(at, slot, generation)) = self.closing.front() {
            if at > now {
                break;
            }
            self.closing.pop_front();
            let token = token(Kind::Recv, slot, generation);
            if let Some(client) = self.clients.live(token) {
                if let Some(after) = client.stopped {
                    client.ending.get_or_insert(after.out_of_time());
                    self.settle(token)?;
                }
            }
        }
        Ok(())
    }
}

/// Client `token` stopped sending, for `after`: it gets the close grace.
fn stop(
    client: &mut Client<'_>,
    after: After,
    closing: &mut VecDeque<(Instant, u32, u32)>,
    token: Token,
    now: Instant,
) {
    client.stopped = Some(after);
    closing.push_back((now + CLOSE_GRACE, token.slot, token.generation));
}
