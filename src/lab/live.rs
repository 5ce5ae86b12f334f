//! `serve --stats [INTERVAL]`: a look inside a running server. Every
//! interval, each loop (or pool) writes one compact line to stderr, in its
//! model's own terms, and with `--stats-json FILE` the same as a JSON line.
//!
//! The counting stays with the counted: a one-thread loop keeps its
//! counters as plain integers (or `Cell`s its tasks can reach) and writes
//! its own line when the interval is up, from its own thread, so nothing on
//! the hot path takes a lock or touches an atomic. The blocking models,
//! whose threads block, have one reporter thread read a few relaxed atomics.
//! This file holds what every model shares: when a line is due, and how a
//! line is written.
//!
//! A model names each field with its kind ([`Line::count`],
//! [`Line::gauge`], [`Line::rate`], ...), not as finished text, because the
//! reporter adds every line into the run's totals: the final line at
//! shutdown is the whole run (its counts summed, its rates over its whole
//! length, its longest turn the longest of all), not the last interval.
//!
//! Tutorial: `docs/tutorial/2-a-pool-of-threads.md`,
//! `docs/tutorial/3-readiness-and-epoll.md`,
//! `docs/tutorial/5-async-await-from-the-ground-up.md`.

use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the JSON lines go: one file for every loop of the server.
#[derive(Clone, Debug)]
pub struct JsonSink(Arc<Mutex<File>>);

impl JsonSink {
    /// Creates (or truncates) `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::open(path, false)
    }

    /// Creates (or truncates) `path`, or with `append` adds to it: a
    /// worker process writes after its master's start and beside its
    /// siblings (each line one `write`, appended whole).
    ///
    /// # Errors
    /// The file cannot be created or opened.
    pub fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        let file = if append {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)?
        } else {
            File::create(path)?
        };
        Ok(JsonSink(Arc::new(Mutex::new(file))))
    }

    fn write(&self, line: &str) {
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // One write per line, so that lines appended by several processes
        // never interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// When a loop's next line is due, and where it goes.
pub struct Reporter {
    /// The loop's name in every line: `selector`, `async-1`, `threadpool`.
    name: String,
    interval: Duration,
    /// When the loop started: the final line covers the run from here.
    started: Instant,
    /// When the last line (or the start) was.
    since: Instant,
    json: Option<JsonSink>,
    /// Every line so far, added up field by field, for the final line.
    run: Line,
}

impl Reporter {
    /// A reporter for the loop `name`, every `interval`.
    pub fn new(name: impl Into<String>, interval: Duration, json: Option<JsonSink>) -> Self {
        let now = Instant::now();
        Reporter {
            name: name.into(),
            interval,
            started: now,
            since: now,
            json,
            run: Line::default(),
        }
    }

    /// When the next line is due: a loop's wait must end by then.
    pub fn deadline(&self) -> Instant {
        self.since + self.interval
    }

    /// Whether a line is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// Writes one line: `fill` adds the fields of the interval since the
    /// last line. `last` marks the final line at shutdown, which shows the
    /// whole run instead: every line added up, over the run's length.
    pub fn report(&mut self, now: Instant, last: bool, fill: impl FnOnce(&mut Line)) {
        let mut line = Line::default();
        fill(&mut line);
        // What the whole server holds now: this process and any it started
        // (forking's children), shared pages counted once.
        if let Some(memory) = crate::sys::tree_memory(std::process::id()) {
            line.gauge("rss", memory.pss)
                .gauge("processes", memory.processes)
                .gauge("threads", memory.threads);
        }
        self.run.add(&line);
        let (shown, from) = if last {
            (&self.run, self.started)
        } else {
            (&line, self.since)
        };
        let seconds = now.duration_since(from).as_secs_f64().max(1e-9);
        self.since = now;
        let (text, json) = shown.render(seconds);
        let label = if last { "final" } else { "stats" };
        eprintln!("{label} {}:{text}", self.name);
        if let Some(sink) = &self.json {
            sink.write(&format!(
                "{{\"loop\":\"{}\",\"final\":{last},\"seconds\":{seconds:.3}{json}}}",
                self.name
            ));
        }
    }
}

/// One line's fields, each with what it measures, so that lines add up.
#[derive(Default)]
pub struct Line {
    fields: Vec<(&'static str, Field)>,
}

/// What a field measures, and so how the run's total is made of lines.
#[derive(Clone, Copy, Debug)]
enum Field {
    /// Events since the last line (`accepted`): the run's is the sum.
    Count(u64),
    /// A state now (`open`, `tasks`): the run's is the one at its end.
    Gauge(u64),
    /// Events per second (`msgs/s`): `count` since the last line, over the
    /// line's seconds; the run's is the summed count over the whole run.
    Rate { count: f64, digits: usize },
    /// `part / whole` (`events/wait`), both since the last line; the
    /// run's divides the sums.
    Ratio {
        part: f64,
        whole: f64,
        digits: usize,
    },
    /// Seconds spent so since the last line, as a percentage of the line's
    /// seconds (`busy%`).
    Share { seconds: f64, digits: usize },
    /// The largest since the last line (`longest_ms`); the run's largest.
    Max { value: f64, digits: usize },
}

impl Line {
    fn push(&mut self, key: &'static str, field: Field) -> &mut Self {
        self.fields.push((key, field));
        self
    }

    /// Events since the last line: `accepted=3`.
    pub fn count(&mut self, key: &'static str, n: u64) -> &mut Self {
        self.push(key, Field::Count(n))
    }

    /// A state as it is now: `open=3`.
    pub fn gauge(&mut self, key: &'static str, n: u64) -> &mut Self {
        self.push(key, Field::Gauge(n))
    }

    /// `count` events since the last line, shown per second: `msgs/s=1200`.
    pub fn rate(&mut self, key: &'static str, count: u64, digits: usize) -> &mut Self {
        let count = count as f64;
        self.push(key, Field::Rate { count, digits })
    }

    /// `part / whole` since the last line (0 with no whole):
    /// `events/wait=1.80`.
    pub fn ratio(&mut self, key: &'static str, part: u64, whole: u64, digits: usize) -> &mut Self {
        let (part, whole) = (part as f64, whole as f64);
        self.push(
            key,
            Field::Ratio {
                part,
                whole,
                digits,
            },
        )
    }

    /// `spent` of the line's time, shown as a percentage: `busy%=12.5`.
    pub fn share(&mut self, key: &'static str, spent: Duration, digits: usize) -> &mut Self {
        let seconds = spent.as_secs_f64();
        self.push(key, Field::Share { seconds, digits })
    }

    /// The largest value since the last line: `longest_ms=0.25`.
    pub fn max(&mut self, key: &'static str, value: f64, digits: usize) -> &mut Self {
        self.push(key, Field::Max { value, digits })
    }

    /// Adds `line` into this running total, field by field (a field this
    /// total does not have yet is appended in `line`'s order).
    fn add(&mut self, line: &Line) {
        for &(key, field) in &line.fields {
            let Some((_, total)) = self.fields.iter_mut().find(|(k, _)| *k == key) else {
                self.fields.push((key, field));
                continue;
            };
            *total = match (*total, field) {
                (Field::Count(a), Field::Count(b)) => Field::Count(a + b),
                (Field::Rate { count: a, .. }, Field::Rate { count: b, digits }) => Field::Rate {
                    count: a + b,
                    digits,
                },
                (
                    Field::Ratio { part, whole, .. },
                    Field::Ratio {
                        part: p,
                        whole: w,
                        digits,
                    },
                ) => Field::Ratio {
                    part: part + p,
                    whole: whole + w,
                    digits,
                },
                (Field::Share { seconds: a, .. }, Field::Share { seconds: b, digits }) => {
                    Field::Share {
                        seconds: a + b,
                        digits,
                    }
                }
                (Field::Max { value: a, .. }, Field::Max { value: b, digits }) => Field::Max {
                    value: a.max(b),
                    digits,
                },
                // A gauge, or a key whose kind changed: the latest stands.
                (_, latest) => latest,
            };
        }
    }

    /// The fields as text and as JSON, over `seconds`.
    fn render(&self, seconds: f64) -> (String, String) {
        let (mut text, mut json) = (String::new(), String::new());
        for &(key, field) in &self.fields {
            let (value, digits) = match field {
                Field::Count(n) | Field::Gauge(n) => {
                    let _ = write!(text, " {key}={n}");
                    let _ = write!(json, ",\"{key}\":{n}");
                    continue;
                }
                Field::Rate { count, digits } => (count / seconds, digits),
                Field::Ratio {
                    part,
                    whole,
                    digits,
                } => (if whole > 0.0 { part / whole } else { 0.0 }, digits),
                Field::Share {
                    seconds: spent,
                    digits,
                } => (spent / seconds * 100.0, digits),
                Field::Max { value, digits } => (value, digits),
            };
            let value = if value.is_finite() { value } else { 0.0 };
            let _ = write!(text, " {key}={value:.digits$}");
            let _ = write!(json, ",\"{key}\":{value:.digits$}");
        }
        (text, json)
    }
}

/// What every one-thread loop counts about its own turns: waits, events,
/// the longest turn, and how busy its thread was. Fed by the loop at each
/// wait; made on the loop's own thread.
///
/// `busy%` is the loop thread's CPU time over the line's wall time, kernel
/// time included, read from the thread's CPU clock when a line is written.
/// So it means the same for every loop: a readiness loop's reads and
/// writes are system calls between its waits, but a completion loop's are
/// done by the kernel inside its wait (`io_uring_enter`), and time between
/// waits alone would call that loop idle while it works.
pub struct Turns {
    /// Waits since the last line.
    pub waits: u64,
    /// Events those waits returned.
    pub events: u64,
    /// The longest single turn.
    pub longest: Duration,
    woke: Option<Instant>,
    /// The thread's CPU clock at the last line (or at the start).
    cpu_at: Duration,
}

impl Default for Turns {
    fn default() -> Self {
        Turns {
            waits: 0,
            events: 0,
            longest: Duration::ZERO,
            woke: None,
            cpu_at: crate::sys::thread_cpu_time(),
        }
    }
}

impl Turns {
    /// The loop came back from a wait at `now` with `events` events.
    pub fn woke(&mut self, now: Instant, events: usize) {
        self.waits += 1;
        self.events += events as u64;
        self.woke = Some(now);
    }

    /// The loop is about to wait again at `now`.
    pub fn waiting(&mut self, now: Instant) {
        if let Some(woke) = self.woke.take() {
            let turn = now.saturating_duration_since(woke);
            self.longest = self.longest.max(turn);
        }
    }

    /// Adds the loop's fields to `line` and starts counting afresh.
    pub fn fill(&mut self, line: &mut Line) {
        let cpu = crate::sys::thread_cpu_time();
        line.rate("waits/s", self.waits, 0)
            .ratio("events/wait", self.events, self.waits, 2)
            .share("busy%", cpu.saturating_sub(self.cpu_at), 1)
            .max("longest_ms", self.longest.as_secs_f64() * 1000.0, 2);
        *self = Turns {
            waits: 0,
            events: 0,
            longest: Duration::ZERO,
            woke: self.woke,
            cpu_at: cpu,
        };
    }
}

/// A counter a line reads and resets: a `Cell` for a loop and its tasks
/// (one thread, no atomics), an `AtomicU64` for threads that share it.
pub trait Counter: Default {
    /// Adds `n`.
    fn add(&self, n: u64);
    /// Reads and resets.
    fn take(&self) -> u64;
}

impl Counter for Cell<u64> {
    fn add(&self, n: u64) {
        self.set(self.get() + n);
    }

    fn take(&self) -> u64 {
        self.replace(0)
    }
}

impl Counter for AtomicU64 {
    fn add(&self, n: u64) {
        self.fetch_add(n, Relaxed);
    }

    fn take(&self) -> u64 {
        self.swap(0, Relaxed)
    }
}

/// What every model counts of its clients between two lines.
#[derive(Default)]
pub struct Traffic<C: Counter = Cell<u64>> {
    accepted: C,
    closed: C,
    bytes_in: C,
    bytes_out: C,
    messages: C,
}

impl<C: Counter> Traffic<C> {
    /// A client was admitted.
    pub fn accepted(&self) {
        self.accepted.add(1);
    }

    /// A client is gone.
    pub fn closed(&self) {
        self.closed.add(1);
    }

    /// One read brought `n` bytes: one message, as bench counts them.
    pub fn read(&self, n: usize) {
        self.reads(1, n as u64);
    }

    /// `count` reads brought `bytes` bytes.
    pub fn reads(&self, count: u64, bytes: u64) {
        self.messages.add(count);
        self.bytes_in.add(bytes);
    }

    /// `n` bytes were written back.
    pub fn wrote(&self, n: usize) {
        self.bytes_out.add(n as u64);
    }

    /// Adds the fields every model shows, with `open` clients now, and
    /// starts counting afresh.
    pub fn fill(&self, line: &mut Line, open: u64) {
        let messages = self.messages.take();
        line.gauge("open", open)
            .count("accepted", self.accepted.take())
            .count("closed", self.closed.take())
            .count("bytes_in", self.bytes_in.take())
            .count("bytes_out", self.bytes_out.take())
            .count("messages", messages)
            .rate("msgs/s", messages, 0);
    }

    /// A loop's first fields: its traffic, then its turns (when it counts
    /// them, with `--stats`).
    pub fn fill_loop(&self, line: &mut Line, open: u64, turns: Option<&mut Turns>) {
        self.fill(line, open);
        if let Some(turns) = turns {
            turns.fill(line);
        }
    }
}

/// A run queue's life between two lines: its length at each turn of the
/// loop (mean and max), and how many polls each wake-up cost (1.0: every
/// wake found its task something to do).
#[derive(Default)]
pub struct ReadyQueue {
    /// Turns of the loop.
    pub turns: u64,
    /// The queue's lengths at those turns, summed.
    pub queued: u64,
    /// The longest.
    pub longest: u64,
    /// Tasks queued to run (woken, spawned, timed out).
    pub wakes: u64,
    /// Polls (resumes) of tasks.
    pub polls: u64,
}

impl ReadyQueue {
    /// A turn begins with `len` tasks ready.
    pub fn turn(&mut self, len: usize) {
        self.turns += 1;
        self.queued += len as u64;
        self.longest = self.longest.max(len as u64);
    }

    /// Adds the queue's fields to `line` and starts counting afresh.
    pub fn fill(&mut self, line: &mut Line) {
        line.ratio("ready_mean", self.queued, self.turns, 2)
            .max("ready_max", self.longest as f64, 0)
            .ratio("polls/wake", self.polls, self.wakes, 2);
        *self = ReadyQueue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines add up by kind: counts sum, a gauge keeps the latest, a rate
    /// and a share are over the total's seconds, a ratio divides the sums,
    /// a maximum keeps the largest.
    #[test]
    fn lines_add_up_to_the_run() {
        let mut run = Line::default();
        for (n, open, longest) in [(10, 5, 2.0), (30, 1, 1.0)] {
            let mut line = Line::default();
            line.count("messages", n)
                .gauge("open", open)
                .rate("msgs/s", n, 0)
                .ratio("events/wait", n, 10, 1)
                .share("busy%", Duration::from_millis(n), 0)
                .max("longest_ms", longest, 1);
            run.add(&line);
        }
        let (text, json) = run.render(2.0);
        assert_eq!(
            text,
            " messages=40 open=1 msgs/s=20 events/wait=2.0 busy%=2 longest_ms=2.0"
        );
        assert!(json.starts_with(",\"messages\":40,\"open\":1,"), "{json}");
    }
}
