//! `bench --churn`: every message on a new connection, as HTTP/1.0 did:
//! connect, send one message, read its echo, close, and again. What it
//! measures is what a model pays to take a client on and let it go (an
//! `accept`, and a thread, a process or a task made and ended), the cost
//! the notes hold against threads and processes: connections per second,
//! and the latency of connect plus echo.
//!
//! Each of `--connections` clients is a thread of its own that churns
//! with blocking calls: the client's own cost per connection is a few
//! system calls, the same for every server.
//!
//! The client closes first, so its side holds each connection's TIME-WAIT
//! state for a minute. Linux lets a new connection to loopback reuse such
//! a port (`net.ipv4.tcp_tw_reuse = 2`, its default), but only a second
//! after the port's last use: from one source address, whose 28,000-odd
//! ports connect picks from, that caps a client near 14,600 connections a
//! second, whatever the server. (Until the kernel's table of TIME-WAIT
//! sockets is full, at `net.ipv4.tcp_max_tw_buckets`, and it stops keeping
//! them: then the cap is gone. Runs alternated between the two, 14,700 or
//! 48,000 a second for the same server, depending on what ran before.)
//! So on Linux, a client of a server on 127.0.0.1 connects from the
//! loopback addresses 127.0.0.2 and on, [`SOURCES`] of them in turn, each
//! with its own ports: what the run measures is the server.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::report::WorkerResult;
use super::{BenchConfig, BenchResults, Window};
use crate::sys;

/// How long one connect or one echo may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(5);

/// Loopback source addresses a churning client takes in turn (Linux,
/// server on 127.0.0.1): 64 port ranges, far past what four clients can
/// use up in the second a port waits before its reuse.
pub const SOURCES: u8 = 64;

/// Connects to `addr` for round `round`: from the next of the loopback
/// sources if the server is on 127.0.0.1 under Linux (see the module
/// doc), otherwise as any client would.
fn connect(addr: SocketAddr, round: u64) -> std::io::Result<TcpStream> {
    match addr {
        SocketAddr::V4(v4) if cfg!(target_os = "linux") && *v4.ip() == Ipv4Addr::LOCALHOST => {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (round % u64::from(SOURCES)) as u8);
            sys::connect_from(source.into(), addr, PATIENCE)
        }
        _ => TcpStream::connect_timeout(&addr, PATIENCE),
    }
}

/// Runs the churn: `config.connections` clients, each connecting anew for
/// every message, until the window ends or `stop` is set.
///
/// # Errors
/// The server's address does not resolve. Failures of the server are
/// results, not errors.
pub fn run(config: &BenchConfig, stop: &AtomicBool) -> anyhow::Result<BenchResults> {
    let addr = *config
        .addr
        .addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", config.addr))?;
    let start = Instant::now();
    let window = Window {
        start,
        measure_from: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    let sample = || {
        (
            sys::own_cpu_time(),
            config.server_pid.and_then(sys::tree_cpu_time),
        )
    };
    let (total, failures, cpu) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..config.connections)
            .map(|id| {
                let window = &window;
                scope.spawn(move || churn(addr, id as u8, config.size, window, stop))
            })
            .collect();
        std::thread::sleep(
            window
                .measure_from
                .saturating_duration_since(Instant::now()),
        );
        let from = sample();
        while Instant::now() < window.end && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(window.end - Instant::now()));
        }
        let to = sample();
        let mut total = WorkerResult::new();
        let mut failures = 0;
        for client in clients {
            if let Ok((result, failed)) = client.join() {
                total.merge(result);
                failures += failed;
            }
        }
        (total, failures, (from, to))
    });
    let seconds = (window.end - window.measure_from).as_secs_f64();
    let ((client_from, server_from), (client_to, server_to)) = cpu;
    let client_cpu = (client_to - client_from).as_secs_f64() / seconds;
    let mut results = total.into_results(config, seconds, client_cpu);
    results.connect_failures = failures;
    results.server_cpu = server_from
        .zip(server_to)
        .map(|(from, to)| to.saturating_sub(from).as_secs_f64() / seconds);
    Ok(results)
}

/// One client: a new connection per message until the window ends.
/// Returns what it measured, and how many connects failed.
fn churn(
    addr: SocketAddr,
    id: u8,
    size: usize,
    window: &Window,
    stop: &AtomicBool,
) -> (WorkerResult, u64) {
    let mut result = WorkerResult::new();
    let mut failures = 0;
    let mut echo = vec![0; size];
    let mut message = vec![id; size];
    for round in 0u64.. {
        let started = Instant::now();
        if started >= window.end || stop.load(Relaxed) {
            break;
        }
        message[..8].copy_from_slice(&round.to_le_bytes());
        let mut stream = match connect(addr, round) {
            Ok(stream) => stream,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    result.error(format!("connect: {e}"));
                }
                // A server out of descriptors or backlog: do not hammer it.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let exchanged = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(PATIENCE)))
            .and_then(|()| stream.write_all(&message))
            .and_then(|()| stream.read_exact(&mut echo));
        drop(stream);
        let done = Instant::now();
        match exchanged {
            Ok(()) if echo == message => {
                result.served += 1;
                if started >= window.measure_from && done <= window.end {
                    result.messages += 1;
                    let micros = done.duration_since(started).as_micros();
                    let _ = result
                        .histogram
                        .record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                }
            }
            Ok(()) => result.error(format!(
                "connection {round}: the echo differs from the message"
            )),
            Err(e) => result.error(format!("connection {round}: {e}")),
        }
    }
    (result, failures)
}
