//! What a comparison measured: a [`Row`] per run, the whole
//! [`Comparison`] as `results.json` holds it, and the [`medians`] over
//! repeats with their ratios to the baselines.

use serde::{Deserialize, Serialize};

use crate::tools::bench::{BenchResults, Environment};

/// One server at one connection count.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// What an echo-lab server counted inside itself over the run
    /// (`serve --stats`); `None` for other servers.
    #[serde(default)]
    pub counters: Option<Counters>,
    /// The server's memory over the run (every process of it); `None`
    /// where it cannot be read (off Linux).
    #[serde(default)]
    pub memory: Option<Memory>,
}

/// A server's memory over one run: its processes' proportional set size
/// (shared pages counted once), read every [`Memory::EVERY`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Before the first client connected, in bytes.
    pub baseline: u64,
    /// The most it held while the run went on, in bytes.
    pub peak: u64,
    /// `peak - baseline` over every connection of the run (measured, idle
    /// and hogs): what a connection costs. `None` under `--churn`, where no
    /// connection stays.
    pub per_connection: Option<u64>,
}

impl Memory {
    /// How often the sampler reads the server's memory.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(50);
}

/// The telling counters of one of our servers over a whole run, from the
/// final `--stats` line of each of its loops.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Events per wait of its one-thread loops: how many ready sockets a
    /// wait hands back (the cost of a wait is shared by all of them).
    pub events_per_wait: Option<f64>,
    /// The share of time its loops ran handlers rather than waited, in %.
    pub busy_percent: Option<f64>,
    /// Every field of every final line, as the server wrote them.
    pub lines: Vec<serde_json::Value>,
}

impl Counters {
    /// Reads the final lines a server wrote to `path`; `None` if there are
    /// none (not one of ours, or it could not write them).
    pub fn read(path: &std::path::Path) -> Option<Counters> {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["final"] == true)
            .collect();
        if lines.is_empty() {
            return None;
        }
        // Per loop: waits = waits/s x seconds; events = that x events/wait.
        let (mut waits, mut events, mut busy, mut seconds) = (0.0, 0.0, 0.0, 0.0);
        for line in &lines {
            let number = |key: &str| line[key].as_f64();
            let (Some(rate), Some(per), Some(share), Some(s)) = (
                number("waits/s"),
                number("events/wait"),
                number("busy%"),
                number("seconds"),
            ) else {
                continue;
            };
            waits += rate * s;
            events += rate * s * per;
            busy += share * s;
            seconds += s;
        }
        Some(Counters {
            events_per_wait: (waits > 0.0).then(|| events / waits),
            busy_percent: (seconds > 0.0).then(|| busy / seconds),
            lines,
        })
    }
}

/// The whole comparison, as written to `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// What the servers spoke.
    #[serde(default)]
    pub protocol: crate::serve::Protocol,
    /// Bytes per message.
    pub size: usize,
    /// Measured seconds per run.
    pub duration: f64,
    /// Warm-up seconds per run.
    pub warmup: f64,
    /// Where server and client ran: `unpinned`, `apart` (CPU 0 and 1) or
    /// `shared` (both on CPU 0).
    pub placement: String,
    /// One row per server and connection count.
    pub rows: Vec<Row>,
    /// Servers that did not stop cleanly, with what happened.
    pub unclean_exits: Vec<String>,
    /// Interrupted (Ctrl-C): the rows are the runs finished before it.
    #[serde(default)]
    pub partial: bool,
    /// The `--work` every echo-lab server did per message, if any.
    #[serde(default)]
    pub work: Option<String>,
    /// Its `--offload` pool size (0: none).
    #[serde(default)]
    pub offload: usize,
    /// The one-thread loops' readiness backend (`None`: their default).
    #[serde(default)]
    pub poller: Option<String>,
    /// The directory this run's files are in (not saved: it is where the
    /// file is).
    #[serde(skip)]
    pub dir: std::path::PathBuf,
    /// Silent connections beside the active ones in every run.
    #[serde(default)]
    pub idle: usize,
    /// Connections sending without pause beside the measured ones.
    #[serde(default)]
    pub hogs: usize,
    /// Every message on a new connection: msg/s is connections per second.
    #[serde(default)]
    pub churn: bool,
    /// Where it ran.
    pub environment: Environment,
}

pub(super) fn note_for(results: &BenchResults, connections: usize) -> Option<String> {
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
    /// Bytes per connection (peak memory less the memory before the run,
    /// over every connection of the run): the median and the lowest and
    /// highest of the repeats. `None` where memory was not read.
    pub bytes_per_connection: Option<(f64, u64, u64)>,
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
                bytes_per_connection: bytes_per_connection(&runs),
                ratios,
            });
        }
    }
    medians
}

/// The median, lowest and highest bytes per connection of `runs`, if
/// every run read its memory.
fn bytes_per_connection(runs: &[&Row]) -> Option<(f64, u64, u64)> {
    let each: Option<Vec<u64>> = runs
        .iter()
        .map(|r| r.memory.as_ref()?.per_connection)
        .collect();
    let each = each.filter(|each| !each.is_empty())?;
    let low = *each.iter().min()?;
    let high = *each.iter().max()?;
    Some((median(each.iter().map(|&b| b as f64)), low, high))
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

impl Comparison {
    /// A comparison of `rows` with nothing else to say: for tests.
    #[cfg(test)]
    pub(crate) fn of_rows(rows: Vec<Row>) -> Comparison {
        Comparison {
            protocol: crate::serve::Protocol::Echo,
            size: 512,
            duration: 1.0,
            warmup: 0.0,
            placement: "unpinned".into(),
            rows,
            unclean_exits: Vec::new(),
            partial: false,
            work: None,
            offload: 0,
            poller: None,
            idle: 0,
            hogs: 0,
            churn: false,
            environment: Environment::current(),
            dir: std::path::PathBuf::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::compare::output::render_medians;

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
            counters: None,
            memory: None,
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
        let comparison = Comparison::of_rows(rows);
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
