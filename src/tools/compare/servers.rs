//! Running the servers compared: each is a child process in a process
//! group of its own, started (and placed on a CPU) here, waited for until
//! it listens, stopped with SIGTERM and checked to have exited cleanly.
//! Dropping a [`ServerProcess`] kills its whole group, so no server
//! outlives a run that failed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::CompareConfig;
use crate::serve::Mode;
use crate::sys;

/// How long a server may take to start listening, and to stop after SIGTERM.
pub const SERVER_PATIENCE: Duration = Duration::from_secs(10);

/// Another echo server to compare: `NAME=COMMAND`, where `{port}` in the
/// command is replaced by a free port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The name in the table.
    pub name: String,
    /// The shell command that starts it.
    pub command: String,
}

/// Parses `NAME=COMMAND`.
///
/// # Errors
/// No `=`, an empty name, or a command without `{port}`.
pub fn parse_peer(text: &str) -> Result<Peer, String> {
    let (name, command) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=COMMAND, got '{text}'"))?;
    if name.trim().is_empty() || name.contains(',') {
        return Err("the name before '=' must be non-empty, without commas".into());
    }
    if !command.contains("{port}") {
        return Err("the command must contain {port}, where the server should listen".into());
    }
    Ok(Peer {
        name: name.trim().to_owned(),
        command: command.to_owned(),
    })
}

/// How to start a server.
pub(super) enum Launch {
    Model(Mode),
    Peer(String),
}

/// A running server process.
pub(super) struct ServerProcess {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    /// Ours must exit 0 on SIGTERM; a peer may simply die of it.
    ours: bool,
    /// Where it was told to write its counters, if it was: nothing else is
    /// read as its counters.
    pub(super) counters: Option<PathBuf>,
}

impl Launch {
    /// Starts the server, on CPU `cpu` if given; ours get the settings of
    /// `config` that apply to them (`--threads` and `--offload` to the
    /// loops, `--work` to every model), and write their
    /// counters for the whole run to `counters` (`--stats-json`, one final
    /// line per loop at shutdown); peers get none.
    pub(super) fn start(
        &self,
        cpu: Option<usize>,
        config: &CompareConfig,
        counters: &Path,
    ) -> anyhow::Result<ServerProcess> {
        let mut counters_file = None;
        let (mut command, peer_port) = match self {
            Launch::Model(mode) => {
                let mut c =
                    Command::new(std::env::current_exe().context("finding echo-lab itself")?);
                c.args([
                    "serve",
                    "--mode",
                    mode.name(),
                    "--addr",
                    "127.0.0.1:0",
                    "--quiet",
                ]);
                let chat = config.protocol == crate::serve::Protocol::Chat;
                if chat {
                    c.args(["--protocol", "chat"]);
                }
                // One line at shutdown, for the whole run.
                c.args(["--stats", "100000s", "--stats-json"]).arg(counters);
                counters_file = Some(counters.to_owned());
                let one_thread = mode.blocking() == crate::net::Blocking::No;
                if one_thread {
                    if !chat {
                        c.args(["--threads", &config.server_threads.to_string()]);
                    }
                    if let Some(backend) = config.poller.filter(|_| *mode != Mode::Completion) {
                        c.args(["--poller", backend.name()]);
                    }
                }
                if let Some(work) = config.work {
                    c.args(["--work", &work.to_string()]);
                    if one_thread && config.offload > 0 {
                        c.args(["--offload", &config.offload.to_string()]);
                    }
                }
                (c, None)
            }
            Launch::Peer(template) => {
                let port = free_port()?;
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!(
                    "exec {}",
                    template.replace("{port}", &port.to_string())
                ));
                (c, Some(port))
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Its own process group, so that SIGTERM reaches whatever it starts.
        command.process_group(0);
        if let Some(cpu) = cpu {
            sys::pin_command(&mut command, cpu);
        }
        let mut server = ServerProcess {
            child: command.spawn().context("spawning the server")?,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ours: peer_port.is_none(),
            counters: counters_file,
        };
        // On failure, dropping `server` kills the child.
        server.addr = match peer_port {
            None => read_listening_line(&mut server.child)?,
            Some(port) => wait_for_peer(&mut server.child, port)?,
        };
        Ok(server)
    }
}

/// Reads the `listening on HOST:PORT` line our servers print first.
fn read_listening_line(child: &mut Child) -> anyhow::Result<SocketAddr> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so that the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(SERVER_PATIENCE) {
        Ok(Some(Ok(line))) => line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected first line {line:?}")),
        Ok(None | Some(Err(_))) => bail!("the server exited before it listened"),
        Err(_) => bail!("no `listening on` line within {SERVER_PATIENCE:?}"),
    }
}

/// Finds a free port by binding port 0 and letting go of it.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until a peer server accepts connections on the port we gave it.
fn wait_for_peer(child: &mut Child, port: u16) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + SERVER_PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} before listening");
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not listening on {addr} within {SERVER_PATIENCE:?}")
}

impl ServerProcess {
    /// SIGTERM, then wait; a server that does not exit cleanly in time is
    /// killed and reported.
    pub(super) fn stop(&mut self) -> anyhow::Result<()> {
        let leader = self.child.id();
        // It may have exited already: the status below says how.
        let _ = sys::signal_group(leader, libc::SIGTERM);
        let deadline = Instant::now() + SERVER_PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let died_of_it = !self.ours && status.signal() == Some(libc::SIGTERM);
                return if status.success() || died_of_it {
                    Ok(())
                } else {
                    bail!("exited with {status} after SIGTERM")
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = sys::signal_group(leader, libc::SIGKILL);
        let _ = self.child.wait();
        bail!("still running {SERVER_PATIENCE:?} after SIGTERM; killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = sys::signal_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
