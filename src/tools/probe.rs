//! `echo-lab probe`: makes a model's concurrency visible. N clients start at
//! once; each connects, sends a short message, waits for its echo, holds
//! the connection for a while, and closes. The timeline shows who was
//! served while whom waited: a staircase for the sequential model, a
//! waiting third client for a pool of two, all at once for a readiness loop.
//!
//! Rows are numbered in the order the clients were served (by when their
//! echo came back), so a staircase reads as one. A server that closes a
//! client during its hold (an idle timeout, a crash) is shown where it
//! happened, not hidden behind the hold the client meant to keep.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::net::connect_patiently;
use crate::parse::HostPort;

/// What to probe, and how.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// The server.
    pub addr: HostPort,
    /// Clients started at once.
    pub clients: usize,
    /// How long each client stays connected after its echo.
    pub hold: Duration,
    /// How long a client waits for its echo before it is reported.
    pub timeout: Duration,
}

/// One client's timeline, in seconds since the probe started.
#[derive(Clone, Debug, Serialize)]
pub struct ClientTimeline {
    /// 1-based client number.
    pub client: usize,
    /// When the connection was established (the kernel's handshake).
    pub connected: Option<f64>,
    /// When the whole echo was back.
    pub echoed: Option<f64>,
    /// When the connection ended: the client closed it after its hold, or
    /// the server closed it first (see `closed_by_server`).
    pub closed: Option<f64>,
    /// The server ended the connection during the hold (end of stream or a
    /// reset), at `closed`.
    pub closed_by_server: bool,
    /// When it failed, if it did.
    pub failed: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// The probe's result.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The server probed.
    pub addr: String,
    /// Seconds each client held its connection after its echo.
    pub hold: f64,
    /// One timeline per client, in client order.
    pub clients: Vec<ClientTimeline>,
}

impl ProbeReport {
    /// Whether every client got its exact echo back.
    pub fn all_ok(&self) -> bool {
        self.clients.iter().all(|c| c.error.is_none())
    }
}

/// Runs the probe: one thread per client, all released at once.
pub fn run(config: &ProbeConfig) -> ProbeReport {
    let start = Barrier::new(config.clients);
    let origin = Instant::now();
    let clients = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=config.clients)
            .map(|client| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    probe_one(config, client, origin)
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or_else(|_| ClientTimeline {
                    client: i + 1,
                    connected: None,
                    echoed: None,
                    closed: None,
                    closed_by_server: false,
                    failed: Some(origin.elapsed().as_secs_f64()),
                    error: Some("the client thread panicked".into()),
                })
            })
            .collect::<Vec<_>>()
    });
    let clients = in_order_served(clients);
    ProbeReport {
        addr: config.addr.to_string(),
        hold: config.hold.as_secs_f64(),
        clients,
    }
}

/// Sorts the timelines by when each client was served (its echo, else its
/// failure), then by when it connected, and numbers them 1, 2, ... in that
/// order: the threads start in no particular order, the service does.
fn in_order_served(mut clients: Vec<ClientTimeline>) -> Vec<ClientTimeline> {
    let key = |c: &ClientTimeline| {
        (
            c.echoed.or(c.failed).unwrap_or(f64::MAX),
            c.connected.unwrap_or(f64::MAX),
        )
    };
    clients.sort_by(|a, b| {
        let (a, b) = (key(a), key(b));
        a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1))
    });
    for (i, c) in clients.iter_mut().enumerate() {
        c.client = i + 1;
    }
    clients
}

/// Holds the connection for `hold`, reading: returns whether the server
/// ended it first (end of stream or a reset). Bytes the server was not
/// asked for are an error.
fn hold_open(stream: &mut std::net::TcpStream, hold: Duration) -> anyhow::Result<bool> {
    let until = Instant::now() + hold;
    let mut byte = [0; 1];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut byte) {
            Ok(0) => return Ok(true),
            Ok(_) => anyhow::bail!("the server sent bytes nobody asked for during the hold"),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

fn probe_one(config: &ProbeConfig, client: usize, origin: Instant) -> ClientTimeline {
    let since = || origin.elapsed().as_secs_f64();
    let mut timeline = ClientTimeline {
        client,
        connected: None,
        echoed: None,
        closed: None,
        closed_by_server: false,
        failed: None,
        error: None,
    };
    let message = format!("probe client {client}\n");
    let result = (|| -> anyhow::Result<()> {
        let mut stream = connect_patiently(&config.addr, config.timeout)?;
        timeline.connected = Some(since());
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        stream.write_all(message.as_bytes())?;
        let mut echo = vec![0; message.len()];
        stream.read_exact(&mut echo).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                anyhow::anyhow!("no echo within {:?}", config.timeout)
            }
            _ => anyhow::anyhow!("reading the echo: {e}"),
        })?;
        if echo != message.as_bytes() {
            anyhow::bail!("wrong echo: {:?}", String::from_utf8_lossy(&echo));
        }
        timeline.echoed = Some(since());
        timeline.closed_by_server = hold_open(&mut stream, config.hold)?;
        // Read before the close, not after: the server cannot see a close
        // before it is made, so a next client's echo, read after the
        // server saw it, is always later than this, however the threads
        // are scheduled. (Read after, a preempted reader could stamp the
        // close after an echo it caused.)
        timeline.closed = Some(since());
        drop(stream);
        Ok(())
    })();
    if let Err(e) = result {
        timeline.failed = Some(since());
        timeline.error = Some(format!("{e:#}"));
    }
    timeline
}

/// One client's row of the chart: `.` while it waits for its echo, `#` when
/// the echo arrives, `=` while it holds the connection, `!` where the
/// server closed it, `x` where it failed. A client that never connected is
/// an `x` at the instant it gave up.
fn chart_row(c: &ClientTimeline, column: impl Fn(f64) -> usize, width: usize) -> String {
    let mut row = vec![' '; width];
    let failed = c.failed.map(&column);
    let Some(from) = c.connected.map(&column) else {
        if let Some(at) = failed {
            row[at.min(width - 1)] = 'x';
        }
        return row.into_iter().collect();
    };
    let echo = c.echoed.map(&column);
    let to = c
        .closed
        .or(c.failed)
        .map_or(width - 1, &column)
        .min(width - 1);
    for (i, cell) in row.iter_mut().enumerate().take(to + 1).skip(from) {
        *cell = match echo {
            Some(e) if i < e => '.',
            Some(e) if i == e => '#',
            Some(_) => '=',
            None => '.',
        };
    }
    if c.closed_by_server {
        row[to] = '!';
    }
    if let Some(at) = failed {
        row[at.min(width - 1)] = 'x';
    }
    row.into_iter().collect()
}

/// The text report: a table of instants and a chart with one row per
/// client, in which waiting is visible at a glance.
pub fn render(report: &ProbeReport) -> String {
    const WIDTH: usize = 50;
    let mut out = String::new();
    let n = report.clients.len();
    let _ = writeln!(
        out,
        "probe: {n} clients against {}, each holding {:.1}s after its echo\n",
        report.addr, report.hold
    );
    let _ = writeln!(out, "client  connected    echoed    closed    failed");
    let show = |t: Option<f64>| t.map_or_else(|| "-".to_owned(), |t| format!("{t:.3}s"));
    for c in &report.clients {
        let by_server = if c.closed_by_server {
            "  closed by the server"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6} {:>10} {:>9} {:>9} {:>9}{by_server}",
            c.client,
            show(c.connected),
            show(c.echoed),
            show(c.closed),
            show(c.failed),
        );
    }
    // Every instant of every client fits on the axis; a client that failed
    // at once still gets a row.
    let end = report
        .clients
        .iter()
        .filter_map(|c| c.closed.or(c.failed).or(c.echoed).or(c.connected))
        .fold(0.0_f64, f64::max)
        .max(1e-3);
    let column = |t: f64| ((t / end) * (WIDTH - 1) as f64).round() as usize;
    let end_label = if end < 0.1 {
        format!("{:.1}ms", end * 1000.0)
    } else {
        format!("{end:.2}s")
    };
    let _ = writeln!(out, "\n          0s{end_label:>width$}", width = WIDTH - 1);
    for c in &report.clients {
        let row = chart_row(c, column, WIDTH);
        let reason = c
            .error
            .as_ref()
            .map_or(String::new(), |e| format!("  failed: {e}"));
        let _ = writeln!(out, "client {:>2} |{row}|{reason}", c.client);
    }
    let _ = writeln!(
        out,
        "legend: . connected, waiting for the echo   # echo arrived   = holding   ! closed by the server   x failed"
    );
    let dropped = report.clients.iter().filter(|c| c.closed_by_server).count();
    if dropped > 0 {
        let _ = writeln!(
            out,
            "{dropped} of {n} closed by the server before their {:.1}s hold was over",
            report.hold
        );
    }
    let failed = report.clients.iter().filter(|c| c.error.is_some()).count();
    if failed == 0 {
        let _ = writeln!(out, "all {n} echoes correct");
    } else {
        let _ = writeln!(out, "{failed} of {n} clients failed");
    }
    out
}
