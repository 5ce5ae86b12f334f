//! `probe --flood NAME`: chapter 8's slow receiver, tried. One client
//! registers NAME and never reads; the others register too and send it
//! lines as fast as the server takes them, each reading its own answers on
//! a second thread. A sound chat cuts the receiver off once its outbox is
//! full and tells its senders `error,no such user`; a chat that deadlocks
//! (`serve --lock-order-bug`) stops taking lines, or dies, and the probe
//! says which.
//!
//! Bounded: each sender sends at most [`MAX_LINES`] lines, and gives up on
//! a server that takes nothing for the timeout.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::net::{connect, connect_patiently};
use crate::parse::HostPort;
use crate::tools::handshake::register;

/// Lines each sender sends at most: 20 MB of 1 KB lines, far past any
/// outbox bound and the socket buffers in front of it.
pub const MAX_LINES: usize = 20_000;

/// How one sender's flood ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The server said the receiver is gone: `error,no such user`.
    NoSuchUser,
    /// The server closed or reset the connection.
    ServerGone(String),
    /// The server took no byte for the timeout.
    Stalled,
    /// Every line was sent and the receiver was never cut off.
    AllSent,
}

/// What the flood found.
#[derive(Debug)]
pub struct FloodReport {
    /// The receiver's name.
    pub name: String,
    /// Per sender: lines sent, and how its flood ended.
    pub senders: Vec<(usize, Ended)>,
    /// What the receiver was sent last, read once the senders stopped: the
    /// server's `error,too slow` for a receiver it cut off.
    pub receiver_last: Option<String>,
}

impl FloodReport {
    /// Whether the server did what a sound chat does: every sender was
    /// told the receiver is gone.
    pub fn cut_off(&self) -> bool {
        self.senders
            .iter()
            .all(|(_, ended)| *ended == Ended::NoSuchUser)
    }
}

/// Floods `name` at `addr` from `senders` clients.
///
/// # Errors
/// A client cannot connect or register.
pub fn flood(
    addr: &HostPort,
    name: &str,
    senders: usize,
    timeout: Duration,
) -> anyhow::Result<FloodReport> {
    // It waits for a server still starting, as every tool's first does.
    let receiver = connect_patiently(addr, timeout)?;
    register(&receiver, name, timeout)?;
    let streams = (0..senders)
        .map(|i| {
            let stream = connect(addr, timeout)?;
            register(&stream, &format!("{name}-sender-{}", i + 1), timeout)?;
            Ok(stream)
        })
        .collect::<anyhow::Result<Vec<TcpStream>>>()?;
    let line = format!("chat,{name},{}\n", "x".repeat(1000));
    let senders = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|stream| {
                let line = line.as_bytes();
                scope.spawn(move || pour(stream, line, timeout))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (0, Ended::ServerGone("panicked".into())))
            })
            .collect()
    });
    Ok(FloodReport {
        name: name.to_owned(),
        senders,
        receiver_last: last_line(&receiver, timeout),
    })
}

/// Sends `line` until told the receiver is gone, or the server stops
/// taking lines; returns the lines sent and how it ended.
fn pour(stream: &TcpStream, line: &[u8], timeout: Duration) -> (usize, Ended) {
    let told = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let answers = scope.spawn(|| listen(stream, &told));
        let _ = stream.set_write_timeout(Some(timeout));
        let mut sent = 0;
        let mut ended = Ended::AllSent;
        while sent < MAX_LINES && !told.load(Ordering::Acquire) {
            match (&*stream).write_all(line) {
                Ok(()) => sent += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    ended = Ended::Stalled;
                    break;
                }
                Err(e) => {
                    ended = Ended::ServerGone(e.to_string());
                    break;
                }
            }
        }
        // Stop the listener: it sees the end of the stream.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = answers.join();
        if told.load(Ordering::Acquire) {
            ended = Ended::NoSuchUser;
        }
        (sent, ended)
    })
}

/// Reads a sender's answers until the end of the stream, setting `told`
/// at `error,no such user`. (A server that goes away is seen by the
/// writes.)
fn listen(stream: &TcpStream, told: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    loop {
        answer.clear();
        match reader.read_line(&mut answer) {
            Ok(0) | Err(_) => return,
            Ok(_) if answer.trim_end() == "error,no such user" => {
                told.store(true, Ordering::Release);
            }
            Ok(_) => {}
        }
    }
}

/// The last line the receiver was sent, read to the end of its stream
/// (at most a few MB, the socket buffers' worth; `None` if the server
/// neither closed it nor fell silent within the timeout).
fn last_line(receiver: &TcpStream, timeout: Duration) -> Option<String> {
    receiver.set_read_timeout(Some(timeout)).ok()?;
    let mut all = Vec::new();
    let mut chunk = [0; 64 << 10];
    loop {
        match (&*receiver).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&all);
    text.lines().last().map(|l| l.chars().take(40).collect())
}

/// The report as text.
pub fn render(report: &FloodReport) -> String {
    let mut out = String::new();
    for (i, (sent, ended)) in report.senders.iter().enumerate() {
        let how = match ended {
            Ended::NoSuchUser => "then told: error,no such user".to_owned(),
            Ended::ServerGone(why) => format!("then the server went away ({why})"),
            Ended::Stalled => "then the server took nothing more".to_owned(),
            Ended::AllSent => "and the receiver was never cut off".to_owned(),
        };
        out += &format!("sender {}: {sent} lines sent, {how}\n", i + 1);
    }
    if let Some(last) = &report.receiver_last {
        out += &format!("{} was sent last: {last}\n", report.name);
    }
    out += &if report.cut_off() {
        format!(
            "{} was cut off as too slow; its senders went on\n",
            report.name
        )
    } else {
        format!("{} was not cut off: the chat is broken\n", report.name)
    };
    out
}
