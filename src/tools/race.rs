//! `probe --register NAME`: the chat's race, tried. Every client connects
//! first; then, released together, each sends `register,NAME` and reads its
//! answer, and every connection stays open until all have answered (a name
//! is freed when its holder leaves). A chat whose registry checks and takes
//! a name in one step answers `ok` exactly once; `serve --racy-register`
//! splits the step, and more than one client gets the name
//! (`docs/tutorial/8-shared-state-a-chat-server.md`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::Duration;

use crate::net::{connect, connect_patiently};
use crate::parse::HostPort;

/// What each client was answered, in the order they connected.
#[derive(Debug)]
pub struct RaceReport {
    /// The name they all asked for.
    pub name: String,
    /// Each client's answer line, or what went wrong.
    pub answers: Vec<Result<String, String>>,
}

impl RaceReport {
    /// How many were told `ok`.
    pub fn winners(&self) -> usize {
        self.answers
            .iter()
            .filter(|answer| answer.as_deref() == Ok("ok"))
            .count()
    }

    /// Whether every client got an answer.
    pub fn all_answered(&self) -> bool {
        self.answers.iter().all(Result::is_ok)
    }
}

/// Connects `clients` clients to the chat at `addr`, then has them all
/// register `name` at once.
///
/// # Errors
/// A client cannot connect.
pub fn register_at_once(
    addr: &HostPort,
    name: &str,
    clients: usize,
    timeout: Duration,
) -> anyhow::Result<RaceReport> {
    // The first waits for a server still starting, as every tool's does.
    let streams = (0..clients)
        .map(|i| match i {
            0 => connect_patiently(addr, timeout),
            _ => connect(addr, timeout),
        })
        .collect::<anyhow::Result<Vec<TcpStream>>>()?;
    let (start, done) = (Barrier::new(clients), Barrier::new(clients));
    let line = format!("register,{name}\n");
    let answers = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .map(|stream| {
                let (start, done, line) = (&start, &done, &line);
                scope.spawn(move || {
                    start.wait();
                    let answer = ask(&stream, line, timeout);
                    // Held until everyone has answered: a name is free
                    // again once its holder leaves.
                    done.wait();
                    answer
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".to_owned())))
            .collect()
    });
    Ok(RaceReport {
        name: name.to_owned(),
        answers,
    })
}

/// Sends `line` and reads one line back.
fn ask(stream: &TcpStream, line: &str, timeout: Duration) -> Result<String, String> {
    let ask = || -> std::io::Result<String> {
        stream.set_read_timeout(Some(timeout))?;
        (&*stream).write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer.trim_end().to_owned())
    };
    ask().map_err(|e| e.to_string())
}

/// The report as text: each client's answer, then the count.
pub fn render(report: &RaceReport) -> String {
    let mut out = String::new();
    for (i, answer) in report.answers.iter().enumerate() {
        let answer = match answer {
            Ok(line) => line.clone(),
            Err(e) => format!("no answer: {e}"),
        };
        out += &format!("client {:>2}: {answer}\n", i + 1);
    }
    out += &format!(
        "{} of {} got ok for {}\n",
        report.winners(),
        report.answers.len(),
        report.name
    );
    out
}
