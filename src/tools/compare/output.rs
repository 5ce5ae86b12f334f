//! What a reader sees of a comparison: the table as it runs, the medians
//! in markdown, and the files (`results.json`, `results.csv`,
//! `throughput.svg`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::results::{Comparison, Median, Row};

/// What names the last run in an `--out` directory: a symbolic link to its
/// directory, so that `--against echo-lab-results/latest` (or just
/// `echo-lab-results`) always means the run before.
pub const LATEST: &str = "latest";

/// Makes a new directory for a run under `out`, named for the moment it
/// started (`run-20261203T211538Z`, with `-2`, `-3`, ... if two start in
/// the same second).
///
/// # Errors
/// It cannot be created (a file in the way, no permission).
pub fn new_run_directory(out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stamp: String = crate::tools::bench::utc_now()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    for n in 1.. {
        let name = match n {
            1 => format!("run-{stamp}"),
            n => format!("run-{stamp}-{n}"),
        };
        let dir = out.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("some suffix is free")
}

/// Points `out/latest` at `run`, replacing the link to the run before.
///
/// # Errors
/// Something other than our link is in the way, or it cannot be made.
pub fn mark_latest(out: &Path, run: &Path) -> anyhow::Result<()> {
    let link = out.join(LATEST);
    if link.is_symlink() {
        std::fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
    }
    let name = run.file_name().context("a run directory has a name")?;
    std::os::unix::fs::symlink(name, &link)
        .with_context(|| format!("linking {} to {}", link.display(), run.display()))
}

/// The medians as a markdown table, with a ratio column per baseline.
pub fn render_medians(medians: &[Median], baselines: &[String]) -> String {
    let mut out = String::from(
        "| server | conns | msg/s (median) | p99 (median) | server CPU/msg (median) |",
    );
    let mut rule = String::from("| --- | ---: | ---: | ---: | ---: |");
    let memory = medians.iter().any(|m| m.bytes_per_connection.is_some());
    if memory {
        out += " B/conn (median, range) |";
        rule += " ---: |";
    }
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
        if memory {
            out += &match m.bytes_per_connection {
                Some((median, low, high)) => format!(" {median:.0} ({low}–{high}) |"),
                None => " - |".to_owned(),
            };
        }
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

/// What the table's columns mean: printed under it, and in `compare
/// --help`.
pub const LEGEND: &str = "\
columns: msg/s  echoes (chat: lines delivered; --churn: connections, one echo each)
                per second of the measured window
         p50, p99  latency of the measured connections (from send to echo)
         errors  connections with a wrong, lost or late byte, or a failed connect
         ev/wait  per wait of a loop, the sockets (completion: completions) it handed
                  back; below 1 when waits end for a timer or a wake-up from another
                  thread (--offload), with no socket
         busy%  the loop thread's CPU time over the run's wall time, kernel time
                included (completion's I/O, done inside its wait, counts too)
         mem  the most memory the server held during the run, all its processes,
              shared pages counted once (proportional set size)
         B/conn  that peak less the server's memory before the run, per connection
                 of the run (measured, --idle and --hogs): what a client costs;
                 not with --churn, where no connection stays
         -  not measured in this run: not one of our loops, a server that counts
            nothing of the kind (the blocking models), or memory off Linux
";

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<17} {:>6} {:>4} {:>12} {:>10} {:>10} {:>7} {:>8} {:>6} {:>8} {:>7}  {}\n",
        "server",
        "conns",
        "run",
        "msg/s",
        "p50",
        "p99",
        "errors",
        "ev/wait",
        "busy%",
        "mem",
        "B/conn",
        "note"
    )
}

/// One line of the table.
pub fn render_row(row: &Row) -> String {
    let r = &row.results;
    // What the server counted inside itself, where it is one of ours and
    // has a loop: events per wait and its busy share.
    let counter = |value: Option<f64>, digits: usize| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    let counters = row.counters.as_ref();
    let memory = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let peak = row
        .memory
        .map(|m| format!("{:.1}MiB", m.peak as f64 / f64::from(1 << 20)));
    let per_connection = row
        .memory
        .and_then(|m| m.per_connection)
        .map(|b| b.to_string());
    format!(
        "{:<17} {:>6} {:>4} {:>12.0} {:>8.3}ms {:>8.3}ms {:>7} {:>8} {:>6} {:>8} {:>7}  {}\n",
        row.server,
        row.connections,
        row.repeat,
        r.messages_per_sec,
        r.latency_us.p50 / 1000.0,
        r.latency_us.p99 / 1000.0,
        r.errors,
        counter(counters.and_then(|c| c.events_per_wait), 2),
        counter(counters.and_then(|c| c.busy_percent), 0),
        memory(peak),
        memory(per_connection),
        row.note.as_deref().unwrap_or("")
    )
}

/// Draws `throughput.svg` into `dir`.
///
/// # Errors
/// The file cannot be written.
pub fn write_chart(comparison: &Comparison, dir: &Path) -> anyhow::Result<()> {
    super::chart::draw(comparison, &dir.join("throughput.svg")).context("drawing throughput.svg")
}

/// Writes `results.json`, `results.csv` and `throughput.svg` into `dir`.
///
/// # Errors
/// A file cannot be written.
pub fn write_files(comparison: &Comparison, dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(comparison)?;
    std::fs::write(dir.join("results.json"), json + "\n").context("writing results.json")?;
    let mut csv = String::from(
        "server,connections,messages_per_sec,p50_us,p90_us,p99_us,p999_us,max_us,errors,connect_failures,served_connections,client_cpu,server_cpu,peak_memory,memory_per_connection\n",
    );
    for row in &comparison.rows {
        let (r, l) = (&row.results, &row.results.latency_us);
        csv += &format!(
            "{},{},{:.1},{},{},{},{},{},{},{},{},{:.3},{},{},{}\n",
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
                .map_or_else(String::new, |cpu| format!("{cpu:.3}")),
            row.memory.map_or_else(String::new, |m| m.peak.to_string()),
            row.memory
                .and_then(|m| m.per_connection)
                .map_or_else(String::new, |b| b.to_string()),
        );
    }
    std::fs::write(dir.join("results.csv"), csv).context("writing results.csv")?;
    write_chart(comparison, dir)
}
