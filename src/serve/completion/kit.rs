//! The completion kit: what every completion loop needs besides its ring
//! (the echo's and the chat's): the loop's turns (`run`: submit and wait
//! in one call, hand each completion over, the timers, `--stats`, and at
//! shutdown every operation cancelled and waited for), the operations'
//! tokens, the sort of a receive's result, the multishot accept that
//! pauses on running out of descriptors, and a generational table of
//! connections, so that a late completion for a connection that is gone
//! is recognised.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::ring::{Buf, Completion, Kind, Outgoing, Ring, Token};
use crate::lab::meter::Meter;
use crate::net::ACCEPT_BACKOFF;
use crate::serve::Context;
use crate::serve::accept::{Accepted, sort};
use crate::serve::turns::{self, Turns};
use crate::shutdown::Shutdown;

/// Submissions the ring holds at once.
pub(crate) const RING_ENTRIES: u32 = 1024;

/// How long shutdown waits for the kernel to finish what is in flight
/// after every socket was shut down (it takes microseconds).
pub(crate) const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);

/// A completion loop, as [`run`] turns it: its ring, what one completion
/// means, what it does after each batch, its `--stats` line, and how it
/// ends its clients at shutdown.
pub(crate) trait Completions<'a> {
    /// Its ring.
    fn ring(&mut self) -> &mut Ring;
    /// How long the next wait may last: until the next timer, or forever.
    fn timeout(&self) -> Option<Duration>;
    /// Its acceptor, its ring, and the settings an accept is admitted by.
    fn acceptor(&mut self) -> (&mut Acceptor<'a>, &mut Ring, &'a Context);
    /// Takes in a client the acceptor admitted: starts its receive.
    ///
    /// # Errors
    /// If the ring refuses the submission.
    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()>;
    /// Its meter: stalls past `--slow-handler`, turns for `--stats`.
    fn meter(&mut self) -> &mut Meter<'a>;
    /// A receive of the live connection `token` completed, and brought
    /// `got`: bytes, the end of the stream, or why it stopped.
    ///
    /// # Errors
    /// If the loop cannot go on.
    fn on_received(&mut self, token: Token, got: Received, now: Instant) -> io::Result<()>;
    /// The flag that says whether the connection `token` names has a
    /// receive in flight, if the connection is live.
    fn receiving(&mut self, token: Token) -> Option<&mut bool>;
    /// Writes a `--stats` line (the final one if `last`).
    fn report(&mut self, now: Instant, last: bool);
    /// A send of `token`'s connection completed with `result`, handing back
    /// what it sent.
    ///
    /// # Errors
    /// If the loop cannot go on.
    fn on_sent(
        &mut self,
        token: Token,
        result: i32,
        sent: Outgoing,
        now: Instant,
    ) -> io::Result<()>;
    /// The offload pool rang: jobs are done.
    ///
    /// # Errors
    /// If the loop cannot go on.
    fn on_jobs(&mut self, _now: Instant) -> io::Result<()> {
        Ok(())
    }
    /// At shutdown: ends every client (the accept and the bell are
    /// cancelled already).
    fn end_all(&mut self);
    /// What comes after a batch: deliveries, receives to start again,
    /// timers due.
    ///
    /// # Errors
    /// If the loop cannot go on.
    fn after(&mut self, now: Instant) -> io::Result<()>;
}

/// Turns a completion loop until `shutdown`: submits what is queued and
/// waits for a completion in one call, hands each over, then the timers.
/// At the end it ends every client and the accept, then waits until the
/// kernel has finished with every operation, so that no memory or
/// descriptor goes while it is still in use.
///
/// # Errors
/// If the ring fails, or the loop cannot go on.
pub(crate) fn run<'a>(l: &mut impl Completions<'a>, shutdown: &Shutdown) -> io::Result<()> {
    turns::run(&mut OnRing(l, shutdown), shutdown)
}

/// A completion loop seen as [`Turns`], and the shutdown its bell triggers.
struct OnRing<'l, L>(&'l mut L, &'l Shutdown);

impl<'a, L: Completions<'a>> Turns<'a> for OnRing<'_, L> {
    fn meter(&mut self) -> &mut Meter<'a> {
        self.0.meter()
    }

    fn wait(&mut self) -> io::Result<()> {
        let timeout = self.0.timeout();
        self.0.ring().submit_and_wait(timeout)
    }

    fn handle(&mut self, now: Instant) -> io::Result<usize> {
        let mut completions = 0;
        while let Some(done) = self.0.ring().next_completion() {
            completions += 1;
            dispatch(self.0, done, now, self.1)?;
        }
        Ok(completions)
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.0.after(now)
    }

    fn report(&mut self, now: Instant, last: bool) {
        self.0.report(now, last);
    }

    fn close_all(&mut self) {
        let ring = self.0.ring();
        let _ = ring.cancel(token(Kind::Accept, 0, 0));
        let _ = ring.cancel(token(Kind::Bell, 0, 0));
        self.0.end_all();
        let deadline = Instant::now() + SHUTDOWN_PATIENCE;
        while let Some(batch) = self.0.ring().drain_round(deadline) {
            for done in batch {
                let _ = dispatch(self.0, done, Instant::now(), self.1);
            }
        }
    }
}

/// Hands a completion to what it means, by its kind, as the readiness kit
/// hands an event to its handler: the bell's triggers `shutdown`, an
/// accept takes in a client, a receive or a send goes to the loop (a
/// receive whose connection is gone gives its buffer back), and a
/// cancellation's own completion means nothing.
///
/// # Errors
/// If the listener broke, or the loop cannot go on.
fn dispatch<'a>(
    l: &mut impl Completions<'a>,
    done: Completion,
    now: Instant,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let Completion {
        token,
        result,
        more,
        received,
        sent,
        accepted,
    } = done;
    match token.kind {
        Kind::Bell => shutdown.trigger(),
        Kind::Cancel => {}
        Kind::Accept => {
            let (acceptor, ring, ctx) = l.acceptor();
            let accept = Accept {
                stream: accepted,
                result,
                more,
            };
            if let Some((stream, peer)) = acceptor.accepted(ring, accept, ctx)? {
                l.register(stream, peer)?;
            }
        }
        Kind::Jobs => l.on_jobs(now)?,
        Kind::Recv => match l.receiving(token) {
            Some(receiving) => {
                if !more {
                    *receiving = false;
                }
                let got = Received::sort(l.ring(), result, received);
                l.on_received(token, got, now)?;
            }
            // Its connection is gone: give the buffer back.
            None => {
                if let Some(buf) = received {
                    l.ring().recycle(buf);
                }
            }
        },
        Kind::Send => {
            let sent = sent.expect("a send completion returns its bytes");
            l.on_sent(token, result, sent, now)?;
        }
    }
    Ok(())
}

/// The token of an operation of `kind` for connection `(slot, generation)`.
pub(crate) fn token(kind: Kind, slot: u32, generation: u32) -> Token {
    Token {
        kind,
        slot,
        generation,
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

/// What an accept's completion brought, for [`Acceptor::accepted`].
pub(crate) struct Accept {
    /// The new client, if the accept succeeded.
    pub stream: Option<TcpStream>,
    /// The completion's result: `-errno` when it failed.
    pub result: i32,
    /// The multishot accept goes on.
    pub more: bool,
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
        completion: Accept,
        ctx: &Context,
    ) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        let Accept {
            stream,
            result,
            more,
        } = completion;
        let accepted = match stream {
            Some(stream) => {
                // A multishot accept does not say who connected; a client
                // that reset already cannot say either. It is served like
                // any other (its receive fails at once), as `accept()`
                // serves it in the other models.
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                Ok((stream, peer))
            }
            None => Err(io::Error::from_raw_os_error(-result)),
        };
        let mut rearm = !more;
        let mut client = None;
        match sort(accepted, &ctx.stats) {
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
