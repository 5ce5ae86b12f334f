//! The chat on the selector loop: one thread, callbacks by socket, and the
//! whole chat as plain data the loop owns.
//!
//! The loop is the echo selector's: wait, run each ready socket's handler,
//! repeat. What changes is that a handler may now touch *other* clients:
//! a `chat` line read from one socket puts a line in another client's
//! outbox. It does so directly, with a `&mut` to the [`Room`], which no
//! other code can be using at that moment. After each batch of events, every
//! client that was posted to gets one write attempt, and asks for write
//! readiness only if its socket did not take everything.
//!
//! Level-triggered, as the echo selector: a client is watched for reading
//! while it may still send, for writing while it is owed bytes.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use slab::Slab;

use super::CLOSE_GRACE;
use super::room::{After, Room};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::net::{interrupted, would_block, write_some};
use crate::poller::{Event, Events, Interest, Poller, Registered};
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::readiness::{self, Listener, Readiness};
use crate::stats::{Ending, Stats};

/// What to do when a registered socket is ready.
type Handler<'a> = crate::serve::readiness::Handler<Client<'a>>;

/// One client's socket; what it says and is owed is in the room, under
/// `member`.
struct Client<'a> {
    /// Registered in the poller for as long as the client lives.
    stream: Registered<'a, TcpStream>,
    member: usize,
    /// `None` while it may send; otherwise why it stopped (quit or end of
    /// stream, or expelled), and it is only owed the rest of its outbox.
    stopped: Option<After>,
    interest: Interest,
    /// Unique over the loop's life, unlike the slab key.
    id: u64,
    /// Who it is and the bytes written to it: counted out and logged
    /// when the client is dropped, after its socket.
    visit: Visit<'a>,
}

/// Serves the chat from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let poller = Poller::new(ctx.config.poller)?;
    // The bell is watched until this function returns (the guard deletes it).
    let (handlers, listener, _bell) = readiness::start(&poller, &listener, ctx.shutdown.bell()?)?;
    let traffic = Traffic::default();
    let mut chat = Chat {
        poller: &poller,
        listener,
        handlers,
        room: Room::default(),
        buffer: vec![0; 4096].into_boxed_slice(),
        events: Events::new(),
        closing: VecDeque::new(),
        posted: Vec::new(),
        next_id: 0,
        meter: Meter::new(ctx, "selector"),
        traffic: &traffic,
        ctx,
    };
    readiness::run(&mut chat, &ctx.shutdown)
}

impl<'a> Readiness<'a> for Chat<'a> {
    type Client = Client<'a>;

    fn table(&self) -> (&Events, &Slab<Handler<'a>>) {
        (&self.events, &self.handlers)
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) {
        let entry = self.handlers.vacant_entry();
        let key = entry.key();
        let visit = Visit::new(peer, self.traffic, &self.ctx.stats);
        // Watched until the client is dropped (in `close`).
        let stream = match self.poller.register(stream, key, Interest::READ) {
            Ok(stream) => stream,
            Err(e) => return visit.end(Ending::Failed(e)),
        };
        entry.insert(Handler::Client(Client {
            stream,
            member: self.room.join(key),
            stopped: None,
            interest: Interest::READ,
            id: self.next_id,
            visit,
        }));
        self.next_id += 1;
    }

    fn meter(&mut self) -> &mut Meter<'a> {
        &mut self.meter
    }

    /// Writes what it is owed, reads once, and settles what to watch.
    fn on_client(&mut self, event: Event, now: Instant) {
        if event.writable {
            self.flush(event.key);
        }
        if event.readable {
            self.read(event.key, now);
        }
        self.settle(event.key, now);
    }

    fn listener(&mut self) -> (&mut Listener<'a>, &Stats) {
        (&mut self.listener, &self.ctx.stats)
    }

    fn timeout(&self) -> Option<Duration> {
        let grace = self.closing.front().map(|&(at, _, _)| at);
        let report = self.meter.deadline();
        crate::serve::readiness::deadlines::until_earliest([
            self.listener.paused_until(),
            grace,
            report,
        ])
    }

    fn waiting(&mut self) -> (&Poller, &mut Events) {
        (self.poller, &mut self.events)
    }

    /// Deletes a client from the poller (before its socket closes), from
    /// the table and from the room (its name is free), and logs the end.
    fn close(&mut self, key: usize, ending: Ending) {
        if let Some(Handler::Client(mut client)) = self.handlers.try_remove(key) {
            client.visit.ends(ending);
            self.room.remove(client.member);
            // Dropping it deletes it from the poller, closes it, then
            // counts it out and logs it.
            drop(client);
        }
    }

    /// One `--stats` line: traffic, turns, and the chat's own fields.
    fn report(&mut self, now: Instant, last: bool) {
        let open = self.handlers.len().saturating_sub(2) as u64;
        let room = &self.room;
        self.meter
            .report(now, last, self.traffic, open, |line| room.fill(line));
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.deliver(now);
        self.run_timers(now)
    }
}

/// The loop and everything it owns, the chat included.
struct Chat<'a> {
    /// Every socket in `handlers` is registered here under its slab key;
    /// each client's `Registered` socket deletes itself when dropped.
    poller: &'a Poller,
    listener: Listener<'a>,
    handlers: Slab<Handler<'a>>,
    /// The registry, sessions and outboxes; a member's handle is its
    /// client's key in `handlers`.
    room: Room<usize>,
    buffer: Box<[u8]>,
    /// What the last wait reported, kept to reuse its memory.
    events: Events,
    /// Clients that stopped sending, by deadline: (deadline, key, id).
    /// Deadlines are `now + CLOSE_GRACE`, so they come in order.
    closing: VecDeque<(Instant, usize, u64)>,
    /// Keys of the clients posted to in this turn (kept to reuse).
    posted: Vec<usize>,
    next_id: u64,
    /// Stalls past `--slow-handler`; turns and lines for `--stats`.
    meter: Meter<'a>,
    /// What the clients did, for `--stats`; each client's [`Visit`]
    /// counts it in and out.
    traffic: &'a Traffic,
    ctx: &'a Context,
}

impl Chat<'_> {
    /// One `read()` from a client, and every line it completes carried
    /// out: replies and deliveries land in outboxes, written by `deliver`.
    fn read(&mut self, key: usize, now: Instant) {
        let Some(Handler::Client(client)) = self.handlers.get_mut(key) else {
            return;
        };
        if client.stopped.is_some() {
            return;
        }
        let after = match client.stream.read(&mut self.buffer) {
            Ok(0) => {
                self.room.leave(client.member);
                After::Quit
            }
            Ok(n) => {
                self.traffic.read(n);
                self.room.receive(client.member, &self.buffer[..n])
            }
            Err(e) if would_block(&e) || interrupted(&e) => After::Continue,
            Err(e) => return self.close(key, Ending::Failed(e)),
        };
        if after != After::Continue {
            client.stopped = Some(after);
            self.closing.push_back((now + CLOSE_GRACE, key, client.id));
        }
    }

    /// Writes what client `key` is owed, as much as its socket takes now.
    fn flush(&mut self, key: usize) {
        let Some(Handler::Client(client)) = self.handlers.get_mut(key) else {
            return;
        };
        let outbox = &mut self.room.member(client.member).outbox;
        if outbox.is_empty() {
            return;
        }
        match write_some(&mut client.stream, outbox.pending()) {
            Ok(written) => {
                outbox.consume(written);
                self.traffic.wrote(written);
                client.visit.bytes += written as u64;
            }
            Err(e) => self.close(key, Ending::Failed(e)),
        }
    }

    /// After any I/O: closes the client if it is done, or watches for
    /// what it needs now.
    fn settle(&mut self, key: usize, now: Instant) {
        let Some(Handler::Client(client)) = self.handlers.get_mut(key) else {
            return;
        };
        let outbox = &self.room.member(client.member).outbox;
        if outbox.is_too_slow() && client.stopped.is_none() {
            // Cut off: its last bytes get the close grace, as after a quit.
            client.stopped = Some(After::TooSlow);
            self.closing.push_back((now + CLOSE_GRACE, key, client.id));
        }
        if let Some(after) = client.stopped.filter(|_| outbox.is_empty()) {
            return self.close(key, after.ending());
        }
        let wanted = Interest {
            read: client.stopped.is_none(),
            write: !outbox.is_empty(),
        };
        if wanted != client.interest {
            match self.poller.modify(&client.stream, key, wanted) {
                Ok(()) => client.interest = wanted,
                Err(e) => self.close(key, Ending::Failed(e)),
            }
        }
    }

    /// Every client posted to in this turn gets a write attempt: most
    /// lines go out here, without waiting for write readiness.
    fn deliver(&mut self, now: Instant) {
        let mut posted = std::mem::take(&mut self.posted);
        self.room.take_woken(|_, member| posted.push(member.handle));
        for &key in &posted {
            self.flush(key);
            self.settle(key, now);
        }
        posted.clear();
        self.posted = posted;
    }

    /// Resumes accepting after a back-off; closes clients whose grace is
    /// over.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        self.listener.resume_if_due(now)?;
        while let Some(&(at, key, id)) = self.closing.front() {
            if at > now {
                break;
            }
            self.closing.pop_front();
            if let Some(Handler::Client(client)) = self.handlers.get(key) {
                if let (true, Some(after)) = (client.id == id, client.stopped) {
                    self.close(key, after.out_of_time());
                }
            }
        }
        Ok(())
    }
}
