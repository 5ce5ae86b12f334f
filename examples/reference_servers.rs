//! Two reference echo servers for `scripts/bench.sh`, written as plainly as
//! possible so that they set the bar our models are measured against:
//!
//! - `raw-epoll PORT`: one thread, raw `epoll` through libc, level-triggered,
//!   a read and a write per message and nothing else: the hand-tuned loop.
//! - `blocking PORT`: a thread per connection, blocking `read`/`write`.
//!
//! Dev-only: not part of echo-lab, and deliberately minimal (no shutdown
//! summary, no limits, no partial-write queue beyond a blocking retry).

#![cfg_attr(not(target_os = "linux"), allow(unused))]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(Ok(port))) = (args.get(1), args.get(2).map(|p| p.parse::<u16>())) else {
        eprintln!("usage: reference_servers raw-epoll|blocking PORT");
        std::process::exit(2);
    };
    let listener = listen(port)?;
    println!("listening on {}", listener.local_addr()?);
    match kind.as_str() {
        #[cfg(target_os = "linux")]
        "raw-epoll" => raw_epoll(listener),
        "blocking" => {
            for stream in listener.incoming() {
                let stream = stream?;
                std::thread::spawn(move || blocking(stream));
            }
            Ok(())
        }
        _ => {
            eprintln!("unknown kind {kind}");
            std::process::exit(2);
        }
    }
}

fn blocking(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = [0; 16 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        if stream.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

fn check(result: i32) -> std::io::Result<i32> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A listener on 127.0.0.1:`port` with the backlog echo-lab's own servers
/// use (`serve --backlog`'s default, 4096): std's `bind` asks for 128, and
/// a burst of connects (`bench --idle 5000`) overflowed it.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(target_os = "linux")]
fn raw_epoll(listener: TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    // SAFETY: plain epoll system calls on descriptors this function owns;
    // every client is removed from the epoll set before it is closed.
    unsafe {
        let epoll = check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
        let listen_fd = listener.as_raw_fd();
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: listen_fd as u64,
        };
        check(libc::epoll_ctl(
            epoll,
            libc::EPOLL_CTL_ADD,
            listen_fd,
            &mut event,
        ))?;
        let mut clients: Vec<Option<TcpStream>> = Vec::new();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1);
            if n < 0 {
                continue; // EINTR
            }
            for event in &events[..n as usize] {
                let fd = event.u64 as RawFd;
                if fd == listen_fd {
                    while let Ok((stream, _)) = listener.accept() {
                        stream.set_nonblocking(true)?;
                        stream.set_nodelay(true)?;
                        let fd = stream.as_raw_fd();
                        let mut event = libc::epoll_event {
                            events: libc::EPOLLIN as u32,
                            u64: fd as u64,
                        };
                        check(libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event))?;
                        if clients.len() <= fd as usize {
                            clients.resize_with(fd as usize + 1, || None);
                        }
                        clients[fd as usize] = Some(stream);
                    }
                    continue;
                }
                let Some(stream) = clients[fd as usize].as_mut() else {
                    continue;
                };
                let done = match stream.read(&mut buffer) {
                    Ok(0) => true,
                    Ok(n) => {
                        let (sent, failed) = match stream.write(&buffer[..n]) {
                            Ok(sent) => (sent, false),
                            Err(e) => (0, e.kind() != std::io::ErrorKind::WouldBlock),
                        };
                        if failed || sent == n {
                            failed
                        } else {
                            // Rare with small messages; minimal on purpose:
                            // a full socket blocks the loop until it drains.
                            stream.set_nonblocking(false)?;
                            let failed = stream.write_all(&buffer[sent..n]).is_err();
                            stream.set_nonblocking(true)?;
                            failed
                        }
                    }
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                if done {
                    libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
                    clients[fd as usize] = None;
                }
            }
        }
    }
}
