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

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::bench::{self, BenchConfig, BenchResults, Environment};
use crate::parse::HostPort;
use crate::serve::Mode;
use crate::sys;

/// How long a server may take to start listening, and to stop after SIGTERM.
pub const SERVER_PATIENCE: Duration = Duration::from_secs(10);

/// Another echo server to compare: `NAME=COMMAND`, where `{port}` in the
/// command is replaced by a free port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The name in the table.
    pub name: String,
    /// The shell command that starts it.
    pub command: String,
}

/// Parses `NAME=COMMAND`.
///
/// # Errors
/// No `=`, an empty name, or a command without `{port}`.
pub fn parse_peer(text: &str) -> Result<Peer, String> {
    let (name, command) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=COMMAND, got '{text}'"))?;
    if name.trim().is_empty() || name.contains(',') {
        return Err("the name before '=' must be non-empty, without commas".into());
    }
    if !command.contains("{port}") {
        return Err("the command must contain {port}, where the server should listen".into());
    }
    Ok(Peer {
        name: name.trim().to_owned(),
        command: command.to_owned(),
    })
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Our models to run.
    pub modes: Vec<Mode>,
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
    /// Where the files go.
    pub out: PathBuf,
}

/// One server at one connection count.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The model or peer name.
    pub server: String,
    /// Connections of this run.
    pub connections: usize,
    /// Which repeat of the sweep (from 1).
    pub repeat: usize,
    /// What bench measured.
    pub results: BenchResults,
    /// What the table should say about this row, if anything.
    pub note: Option<String>,
}

/// The whole comparison, as written to `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Bytes per message.
    pub size: usize,
    /// Measured seconds per run.
    pub duration: f64,
    /// Warm-up seconds per run.
    pub warmup: f64,
    /// Where server and client ran: `unpinned`, `apart` (CPU 0 and 1) or
    /// `shared` (both on CPU 0).
    pub placement: &'static str,
    /// One row per server and connection count.
    pub rows: Vec<Row>,
    /// Servers that did not stop cleanly, with what happened.
    pub unclean_exits: Vec<String>,
    /// Where it ran.
    pub environment: Environment,
}

/// Runs the sweep; `on_row` sees each row as it is measured.
///
/// # Errors
/// A server that cannot be started, or files that cannot be written.
pub fn run(config: &CompareConfig, mut on_row: impl FnMut(&Row)) -> anyhow::Result<Comparison> {
    // Before minutes of runs, not after them.
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let (server_cpu, client_cpu, placement) = if config.shared_core {
        (Some(0), Some(0), "shared")
    } else if config.pin && two_cpus {
        (Some(0), Some(1), "apart")
    } else {
        (None, None, "unpinned")
    };
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
        size: config.size,
        duration: config.duration.as_secs_f64(),
        warmup: config.warmup.as_secs_f64(),
        placement,
        rows: Vec::new(),
        unclean_exits: Vec::new(),
        environment: Environment::current(),
    };
    for (repeat, connections, index) in schedule(servers.len(), &config.connections, config.repeat)
    {
        let (name, launch) = &servers[index];
        let mut server = launch
            .start(server_cpu, config.server_threads)
            .with_context(|| format!("starting {name}"))?;
        let bench_config = BenchConfig {
            addr: HostPort::from(server.addr),
            connections,
            duration: config.duration,
            warmup: config.warmup,
            size: config.size,
            depth: 1,
            rate: None,
            threads: 1,
            pin_cpu: client_cpu,
            server_pid: Some(server.child.id()),
        };
        let results = bench::run(&bench_config, |_, _| {})?;
        if let Err(e) = server.stop() {
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
        };
        on_row(&row);
        comparison.rows.push(row);
    }
    write_files(&comparison, &config.out)?;
    Ok(comparison)
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

fn note_for(results: &BenchResults, connections: usize) -> Option<String> {
    if results.errors > 0 || results.connect_failures > 0 {
        Some(format!(
            "FAILED: {} errors, {} connect failures",
            results.errors, results.connect_failures
        ))
    } else if (results.served_connections as usize) < connections {
        Some(format!(
            "only {} of {connections} connections served",
            results.served_connections
        ))
    } else {
        None
    }
}

/// How to start a server.
enum Launch {
    Model(Mode),
    Peer(String),
}

/// A running server process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Ours must exit 0 on SIGTERM; a peer may simply die of it.
    ours: bool,
}

impl Launch {
    fn start(&self, cpu: Option<usize>, threads: usize) -> anyhow::Result<ServerProcess> {
        let (mut command, peer_port) = match self {
            Launch::Model(mode) => {
                let mut c =
                    Command::new(std::env::current_exe().context("finding echo-lab itself")?);
                c.args([
                    "serve",
                    "--mode",
                    mode.name(),
                    "--addr",
                    "127.0.0.1:0",
                    "--quiet",
                ]);
                if mode.blocking() == crate::net::Blocking::No {
                    c.args(["--threads", &threads.to_string()]);
                }
                (c, None)
            }
            Launch::Peer(template) => {
                let port = free_port()?;
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!(
                    "exec {}",
                    template.replace("{port}", &port.to_string())
                ));
                (c, Some(port))
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Its own process group, so that SIGTERM reaches whatever it starts.
        command.process_group(0);
        if let Some(cpu) = cpu {
            sys::pin_command(&mut command, cpu);
        }
        let mut server = ServerProcess {
            child: command.spawn().context("spawning the server")?,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ours: peer_port.is_none(),
        };
        // On failure, dropping `server` kills the child.
        server.addr = match peer_port {
            None => read_listening_line(&mut server.child)?,
            Some(port) => wait_for_peer(&mut server.child, port)?,
        };
        Ok(server)
    }
}

/// Reads the `listening on HOST:PORT` line our servers print first.
fn read_listening_line(child: &mut Child) -> anyhow::Result<SocketAddr> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so that the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(SERVER_PATIENCE) {
        Ok(Some(Ok(line))) => line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected first line {line:?}")),
        _ => bail!("no `listening on` line within {SERVER_PATIENCE:?}"),
    }
}

/// Finds a free port by binding port 0 and letting go of it.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until a peer server accepts connections on the port we gave it.
fn wait_for_peer(child: &mut Child, port: u16) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + SERVER_PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} before listening");
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not listening on {addr} within {SERVER_PATIENCE:?}")
}

impl ServerProcess {
    /// SIGTERM, then wait; a server that does not exit cleanly in time is
    /// killed and reported.
    fn stop(&mut self) -> anyhow::Result<()> {
        let leader = self.child.id();
        // It may have exited already: the status below says how.
        let _ = sys::signal_group(leader, libc::SIGTERM);
        let deadline = Instant::now() + SERVER_PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let died_of_it = !self.ours && status.signal() == Some(libc::SIGTERM);
                return if status.success() || died_of_it {
                    Ok(())
                } else {
                    bail!("exited with {status} after SIGTERM")
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = sys::signal_group(leader, libc::SIGKILL);
        let _ = self.child.wait();
        bail!("still running {SERVER_PATIENCE:?} after SIGTERM; killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = sys::signal_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The median of each server at each connection count over the repeats,
/// and its ratio to each baseline server at the same count.
#[derive(Clone, Debug, Serialize)]
pub struct Median {
    /// The model or peer name.
    pub server: String,
    /// Connections.
    pub connections: usize,
    /// Median messages per second.
    pub messages_per_sec: f64,
    /// Median p99 latency, in microseconds.
    pub p99_us: f64,
    /// Median CPU time the server spent per echoed message, in
    /// microseconds: what the message costs it, however busy the client
    /// kept it. `None` when its CPU use could not be read.
    pub server_us_per_msg: Option<f64>,
    /// The ratio to each baseline measured.
    pub ratios: Vec<Ratio>,
}

/// One server against one baseline at one connection count.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The baseline's name.
    pub baseline: String,
    /// The median of the per-repeat msg/s ratios.
    pub rate: f64,
    /// The lowest and highest per-repeat msg/s ratio: how far one repeat
    /// can be trusted.
    pub rate_range: (f64, f64),
    /// The median of the per-repeat p99 ratios.
    pub p99: f64,
}

/// Medians over the repeats, server by server in the order they were
/// given.
///
/// A ratio to a baseline is the median of the per-repeat ratios: each
/// repeat's run divided by the baseline's run of the same repeat, which ran
/// seconds before or after it. Pairing runs this way cancels the slow drift
/// of a shared machine that a ratio of two medians would keep.
pub fn medians(comparison: &Comparison, baselines: &[String]) -> Vec<Median> {
    let mut servers: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for row in &comparison.rows {
        if !servers.contains(&row.server.as_str()) {
            servers.push(&row.server);
        }
        if !counts.contains(&row.connections) {
            counts.push(row.connections);
        }
    }
    let runs_of = |server: &str, connections: usize| -> Vec<&Row> {
        comparison
            .rows
            .iter()
            .filter(|r| r.server == server && r.connections == connections)
            .collect()
    };
    let rate = |r: &Row| r.results.messages_per_sec;
    let p99 = |r: &Row| r.results.latency_us.p99;
    let server_us = |r: &Row| {
        let results = &r.results;
        let cpu = results
            .server_cpu
            .filter(|_| results.messages_per_sec > 0.0)?;
        Some(cpu / results.messages_per_sec * 1e6)
    };
    let mut medians = Vec::new();
    for server in servers {
        for &connections in &counts {
            let runs = runs_of(server, connections);
            if runs.is_empty() {
                continue;
            }
            let ratios = baselines
                .iter()
                .filter_map(|b| {
                    let base_runs = runs_of(b, connections);
                    let pairs: Vec<(&Row, &Row)> = runs
                        .iter()
                        .filter_map(|run| {
                            let base = base_runs.iter().find(|base| base.repeat == run.repeat)?;
                            Some((*run, *base))
                        })
                        .collect();
                    let rates = || pairs.iter().map(|(r, base)| rate(r) / rate(base));
                    (!pairs.is_empty()).then(|| Ratio {
                        baseline: b.clone(),
                        rate: median(rates()),
                        rate_range: (
                            rates().fold(f64::INFINITY, f64::min),
                            rates().fold(f64::NEG_INFINITY, f64::max),
                        ),
                        p99: median(pairs.iter().map(|(r, base)| p99(r) / p99(base))),
                    })
                })
                .collect();
            medians.push(Median {
                server: server.to_owned(),
                connections,
                messages_per_sec: median(runs.iter().map(|r| rate(r))),
                p99_us: median(runs.iter().map(|r| p99(r))),
                server_us_per_msg: Some(median(runs.iter().filter_map(|r| server_us(r))))
                    .filter(|us| !us.is_nan()),
                ratios,
            });
        }
    }
    medians
}

/// The median of some values (the mean of the middle two for an even
/// count); NaN for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The medians as a markdown table, with a ratio column per baseline.
pub fn render_medians(medians: &[Median], baselines: &[String]) -> String {
    let mut out = String::from(
        "| server | conns | msg/s (median) | p99 (median) | server CPU/msg (median) |",
    );
    let mut rule = String::from("| --- | ---: | ---: | ---: | ---: |");
    for b in baselines {
        out += &format!(" msg/s vs {b} (range over repeats) | p99 vs {b} |");
        rule += " ---: | ---: |";
    }
    out += "\n";
    out += &rule;
    out += "\n";
    for m in medians {
        let server_cpu = m
            .server_us_per_msg
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.2}µs"));
        out += &format!(
            "| {} | {} | {:.0} | {:.3}ms | {server_cpu} |",
            m.server,
            m.connections,
            m.messages_per_sec,
            m.p99_us / 1000.0
        );
        for b in baselines {
            match m.ratios.iter().find(|r| &r.baseline == b) {
                Some(r) if r.rate_range.0 < r.rate_range.1 => {
                    // Rounded outward, so that the range printed contains
                    // the median printed beside it.
                    let low = (r.rate_range.0 * 100.0 + 1e-9).floor() / 100.0;
                    let high = (r.rate_range.1 * 100.0 - 1e-9).ceil() / 100.0;
                    out += &format!(" {:.3} ({low:.2}–{high:.2}) | {:.3} |", r.rate, r.p99);
                }
                Some(r) => out += &format!(" {:.3} | {:.3} |", r.rate, r.p99),
                None => out += " - | - |",
            }
        }
        out += "\n";
    }
    out
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<14} {:>6} {:>4} {:>12} {:>10} {:>10} {:>7}  {}\n",
        "server", "conns", "run", "msg/s", "p50", "p99", "errors", "note"
    )
}

/// One line of the table.
pub fn render_row(row: &Row) -> String {
    let r = &row.results;
    format!(
        "{:<14} {:>6} {:>4} {:>12.0} {:>8.3}ms {:>8.3}ms {:>7}  {}\n",
        row.server,
        row.connections,
        row.repeat,
        r.messages_per_sec,
        r.latency_us.p50 / 1000.0,
        r.latency_us.p99 / 1000.0,
        r.errors,
        row.note.as_deref().unwrap_or("")
    )
}

fn write_files(comparison: &Comparison, dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(comparison)?;
    std::fs::write(dir.join("results.json"), json + "\n").context("writing results.json")?;
    let mut csv = String::from(
        "server,connections,messages_per_sec,p50_us,p90_us,p99_us,p999_us,max_us,errors,connect_failures,served_connections,client_cpu,server_cpu\n",
    );
    for row in &comparison.rows {
        let (r, l) = (&row.results, &row.results.latency_us);
        csv += &format!(
            "{},{},{:.1},{},{},{},{},{},{},{},{},{:.3},{}\n",
            row.server,
            row.connections,
            r.messages_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.errors,
            r.connect_failures,
            r.served_connections,
            r.client_cpu,
            r.server_cpu
                .map_or_else(String::new, |cpu| format!("{cpu:.3}"))
        );
    }
    std::fs::write(dir.join("results.csv"), csv).context("writing results.csv")?;
    super::chart::draw(comparison, &dir.join("throughput.svg"))
        .context("drawing throughput.svg")?;
    Ok(())
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

    fn row(server: &str, repeat: usize, rate: f64, p99: f64) -> Row {
        let mut results = BenchResults {
            messages_per_sec: rate,
            // Half a core: 5,000 µs per message at 100 msg/s.
            server_cpu: Some(0.5),
            ..BenchResults::default()
        };
        results.latency_us.p99 = p99;
        Row {
            server: server.to_owned(),
            connections: 10,
            repeat,
            results,
            note: None,
        }
    }

    /// `ours` beats `base` by 10% in two repeats of three and loses in the
    /// other, while the machine drifts. The ratio of the medians (110 / 120)
    /// would call ours slower; the median of the paired ratios says 1.1.
    #[test]
    fn ratios_pair_runs_of_the_same_repeat() {
        let rows = vec![
            row("ours", 1, 110.0, 9.0),
            row("base", 1, 100.0, 10.0),
            row("base", 2, 120.0, 20.0),
            row("ours", 2, 105.0, 30.0),
            row("ours", 3, 143.0, 4.5),
            row("base", 3, 130.0, 5.0),
        ];
        let comparison = Comparison {
            size: 512,
            duration: 1.0,
            warmup: 0.0,
            placement: "apart",
            rows,
            unclean_exits: Vec::new(),
            environment: Environment::current(),
        };
        let medians = medians(&comparison, &["base".to_owned()]);
        assert_eq!(medians.len(), 2);
        let ours = &medians[0];
        assert_eq!(
            (ours.server.as_str(), ours.messages_per_sec),
            ("ours", 110.0)
        );
        let ratio = &ours.ratios[0];
        assert_eq!(ratio.baseline, "base");
        assert!((ratio.rate - 1.1).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.rate_range.0 - 0.875).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.rate_range.1 - 1.1).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.p99 - 0.9).abs() < 1e-9, "{ratio:?}");
        let base = &medians[1];
        assert_eq!(base.ratios[0].rate, 1.0);
        assert_eq!(base.ratios[0].rate_range, (1.0, 1.0));
        let table = render_medians(&medians, &["base".to_owned()]);
        assert!(
            table.contains("| ours | 10 | 110 | 0.009ms | 4545.45µs | 1.100 (0.87–1.10) | 0.900 |"),
            "{table}"
        );
        assert!(
            table.contains("| base | 10 | 120 | 0.010ms | 4166.67µs | 1.000 | 1.000 |"),
            "{table}"
        );
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
