//! `echo-lab compare`: every model under the same load, in one table, one
//! JSON and CSV file, and one chart.
//!
//! Each run starts a server as a child process (`echo-lab serve --mode M
//! --addr 127.0.0.1:0 --quiet`, or any command given with `--also`), loads
//! it with [`bench`](mod@super::bench) at one connection count, then stops
//! it with SIGTERM and checks that it exits cleanly. Servers run side by
//! side for each count, so that the runs compared are close in time. A model that cannot serve every connection
//! (sequential beyond 1, the thread pool beyond its workers) runs for the
//! same bounded time and is shown for what it does: how many connections
//! it served.
//!
//! The files, in reading order:
//! - this one: what to compare ([`CompareConfig`]), the order of the runs
//!   and [`run`], the sweep;
//! - `servers`: launching each server as a child process (on a chosen CPU),
//!   waiting for it to listen, stopping it and judging how it exited; the
//!   process handling's unsafe code is in [`crate::sys`];
//! - `results`: the rows, the whole comparison as `results.json` holds it,
//!   and the medians and ratios over repeats;
//! - `output`: the table, the markdown medians, and the files written;
//! - `chart`: `throughput.svg`, and `axis`, its ticks and number labels;
//! - `against`: this run held against an earlier one (`--against`,
//!   `echo-lab report`), change by change, real or noise.

pub mod against;
mod axis;
mod chart;
mod output;
mod results;
mod servers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;

pub use output::{LATEST, LEGEND, header, render_medians, render_row, write_chart, write_files};
pub use results::{Comparison, Counters, Median, Memory, Ratio, Row, medians};
pub use servers::{Peer, SERVER_PATIENCE, parse_peer};

use super::bench::{self, BenchConfig, Environment};
use crate::lab::work::Work;
use crate::parse::HostPort;
use crate::poller::Backend;
use crate::serve::{Mode, Protocol};
use crate::tools::bench::chat::{self, ChatBenchConfig};
use results::note_for;
use servers::Launch;

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Our models to run.
    pub modes: Vec<Mode>,
    /// What they speak; with chat, `bench --protocol chat` loads them.
    pub protocol: Protocol,
    /// Other servers to run.
    pub also: Vec<Peer>,
    /// Connection counts, each a column of the sweep.
    pub connections: Vec<usize>,
    /// Bytes per message.
    pub size: usize,
    /// Measured time per run.
    pub duration: Duration,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Server on CPU 0, client on CPU 1.
    pub pin: bool,
    /// Server and client both on CPU 0 (total CPU cost decides).
    pub shared_core: bool,
    /// Runs of the whole sweep; the servers run side by side for each
    /// connection count, in an order rotated each repeat.
    pub repeat: usize,
    /// `--threads` for our one-thread models (event loops per server).
    pub server_threads: usize,
    /// Silent connections beside the active ones, for every run.
    pub idle: usize,
    /// Connections that send without pause beside the measured ones.
    pub hogs: usize,
    /// Every message on a new connection (`bench --churn`).
    pub churn: bool,
    /// `--poller` for our one-thread models; their default if `None`.
    pub poller: Option<Backend>,
    /// `--work` for every echo-lab server (not for `--also` peers).
    pub work: Option<Work>,
    /// `--offload` for our one-thread models, with `work`.
    pub offload: usize,
    /// Where the runs go: each in a directory of its own, `latest` naming
    /// the last one.
    pub out: PathBuf,
}

/// Runs the sweep; `on_row` sees each row as it is measured. Once `stop` is
/// set (Ctrl-C), the run under way is cut short and dropped, its server
/// stopped, and the rows measured so far are written, marked partial.
///
/// # Errors
/// A server that cannot be started, or files that cannot be written.
pub fn run(
    config: &CompareConfig,
    stop: &AtomicBool,
    mut on_row: impl FnMut(&Row),
) -> anyhow::Result<Comparison> {
    // Before minutes of runs, not after them. Every run has a directory
    // of its own, so nothing an earlier run wrote is overwritten, or read
    // back as if this run had measured it.
    let dir = output::new_run_directory(&config.out)?;
    let counters_dir = dir.join("counters");
    std::fs::create_dir_all(&counters_dir)
        .with_context(|| format!("creating {}", counters_dir.display()))?;
    let (server_cpu, client_cpu, placement) = placement(config);
    let mut servers: Vec<(String, Launch)> = config
        .modes
        .iter()
        .map(|&m| (m.name().to_owned(), Launch::Model(m)))
        .collect();
    servers.extend(
        config
            .also
            .iter()
            .map(|p| (p.name.clone(), Launch::Peer(p.command.clone()))),
    );
    let mut comparison = Comparison {
        protocol: config.protocol,
        size: config.size,
        duration: config.duration.as_secs_f64(),
        warmup: config.warmup.as_secs_f64(),
        placement: placement.to_owned(),
        rows: Vec::new(),
        unclean_exits: Vec::new(),
        partial: false,
        work: config.work.map(|w| w.to_string()),
        offload: config.offload,
        poller: config.poller.map(|b| b.name().to_owned()),
        idle: config.idle,
        hogs: config.hogs,
        churn: config.churn,
        environment: Environment::current(),
        dir: dir.clone(),
    };
    for (repeat, connections, index) in schedule(servers.len(), &config.connections, config.repeat)
    {
        if stop.load(Relaxed) {
            comparison.partial = true;
            break;
        }
        let (name, launch) = &servers[index];
        let counters_file = counters_dir.join(format!("{name}-{connections}-{repeat}.jsonl"));
        let mut server = match launch.start(server_cpu, config, &counters_file) {
            Ok(server) => server,
            // Ctrl-C reaches the servers too (they are in our process
            // group): one that heard it before it listened is no failure.
            Err(_) if stop.load(Relaxed) => {
                comparison.partial = true;
                break;
            }
            Err(e) => return Err(e.context(format!("starting {name}"))),
        };
        let bench_config = BenchConfig {
            addr: HostPort::from(server.addr),
            connections,
            idle: config.idle,
            hogs: config.hogs,
            duration: config.duration,
            warmup: config.warmup,
            size: config.size,
            depth: 1,
            rate: None,
            threads: 1,
            pin_cpu: client_cpu,
            server_pid: Some(server.child.id()),
            churn: config.churn,
        };
        if config.protocol == Protocol::Echo {
            // What a server sets up once it runs (a loop's tables, the
            // completion ring's 4 MiB of buffers) is in place once it has
            // echoed: measured from here on, memory grows only with the
            // run's clients.
            echo_once(server.addr).with_context(|| format!("{name} did not echo"))?;
        }
        let sampler = MemorySampler::start(server.child.id());
        let results = match config.protocol {
            Protocol::Echo => bench::run_until(&bench_config, stop, |_, _| {})?,
            Protocol::Chat => chat_run(&bench_config)?,
        };
        let clients = connections + config.idle + config.hogs;
        // Under --churn no connection stays: memory per connection means
        // nothing there.
        let memory = sampler.finish((!config.churn).then_some(clients));
        let stopped = server.stop();
        if stop.load(Relaxed) {
            // The run was cut short: its numbers cover part of a window.
            comparison.partial = true;
            break;
        }
        if let Err(e) = stopped {
            comparison
                .unclean_exits
                .push(format!("{name} after {connections} connections: {e:#}"));
        }
        let note = note_for(&results, connections);
        let row = Row {
            server: name.clone(),
            connections,
            repeat,
            results,
            note,
            counters: server.counters.as_deref().and_then(Counters::read),
            memory,
        };
        on_row(&row);
        comparison.rows.push(row);
    }
    output::write_files(&comparison, &dir)?;
    output::mark_latest(&config.out, &dir)?;
    Ok(comparison)
}

/// One byte echoed over a connection of its own, within
/// [`SERVER_PATIENCE`](servers::SERVER_PATIENCE).
fn echo_once(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let patience = servers::SERVER_PATIENCE;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, patience)?;
    stream.set_read_timeout(Some(patience))?;
    stream.write_all(b"x")?;
    let mut byte = [0];
    stream.read_exact(&mut byte)?;
    anyhow::ensure!(byte == *b"x", "echoed {byte:?} for \"x\"");
    Ok(())
}

/// Reads a server's memory every [`Memory::EVERY`] on a thread of its own
/// while a run goes on, and keeps the most it saw.
struct MemorySampler {
    baseline: Option<u64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let baseline = crate::sys::tree_memory(pid).map(|m| m.pss);
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !finished.load(Relaxed) {
                if let Some(memory) = crate::sys::tree_memory(pid) {
                    peak = peak.max(memory.pss);
                }
                std::thread::sleep(Memory::EVERY);
            }
            peak
        });
        MemorySampler {
            baseline,
            done,
            thread,
        }
    }

    /// The run's memory, over `clients` connections held through the run
    /// (`None`: none was).
    fn finish(self, clients: Option<usize>) -> Option<Memory> {
        self.done.store(true, Relaxed);
        let peak = self.thread.join().ok()?;
        let baseline = self.baseline?;
        (peak > 0).then(|| Memory {
            baseline,
            peak,
            per_connection: clients.map(|n| peak.saturating_sub(baseline) / n.max(1) as u64),
        })
    }
}

/// The chat load at the same count and window, pinned as the echo's
/// would be, in the echo's terms: a delivered line is a message.
fn chat_run(echo: &BenchConfig) -> anyhow::Result<bench::BenchResults> {
    let config = ChatBenchConfig {
        addr: echo.addr.clone(),
        connections: echo.connections.max(2),
        duration: echo.duration,
        warmup: echo.warmup,
        depth: 1,
        hogs: echo.hogs,
        server_pid: echo.server_pid,
    };
    if let Some(cpu) = echo.pin_cpu {
        crate::sys::pin_current_thread(cpu)?;
    }
    Ok(chat::run(&config, |_, _| {})?.into())
}

/// Where server and client run: `(server CPU, client CPU, name)`; the name
/// is `shared` (both on CPU 0), `apart` (CPU 0 and 1) or `unpinned`.
pub fn placement(config: &CompareConfig) -> (Option<usize>, Option<usize>, &'static str) {
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if config.shared_core {
        (Some(0), Some(0), "shared")
    } else if config.pin && two_cpus {
        (Some(0), Some(1), "apart")
    } else {
        (None, None, "unpinned")
    }
}

/// The order of the runs: `(repeat, connections, server index)`.
///
/// Every run gets a fresh server, and the servers run side by side for each
/// connection count, so that the runs compared with each other are seconds
/// apart, not minutes: a machine that slows down for a while (a noisy
/// neighbour on a shared VM) slows all of them alike. Each repeat rotates
/// the order by one, so that no server is always first after a change of
/// connection count.
fn schedule(servers: usize, counts: &[usize], repeats: usize) -> Vec<(usize, usize, usize)> {
    let mut runs = Vec::new();
    for repeat in 1..=repeats.max(1) {
        for &connections in counts {
            for i in 0..servers {
                runs.push((repeat, connections, (i + repeat - 1) % servers));
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_run_side_by_side_and_rotate_each_repeat() {
        let runs = schedule(3, &[1, 10], 2);
        let expected = [
            (1, 1, 0),
            (1, 1, 1),
            (1, 1, 2),
            (1, 10, 0),
            (1, 10, 1),
            (1, 10, 2),
            (2, 1, 1),
            (2, 1, 2),
            (2, 1, 0),
            (2, 10, 1),
            (2, 10, 2),
            (2, 10, 0),
        ];
        assert_eq!(runs, expected);
    }
}
