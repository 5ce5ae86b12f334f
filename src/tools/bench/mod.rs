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
//!
//! The files, in reading order:
//! - this one: the parameters ([`BenchConfig`], [`validate`]) and [`run`],
//!   which opens the connections, splits them over the client threads,
//!   samples CPU time at the edges of the measured window and merges what
//!   the threads measured;
//! - `worker`: one client thread's readiness loop, and a connection of the
//!   load (its messages, its writes, its reads);
//! - `verify`: the check of every echoed byte against the bytes sent;
//! - `report`: what a run measured ([`BenchResults`], [`Latency`]), where
//!   ([`Environment`]), and the text report ([`render`]);
//! - [`chat`]: `bench --protocol chat`, its parameters and report in
//!   `mod.rs`, its load in `load.rs`.

pub mod chat;
mod churn;
mod report;
mod verify;
mod worker;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use report::WorkerResult;
pub use report::{BenchReport, BenchResults, Environment, Latency, render, utc_now};
use worker::Worker;

use crate::net::{connect, connect_patiently};
use crate::parse::HostPort;
use crate::poller::{Backend, Poller};
use crate::serve::Protocol;
use crate::sys;
use crate::tools::hogs::Hogs;

/// The default message size.
pub const DEFAULT_MESSAGE_SIZE: usize = 512;

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
pub(crate) const ERROR_SAMPLES: usize = 5;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// The server.
    #[serde(serialize_with = "display")]
    pub addr: HostPort,
    /// Connections opened before the run.
    pub connections: usize,
    /// More connections that connect and stay silent for the whole run:
    /// the C10K shape, where most clients are idle.
    pub idle: usize,
    /// More connections that send without pause for the whole run (see
    /// [`hogs`](crate::tools::hogs)); the latencies are the measured
    /// connections' only: the noisy-neighbour view.
    pub hogs: usize,
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
    /// Every message on a new connection (`--churn`): the `connections`
    /// are clients that each connect, send, read the echo and close, over
    /// and over; a message is a connection.
    pub churn: bool,
}

pub(crate) fn display<S: serde::Serializer>(value: &HostPort, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

pub(crate) fn seconds<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
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
    on_progress: impl FnMut(f64, u64),
) -> anyhow::Result<BenchResults> {
    run_until(config, &AtomicBool::new(false), on_progress)
}

/// As [`run`], but ends early, within
/// [`CHECK_INTERVAL`](crate::tools::interrupt::CHECK_INTERVAL), once `stop` is
/// set (an [`Interrupt`](crate::tools::interrupt::Interrupt)); what it
/// returns then covers only part of the window and is not to be reported.
///
/// # Errors
/// As [`run`].
pub fn run_until(
    config: &BenchConfig,
    stop: &AtomicBool,
    mut on_progress: impl FnMut(f64, u64),
) -> anyhow::Result<BenchResults> {
    validate(config)?;
    if config.churn {
        return churn::run(config, stop);
    }
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
    // Held open, silent, until the run ends.
    let _idle = open_idle(config)?;
    // Sending without pause until the run ends.
    let hogs = Hogs::start(&config.addr, config.hogs, Protocol::Echo)?;
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
                scope.spawn(move || {
                    let poller = Poller::new(Backend::default())?;
                    Worker::new(config, &poller, share, window, echoed, stop)?.run()
                })
            })
            .collect();
        // Sample CPU use, ours and the server's, at the edges of the
        // measured window: sleep no further than the next edge.
        let sample = || {
            (
                sys::own_cpu_time(),
                config.server_pid.and_then(sys::tree_cpu_time),
            )
        };
        let mut cpu_from = None;
        loop {
            let now = Instant::now();
            if cpu_from.is_none() && now >= window.measure_from {
                cpu_from = Some(sample());
            }
            if now >= window.end || stop.load(Relaxed) {
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
    results.hogs_received = hogs.received();
    if results.served_connections == 0 && results.errors == 0 && !stop.load(Relaxed) {
        let opened = config.connections as u64 - connect_failures;
        results.error_samples.insert(
            0,
            format!(
                "no echo came back in {:.1}s: the server accepted {} and answered none",
                (config.warmup + config.duration).as_secs_f64(),
                crate::stats::counted(opened, "connection"),
            ),
        );
    }
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

/// Opens the `--idle` connections, within [`CONNECT_PHASE_LIMIT`]. They
/// send nothing and are never read; the server holds them all the same.
///
/// Each is closed with a reset when the run ends (`SO_LINGER` 0): the
/// thousands of them would otherwise wait a minute in TIME_WAIT, and a run
/// started within that minute had some of its connects time out, their
/// SYNs dropped by the kernel's check against those old connections
/// (`TcpExtPAWSTimewait` counted one for each).
///
/// # Errors
/// Not all of them could be opened: the measurement would not be what was
/// asked, so it is not made.
fn open_idle(config: &BenchConfig) -> anyhow::Result<Vec<TcpStream>> {
    let deadline = Instant::now() + CONNECT_PHASE_LIMIT;
    let mut idle = Vec::with_capacity(config.idle);
    for _ in 0..config.idle {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = connect(&config.addr, left.min(Duration::from_secs(2))).map_err(|e| {
            let limit = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
            {
                Some(libc::EMFILE | libc::ENFILE) => format!(
                    " (the descriptor limit is {})",
                    sys::fd_limits().map_or(0, |(soft, _)| soft)
                ),
                _ => String::new(),
            };
            e.context(format!(
                "opening idle connection {} of {}{limit}",
                idle.len() + 1,
                config.idle
            ))
        })?;
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        idle.push(stream);
    }
    Ok(idle)
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
            // The first connect waits for a server still starting; the
            // others find it listening, or fail at once.
            let timeout = left.min(Duration::from_secs(2));
            if i == 0 {
                connect_patiently(&config.addr, timeout)
            } else {
                connect(&config.addr, timeout)
            }
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
