//! The one socket setup every model shares, and the names of the kernel's
//! answers that every model must handle.
//!
//! [`bind_listener`] builds every listening socket; [`accept`] and
//! [`prepare_stream`] make and prepare every accepted connection. The models receive what these return
//! and never parse an address themselves.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::parse::HostPort;

/// The kernel's default `listen()` backlog on Linux (`net.core.somaxconn`):
/// how many finished handshakes may wait for `accept()`. The kernel caps a
/// larger value at `somaxconn`.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// How long a model stops accepting after the process ran out of file
/// descriptors (EMFILE/ENFILE). The waiting clients stay in the kernel's
/// backlog meanwhile; 100 ms keeps the retry cost negligible and the recovery
/// prompt once descriptors are freed.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How a listener should behave when nothing is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// `accept()` waits: the sequential and thread-pool models.
    Yes,
    /// `accept()` returns `WouldBlock`: the readiness-loop models.
    No,
}

/// Binds a TCP listener on the first address of `addr` that accepts it.
///
/// SO_REUSEADDR lets a restarted server bind while old connections of a
/// previous run linger in TIME_WAIT; it does not let two servers share a
/// port. `reuse_port` (SO_REUSEPORT) does: several listeners bind the same
/// port and the kernel spreads new connections over them, which is how
/// `--threads` gives each event loop its own listener. Any socket of the
/// same user that sets it may join such a group, so a group is only ours
/// if its port was [claimed](claim_port) first.
///
/// # Errors
/// One line naming the address: already in use, permission denied, or not
/// available on this machine.
pub fn bind_listener(
    addr: &HostPort,
    backlog: u32,
    blocking: Blocking,
    reuse_port: bool,
) -> anyhow::Result<TcpListener> {
    first_that_binds(addr, |candidate| {
        let socket = new_socket(candidate)?;
        socket.set_reuse_port(reuse_port)?;
        socket.set_nonblocking(blocking == Blocking::No)?;
        socket.bind(&candidate.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    })
}

/// Checks that nothing holds the port of `addr`, and resolves port 0 to a
/// free one: binds a socket *without* SO_REUSEPORT, which the kernel
/// refuses if any socket holds the port, shared or not, and lets it go.
/// A group of SO_REUSEPORT listeners bound right after it is ours alone:
/// another server started later claims first too, and fails.
///
/// # Errors
/// As [`bind_listener`]: already in use, permission denied, unavailable.
pub fn claim_port(addr: &HostPort) -> anyhow::Result<SocketAddr> {
    first_that_binds(addr, |candidate| {
        let socket = new_socket(candidate)?;
        socket.bind(&candidate.into())?;
        socket
            .local_addr()?
            .as_socket()
            .ok_or(io::ErrorKind::Unsupported.into())
    })
}

/// A TCP socket for `addr` with SO_REUSEADDR, IPv6-only for an IPv6
/// address (`[::]:7000` means IPv6 only, as the user wrote it).
fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Tries `bind` on each address of `addr` in turn; the first success wins,
/// and the last failure is reported in one line.
fn first_that_binds<T>(
    addr: &HostPort,
    mut bind: impl FnMut(SocketAddr) -> io::Result<T>,
) -> anyhow::Result<T> {
    let mut last_error = None;
    for &candidate in &addr.addrs {
        match bind(candidate) {
            Ok(bound) => return Ok(bound),
            Err(e) => last_error = Some((candidate, e)),
        }
    }
    match last_error {
        Some((candidate, e)) if e.kind() == io::ErrorKind::AddrInUse => {
            // The hint keeps the user's host: only the port must change.
            let host = match candidate {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            bail!(
                "cannot listen on {candidate}: address already in use (another server holds it: stop it, \
                 or pick another port with --addr {host}:PORT or ECHO_LAB_ADDR={host}:PORT; \
                 port 0 picks a free one)"
            )
        }
        Some((candidate, e)) => Err(e).with_context(|| format!("cannot listen on {candidate}")),
        None => bail!("'{addr}' resolved to no address"),
    }
}

/// Accepts one connection from `listener`, in the blocking mode the model
/// needs, whatever the listener's own. Linux does not pass a listener's
/// O_NONBLOCK on to the sockets `accept()` returns; there `accept4` makes
/// the socket blocking or not as it is made, one system call where
/// `accept` then `fcntl` would be two (as tokio's mio does). Elsewhere
/// (the BSDs and macOS pass the flag on) the two.
///
/// # Errors
/// As `accept(2)`: `WouldBlock` when the backlog is empty (and the
/// listener is non-blocking), and the failures [`AcceptFailure`] sorts.
pub fn accept(listener: &TcpListener, blocking: Blocking) -> io::Result<(TcpStream, SocketAddr)> {
    #[cfg(target_os = "linux")]
    {
        let mut flags = libc::SOCK_CLOEXEC;
        if blocking == Blocking::No {
            flags |= libc::SOCK_NONBLOCK;
        }
        let (socket, peer) = socket2::SockRef::from(listener).accept4(flags)?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
        Ok((socket.into(), peer))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (stream, peer) = listener.accept()?;
        stream.set_nonblocking(blocking == Blocking::No)?;
        Ok((stream, peer))
    }
}

/// Prepares an accepted connection: TCP_NODELAY, because an echo server
/// answers small writes and Nagle's algorithm would hold them back waiting
/// for an ACK.
///
/// # Errors
/// Only if the kernel refuses the option, e.g. the peer already reset.
pub fn prepare_stream(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// `WouldBlock` is the kernel saying the socket is not ready after all: no
/// data to read, no room to write, no connection to accept. Not an error:
/// wait for readiness and try again.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// One `write()`: returns how many bytes the socket took, 0 if it would
/// block. A partial write is normal for a non-blocking socket.
pub fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if would_block(&e) => return Ok(0),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `EINTR`: a signal arrived while the call waited. Nothing happened; retry.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// What an accept loop should do after `accept()` failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The failure belonged to one connection that is already gone
    /// (ECONNABORTED: the client reset before we accepted; EPROTO and the
    /// network errors Linux passes on from the new socket). Accept the next.
    Transient,
    /// The process or the system is out of descriptors or memory (EMFILE,
    /// ENFILE, ENOBUFS, ENOMEM). Retrying at once would fail again and spin:
    /// stop accepting for [`ACCEPT_BACKOFF`], then retry.
    Exhausted,
    /// Anything else means the listener itself is broken; stop serving.
    Fatal,
}

/// Linux's "machine is not on the network", which accept may pass on from
/// a new socket; other systems have no such error (and no code -1).
#[cfg(target_os = "linux")]
const ENONET: i32 = libc::ENONET;
#[cfg(not(target_os = "linux"))]
const ENONET: i32 = -1;

/// Sorts an `accept()` error into what to do next.
pub fn classify_accept_error(e: &io::Error) -> AcceptFailure {
    if interrupted(e) || would_block(e) {
        return AcceptFailure::Transient;
    }
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptFailure::Exhausted
        }
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT,
        ) => AcceptFailure::Transient,
        _ => AcceptFailure::Fatal,
    }
}

/// Connects to the first address of `addr` that answers, waiting at most
/// `timeout` for each.
///
/// # Errors
/// One line naming the address and why: refused, unreachable, timed out.
pub fn connect(addr: &HostPort, timeout: Duration) -> anyhow::Result<TcpStream> {
    connect_once(addr, timeout).map_err(|failure| failure.into_error(addr))
}

/// How long the tools keep retrying a refused connection. A server started
/// with `&` on the line before a client may not be listening yet; two
/// seconds covers its start with a wide margin, and a server that is not
/// there at all is reported soon enough.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(2);

/// As [`connect`], but a refused connection is retried for up to
/// [`STARTUP_PATIENCE`], saying so once on stderr: what `client`, `probe`
/// and `bench` do, so that `serve ... &` followed by a client always works.
///
/// # Errors
/// As [`connect`], once the patience is spent or for any other failure.
pub fn connect_patiently(addr: &HostPort, timeout: Duration) -> anyhow::Result<TcpStream> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let give_up = std::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        match connect_once(addr, timeout) {
            Err(failure)
                if failure.error.kind() == io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < give_up =>
            {
                SAID.call_once(|| {
                    eprintln!(
                        "echo-lab: {addr} refused the connection; retrying for up to {}s in case the server is still starting",
                        STARTUP_PATIENCE.as_secs()
                    );
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.map_err(|failure| failure.into_error(addr)),
        }
    }
}

/// Why the last address of a connect failed.
struct ConnectFailure {
    candidate: Option<SocketAddr>,
    error: io::Error,
}

impl ConnectFailure {
    fn into_error(self, addr: &HostPort) -> anyhow::Error {
        match self.candidate {
            Some(candidate) => {
                anyhow::Error::new(self.error).context(format!("cannot connect to {candidate}"))
            }
            None => anyhow::anyhow!("'{addr}' resolved to no address"),
        }
    }
}

fn connect_once(addr: &HostPort, timeout: Duration) -> Result<TcpStream, ConnectFailure> {
    let mut failure = ConnectFailure {
        candidate: None,
        error: io::ErrorKind::NotFound.into(),
    };
    for &candidate in &addr.addrs {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|error| ConnectFailure {
                    candidate: Some(candidate),
                    error,
                })?;
                return Ok(stream);
            }
            Err(error) => {
                failure = ConnectFailure {
                    candidate: Some(candidate),
                    error,
                }
            }
        }
    }
    Err(failure)
}
