//! `echo-lab client`: what you type goes to the server, what comes back is
//! printed. In a pipe, it sends all of stdin, half-closes, and exits once
//! every echoed byte is back.
//!
//! It never waits forever: while bytes it sent are still owed, or once its
//! input has ended, a server that stays silent for `--timeout` is an error.
//! A person thinking between two lines owes nothing and waits as long as
//! they like.
//!
//! With the chat (`--protocol chat`) nothing is owed: what comes back is
//! other people's lines, whenever they send them, printed as they arrive
//! while you type. Only the end keeps its limit: after your input ends the
//! server must close within `--timeout`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;

use crate::net::{connect_patiently, interrupted};
use crate::parse::HostPort;

/// How long to wait for the server to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sending thread tells the receiving one.
#[derive(Default)]
struct Sent {
    /// Bytes sent so far.
    bytes: AtomicU64,
    /// Stdin has ended and the write side is shut down.
    finished: AtomicBool,
}

/// What the server speaks, as the client sees it.
#[derive(Clone, Debug)]
pub enum Speaks {
    /// Every byte sent is owed back.
    Echo,
    /// The chat: nothing is owed; register under `name` first if given.
    Chat {
        /// Sent as `register,<name>` before the input.
        name: Option<String>,
    },
}

/// Copies stdin to the server and the server's answer to stdout; fails if
/// the server is silent for `timeout` while it owes bytes.
///
/// # Errors
/// The connection fails, stdin or the socket fail mid-way, or the server
/// stays silent past `timeout`.
pub fn run(addr: &HostPort, timeout: Duration, speaks: Speaks) -> anyhow::Result<()> {
    let stream = connect_patiently(addr, CONNECT_TIMEOUT)?;
    stream.set_write_timeout(Some(timeout))?;
    let echo = matches!(speaks, Speaks::Echo);
    if let Speaks::Chat { name: Some(name) } = &speaks {
        (&stream)
            .write_all(format!("register,{name}\n").as_bytes())
            .context("registering")?;
    }
    let mut to_server = stream.try_clone()?;
    let sent = Arc::new(Sent::default());
    let sending = {
        let sent = sent.clone();
        std::thread::spawn(move || -> io::Result<()> {
            let mut stdin = io::stdin().lock();
            let mut buffer = [0; 16 * 1024];
            loop {
                let n = match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(e),
                };
                to_server
                    .write_all(&buffer[..n])
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::other(
                            format!("the server took no bytes for {timeout:?}: it is not reading"),
                        ),
                        _ => e,
                    })?;
                sent.bytes.fetch_add(n as u64, Relaxed);
            }
            // No more input: tell the server, which then echoes the rest
            // and closes, which ends the copy below.
            to_server.shutdown(Shutdown::Write)?;
            sent.finished.store(true, Relaxed);
            Ok(())
        })
    };
    let received =
        copy_to_stdout(&stream, &sent, timeout, echo).context("reading from the server")?;
    match sending.join() {
        Ok(Ok(())) => {
            let sent = sent.bytes.load(Relaxed);
            if echo && sent != received {
                anyhow::bail!("sent {sent} bytes but {received} came back");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e).context("sending stdin"),
        Err(_) => anyhow::bail!("the sending thread panicked"),
    }
}

/// Copies the socket to stdout, flushing after each read so that an
/// interactive user sees each echo at once. A closed stdout ends quietly.
fn copy_to_stdout(
    mut stream: &TcpStream,
    sent: &Sent,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<u64> {
    // Wake up at least this often to see whether an echo is owed.
    stream.set_read_timeout(Some(timeout))?;
    let mut stdout = io::stdout().lock();
    let mut buffer = [0; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if interrupted(&e) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let owed = sent.bytes.load(Relaxed).saturating_sub(total);
                if echo && owed > 0 {
                    anyhow::bail!(
                        "no echo for {timeout:?} with {owed} bytes owed: the server accepted the connection but does not answer (--timeout to wait longer)"
                    );
                }
                if sent.finished.load(Relaxed) {
                    anyhow::bail!(
                        "the server did not close the connection within {timeout:?} of the input's end (--timeout to wait longer)"
                    );
                }
                continue; // Nothing owed: the user is thinking.
            }
            Err(e) => return Err(e.into()),
        };
        match stdout.write_all(&buffer[..n]).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            result => result?,
        }
        total += n as u64;
    }
}
