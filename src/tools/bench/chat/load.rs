//! The chat load itself: one client thread drives every connection
//! through one poller, sends each client's lines, and checks every line
//! delivered against what its sender sent (see the module above).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::super::{CONNECT_PHASE_LIMIT, DRAIN_LIMIT, ERROR_SAMPLES, Latency};
use super::{ChatBenchConfig, ChatResults, validate};
use crate::net::{connect, connect_patiently, interrupted, would_block};
use crate::poller::{Events, Interest, Poller, Registered};
use crate::serve::Protocol;
use crate::stats::counted;
use crate::sys;
use crate::tools::handshake::register;
use crate::tools::hogs::Hogs;

/// One client of the load.
struct Client<'p> {
    /// Watched by the load's poller for as long as it lives.
    stream: Registered<'p, TcpStream>,
    /// The unfinished line read so far.
    partial: Vec<u8>,
    /// Bytes the socket has not taken yet.
    unsent: Vec<u8>,
    interest: Interest,
    /// Lines sent and not delivered yet: (sequence, receiver, sent at).
    in_flight: VecDeque<(u64, usize, Instant)>,
    next_seq: u64,
    /// A line reached it.
    served: bool,
}

/// The load and its tally.
struct Load<'p> {
    clients: Vec<Client<'p>>,
    poller: &'p Poller,
    /// Every name is `<prefix>-<index>`: unique to this run.
    prefix: String,
    /// When sending may go on; after it, only the drain.
    sending: bool,
    started: Instant,
    window: (Instant, Instant),
    histogram: Histogram<u64>,
    results: ChatResults,
    rng: u64,
    /// Reused read buffer.
    buffer: Vec<u8>,
}

/// Runs the chat load. `on_progress` is called about ten times a second
/// with the share of the run done and the lines delivered so far.
///
/// # Errors
/// If the server cannot be reached or refuses a registration.
pub fn run(
    config: &ChatBenchConfig,
    mut on_progress: impl FnMut(f64, u64),
) -> anyhow::Result<ChatResults> {
    validate(config)?;
    let prefix = format!("b{:x}", std::process::id());
    let deadline = Instant::now() + CONNECT_PHASE_LIMIT;
    let poller = Poller::new(crate::poller::Backend::default())?;
    let mut clients = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = if i == 0 {
            connect_patiently(&config.addr, left)?
        } else {
            connect(&config.addr, left)?
        };
        register(&stream, &format!("{prefix}-{i}"), CONNECT_PHASE_LIMIT)?;
        stream.set_nonblocking(true)?;
        clients.push(Client::new(poller.register(stream, i, Interest::READ)?));
    }
    let hogs = Hogs::start(&config.addr, config.hogs, Protocol::Chat)?;
    let started = Instant::now();
    let window_start = started + config.warmup;
    let mut load = Load {
        clients,
        poller: &poller,
        prefix,
        sending: true,
        started,
        window: (window_start, window_start + config.duration),
        histogram: Latency::histogram(),
        results: ChatResults::default(),
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
        buffer: vec![0; 64 * 1024],
    };
    for sender in 0..load.clients.len() {
        for _ in 0..config.depth {
            load.send_next(sender);
        }
    }
    let (cpu_before, server_before) = (sys::own_cpu_time(), server_cpu(config));
    let mut cpu_window = None;
    let mut events = Events::new();
    let end = load.window.1;
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        if cpu_window.is_none() && now >= load.window.0 {
            cpu_window = Some((now, sys::own_cpu_time(), server_cpu(config)));
        }
        if load.sending && now >= end {
            load.sending = false;
        }
        let drained = load.clients.iter().all(|c| c.in_flight.is_empty());
        if !load.sending && (drained || now >= end + DRAIN_LIMIT) {
            break;
        }
        if now.duration_since(last_progress) >= Duration::from_millis(100) {
            last_progress = now;
            let total = config.warmup + config.duration;
            on_progress(
                (now.duration_since(started).as_secs_f64() / total.as_secs_f64()).min(1.0),
                load.results.delivered,
            );
        }
        let wake = if load.sending { end } else { end + DRAIN_LIMIT };
        let timeout = wake
            .min(now + Duration::from_millis(100))
            .saturating_duration_since(now);
        load.poller.wait(&mut events, Some(timeout))?;
        for event in events.iter() {
            load.on_ready(event.key, event.readable, event.writable);
        }
    }
    let (window_start, cpu_start, server_start) =
        cpu_window.unwrap_or((started, cpu_before, server_before));
    let seconds = end
        .min(Instant::now())
        .duration_since(window_start)
        .as_secs_f64()
        .max(1e-9);
    let cpu =
        |after: Duration, before: Duration| after.saturating_sub(before).as_secs_f64() / seconds;
    // Read at the window's end: the goodbyes are not the load measured.
    let (client_cpu, server_end) = (sys::own_cpu_time(), server_cpu(config));
    let mut results = load.finish();
    results.seconds = seconds;
    results.delivered_per_sec = results.delivered as f64 / seconds;
    results.client_cpu = cpu(client_cpu, cpu_start);
    results.server_cpu = server_end
        .zip(server_start)
        .map(|(after, before)| cpu(after, before));
    results.hogs_received = hogs.received();
    Ok(results)
}

fn server_cpu(config: &ChatBenchConfig) -> Option<Duration> {
    config.server_pid.and_then(sys::tree_cpu_time)
}

impl<'p> Client<'p> {
    /// A registered client, watched for reading.
    fn new(stream: Registered<'p, TcpStream>) -> Self {
        Client {
            stream,
            partial: Vec::new(),
            unsent: Vec::new(),
            interest: Interest::READ,
            in_flight: VecDeque::new(),
            next_seq: 0,
            served: false,
        }
    }
}

impl Load<'_> {
    /// Sends client `sender`'s next line to a random other client.
    fn send_next(&mut self, sender: usize) {
        // xorshift64: cheap, and good enough to spread receivers.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let others = self.clients.len() - 1;
        let mut to = (self.rng % others as u64) as usize;
        if to >= sender {
            to += 1;
        }
        let now = Instant::now();
        let client = &mut self.clients[sender];
        let seq = client.next_seq;
        client.next_seq += 1;
        let stamp = now.duration_since(self.started).as_nanos();
        let line = format!("chat,{}-{to},{seq} {stamp}\n", self.prefix);
        client.in_flight.push_back((seq, to, now));
        client.unsent.extend_from_slice(line.as_bytes());
        self.flush(sender);
    }

    fn flush(&mut self, key: usize) {
        let client = &mut self.clients[key];
        while !client.unsent.is_empty() {
            match client.stream.write(&client.unsent) {
                Ok(n) => {
                    client.unsent.drain(..n);
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.error(format!("client {key}: write failed: {e}")),
            }
        }
        let wanted = Interest {
            read: true,
            write: !self.clients[key].unsent.is_empty(),
        };
        let client = &mut self.clients[key];
        if wanted != client.interest {
            client.interest = wanted;
            if let Err(e) = self.poller.modify(&client.stream, key, wanted) {
                self.error(format!("client {key}: {e}"));
            }
        }
    }

    fn on_ready(&mut self, key: usize, readable: bool, writable: bool) {
        if writable {
            self.flush(key);
        }
        if !readable {
            return;
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        let read = self.clients[key].stream.read(&mut buffer);
        match read {
            Ok(0) => self.error(format!("client {key}: the server closed the connection")),
            Ok(n) => {
                let now = Instant::now();
                let mut partial = std::mem::take(&mut self.clients[key].partial);
                partial.extend_from_slice(&buffer[..n]);
                let mut start = 0;
                while let Some(end) = partial[start..].iter().position(|&b| b == b'\n') {
                    self.delivered(key, &partial[start..start + end], now);
                    start += end + 1;
                }
                partial.drain(..start);
                self.clients[key].partial = partial;
            }
            Err(e) if would_block(&e) || interrupted(&e) => {}
            Err(e) => self.error(format!("client {key}: read failed: {e}")),
        }
        self.buffer = buffer;
    }

    /// Checks one line `receiver` got, and lets its sender send the next.
    fn delivered(&mut self, receiver: usize, line: &[u8], now: Instant) {
        let Some((sender, seq)) = self.parse(line) else {
            let line = String::from_utf8_lossy(line);
            return self.error(format!(
                "client {receiver} got a line not sent as such: {line:.80}"
            ));
        };
        let flight = &mut self.clients[sender].in_flight;
        let Some(at) = flight.iter().position(|&(s, _, _)| s == seq) else {
            return self.error(format!(
                "client {receiver} got line {seq} of client {sender}, which was not in flight (a duplicate?)"
            ));
        };
        let (_, to, sent) = flight[at];
        if to != receiver {
            return self.error(format!(
                "line {seq} of client {sender} was sent to client {to} and reached client {receiver}"
            ));
        }
        if flight
            .iter()
            .take(at)
            .any(|&(_, earlier, _)| earlier == receiver)
        {
            return self.error(format!(
                "line {seq} of client {sender} overtook an earlier line to client {receiver}"
            ));
        }
        flight.remove(at);
        self.clients[receiver].served = true;
        if (self.window.0..self.window.1).contains(&now) {
            self.results.delivered += 1;
            let micros = now.duration_since(sent).as_micros().max(1);
            let _ = self
                .histogram
                .record(u64::try_from(micros).unwrap_or(u64::MAX));
        }
        if self.sending {
            self.send_next(sender);
        }
    }

    /// `from,<prefix>-<sender>,<seq> <stamp>` -> (sender, seq).
    fn parse(&self, line: &[u8]) -> Option<(usize, u64)> {
        let line = std::str::from_utf8(line).ok()?;
        let rest = line.strip_prefix("from,")?.strip_prefix(&self.prefix)?;
        let (sender, text) = rest.strip_prefix('-')?.split_once(',')?;
        let (seq, stamp) = text.split_once(' ')?;
        stamp.parse::<u128>().ok()?;
        let sender: usize = sender.parse().ok()?;
        (sender < self.clients.len()).then_some(())?;
        Some((sender, seq.parse().ok()?))
    }

    fn error(&mut self, description: String) {
        self.results.errors += 1;
        if self.results.error_samples.len() < ERROR_SAMPLES {
            self.results.error_samples.push(description);
        }
    }

    /// Counts what never arrived, says goodbye, and closes every client.
    fn finish(mut self) -> ChatResults {
        let lost: u64 = self.clients.iter().map(|c| c.in_flight.len() as u64).sum();
        self.results.served = self.clients.iter().filter(|c| c.served).count() as u64;
        if lost > 0 {
            self.results.lost = lost;
            self.error(format!("{} never delivered", counted(lost, "line")));
        }
        // Each client's socket leaves the poller, then closes, as the load
        // is dropped.
        for client in &self.clients {
            let _ = client.stream.set_nonblocking(false);
            let _ = (&*client.stream).write_all(b"quit\n");
        }
        self.results.latency_us = Latency::of(&self.histogram);
        self.results
    }
}
