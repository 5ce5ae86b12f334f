//! The chat's client handshake, which every tool that speaks the chat
//! starts with: send `register,NAME`, read `ok`. `bench --protocol chat`,
//! its chat hogs and `probe --flood` share it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Registers `name` on `stream` and waits up to `timeout` for its `ok`.
/// The stream is left with TCP_NODELAY (a chat line is small and should
/// not wait for an ACK) and a read timeout of `timeout`.
///
/// # Errors
/// The server did not answer in time, or answered something else (it is
/// not serving `--protocol chat`, or the name is taken).
pub fn register(stream: &TcpStream, name: &str, timeout: Duration) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    (&*stream).write_all(format!("register,{name}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(4096)
        .read_line(&mut reply)
        .with_context(|| format!("registering {name}"))?;
    if reply != "ok\n" {
        bail!(
            "registering {name}: the server answered {:?}, not ok (is it serving --protocol chat?)",
            reply.trim_end()
        );
    }
    Ok(())
}
