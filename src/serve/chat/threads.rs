//! The chat on threads: the notes' multithreaded chat server, with what it
//! left out done.
//!
//! A thread per client reads its lines and carries them out. The registry
//! is one `Mutex<Registry>`: any thread may register, list, look up or
//! leave at any moment, and without the lock two threads registering the
//! same name at once could both succeed. The threads are scoped, so they
//! borrow the mutex; a client's `Peer` is in an `Arc`, because whoever
//! looked it up may still hold it when its own thread has gone.
//!
//! Delivering a line to another client must not wait for that client: a
//! blocking write to a receiver that does not read would stall the sender,
//! and with it everyone the sender serves. So each client has an outbox
//! (its own small lock) and a writer thread that alone writes to its
//! socket. A sender appends whole lines under the outbox's lock and goes
//! on; the writer takes everything pending and writes it outside any lock.
//! Lines to one receiver are therefore never interleaved, and a slow
//! receiver costs its senders nothing but a bounded outbox.
//!
//! Lock order, the rule that makes this deadlock-free: a reader holds the
//! registry while it posts, so it takes the registry first and then one
//! outbox at a time; a writer takes only its own outbox. Nobody ever holds
//! an outbox and asks for the registry. (The tempting mistake: removing a
//! too-slow receiver from the registry right where we notice it, inside
//! its outbox's lock, while another reader holds the registry and waits
//! for that same outbox.) We shut the receiver's socket instead, and its
//! own reader leaves the registry the normal way.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::CLOSE_GRACE;
use super::counts::ChatCounts;
use super::lockwatch::{self, LockWatch, Watched};
use super::room::{After, Outbox, Registry, Session};
use crate::net::{interrupted, would_block};
use crate::serve::Context;
use crate::serve::blocking::{Client, Clients, report_every, spawn_client};
use crate::stats::Ending;
use crate::sys;

/// Serves the chat with two threads per client until shutdown.
///
/// # Errors
/// If the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let chat = Chat {
        registry: Mutex::new(Registry::default()),
        timed: ctx.config.stats.is_some(),
        shown: Shown::default(),
        watch: ctx.config.lock_order_bug.then(LockWatch::default),
        ctx,
    };
    let mut clients = Clients::new(listener, ctx)?;
    let mut switches = sys::own_context_switches();
    let chat = &chat;
    thread::scope(|outer| {
        let report = report_every(outer, ctx, "threads", move |line| {
            ctx.traffic.fill(line, ctx.stats.active());
            let registered = chat
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            let owed = chat.shown.owed.load(Relaxed).max(0) as u64;
            let delivered = chat.shown.counts.fill(line, registered as u64, owed);
            chat.shown.registry.fill(line);
            // Every thread's, this one's included: one switch a line, at
            // most, is the reporter's own sleep.
            let now = sys::own_context_switches();
            let since = now.saturating_sub(std::mem::replace(&mut switches, now));
            line.count("switches", since)
                .ratio("switches/delivered", since, delivered, 1);
        });
        if let Some(watch) = &chat.watch {
            // --lock-order-bug: a deadlock, once it happens, is named and
            // ends the process; nothing else could (every client thread
            // of it waits forever).
            outer.spawn(move || {
                if let Some(cycle) = watch.watch(DEADLOCK_CHECK, &ctx.shutdown) {
                    eprintln!("deadlock: {}", cycle.join("; "));
                    eprintln!("deadlock: exiting with status {DEADLOCKED}");
                    std::process::exit(DEADLOCKED);
                }
            });
        }
        // Every client's threads end inside this scope, so that the final
        // line counts them all.
        thread::scope(|scope| {
            for client in &mut clients {
                let chat = &chat;
                let name = format!("chat-{}", client.1.peer());
                spawn_client(scope, ctx, name, client, move |client| serve(client, chat));
            }
            // The scope waits for every client's threads; the shutdown
            // has shut their sockets down, so they are finishing.
        });
        if let Some(report) = report {
            report.finish();
        }
    });
    clients.finish()
}

/// How often the deadlock watch looks (`--lock-order-bug` only).
const DEADLOCK_CHECK: Duration = Duration::from_millis(100);

/// The exit status of a server that deadlocked.
pub const DEADLOCKED: i32 = 3;

/// What every client's threads share.
struct Chat<'a> {
    registry: Mutex<Registry<Arc<Peer>>>,
    /// With `--stats`: time each wait for the registry and each hold of it.
    timed: bool,
    shown: Shown,
    /// With `--lock-order-bug`: who holds and waits for which lock.
    watch: Option<LockWatch>,
    ctx: &'a Context,
}

impl Chat<'_> {
    /// The registry, locked (watched with `--lock-order-bug`, timed with
    /// `--stats`).
    fn registry(&self) -> Timed<'_, Watched<'_, Registry<Arc<Peer>>>> {
        let asked = self.timed.then(Instant::now);
        let guard = lockwatch::lock(&self.registry, self.watch.as_ref(), || {
            "the registry".into()
        });
        let held = asked.map(|asked| (&self.shown.registry, self.shown.registry.taken(asked)));
        Timed { guard, held }
    }
}

/// What the threads spent on one lock since the last `--stats` line: how
/// often they took it, how long they waited for it, how long they held
/// it. The measure of chapter 8's question, whether the lock or the
/// hand-off between threads costs more.
#[derive(Default)]
struct LockTimes {
    taken: AtomicU64,
    waited_ns: AtomicU64,
    held_ns: AtomicU64,
}

impl LockTimes {
    /// The lock, asked for at `asked`, was taken now; returns now.
    fn taken(&self, asked: Instant) -> Instant {
        let now = Instant::now();
        self.taken.fetch_add(1, Relaxed);
        self.waited_ns.fetch_add(nanos(now - asked), Relaxed);
        now
    }

    /// Adds the registry's fields to `line`, and starts afresh: the means
    /// in microseconds.
    fn fill(&self, line: &mut crate::lab::live::Line) {
        let taken = self.taken.swap(0, Relaxed);
        let per_lock = taken * 1000;
        line.count("registry_locks", taken)
            .ratio(
                "registry_wait_us",
                self.waited_ns.swap(0, Relaxed),
                per_lock,
                2,
            )
            .ratio(
                "registry_hold_us",
                self.held_ns.swap(0, Relaxed),
                per_lock,
                2,
            );
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A lock's guard that, dropped, adds how long it was held to its
/// [`LockTimes`] (when timed).
struct Timed<'a, G> {
    guard: G,
    held: Option<(&'a LockTimes, Instant)>,
}

impl<G: std::ops::Deref> std::ops::Deref for Timed<'_, G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: std::ops::DerefMut> std::ops::DerefMut for Timed<'_, G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

impl<G> Drop for Timed<'_, G> {
    fn drop(&mut self) {
        // Measured before the guard is dropped, after this: the hold ends
        // a moment later than said.
        if let Some((times, since)) = self.held {
            times.held_ns.fetch_add(nanos(since.elapsed()), Relaxed);
        }
    }
}

/// What `--stats` shows of the chat, counted by every client's threads.
#[derive(Default)]
struct Shown {
    counts: ChatCounts<AtomicU64>,
    /// Waits for the registry and holds of it.
    registry: LockTimes,
    /// Bytes in every outbox, not yet taken by a writer: each change to an
    /// outbox adds its difference, under that outbox's lock.
    owed: AtomicI64,
}

/// A client as the others see it: where to post lines for it.
struct Peer {
    /// Its client's address, to name its outbox's lock.
    addr: SocketAddr,
    mailbox: Mutex<Mailbox>,
    /// Signalled when the mailbox gets its first line, or closes.
    filled: Condvar,
    stream: TcpStream,
}

/// A peer is itself and nobody else: `chat,*` skips the sender by
/// identity, not by name.
impl PartialEq for Peer {
    fn eq(&self, other: &Peer) -> bool {
        std::ptr::eq(self, other)
    }
}

struct Mailbox {
    outbox: Outbox,
    /// The reader is done: the writer sends what is left and stops.
    closed: bool,
    /// Once the client quit or was cut off: when the writer gives up on
    /// what is left.
    deadline: Option<Instant>,
}

impl Peer {
    fn mailbox(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its mailbox, locked and watched (with `--lock-order-bug`).
    fn watched_mailbox<'a>(&'a self, watch: Option<&'a LockWatch>) -> Watched<'a, Mailbox> {
        lockwatch::lock(&self.mailbox, watch, || {
            format!("the outbox of {}", self.addr)
        })
    }

    /// Queues a whole line for this client; never blocks on its socket.
    /// Returns whether this line made it too slow.
    fn post(&self, line: &[u8], chat: &Chat<'_>) -> bool {
        let shown = &chat.shown;
        let mut mailbox = self.watched_mailbox(chat.watch.as_ref());
        let was_empty = mailbox.outbox.is_empty();
        let before = mailbox.outbox.pending().len() as i64;
        let cut_off = mailbox.outbox.push(line);
        let after = mailbox.outbox.pending().len() as i64;
        shown.owed.fetch_add(after - before, Relaxed);
        if cut_off {
            // Too slow: its reader must stop, and leave the registry. We
            // do not touch the registry here: our caller holds it (see the
            // lock order above). The writer has the close grace for the
            // last bytes.
            mailbox.deadline.get_or_insert(Instant::now() + CLOSE_GRACE);
            if !chat.ctx.config.lock_order_bug {
                let _ = self.stream.shutdown(Direction::Read);
            }
            self.filled.notify_one();
        } else if was_empty {
            self.filled.notify_one();
        }
        cut_off
    }
}

/// One client: a reader (this thread) and a writer, until either ends.
fn serve((stream, mut visit): Client<'_>, chat: &Chat<'_>) {
    let (ctx, shown) = (chat.ctx, &chat.shown);
    let peer = visit.peer();
    let me = match stream.try_clone() {
        Ok(writing_half) => Arc::new(Peer {
            addr: peer,
            mailbox: Mutex::new(Mailbox {
                outbox: Outbox::default(),
                closed: false,
                deadline: None,
            }),
            filled: Condvar::new(),
            stream: writing_half,
        }),
        Err(e) => return visit.end(Ending::Failed(e)),
    };
    let waker = me.clone();
    let wake = ctx.shutdown.on_trigger(move || {
        let _ = waker.stream.shutdown(Direction::Both);
        waker.filled.notify_one();
    });
    let ending = thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name(format!("chat-{peer}-writer"))
            .stack_size(ctx.config.stack_size)
            .spawn_scoped(scope, || write_out(&me, chat))?;
        let read = read_lines(&stream, &me, chat);
        // Whatever ended the reading: the writer sends what is left, but
        // waits at most CLOSE_GRACE for the client to take it.
        {
            let mut mailbox = me.mailbox();
            mailbox.closed = true;
            mailbox.deadline.get_or_insert(Instant::now() + CLOSE_GRACE);
        }
        me.filled.notify_one();
        let (bytes, written) = writer.join().unwrap_or((0, Ok(())));
        let (too_slow, left) = {
            let mailbox = me.mailbox();
            (mailbox.outbox.is_too_slow(), mailbox.outbox.pending().len())
        };
        // What the writer never took is owed to nobody now.
        shown.owed.fetch_sub(left as i64, Relaxed);
        let stopped = match read {
            _ if too_slow => After::TooSlow,
            Ok(after) => after,
            Err(e) => return Ok((bytes, Ending::from_error(e))),
        };
        let ending = match written {
            _ if ctx.shutdown.is_triggered() => Ending::Shutdown,
            Ok(()) => stopped.ending(),
            Err(e) if would_block(&e) || e.kind() == io::ErrorKind::TimedOut => {
                stopped.out_of_time()
            }
            Err(e) => Ending::Failed(e),
        };
        Ok::<_, io::Error>((bytes, ending))
    });
    drop(wake);
    let (bytes, ending) = ending.unwrap_or_else(|e| (0, Ending::Failed(e)));
    visit.bytes = bytes;
    drop((stream, me));
    visit.end(ending);
}

/// The notes' per-client thread: read lines and carry them out, under the
/// registry's lock, until `quit`, the end of the stream, or an error.
/// Leaves the registry however it ends.
fn read_lines(mut stream: &TcpStream, me: &Arc<Peer>, chat: &Chat<'_>) -> io::Result<After> {
    let (ctx, shown) = (chat.ctx, &chat.shown);
    let mut session = Session::default();
    let mut buffer = [0; 4096];
    let result = loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break Ok(After::Quit),
            Ok(n) => n,
            Err(e) if interrupted(&e) => continue,
            Err(e) => break Err(e),
        };
        if ctx.config.stats.is_some() {
            ctx.traffic.read(n);
        }
        if let Some(delay) = ctx.config.racy_register {
            let asked = session.free_name_asked(&buffer[..n], &chat.registry());
            if let Some(name) = asked {
                // --racy-register, wrong on purpose: the lock is let go
                // between "is the name free?" and "take it", and every
                // thread that checked meanwhile takes the name too.
                thread::sleep(delay);
                session.take_name(name, me, &mut chat.registry(), &mut |to, line| {
                    to.post(line, chat);
                });
                continue;
            }
        }
        let mut registry = chat.registry();
        match session.receive(me, &buffer[..n], &mut registry, &mut |to, line| {
            let cut_off = to.post(line, chat);
            shown.counts.posted(to != me, cut_off);
        }) {
            After::Continue => {}
            done => break Ok(done),
        }
    };
    session.leave(&mut chat.registry());
    result
}

/// `--lock-order-bug`, wrong on purpose: the tempting mistake the module's
/// doc warns of. A receiver found too slow is unregistered right here,
/// inside its outbox's lock: outbox, then registry, the opposite of a
/// reader, which holds the registry while it posts to an outbox. A sender
/// posting to this receiver meanwhile holds the registry and waits for the
/// outbox; this thread holds the outbox and waits for the registry: neither
/// ever goes on. (The pause only makes the meeting certain: senders that
/// keep writing to the receiver take the registry within it.)
fn unregister_inside_the_outbox(me: &Arc<Peer>, chat: &Chat<'_>) {
    let _outbox = me.watched_mailbox(chat.watch.as_ref());
    thread::sleep(Duration::from_millis(50));
    chat.registry().remove_holder(me);
}

/// How long one blocked `write` lasts before the writer looks at its
/// deadline: a receiver that reads nothing costs a wake-up this often, and
/// only once it has quit or been cut off does the deadline apply.
const WRITE_TICK: Duration = Duration::from_secs(1);

/// The writer: waits for lines, writes them out, until the reader is done
/// and nothing is left, or the deadline passes. Returns the bytes written,
/// and the error that stopped it, if one did.
fn write_out(me: &Arc<Peer>, chat: &Chat<'_>) -> (u64, io::Result<()>) {
    let (ctx, shown) = (chat.ctx, &chat.shown);
    let mut written = 0;
    if let Err(e) = me.stream.set_write_timeout(Some(WRITE_TICK)) {
        return (0, Err(e));
    }
    loop {
        let (bytes, cut_off) = {
            let mut mailbox = me.mailbox();
            while mailbox.outbox.is_empty() && !mailbox.closed {
                mailbox = me
                    .filled
                    .wait(mailbox)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if mailbox.outbox.is_empty() {
                return (written, Ok(()));
            }
            let bytes = mailbox.outbox.take();
            shown.owed.fetch_sub(bytes.len() as i64, Relaxed);
            (bytes, mailbox.outbox.is_too_slow())
        };
        if cut_off && ctx.config.lock_order_bug {
            unregister_inside_the_outbox(me, chat);
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match (&me.stream).write(rest) {
                Ok(n) => {
                    rest = &rest[n..];
                    written += n as u64;
                    if ctx.config.stats.is_some() {
                        ctx.traffic.wrote(n);
                    }
                }
                // The tick passed with nothing taken.
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::TimedOut => {
                    if me.mailbox().deadline.is_some_and(|at| at <= Instant::now()) {
                        return (written, Err(e));
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return (written, Err(e)),
            }
        }
        if cut_off {
            // Its farewell line is out.
            return (written, Ok(()));
        }
    }
}
