//! One client thread: a readiness loop over its share of the connections.
//!
//! Each connection keeps `--depth` messages in flight (closed loop) or
//! sends them when due (open loop); each read is checked by [`Expected`]
//! and timed into the thread's [`WorkerResult`]. The loop costs what a
//! server's costs: per echoed message one `read` (registrations are
//! level-triggered, so what it leaves is reported again), one `write` of
//! the next message, and a share of one wait for the whole batch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::report::WorkerResult;
use super::verify::Expected;
use super::{BenchConfig, DRAIN_LIMIT, MAX_UNECHOED_BYTES, MIN_MESSAGE_SIZE, Window};
use crate::net::{interrupted, would_block};
use crate::poller::{Events, Interest, Poller, Registered};
use crate::sys;
use crate::tools::interrupt::CHECK_INTERVAL;

/// One connection of the load.
struct Connection<'p> {
    /// Watched by the worker's poller for as long as it lives.
    stream: Registered<'p, TcpStream>,
    id: u32,
    next_seq: u64,
    /// Bytes queued to send, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// What must come back next, and when each message of it started.
    owed: Expected,
    watching_write: bool,
    /// Open loop: when the next message is due.
    due: Instant,
}

impl Connection<'_> {
    /// Appends message `next_seq` to the queue; its bytes carry the
    /// connection id and sequence number, then a pattern derived from both.
    fn queue_message(&mut self, size: usize, started: Instant) {
        let from = self.out.len();
        self.out.extend_from_slice(&self.id.to_le_bytes());
        self.out.extend_from_slice(&self.next_seq.to_le_bytes());
        let salt = (self.next_seq as u8).wrapping_mul(31) ^ (self.id as u8);
        self.out
            .extend((MIN_MESSAGE_SIZE..size).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt)));
        self.owed.sent(&self.out[from..], started);
        self.next_seq += 1;
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        Ok(())
    }
}

/// One thread's readiness loop over its share of the connections.
pub(super) struct Worker<'a> {
    config: &'a BenchConfig,
    window: &'a Window,
    echoed: &'a AtomicU64,
    /// Set to end the run early (Ctrl-C in `compare`).
    stop: &'a AtomicBool,
    poller: &'a Poller,
    connections: Vec<Option<Connection<'a>>>,
    /// Open loop: connections by the instant their next message is due.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open loop: time between two messages of one connection.
    period: Option<Duration>,
    /// Past the window: no new messages, only collecting echoes.
    draining: bool,
    result: WorkerResult,
}

impl<'a> Worker<'a> {
    pub(super) fn new(
        config: &'a BenchConfig,
        poller: &'a Poller,
        share: Vec<(u32, TcpStream)>,
        window: &'a Window,
        echoed: &'a AtomicU64,
        stop: &'a AtomicBool,
    ) -> anyhow::Result<Self> {
        if let Some(cpu) = config.pin_cpu {
            sys::pin_current_thread(cpu).with_context(|| format!("running on CPU {cpu}"))?;
        }
        // Each connection sends at rate / connections; their first messages
        // are spread over one period so they do not all start together.
        let period = config
            .rate
            .map(|rate| Duration::from_secs_f64(config.connections as f64 / rate));
        let mut worker = Worker {
            config,
            window,
            echoed,
            stop,
            poller,
            connections: Vec::with_capacity(share.len()),
            schedule: BinaryHeap::new(),
            period,
            draining: false,
            result: WorkerResult::new(),
        };
        for (key, (id, stream)) in share.into_iter().enumerate() {
            let phase = period.map_or(Duration::ZERO, |p| {
                p.mul_f64(id as f64 / config.connections as f64)
            });
            let mut conn = Connection {
                stream: poller.register(stream, key, Interest::READ)?,
                id,
                next_seq: 0,
                out: Vec::with_capacity(config.size * config.depth),
                sent: 0,
                owed: Expected::with_capacity(config.size, config.depth),
                watching_write: false,
                due: window.start + phase,
            };
            if period.is_some() {
                worker.schedule.push(Reverse((conn.due, key)));
            } else {
                for _ in 0..config.depth {
                    conn.queue_message(config.size, window.start);
                }
            }
            worker.connections.push(Some(conn));
            worker.after_io(key, |conn| conn.flush());
        }
        Ok(worker)
    }

    pub(super) fn run(mut self) -> anyhow::Result<WorkerResult> {
        let mut events = Events::new();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= self.window.end || self.stop.load(Relaxed) {
                break;
            }
            self.send_due(now);
            let next = self
                .schedule
                .peek()
                .map_or(self.window.end, |Reverse((at, _))| {
                    (*at).min(self.window.end)
                });
            // Woken at least every CHECK_INTERVAL to see `stop`.
            let timeout = next.saturating_duration_since(now).min(CHECK_INTERVAL);
            self.wait_and_receive(&mut events, &mut buffer, timeout)?;
        }
        for conn in self.connections.iter().flatten() {
            // Sent before the window opened (or as it opened), and still
            // unanswered as it closes: it waited through all of it.
            let waited_throughout = conn
                .owed
                .waiting_since()
                .filter(|&t| t <= self.window.measure_from)
                .count() as u64;
            self.result.starved += waited_throughout;
            self.result.abandoned += u64::from(waited_throughout > 0);
            if waited_throughout > 0 {
                // Given up on: it will close with a reset (SO_LINGER 0),
                // which is how the server tells a client that abandoned it
                // from one that left in good order. A plain close would
                // look like the latter: the server would read the waiting
                // message, write its echo into a socket nobody reads, and
                // count a clean close, so the two ends would disagree.
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            }
            self.result.served += u64::from(conn.owed.completed() > 0);
        }
        // Collect what served connections still have in flight, then close:
        // closing a socket with unread data would reset it.
        self.draining = true;
        let drain_until = Instant::now() + DRAIN_LIMIT;
        let in_flight = |c: &Connection<'_>| c.owed.completed() > 0 && c.owed.unechoed_bytes() > 0;
        while !self.stop.load(Relaxed) && self.connections.iter().flatten().any(in_flight) {
            let now = Instant::now();
            if now >= drain_until {
                break;
            }
            self.wait_and_receive(&mut events, &mut buffer, drain_until - now)?;
        }
        Ok(std::mem::replace(&mut self.result, WorkerResult::new()))
    }

    /// One wait for readiness, and the reads and writes it allows.
    fn wait_and_receive(
        &mut self,
        events: &mut Events,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> io::Result<()> {
        self.poller.wait(events, Some(timeout))?;
        let mut echoed = 0;
        for event in events.iter() {
            if event.writable {
                self.after_io(event.key, |conn| conn.flush());
            }
            if event.readable {
                echoed += self.receive(event.key, buffer);
            }
        }
        self.echoed.fetch_add(echoed, Relaxed);
        Ok(())
    }

    /// Open loop: queues every message that is due by `now`.
    fn send_due(&mut self, now: Instant) {
        let (Some(period), size) = (self.period, self.config.size) else {
            return;
        };
        while let Some(&Reverse((at, key))) = self.schedule.peek() {
            if at > now {
                break;
            }
            self.schedule.pop();
            let Some(conn) = self.connections[key].as_mut() else {
                continue;
            };
            if conn.owed.unechoed_bytes() + size > MAX_UNECHOED_BYTES {
                self.result.skipped += 1;
            } else {
                // Latency counts from when the message was due.
                conn.queue_message(size, conn.due);
            }
            conn.due += period;
            self.schedule.push(Reverse((conn.due, key)));
            self.after_io(key, |conn| conn.flush());
        }
    }

    /// Reads once from a ready connection, checks what came back, records
    /// latencies, and (closed loop) sends the next messages.
    fn receive(&mut self, key: usize, buffer: &mut [u8]) -> u64 {
        let size = self.config.size;
        let closed_loop = self.period.is_none() && !self.draining;
        let Some(conn) = self.connections[key].as_mut() else {
            return 0;
        };
        let n = match conn.stream.read(buffer) {
            Ok(0) => {
                let what = format!(
                    "connection {}: the server closed it with {} bytes unechoed",
                    conn.id,
                    conn.owed.unechoed_bytes()
                );
                self.close(key, Some(what));
                return 0;
            }
            Ok(n) => n,
            Err(e) if would_block(&e) || interrupted(&e) => return 0,
            Err(e) => {
                let what = format!("connection {}: {e}", conn.id);
                self.close(key, Some(what));
                return 0;
            }
        };
        let now = Instant::now();
        let counted = now >= self.window.measure_from && now < self.window.end;
        let (histogram, messages) = (&mut self.result.histogram, &mut self.result.messages);
        let mut completed = 0;
        let verified = conn.owed.check(&buffer[..n], size, |started| {
            completed += 1;
            if counted {
                *messages += 1;
                let micros = now.saturating_duration_since(started).as_micros().max(1);
                let _ = histogram.record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
        });
        if let Err(mismatch) = verified {
            let what = format!("connection {}: {mismatch}", conn.id);
            self.close(key, Some(what));
            return 0;
        }
        if closed_loop && completed > 0 {
            for _ in 0..completed {
                conn.queue_message(size, now);
            }
            self.after_io(key, |conn| conn.flush());
        }
        completed
    }

    /// Runs `io` on a connection, then watches for writability only while
    /// bytes wait to be sent; a failure closes the connection as an error.
    fn after_io(&mut self, key: usize, io: impl FnOnce(&mut Connection<'_>) -> io::Result<()>) {
        let Some(conn) = self.connections[key].as_mut() else {
            return;
        };
        if let Err(e) = io(conn) {
            let what = format!("connection {}: {e}", conn.id);
            self.close(key, Some(what));
            return;
        }
        let want_write = !conn.out.is_empty();
        if want_write != conn.watching_write {
            let interest = Interest {
                read: true,
                write: want_write,
            };
            if self.poller.modify(&conn.stream, key, interest).is_ok() {
                conn.watching_write = want_write;
            }
        }
    }

    fn close(&mut self, key: usize, error: Option<String>) {
        if let Some(conn) = self.connections[key].take() {
            // Connections still open when the window ended were counted then.
            if !self.draining {
                self.result.served += u64::from(conn.owed.completed() > 0);
            }
        }
        if let Some(what) = error {
            self.result.error(what);
        }
    }
}
