//! `echo-lab bench`: a load generator whose numbers can be trusted.
//!
//! - Every byte is checked. Each message starts with its connection id and
//!   sequence number, and every byte that comes back is compared with the
//!   byte sent at that position of the stream, so a lost, duplicated,
//!   reordered or corrupted byte is an error, never a silent success.
//! - Closed loop by default: each connection keeps `--depth` messages in
//!   flight and sends the next when one is back. `--rate` switches to an
//!   open loop, where messages are due at fixed instants whether or not the
//!   server keeps up, and latency counts from the instant a message was due:
//!   a server that stalls cannot hide its stall by slowing the client down
//!   (coordinated omission).
//! - Warm-up is excluded: only messages echoed inside the measured window
//!   count, and rates divide by that window as the clock measured it.
//! - The client is itself a readiness loop, one per `--threads` thread, so
//!   one process can drive 10,000 connections, and it reports its own CPU
//!   use so that a reader can tell whether it was the bottleneck.
//! - It costs what a server costs: per echoed message one `read` (once per
//!   readiness event; registrations are level-triggered, so what it leaves
//!   is reported again), one `write` of the next message, and a share of
//!   one epoll wait for the whole batch of ready connections. `epoll_ctl`
//!   runs only when a connection starts or stops waiting for room to write;
//!   the clock is read once per read through the vDSO, not a syscall.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::epoll::{Events, Interest, Poller};
use crate::net::{connect, interrupted, would_block};
use crate::parse::HostPort;
use crate::sys;

/// The smallest message: 4 bytes of connection id and 8 of sequence number.
pub const MIN_MESSAGE_SIZE: usize = 12;

/// How long connecting every connection may take in all. A server that
/// accepts nothing (a full backlog) cannot hold the benchmark up for longer.
pub const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(10);

/// In open-loop mode, the most bytes one connection may have sent and not
/// had back. Past it the server is not keeping up: due messages are
/// skipped and counted instead of piling up in memory.
pub const MAX_UNECHOED_BYTES: usize = 8 << 20;

/// After the measured window, how long bench waits for the echoes still in
/// flight before closing, so that it closes cleanly (FIN) instead of
/// resetting connections with unread data in them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How many error descriptions are kept for the report.
const ERROR_SAMPLES: usize = 5;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// The server.
    #[serde(serialize_with = "display")]
    pub addr: HostPort,
    /// Connections opened before the run.
    pub connections: usize,
    /// The measured window.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Run before the measured window; not counted.
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub depth: usize,
    /// Messages per second in total (open loop), if set.
    pub rate: Option<f64>,
    /// Client threads, each with its own readiness loop.
    pub threads: usize,
    /// Run the client threads on this CPU.
    pub pin_cpu: Option<usize>,
    /// A server process on this machine whose CPU use to measure over the
    /// same window (`compare` sets it for the servers it starts).
    pub server_pid: Option<u32>,
}

fn display<S: serde::Serializer>(value: &HostPort, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn seconds<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest message.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchResults {
    /// Messages whose echo arrived inside the measured window, each judged
    /// by a clock reading taken as it arrived.
    pub messages: u64,
    /// The length of that window, in seconds: the span between two
    /// instants of the monotonic clock. A message counts only if the clock
    /// says it arrived between them, so a run that stalls or overshoots its
    /// end counts what really arrived in that wall time, nothing more.
    pub seconds: f64,
    /// `messages / seconds`.
    pub messages_per_sec: f64,
    /// Echoed bytes per second in each direction, in MiB.
    pub mib_per_sec: f64,
    /// Latency of the measured messages, in microseconds.
    pub latency_us: Latency,
    /// Connections that could not be established.
    pub connect_failures: u64,
    /// Connections that failed: wrong bytes, early close, reset.
    pub errors: u64,
    /// The first few errors, described.
    pub error_samples: Vec<String>,
    /// Connections that got at least one echo during the whole run.
    pub served_connections: u64,
    /// Messages sent before the measured window that were still without
    /// their echo when it ended: they waited through all of it (a server
    /// that serves some connections and starves others).
    pub starved: u64,
    /// Open loop only: due messages not sent because the server had not
    /// returned the previous ones.
    pub skipped_sends: u64,
    /// The client's own CPU use over the measured window, in cores.
    pub client_cpu: f64,
    /// The server's CPU use over the same window, in cores, when its
    /// process was given (`server_pid`) and could be read.
    pub server_cpu: Option<f64>,
}

impl BenchResults {
    /// Whether the run shows a failure: an error, a failed connect, or no
    /// echo at all.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.connect_failures > 0 || self.messages == 0
    }
}

/// The environment a run happened in, so a saved result explains itself.
#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    /// echo-lab's version.
    pub version: &'static str,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// CPUs available to this process.
    pub cpus: usize,
    /// The kernel release.
    pub kernel: String,
    /// The descriptor limit (soft) during the run.
    pub fd_limit: u64,
}

impl Environment {
    /// Reads the environment of this process.
    pub fn current() -> Self {
        Environment {
            version: env!("CARGO_PKG_VERSION"),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            fd_limit: sys::fd_limits().map_or(0, |(soft, _)| soft),
        }
    }
}

/// The whole report: what was asked, what was measured, where.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The parameters.
    pub parameters: BenchConfig,
    /// The results.
    pub results: BenchResults,
    /// The environment.
    pub environment: Environment,
}

/// Checks the parameters.
///
/// # Errors
/// A message smaller than [`MIN_MESSAGE_SIZE`], zero connections, depth or
/// threads, or a rate that is not a positive number.
pub fn validate(config: &BenchConfig) -> anyhow::Result<()> {
    if config.size < MIN_MESSAGE_SIZE {
        bail!(
            "--size must be at least {MIN_MESSAGE_SIZE} bytes: a message carries its connection id and sequence number"
        );
    }
    if config.connections == 0 || config.depth == 0 || config.threads == 0 {
        bail!("--connections, --depth and --threads must be at least 1");
    }
    if config.duration.is_zero() {
        bail!("--duration must be longer than zero");
    }
    if let Some(rate) = config.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    Ok(())
}

/// Runs the benchmark. `on_progress` is called about ten times a second
/// with the fraction of the run done and the messages echoed so far.
///
/// # Errors
/// Invalid parameters, or a poller that cannot be created. Failures of the
/// server are results, not errors.
pub fn run(
    config: &BenchConfig,
    mut on_progress: impl FnMut(f64, u64),
) -> anyhow::Result<BenchResults> {
    validate(config)?;
    // Best effort: past the limit, connects fail and are counted.
    let _ = sys::raise_fd_limit();
    let Connected {
        streams,
        failures: connect_failures,
        first_failure,
    } = connect_all(config);
    // Nothing to measure: say why now rather than after the whole run.
    if streams.is_empty() {
        return Err(first_failure.unwrap_or_else(|| anyhow::anyhow!("no connection opened")));
    }
    let echoed = AtomicU64::new(0);
    let start = Instant::now();
    let window = Window {
        start,
        measure_from: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    let mut shares: Vec<Vec<(u32, TcpStream)>> = (0..config.threads).map(|_| Vec::new()).collect();
    for (i, stream) in streams {
        shares[i as usize % config.threads].push((i, stream));
    }
    let mut results = std::thread::scope(|scope| -> anyhow::Result<BenchResults> {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let echoed = &echoed;
                let window = &window;
                scope.spawn(move || Worker::new(config, share, window, echoed)?.run())
            })
            .collect();
        // Sample CPU use, ours and the server's, at the edges of the
        // measured window: sleep no further than the next edge.
        let sample = || {
            (
                sys::own_cpu_time(),
                config.server_pid.and_then(sys::process_cpu_time),
            )
        };
        let mut cpu_from = None;
        loop {
            let now = Instant::now();
            if cpu_from.is_none() && now >= window.measure_from {
                cpu_from = Some(sample());
            }
            if now >= window.end {
                break;
            }
            let total = (window.end - window.start).as_secs_f64();
            on_progress(
                (now - window.start).as_secs_f64() / total,
                echoed.load(Relaxed),
            );
            let edge = match cpu_from {
                None => window.measure_from,
                Some(_) => window.end,
            };
            std::thread::sleep(Duration::from_millis(100).min(edge.saturating_duration_since(now)));
        }
        let (client_to, server_to) = sample();
        let (client_from, server_from) = cpu_from.unwrap_or((client_to, server_to));
        let cpu = client_to - client_from;
        let server_cpu = server_from
            .zip(server_to)
            .map(|(from, to)| to.saturating_sub(from));
        let mut total = WorkerResult::new();
        for worker in workers {
            match worker.join() {
                Ok(result) => total.merge(result?),
                Err(_) => bail!("a benchmark thread panicked"),
            }
        }
        let seconds = (window.end - window.measure_from).as_secs_f64();
        let mut results = total.into_results(config, seconds, cpu.as_secs_f64() / seconds);
        results.server_cpu = server_cpu.map(|cpu| cpu.as_secs_f64() / seconds);
        Ok(results)
    })?;
    results.connect_failures = connect_failures;
    if let Some(e) = first_failure {
        let what = format!("{connect_failures} connect(s) failed, the first with: {e:#}");
        results.error_samples.insert(0, what);
        results.error_samples.truncate(ERROR_SAMPLES);
    }
    on_progress(1.0, echoed.load(Relaxed));
    Ok(results)
}

/// The instants that frame a run.
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// The connections a run opened, and what went wrong with the others.
struct Connected {
    streams: Vec<(u32, TcpStream)>,
    failures: u64,
    /// Why the first failed connect failed.
    first_failure: Option<anyhow::Error>,
}

/// Opens every connection, within [`CONNECT_PHASE_LIMIT`] in all.
fn connect_all(config: &BenchConfig) -> Connected {
    let deadline = Instant::now() + CONNECT_PHASE_LIMIT;
    let mut streams = Vec::with_capacity(config.connections);
    let (mut failures, mut first_failure) = (0, None);
    for i in 0..config.connections {
        let left = deadline.saturating_duration_since(Instant::now());
        let connected = if left.is_zero() {
            Err(anyhow::anyhow!("connect phase over"))
        } else {
            connect(&config.addr, left.min(Duration::from_secs(2)))
                .and_then(|s| s.set_nonblocking(true).map(|()| s).context("non-blocking"))
        };
        match connected {
            Ok(stream) => streams.push((i as u32, stream)),
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    Connected {
        streams,
        failures,
        first_failure,
    }
}

/// One connection of the load.
struct Connection {
    stream: TcpStream,
    id: u32,
    next_seq: u64,
    /// Bytes queued to send, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Every byte sent (or queued) and not yet echoed, in stream order:
    /// what must come back next.
    expected: VecDeque<u8>,
    /// When each unechoed message started (sent, or due in open loop).
    started: VecDeque<Instant>,
    /// Bytes of the oldest unechoed message already back.
    partial: usize,
    watching_write: bool,
    echoes: u64,
    /// Open loop: when the next message is due.
    due: Instant,
}

impl Connection {
    /// Appends message `next_seq` to the queue; its bytes carry the
    /// connection id and sequence number, then a pattern derived from both.
    fn queue_message(&mut self, size: usize, started: Instant) {
        let from = self.out.len();
        self.out.extend_from_slice(&self.id.to_le_bytes());
        self.out.extend_from_slice(&self.next_seq.to_le_bytes());
        let salt = (self.next_seq as u8).wrapping_mul(31) ^ (self.id as u8);
        self.out
            .extend((MIN_MESSAGE_SIZE..size).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt)));
        self.expected.extend(&self.out[from..]);
        self.started.push_back(started);
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

    /// Checks `data` against the expected stream; returns how many messages
    /// it completed, calling `done` with each one's start instant.
    fn verify(
        &mut self,
        data: &[u8],
        size: usize,
        mut done: impl FnMut(Instant),
    ) -> Result<(), String> {
        if data.len() > self.expected.len() {
            return Err(format!(
                "connection {}: {} bytes came back that were never sent (duplicated?)",
                self.id,
                data.len() - self.expected.len()
            ));
        }
        let (a, b) = self.expected.as_slices();
        let in_a = data.len().min(a.len());
        let mismatch = (data[..in_a] != a[..in_a]) || (data[in_a..] != b[..data.len() - in_a]);
        if mismatch {
            return Err(format!(
                "connection {}: echoed bytes differ from those sent (lost, reordered or corrupted) in message {}",
                self.id,
                self.next_seq - self.started.len() as u64
            ));
        }
        self.expected.drain(..data.len());
        self.partial += data.len();
        while self.partial >= size {
            self.partial -= size;
            if let Some(started) = self.started.pop_front() {
                done(started);
            }
            self.echoes += 1;
        }
        Ok(())
    }
}

/// What one thread measured.
struct WorkerResult {
    histogram: Histogram<u64>,
    messages: u64,
    errors: u64,
    error_samples: Vec<String>,
    served: u64,
    starved: u64,
    skipped: u64,
}

impl WorkerResult {
    fn new() -> Self {
        WorkerResult {
            // 1 µs to 1 hour at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            messages: 0,
            errors: 0,
            error_samples: Vec::new(),
            served: 0,
            starved: 0,
            skipped: 0,
        }
    }

    fn merge(&mut self, other: WorkerResult) {
        let _ = self.histogram.add(&other.histogram);
        self.messages += other.messages;
        self.errors += other.errors;
        self.served += other.served;
        self.starved += other.starved;
        self.skipped += other.skipped;
        for sample in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(sample);
            }
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(what);
        }
    }

    fn into_results(self, config: &BenchConfig, seconds: f64, client_cpu: f64) -> BenchResults {
        let h = &self.histogram;
        let at = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64
            }
        };
        BenchResults {
            messages: self.messages,
            seconds,
            messages_per_sec: self.messages as f64 / seconds,
            mib_per_sec: (self.messages * config.size as u64) as f64 / seconds / (1 << 20) as f64,
            latency_us: Latency {
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: if h.is_empty() { 0.0 } else { h.max() as f64 },
                mean: if h.is_empty() { 0.0 } else { h.mean() },
            },
            connect_failures: 0,
            errors: self.errors,
            error_samples: self.error_samples,
            served_connections: self.served,
            starved: self.starved,
            skipped_sends: self.skipped,
            client_cpu,
            server_cpu: None,
        }
    }
}

/// One thread's readiness loop over its share of the connections.
struct Worker<'a> {
    config: &'a BenchConfig,
    window: &'a Window,
    echoed: &'a AtomicU64,
    poller: Poller,
    connections: Vec<Option<Connection>>,
    /// Open loop: connections by the instant their next message is due.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open loop: time between two messages of one connection.
    period: Option<Duration>,
    /// Past the window: no new messages, only collecting echoes.
    draining: bool,
    result: WorkerResult,
}

impl<'a> Worker<'a> {
    fn new(
        config: &'a BenchConfig,
        share: Vec<(u32, TcpStream)>,
        window: &'a Window,
        echoed: &'a AtomicU64,
    ) -> anyhow::Result<Self> {
        if let Some(cpu) = config.pin_cpu {
            sys::pin_current_thread(cpu).with_context(|| format!("running on CPU {cpu}"))?;
        }
        let poller = Poller::new()?;
        // Each connection sends at rate / connections; their first messages
        // are spread over one period so they do not all start together.
        let period = config
            .rate
            .map(|rate| Duration::from_secs_f64(config.connections as f64 / rate));
        let mut worker = Worker {
            config,
            window,
            echoed,
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
                stream,
                id,
                next_seq: 0,
                out: Vec::with_capacity(config.size * config.depth),
                sent: 0,
                expected: VecDeque::with_capacity(config.size * config.depth),
                started: VecDeque::with_capacity(config.depth),
                partial: 0,
                watching_write: false,
                echoes: 0,
                due: window.start + phase,
            };
            // `close` and `Drop for Worker` delete every source before its
            // stream is dropped.
            worker.poller.add(&conn.stream, key, Interest::READ)?;
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

    fn run(mut self) -> anyhow::Result<WorkerResult> {
        let mut events = Events::new();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= self.window.end {
                break;
            }
            self.send_due(now);
            let next = self
                .schedule
                .peek()
                .map_or(self.window.end, |Reverse((at, _))| {
                    (*at).min(self.window.end)
                });
            self.wait_and_receive(
                &mut events,
                &mut buffer,
                next.saturating_duration_since(now),
            )?;
        }
        for conn in self.connections.iter().flatten() {
            let waited_throughout = conn
                .started
                .iter()
                .filter(|&&t| t < self.window.measure_from);
            self.result.starved += waited_throughout.count() as u64;
            self.result.served += u64::from(conn.echoes > 0);
        }
        // Collect what served connections still have in flight, then close:
        // closing a socket with unread data would reset it.
        self.draining = true;
        let drain_until = Instant::now() + DRAIN_LIMIT;
        let in_flight = |c: &Connection| c.echoes > 0 && !c.started.is_empty();
        while self.connections.iter().flatten().any(in_flight) {
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
            if conn.expected.len() + size > MAX_UNECHOED_BYTES {
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
                    conn.expected.len()
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
        let verified = conn.verify(&buffer[..n], size, |started| {
            completed += 1;
            if counted {
                *messages += 1;
                let micros = now.saturating_duration_since(started).as_micros().max(1);
                let _ = histogram.record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
        });
        if let Err(what) = verified {
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
    fn after_io(&mut self, key: usize, io: impl FnOnce(&mut Connection) -> io::Result<()>) {
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
            let _ = self.poller.delete(&conn.stream);
            // Connections still open when the window ended were counted then.
            if !self.draining {
                self.result.served += u64::from(conn.echoes > 0);
            }
        }
        if let Some(what) = error {
            self.result.error(what);
        }
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        for conn in self.connections.iter().flatten() {
            let _ = self.poller.delete(&conn.stream);
        }
    }
}

/// The text report.
pub fn render(report: &BenchReport) -> String {
    let (p, r) = (&report.parameters, &report.results);
    let shape = match p.rate {
        Some(rate) => format!("open loop at {rate:.0} msg/s"),
        None => format!("closed loop, depth {}", p.depth),
    };
    let l = &r.latency_us;
    let ms = |us: f64| format!("{:.3}ms", us / 1000.0);
    let mut out = format!(
        "bench: {} connections to {}, {}-byte messages, {shape}, {:.1}s measured after {:.1}s warm-up, {} thread(s)\n",
        p.connections,
        p.addr,
        p.size,
        p.duration.as_secs_f64(),
        p.warmup.as_secs_f64(),
        p.threads
    );
    out += &format!(
        "  messages     {} ({:.0}/s over {:.3}s)\n",
        r.messages, r.messages_per_sec, r.seconds
    );
    out += &format!("  throughput   {:.2} MiB/s each way\n", r.mib_per_sec);
    out += &format!(
        "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    );
    out += &format!(
        "  connections  {} of {} served, {} connect failures, {} errors\n",
        r.served_connections, p.connections, r.connect_failures, r.errors
    );
    if r.starved > 0 || r.skipped_sends > 0 {
        out += &format!(
            "  starved      {} messages waited through the whole window, {} sends skipped\n",
            r.starved, r.skipped_sends
        );
    }
    out += &format!("  client CPU   {:.0}% of one core\n", r.client_cpu * 100.0);
    for sample in &r.error_samples {
        out += &format!("  error: {sample}\n");
    }
    out
}
