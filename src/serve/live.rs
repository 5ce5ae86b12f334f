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
        Ok(JsonSink(Arc::new(Mutex::new(File::create(path)?))))
    }

    fn write(&self, line: &str) {
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
    }
}

/// When a loop's next line is due, and where it goes.
pub struct Reporter {
    /// The loop's name in every line: `selector`, `async-1`, `threadpool`.
    name: String,
    interval: Duration,
    /// When the last line (or the start) was.
    since: Instant,
    json: Option<JsonSink>,
}

impl Reporter {
    /// A reporter for the loop `name`, every `interval`.
    pub fn new(name: impl Into<String>, interval: Duration, json: Option<JsonSink>) -> Self {
        Reporter {
            name: name.into(),
            interval,
            since: Instant::now(),
            json,
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

    /// Writes one line: `fill` adds the fields, given the seconds the line
    /// covers (for rates). `last` marks the final line at shutdown.
    pub fn report(&mut self, now: Instant, last: bool, fill: impl FnOnce(&mut Line, f64)) {
        let seconds = now.duration_since(self.since).as_secs_f64().max(1e-9);
        self.since = now;
        let mut line = Line::default();
        fill(&mut line, seconds);
        let label = if last { "final" } else { "stats" };
        eprintln!("{label} {}:{}", self.name, line.text);
        if let Some(json) = &self.json {
            json.write(&format!(
                "{{\"loop\":\"{}\",\"final\":{last},\"seconds\":{seconds:.3}{}}}",
                self.name, line.json
            ));
        }
    }
}

/// One line's fields, as text and as JSON at once.
#[derive(Default)]
pub struct Line {
    text: String,
    json: String,
}

impl Line {
    /// A whole number: `open=3`.
    pub fn count(&mut self, key: &str, value: u64) -> &mut Self {
        let _ = write!(self.text, " {key}={value}");
        let _ = write!(self.json, ",\"{key}\":{value}");
        self
    }

    /// A measured quantity, shown with `digits` decimals: `events/wait=1.8`.
    pub fn value(&mut self, key: &str, value: f64, digits: usize) -> &mut Self {
        let value = if value.is_finite() { value } else { 0.0 };
        let _ = write!(self.text, " {key}={value:.digits$}");
        let _ = write!(self.json, ",\"{key}\":{value:.digits$}");
        self
    }
}

/// `part / whole`, or 0 when there is no whole.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// What every one-thread loop counts about its own turns: waits, events,
/// time busy between waits, the longest turn. Fed by the loop at each wait.
#[derive(Default)]
pub struct Turns {
    /// Waits since the last line.
    pub waits: u64,
    /// Events those waits returned.
    pub events: u64,
    /// Time spent between waits (running handlers or tasks).
    pub busy: Duration,
    /// The longest single turn.
    pub longest: Duration,
    woke: Option<Instant>,
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
            self.busy += turn;
            self.longest = self.longest.max(turn);
        }
    }

    /// Adds the loop's fields to `line` and starts counting afresh.
    pub fn fill(&mut self, line: &mut Line, seconds: f64) {
        line.value("waits/s", self.waits as f64 / seconds, 0)
            .value("events/wait", ratio(self.events, self.waits), 2)
            .value("busy%", self.busy.as_secs_f64() / seconds * 100.0, 1)
            .value("longest_ms", self.longest.as_secs_f64() * 1000.0, 2);
        *self = Turns::default();
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
    pub fn fill(&self, line: &mut Line, seconds: f64, open: u64) {
        let messages = self.messages.take();
        line.count("open", open)
            .count("accepted", self.accepted.take())
            .count("closed", self.closed.take())
            .count("bytes_in", self.bytes_in.take())
            .count("bytes_out", self.bytes_out.take())
            .count("messages", messages)
            .value("msgs/s", messages as f64 / seconds, 0);
    }

    /// A loop's first fields: its traffic, then its turns (when it counts
    /// them, with `--stats`).
    pub fn fill_loop(&self, line: &mut Line, seconds: f64, open: u64, turns: Option<&mut Turns>) {
        self.fill(line, seconds, open);
        if let Some(turns) = turns {
            turns.fill(line, seconds);
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
        line.value("ready_mean", ratio(self.queued, self.turns), 2)
            .count("ready_max", self.longest)
            .value("polls/wake", ratio(self.polls, self.wakes), 2);
        *self = ReadyQueue::default();
    }
}
