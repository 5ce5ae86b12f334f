//! `echo-lab bench --protocol chat`: load for the chat server, with every
//! delivered line checked.
//!
//! Every connection registers, then keeps `--depth` `chat` lines in flight
//! to receivers picked at random among the others, sending the next when
//! one is delivered (a closed loop, as the echo bench's default). One
//! client thread drives every connection, so it knows what each sent: a
//! delivered line must reach the receiver it was sent to, name the right
//! sender, be one the sender still had in flight (not lost, not twice),
//! arrive in order among that sender's lines to that receiver, and be
//! whole. Anything else is an error, never a silent success. A line
//! carries its sequence number and the instant it was sent, so the
//! latency is the delivery's: from the sender's `write` to the receiver's
//! `read`, through the server's registry and the receiver's outbox.

mod load;

pub use load::run;

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use super::{BenchResults, Environment, Latency};
use crate::parse::HostPort;
use crate::stats::counted;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct ChatBenchConfig {
    /// The chat server.
    #[serde(serialize_with = "super::display")]
    pub addr: HostPort,
    /// Clients, each registered under its own name; at least 2.
    pub connections: usize,
    /// The measured window.
    #[serde(serialize_with = "super::seconds")]
    pub duration: Duration,
    /// Run before the measured window; not counted.
    #[serde(serialize_with = "super::seconds")]
    pub warmup: Duration,
    /// Lines each client keeps in flight.
    pub depth: usize,
    /// More clients that send without pause, not measured (see
    /// [`hogs`](crate::tools::hogs)).
    pub hogs: usize,
    /// A server process on this machine whose CPU use to measure.
    pub server_pid: Option<u32>,
}

/// What a chat run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatResults {
    /// Lines delivered inside the measured window.
    pub delivered: u64,
    /// The window, in seconds.
    pub seconds: f64,
    /// `delivered / seconds`.
    pub delivered_per_sec: f64,
    /// From the sender's write to the receiver's read, in microseconds.
    pub latency_us: Latency,
    /// Lines wrong in any way, plus lines never delivered.
    pub errors: u64,
    /// The first few errors, described.
    pub error_samples: Vec<String>,
    /// Lines still in flight when the drain after the window ended: lost.
    pub lost: u64,
    /// Clients that had at least one line delivered to them.
    pub served: u64,
    /// The client's CPU use over the window, in cores.
    pub client_cpu: f64,
    /// The server's, when its process was given.
    pub server_cpu: Option<f64>,
    /// Bytes that came back to the hogs over the whole run.
    pub hogs_received: u64,
}

impl ChatResults {
    /// Whether the run shows a failure: any error, or nothing delivered.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.delivered == 0
    }
}

/// A chat run in the echo bench's terms, for `compare`: a delivered line
/// is a message, and every client is served unless one failed.
impl From<ChatResults> for BenchResults {
    fn from(chat: ChatResults) -> BenchResults {
        BenchResults {
            messages: chat.delivered,
            seconds: chat.seconds,
            messages_per_sec: chat.delivered_per_sec,
            latency_us: chat.latency_us,
            errors: chat.errors,
            error_samples: chat.error_samples,
            client_cpu: chat.client_cpu,
            server_cpu: chat.server_cpu,
            served_connections: chat.served,
            hogs_received: chat.hogs_received,
            ..BenchResults::default()
        }
    }
}

/// A whole chat run, for `--json`.
#[derive(Debug, Serialize)]
pub struct ChatBenchReport {
    /// What was asked.
    pub parameters: ChatBenchConfig,
    /// What was measured.
    pub results: ChatResults,
    /// Where.
    pub environment: Environment,
}

/// Checks the parameters.
///
/// # Errors
/// Fewer than 2 connections (nobody to chat with), a depth of 0.
pub fn validate(config: &ChatBenchConfig) -> anyhow::Result<()> {
    if config.connections < 2 {
        bail!("--protocol chat needs at least 2 connections: one to send, one to receive");
    }
    if config.depth == 0 {
        bail!("--depth must be at least 1");
    }
    Ok(())
}

/// The text report.
pub fn render(report: &ChatBenchReport) -> String {
    let (p, r) = (&report.parameters, &report.results);
    let mut text = format!(
        "chat: {} clients, {} in flight each, {:.1}s measured\n\
         delivered {} lines: {:.0} lines/s\n\
         delivery latency p50 {:.0} us, p99 {:.0} us, max {:.0} us\n\
         client CPU {:.2} cores",
        p.connections,
        counted(p.depth as u64, "line"),
        r.seconds,
        r.delivered,
        r.delivered_per_sec,
        r.latency_us.p50,
        r.latency_us.p99,
        r.latency_us.max,
        r.client_cpu,
    );
    if let Some(server) = r.server_cpu {
        text.push_str(&format!(", server CPU {server:.2} cores"));
    }
    text.push('\n');
    if p.hogs > 0 {
        text.push_str(super::report::hogs_line(p.hogs, r.hogs_received).trim_start());
    }
    if r.errors == 0 {
        text.push_str("every delivered line checked: right receiver, right sender, in order, whole, none lost\n");
    } else {
        text.push_str(&format!("{}:\n", counted(r.errors, "error")));
        for sample in &r.error_samples {
            text.push_str(&format!("  {sample}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_clients_are_refused() {
        let config = ChatBenchConfig {
            addr: "127.0.0.1:1"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            connections: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            depth: 1,
            hogs: 0,
            server_pid: None,
        };
        assert!(validate(&config).is_err());
        assert!(
            validate(&ChatBenchConfig {
                connections: 2,
                ..config.clone()
            })
            .is_ok()
        );
        assert!(
            validate(&ChatBenchConfig {
                depth: 0,
                connections: 2,
                ..config
            })
            .is_err()
        );
    }
}
