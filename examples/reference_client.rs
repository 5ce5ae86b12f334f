//! A minimal hand-written epoll echo client, the bar `echo-lab bench` is
//! held to in `scripts/bench.sh`: C connections, one 512-byte message in
//! flight each, one thread, raw `epoll` through libc, no verification beyond
//! counting bytes. Prints the messages per second it measured.
//!
//! Usage: `reference_client HOST:PORT CONNECTIONS SECONDS`. Dev-only.

#![cfg_attr(not(target_os = "linux"), allow(unused))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SIZE: usize = 512;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("reference_client is built on epoll: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(Ok(connections)), Some(Ok(seconds))) = (
        args.get(1),
        args.get(2).map(|c| c.parse::<usize>()),
        args.get(3).map(|s| s.parse::<f64>()),
    ) else {
        eprintln!("usage: reference_client HOST:PORT CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let message = [0x61u8; SIZE];
    let mut buffer = [0u8; 64 * 1024];
    let mut streams = Vec::with_capacity(connections);
    let mut pending = vec![SIZE; connections];
    // SAFETY: plain epoll system calls on descriptors owned by `streams`,
    // which outlive the epoll instance's use.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    for i in 0..connections {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.write_all(&message)?;
        stream.set_nonblocking(true)?;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: epoll_ctl reads the event we pass; the stream is open.
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) };
        streams.push(stream);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let (warmup, end) = (
        Instant::now() + Duration::from_millis(500),
        Instant::now() + Duration::from_secs_f64(0.5 + seconds),
    );
    let mut counted = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // SAFETY: epoll_wait writes at most 1024 events into `events`,
        // which holds 1024.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 1024, 100) };
        for event in &events[..n.max(0) as usize] {
            let i = event.u64 as usize;
            let Ok(read) = streams[i].read(&mut buffer) else {
                continue;
            };
            pending[i] = pending[i].saturating_sub(read);
            if pending[i] == 0 {
                if now >= warmup {
                    counted += 1;
                }
                pending[i] = SIZE;
                streams[i].write_all(&message)?;
            }
        }
    }
    println!("{:.0} messages/s", counted as f64 / seconds);
    Ok(())
}
