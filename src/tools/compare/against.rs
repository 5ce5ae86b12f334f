//! Holding one comparison against an earlier one: `compare --against` and
//! `echo-lab report DIR --against OLD`.
//!
//! A cell (a server at a connection count) is compared on the server's CPU
//! time per message when both runs measured it (the yardstick: it moves far
//! less than throughput), on messages per second otherwise. A change is
//! called *real* only where the two runs' ranges over their repeats do not
//! overlap; a difference inside the spread is noise, whatever its size. A
//! run of one repeat has no spread, so its changes are left undecided.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::results::{Comparison, Row};

/// One cell, then and now.
#[derive(Clone, Debug)]
pub struct Change {
    /// The model or peer name.
    pub server: String,
    /// Connections.
    pub connections: usize,
    /// What was compared: `server µs/msg` or `µs/msg (1 / msg/s)`.
    pub metric: &'static str,
    /// The earlier run: median, lowest, highest over its repeats.
    pub old: (f64, f64, f64),
    /// This run, the same way.
    pub new: (f64, f64, f64),
    /// `new / old - 1` of the medians: above 0 is slower (costs more).
    pub change: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Whether a change is to be believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The ranges do not overlap: slower or faster for real.
    Real,
    /// The ranges overlap: noise.
    Noise,
    /// A run of one repeat has no range to judge by.
    Undecided,
}

/// The `results.json` that `path` names: the file itself, the one in a
/// run's directory, or, for compare's `--out` directory, the latest run's.
pub fn results_file(path: &Path) -> PathBuf {
    if !path.is_dir() {
        return path.to_owned();
    }
    let here = path.join("results.json");
    let latest = path.join(super::output::LATEST).join("results.json");
    if !here.exists() && latest.exists() {
        latest
    } else {
        here
    }
}

/// Reads the comparison that `path` names (see [`results_file`]).
///
/// # Errors
/// The file cannot be read or is not a comparison.
pub fn load(path: &Path) -> anyhow::Result<Comparison> {
    let file = results_file(path);
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut comparison: Comparison = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a results.json of compare", file.display()))?;
    comparison.dir = file.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    Ok(comparison)
}

/// The cost of one run in microseconds per message: the server's CPU time
/// when `cpu`, else the wall time per message of the whole run.
fn cost(row: &Row, cpu: bool) -> Option<f64> {
    let r = &row.results;
    if r.messages_per_sec <= 0.0 {
        return None;
    }
    if cpu {
        Some(r.server_cpu? / r.messages_per_sec * 1e6)
    } else {
        Some(1e6 / r.messages_per_sec)
    }
}

/// Median, lowest and highest of `values` (not empty).
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// Every cell of `new` that `old` also has, compared.
pub fn against(new: &Comparison, old: &Comparison) -> Vec<Change> {
    let mut cells: Vec<(&str, usize)> = Vec::new();
    for row in &new.rows {
        if !cells.contains(&(row.server.as_str(), row.connections)) {
            cells.push((&row.server, row.connections));
        }
    }
    let runs = |c: &Comparison, server: &str, connections: usize| -> Vec<Row> {
        c.rows
            .iter()
            .filter(|r| r.server == server && r.connections == connections)
            .cloned()
            .collect()
    };
    let mut changes = Vec::new();
    for (server, connections) in cells {
        let (now, then) = (
            runs(new, server, connections),
            runs(old, server, connections),
        );
        if then.is_empty() {
            continue;
        }
        let cpu = now.iter().chain(&then).all(|r| cost(r, true).is_some());
        let values =
            |rows: &[Row]| -> Vec<f64> { rows.iter().filter_map(|r| cost(r, cpu)).collect() };
        let (now_values, then_values) = (values(&now), values(&then));
        if now_values.is_empty() || then_values.is_empty() {
            continue;
        }
        let one_run = now_values.len() < 2 || then_values.len() < 2;
        let (new, old) = (spread(now_values), spread(then_values));
        let apart = new.1 > old.2 || new.2 < old.1;
        changes.push(Change {
            server: server.to_owned(),
            connections,
            metric: if cpu {
                "server µs/msg"
            } else {
                "µs/msg (1 / msg/s)"
            },
            old,
            new,
            change: new.0 / old.0 - 1.0,
            verdict: match (one_run, apart) {
                (true, _) => Verdict::Undecided,
                (false, true) => Verdict::Real,
                (false, false) => Verdict::Noise,
            },
        });
    }
    changes
}

/// The changes as a markdown table.
pub fn render_changes(changes: &[Change]) -> String {
    let mut out = String::from(
        "| server | conns | compared on | before (range) | now (range) | change | verdict |\n\
         | --- | ---: | --- | ---: | ---: | ---: | --- |\n",
    );
    for c in changes {
        let verdict = match c.verdict {
            Verdict::Real if c.change > 0.0 => "slower",
            Verdict::Real => "faster",
            Verdict::Noise => "noise",
            Verdict::Undecided => "one run: no spread to judge by",
        };
        out += &format!(
            "| {} | {} | {} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {:+.1}% | {verdict} |\n",
            c.server,
            c.connections,
            c.metric,
            c.old.0,
            c.old.1,
            c.old.2,
            c.new.0,
            c.new.1,
            c.new.2,
            c.change * 100.0
        );
    }
    out
}

/// The cells that got slower for real by more than `percent`.
pub fn slower_than(changes: &[Change], percent: f64) -> Vec<&Change> {
    changes
        .iter()
        .filter(|c| c.verdict == Verdict::Real && c.change * 100.0 > percent)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::BenchResults;

    /// A run of `server` at 10 connections that cost `us` µs of server CPU
    /// per message.
    fn run(server: &str, repeat: usize, us: f64) -> Row {
        Row {
            server: server.to_owned(),
            connections: 10,
            repeat,
            results: BenchResults {
                messages: 1000,
                messages_per_sec: 100_000.0,
                server_cpu: Some(us * 100_000.0 / 1e6),
                ..BenchResults::default()
            },
            note: None,
            counters: None,
            memory: None,
        }
    }

    fn comparison(costs: &[f64]) -> Comparison {
        let rows = costs
            .iter()
            .enumerate()
            .map(|(i, &us)| run("selector", i + 1, us))
            .collect();
        Comparison::of_rows(rows)
    }

    /// A 30% slowdown beyond both runs' spread is real, and fails a 10%
    /// threshold.
    #[test]
    fn an_injected_slowdown_is_flagged() {
        let old = comparison(&[3.0, 3.1, 3.2, 2.9, 3.05]);
        let new = comparison(&[3.9, 4.0, 4.1, 3.95, 4.2]);
        let changes = against(&new, &old);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].verdict, Verdict::Real);
        assert!((changes[0].change - 0.3).abs() < 0.02, "{changes:?}");
        assert_eq!(slower_than(&changes, 10.0).len(), 1);
        assert!(render_changes(&changes).contains("slower"));
    }

    /// A re-run of the same build moves within the spread: noise, even
    /// where its median moved by several percent.
    #[test]
    fn a_rerun_is_noise() {
        let old = comparison(&[3.0, 3.3, 3.1, 2.9, 3.6]);
        let new = comparison(&[3.2, 3.4, 2.95, 3.5, 3.25]);
        let changes = against(&new, &old);
        assert_eq!(changes[0].verdict, Verdict::Noise, "{changes:?}");
        assert!(slower_than(&changes, 1.0).is_empty());
    }

    /// One repeat has no spread: undecided, never a failure.
    #[test]
    fn one_run_is_undecided() {
        let changes = against(&comparison(&[9.0]), &comparison(&[3.0]));
        assert_eq!(changes[0].verdict, Verdict::Undecided);
        assert!(slower_than(&changes, 1.0).is_empty());
    }
}
