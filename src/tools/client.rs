//! `echo-lab client`: what you type goes to the server, what comes back is
//! printed. In a pipe, it sends all of stdin, half-closes, and exits once
//! every echoed byte is back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use anyhow::Context as _;

use crate::net::connect;
use crate::parse::HostPort;

/// How long to wait for the server to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies stdin to the server and the server's answer to stdout.
///
/// # Errors
/// The connection fails, or stdin or the socket fail mid-way.
pub fn run(addr: &HostPort) -> anyhow::Result<()> {
    let stream = connect(addr, CONNECT_TIMEOUT)?;
    let mut to_server = stream.try_clone()?;
    let sending = std::thread::spawn(move || -> io::Result<u64> {
        let copied = io::copy(&mut io::stdin().lock(), &mut to_server)?;
        // No more input: tell the server, which then echoes the rest and
        // closes, which ends the copy below.
        to_server.shutdown(Shutdown::Write)?;
        Ok(copied)
    });
    let received = copy_to_stdout(&stream).context("reading the echo")?;
    match sending.join() {
        Ok(Ok(sent)) if sent != received => {
            anyhow::bail!("sent {sent} bytes but {received} came back")
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e).context("sending stdin"),
        Err(_) => anyhow::bail!("the sending thread panicked"),
    }
}

/// Copies the socket to stdout, flushing after each read so that an
/// interactive user sees each echo at once. A closed stdout ends quietly.
fn copy_to_stdout(mut stream: &TcpStream) -> io::Result<u64> {
    let mut stdout = io::stdout().lock();
    let mut buffer = [0; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match stdout.write_all(&buffer[..n]).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            result => result?,
        }
        total += n as u64;
    }
}
