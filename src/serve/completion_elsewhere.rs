//! The completion model where there is no io_uring: not Linux. The same
//! names as on Linux, so that the command line and the tests build
//! everywhere; the server says why it cannot run and where to go.

use std::io;
use std::net::TcpListener;

use super::Context;

/// As on Linux: makes io_uring unavailable on purpose.
pub const DISABLE_VAR: &str = "ECHO_LAB_NO_IO_URING";

/// Never: io_uring is Linux's.
///
/// # Errors
/// Always, saying so.
pub fn available() -> Result<(), String> {
    Err("it is Linux's, and this is not Linux".to_owned())
}

/// The one-line error for a machine without io_uring.
pub fn unavailable(why: &str) -> io::Error {
    io::Error::other(format!(
        "io_uring is not available here: {why}; --mode async serves the same clients with readiness"
    ))
}

/// Refuses to serve.
///
/// # Errors
/// Always.
pub fn run(_listener: TcpListener, _ctx: &Context) -> io::Result<()> {
    Err(unavailable(&available().unwrap_err()))
}
