//! What a run reports: latency percentiles, rates and counts, the
//! environment it ran in, and the text a reader sees. Each client thread
//! tallies into a [`WorkerResult`]; the tallies merge into one
//! [`BenchResults`].

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{BenchConfig, ERROR_SAMPLES};
use crate::stats::counted;
use crate::sys;

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

impl Latency {
    /// The percentiles of a histogram of microseconds (all 0 if empty).
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| h.value_at_quantile(q) as f64;
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: h.max() as f64,
            mean: h.mean(),
        }
    }

    /// A histogram [`Latency::of`] reads: 1 µs to 1 hour, 3 significant
    /// digits.
    pub fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    /// With `--churn`, where every message has a connection of its own:
    /// connections made and closed per second (the same number as
    /// `messages_per_sec`, named for what it counts); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_sec: Option<f64>,
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
    /// Connections that held such a message: bench gives up on them when
    /// the window ends and closes them with a reset, which the server's
    /// summary counts as "abandoned by their client" when it meets it: the
    /// same event (the client left while an echo was owed), seen from each
    /// end.
    pub abandoned_connections: u64,
    /// Open loop only: due messages not sent because the server had not
    /// returned the previous ones.
    pub skipped_sends: u64,
    /// The client's own CPU use over the measured window, in cores.
    pub client_cpu: f64,
    /// The server's CPU use over the same window, in cores, when its
    /// process was given (`server_pid`) and could be read.
    pub server_cpu: Option<f64>,
    /// Bytes that came back to the `--hogs` over the whole run.
    #[serde(default)]
    pub hogs_received: u64,
}

impl BenchResults {
    /// Whether the run shows a failure: an error, a failed connect, or no
    /// echo at all.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.connect_failures > 0 || self.messages == 0
    }
}

/// The environment a run happened in, so a saved result explains itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    /// echo-lab's version.
    pub version: String,
    /// The git commit it was built from, when known.
    #[serde(default)]
    pub commit: Option<String>,
    /// `release` or `debug`.
    pub profile: String,
    /// The command line that produced the result.
    #[serde(default)]
    pub command: String,
    /// The CPU's model name, as the OS reports it.
    #[serde(default)]
    pub cpu_model: String,
    /// CPUs available to this process.
    pub cpus: usize,
    /// The kernel release.
    pub kernel: String,
    /// When the run started, UTC, ISO 8601.
    #[serde(default)]
    pub date: String,
    /// The descriptor limit (soft) during the run.
    pub fd_limit: u64,
}

impl Environment {
    /// Reads the environment of this process.
    pub fn current() -> Self {
        let commit = env!("ECHO_LAB_GIT_COMMIT");
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("model name"))?;
                Some(line.split_once(':')?.1.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Environment {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: (!commit.is_empty()).then(|| commit.to_owned()),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
            command: command_line(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            date: utc_now(),
            fd_limit: sys::fd_limits().map_or(0, |(soft, _)| soft),
        }
    }

    /// One line: what made the result, and where.
    pub fn headline(&self) -> String {
        let commit = self
            .commit
            .as_ref()
            .map_or(String::new(), |c| format!(" ({c})"));
        format!(
            "echo-lab {}{commit} {}, {}, {} CPUs, kernel {}, {}",
            self.version, self.profile, self.cpu_model, self.cpus, self.kernel, self.date
        )
    }
}

/// This process's command line, each argument quoted if it needs it.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$`{}".contains(c))
            {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, UTC, as `2026-11-26T14:20:05Z`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
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

/// What one thread measured.
pub(super) struct WorkerResult {
    pub(super) histogram: Histogram<u64>,
    pub(super) messages: u64,
    pub(super) errors: u64,
    pub(super) error_samples: Vec<String>,
    pub(super) served: u64,
    pub(super) starved: u64,
    pub(super) abandoned: u64,
    pub(super) skipped: u64,
}

impl WorkerResult {
    pub(super) fn new() -> Self {
        WorkerResult {
            // 1 µs to 1 hour at 3 significant digits.
            histogram: Latency::histogram(),
            messages: 0,
            errors: 0,
            error_samples: Vec::new(),
            served: 0,
            starved: 0,
            abandoned: 0,
            skipped: 0,
        }
    }

    pub(super) fn merge(&mut self, other: WorkerResult) {
        let _ = self.histogram.add(&other.histogram);
        self.messages += other.messages;
        self.errors += other.errors;
        self.served += other.served;
        self.starved += other.starved;
        self.abandoned += other.abandoned;
        self.skipped += other.skipped;
        for sample in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(sample);
            }
        }
    }

    pub(super) fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(what);
        }
    }

    pub(super) fn into_results(
        self,
        config: &BenchConfig,
        seconds: f64,
        client_cpu: f64,
    ) -> BenchResults {
        BenchResults {
            messages: self.messages,
            seconds,
            messages_per_sec: self.messages as f64 / seconds,
            connections_per_sec: config.churn.then(|| self.messages as f64 / seconds),
            mib_per_sec: (self.messages * config.size as u64) as f64 / seconds / (1 << 20) as f64,
            latency_us: Latency::of(&self.histogram),
            connect_failures: 0,
            errors: self.errors,
            error_samples: self.error_samples,
            served_connections: self.served,
            starved: self.starved,
            abandoned_connections: self.abandoned,
            skipped_sends: self.skipped,
            client_cpu,
            server_cpu: None,
            hogs_received: 0,
        }
    }
}

/// The text report.
pub fn render(report: &BenchReport) -> String {
    let (p, r) = (&report.parameters, &report.results);
    let shape = match p.rate {
        _ if p.churn => "churn: a new connection per message".to_owned(),
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
    out += &if p.churn {
        format!(
            "  churn        {} connections/s: {} made by {} clients, each connect, send, echo, close; {} connect failures, {} errors\n",
            r.messages_per_sec.round(),
            r.served_connections,
            p.connections,
            r.connect_failures,
            r.errors
        )
    } else {
        format!(
            "  connections  {} of {} served, {} connect failures, {} errors\n",
            r.served_connections, p.connections, r.connect_failures, r.errors
        )
    };
    if p.idle > 0 {
        out += &format!(
            "  idle         {} more open and silent throughout\n",
            p.idle
        );
    }
    if p.hogs > 0 {
        out += &hogs_line(p.hogs, r.hogs_received);
    }
    if r.abandoned_connections > 0 {
        out += &format!(
            "  abandoned    {}: {} waited through the whole window unanswered\n",
            counted(r.abandoned_connections, "connection"),
            counted(r.starved, "message"),
        );
    }
    if r.skipped_sends > 0 {
        out += &format!(
            "  skipped      {} due sends: the server had not returned the previous ones\n",
            r.skipped_sends
        );
    }
    out += &format!("  client CPU   {:.0}% of one core\n", r.client_cpu * 100.0);
    for sample in &r.error_samples {
        out += &format!("  error: {sample}\n");
    }
    out
}

/// The report's line on the `--hogs`: how many, and that they were served.
pub(crate) fn hogs_line(hogs: usize, received: u64) -> String {
    format!(
        "  hogs         {hogs} more sending without pause ({:.1} MiB came back to them); \
         the latencies are the measured connections' only, the client CPU includes the hogs'\n",
        received as f64 / (1024.0 * 1024.0)
    )
}
