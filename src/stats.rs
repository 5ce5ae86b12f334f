//! What a server counts and logs: connections, bytes, peaks, accept
//! failures, and the summary printed on shutdown.
//!
//! Every model reports the life of each connection here, so that the logs
//! and the summary read the same whichever model produced them. Per-message
//! work never touches this type: bytes are added once, when a connection ends.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::net::{AcceptFailure, classify_accept_error};

/// How a connection ended.
#[derive(Debug)]
pub enum Ending {
    /// The client closed (or half-closed) and got every byte back.
    Closed,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The client reset the connection while nothing was owed to it: it
    /// left, abruptly, but abandoned nothing (`bench --idle` closes its
    /// idle connections so).
    Reset,
    /// The connection failed: a reset or a broken pipe while an echo was
    /// owed (abandoned by the client), or another error.
    Failed(io::Error),
    /// The server cut the client off, for this reason (a chat receiver too
    /// slow to keep up, a client that only sends garbage). A reference to
    /// the reason, one word where a `&str` is two: an `Ending` is then 16
    /// bytes, and every client's account ([`Visit`](crate::serve::accept::Visit))
    /// 8 bytes smaller.
    Dropped(&'static &'static str),
}

impl Ending {
    /// Classifies an I/O error that ended a connection. A blocking socket
    /// whose read or write timeout expired reports `WouldBlock`/`TimedOut`.
    pub fn from_error(e: io::Error) -> Ending {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ending::IdleTimeout,
            _ => Ending::Failed(e),
        }
    }

    /// Classifies an error met while *reading*, with nothing held for the
    /// client (no unsent echo): a reset then means the client left owing
    /// and owed nothing, because the kernel hands over every byte a client
    /// sent before its reset ahead of the reset itself. Met while writing,
    /// or with an echo held, the same reset is an abandonment
    /// ([`Ending::from_error`]).
    pub fn from_read_error(e: io::Error) -> Ending {
        if abandoned(&e) {
            Ending::Reset
        } else {
            Ending::from_error(e)
        }
    }
}

/// Counters and logs of one server run. Shared by reference between the
/// threads of a model.
#[derive(Debug)]
pub struct Stats {
    quiet: bool,
    max_connections: u64,
    rejected: AtomicU64,
    reject_burst: AtomicU64,
    started: Instant,
    served: AtomicU64,
    active: AtomicU64,
    peak: AtomicU64,
    bytes: AtomicU64,
    idle_closed: AtomicU64,
    abandoned: AtomicU64,
    failed: AtomicU64,
    accept_errors: AtomicU64,
    accept_burst: AtomicU64,
    stalls: AtomicU64,
    dropped: AtomicU64,
    /// What the bytes a server writes are, for the summary: `echoed`, or
    /// `sent` for the chat.
    written: &'static str,
}

impl Stats {
    /// Fresh counters; `quiet` silences the per-connection log lines;
    /// clients beyond `max_connections` at once are turned away.
    pub fn new(quiet: bool, max_connections: usize) -> Self {
        Stats {
            quiet,
            max_connections: max_connections as u64,
            rejected: AtomicU64::new(0),
            reject_burst: AtomicU64::new(0),
            started: Instant::now(),
            served: AtomicU64::new(0),
            active: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            accept_burst: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written: "echoed",
        }
    }

    /// The summary calls the bytes written `sent`, not `echoed`.
    pub fn sending(mut self) -> Self {
        self.written = "sent";
        self
    }

    /// A client was accepted: counts it and returns whether it may stay.
    /// Over the connection limit it is counted as rejected (logged once per
    /// burst) and the caller closes it at once. An accepted client ends a
    /// burst of accept failures, if one was going on, with one line.
    #[must_use = "a client that is not admitted must be closed"]
    pub fn admit(&self, peer: SocketAddr) -> bool {
        let failures = self.accept_burst.swap(0, Relaxed);
        if failures > 0 {
            eprintln!("accepting again after {failures} failed attempts");
        }
        let active = self.active.fetch_add(1, Relaxed) + 1;
        if active > self.max_connections {
            self.active.fetch_sub(1, Relaxed);
            self.rejected.fetch_add(1, Relaxed);
            if self.reject_burst.fetch_add(1, Relaxed) == 0 {
                eprintln!(
                    "connection limit of {} reached: closing new clients at once until some leave",
                    self.max_connections
                );
            }
            return false;
        }
        let rejected = self.reject_burst.swap(0, Relaxed);
        if rejected > 0 {
            eprintln!("admitting clients again after turning {rejected} away");
        }
        self.served.fetch_add(1, Relaxed);
        self.peak.fetch_max(active, Relaxed);
        if !self.quiet {
            eprintln!("connection from {peer}");
        }
        true
    }

    /// A client is gone after `bytes` were echoed to it. Logged once.
    pub fn disconnected(&self, peer: SocketAddr, bytes: u64, ending: Ending) {
        self.active.fetch_sub(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        match &ending {
            Ending::IdleTimeout => self.idle_closed.fetch_add(1, Relaxed),
            Ending::Failed(e) if abandoned(e) => self.abandoned.fetch_add(1, Relaxed),
            Ending::Failed(_) => self.failed.fetch_add(1, Relaxed),
            Ending::Dropped(_) => self.dropped.fetch_add(1, Relaxed),
            Ending::Closed | Ending::Reset | Ending::Shutdown => 0,
        };
        if self.quiet {
            return;
        }
        match ending {
            Ending::Closed => eprintln!("{peer} disconnected after {bytes} bytes"),
            Ending::Reset => {
                eprintln!(
                    "{peer} disconnected after {bytes} bytes (reset by the client, owed nothing)"
                )
            }
            Ending::IdleTimeout => {
                eprintln!("{peer} disconnected after {bytes} bytes (idle timeout)")
            }
            Ending::Shutdown => {
                eprintln!("{peer} disconnected after {bytes} bytes (server shutdown)")
            }
            Ending::Failed(e) if abandoned(&e) => {
                eprintln!("{peer} disconnected after {bytes} bytes (abandoned: {e})")
            }
            Ending::Failed(e) => eprintln!("{peer} disconnected after {bytes} bytes ({e})"),
            Ending::Dropped(why) => {
                eprintln!("{peer} disconnected after {bytes} bytes (dropped: {why})")
            }
        }
    }

    /// `accept()` failed: counts it, logs the first failure of a burst, and
    /// says what to do next. The burst ends at the next accepted client.
    pub fn accept_failed(&self, e: &io::Error) -> AcceptFailure {
        let failure = classify_accept_error(e);
        if matches!(failure, AcceptFailure::Fatal) {
            return failure;
        }
        self.accept_errors.fetch_add(1, Relaxed);
        if self.accept_burst.fetch_add(1, Relaxed) == 0 {
            match failure {
                AcceptFailure::Exhausted => {
                    eprintln!("accept failed: {e}; backing off, clients wait in the backlog")
                }
                _ => eprintln!("accept failed: {e}; continuing"),
            }
        }
        failure
    }

    /// A one-thread loop ran past `--slow-handler` without waiting.
    pub fn stalled(&self) {
        self.stalls.fetch_add(1, Relaxed);
    }

    /// Times a one-thread loop stalled.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Relaxed)
    }

    /// Clients connected right now.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Clients accepted since the start.
    pub fn served(&self) -> u64 {
        self.served.load(Relaxed)
    }

    /// Bytes echoed by connections that have ended.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Clients that left before taking every echo (a reset, a broken pipe):
    /// what `bench` counts as the connections it gave up on.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Relaxed)
    }

    /// Clients turned away over the connection limit.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    /// The most clients connected at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counts of the summary, for a master process to add up its
    /// workers' (`serve --processes`).
    pub fn totals(&self) -> Totals {
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        Totals {
            served: load(&self.served),
            bytes: load(&self.bytes),
            peak: load(&self.peak),
            idle_closed: load(&self.idle_closed),
            abandoned: load(&self.abandoned),
            failed: load(&self.failed),
            accept_errors: load(&self.accept_errors),
            rejected: load(&self.rejected),
            stalls: load(&self.stalls),
            dropped: load(&self.dropped),
        }
    }

    /// Adds a worker's `totals` into these counters; the peak becomes the
    /// busiest worker's (their peaks may not have been at the same time).
    pub fn absorb(&self, totals: &Totals) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Relaxed);
        add(&self.served, totals.served);
        add(&self.bytes, totals.bytes);
        self.peak.fetch_max(totals.peak, Relaxed);
        add(&self.idle_closed, totals.idle_closed);
        add(&self.abandoned, totals.abandoned);
        add(&self.failed, totals.failed);
        add(&self.accept_errors, totals.accept_errors);
        add(&self.rejected, totals.rejected);
        add(&self.stalls, totals.stalls);
        add(&self.dropped, totals.dropped);
    }

    /// The one-paragraph summary printed on shutdown.
    pub fn summary(&self) -> String {
        let stalls = match self.stalls() {
            0 => String::new(),
            n => format!("; the loop stalled {}", counted(n, "time")),
        };
        let dropped = match self.dropped.load(Relaxed) {
            0 => String::new(),
            n => format!("; {n} dropped by the server (too slow, or sending garbage)"),
        };
        format!(
            "shutting down after {:.1}s: served {}, {} {}, peak {} at once; \
             {} closed for idleness, {} abandoned by their client, {} failed, \
             {}, {} turned away over the connection limit{stalls}{dropped}",
            self.uptime().as_secs_f64(),
            counted(self.served(), "connection"),
            self.written,
            counted(self.bytes(), "byte"),
            counted(self.peak(), "client"),
            self.idle_closed.load(Relaxed),
            self.abandoned.load(Relaxed),
            self.failed.load(Relaxed),
            counted(self.accept_errors.load(Relaxed), "accept error"),
            self.rejected(),
        )
    }
}

/// The counts of a [`Stats`] as plain numbers: what a worker process
/// hands its master at exit, as one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Clients accepted.
    pub served: u64,
    /// Bytes written back to clients that have ended.
    pub bytes: u64,
    /// The most clients at once.
    pub peak: u64,
    /// Closed for idleness.
    pub idle_closed: u64,
    /// Left by their client before taking every byte.
    pub abandoned: u64,
    /// Ended by an error of the server's side.
    pub failed: u64,
    /// Failed `accept()` calls.
    pub accept_errors: u64,
    /// Turned away over the connection limit.
    pub rejected: u64,
    /// Stalls of a one-thread loop.
    pub stalls: u64,
    /// Dropped by the server (too slow, or sending garbage).
    pub dropped: u64,
}

/// A connection the client left (a reset, or a write to a client that has
/// gone: EPIPE) before it took every echo: it abandoned the server, as
/// `bench` reports a client that gave up waiting. Not the server's failure.
/// (Met while reading with nothing owed, the same error is
/// [`Ending::Reset`].)
fn abandoned(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// `1 connection`, `2 connections`: a count and its noun, agreeing.
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
