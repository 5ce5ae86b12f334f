//! Limits an operator expects, and a chaos test every model survives: a
//! crowd of misbehaving clients at once, after which every well-behaved
//! client got exactly its bytes, the server still serves, no descriptor
//! leaked and memory stayed bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use echo_lab::serve::{Config, Mode};
use socket2::SockRef;

/// Clients over `--max-connections` are accepted and closed at once, and
/// counted; once a client leaves, a new one is admitted.
fn clients_over_the_limit_are_closed_at_once(mode: Mode) {
    let server = start_with(
        mode,
        Config {
            max_connections: NonZeroUsize::new(2).unwrap(),
            ..quiet()
        },
    );
    let mut first = connect(server.addr());
    assert_echo(&mut first, b"one");
    let mut second = connect(server.addr());
    assert_echo(&mut second, b"two");
    let mut third = connect(server.addr());
    assert_closed_by_server(&mut third);
    assert_eq!(server.stats().rejected(), 1, "{mode}");
    drop(first);
    wait_until("the first client is gone", || server.stats().active() == 1);
    let mut fourth = connect(server.addr());
    assert_echo(&mut fourth, b"four");
    assert_echo(&mut second, b"two, still");
}

/// Clients that send small messages and never read hold only what their
/// model lets each client hold: another client is still served. (The
/// completion loop once kept a 4 KiB pool buffer for each unsent 64-byte
/// message, and two such clients held its whole pool when their messages
/// came one per receive. How many come per receive depends on the two
/// sides' speeds, so the test that pins it down reads the pool's count:
/// `live_stats::a_client_that_never_reads_holds_no_pool_buffer`.)
fn small_messages_never_read_starve_nobody(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let flooders: Vec<TcpStream> = (0..2).map(|_| connect(server.addr)).collect();
    for flooder in &flooders {
        flooder
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    // In turns, until the server stops reading each (a write times out,
    // once the echoes have filled both sides' socket buffers), or 64 MiB.
    let mut flooding = flooders.iter().collect::<Vec<_>>();
    for _ in 0..1 << 20 {
        flooding.retain(|&flooder| {
            let mut flooder: &TcpStream = flooder;
            flooder.write_all(&[b'x'; 64]).is_ok()
        });
        if flooding.is_empty() {
            break;
        }
    }
    let mut other = connect(server.addr);
    assert_echo(&mut other, b"still served");
    drop(flooders);
    assert_echo(&mut other, b"and after they left");
}

/// A small deterministic random source (xorshift), so that a failure can be
/// replayed from the seed printed with it.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The resident memory the chaos test allows a server: the crowd below
/// holds at most ~40 connections, each bounded by its model's buffers
/// (`serve --help`, Limits), plus the binary and thread stacks.
const CHAOS_MEMORY_BOUND: u64 = 64 << 20;

/// Sends random-sized bursts and checks each echo byte for byte.
fn bursts(addr: SocketAddr, seed: u64, verified: &AtomicU64) {
    let mut random = Random(seed);
    let mut client = connect(addr);
    for round in 0..20 {
        let data = payload(1 + random.below(64 << 10) as usize, seed * 100 + round);
        assert_echo(&mut client, &data);
        verified.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
}

/// Sends, half-closes mid-stream, and expects the rest and then the end.
fn half_closer(addr: SocketAddr, seed: u64, verified: &AtomicU64) {
    let mut client = connect(addr);
    let data = payload(100_000 + (seed as usize % 1000), seed);
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert!(echoed == data, "half-closed echo differs");
    verified.fetch_add(data.len() as u64, Ordering::Relaxed);
}

/// Trickles one byte at a time, slowly, checking each echo.
fn trickler(addr: SocketAddr, verified: &AtomicU64) {
    let mut client = connect(addr);
    for byte in 0..15u8 {
        assert_echo(&mut client, &[byte]);
        verified.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a megabyte without reading, then resets mid-write.
fn resetter(addr: SocketAddr) {
    let client = connect(addr);
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = payload(64 << 10, 5);
    for _ in 0..16 {
        if (&client).write_all(&chunk).is_err() {
            break;
        }
    }
    SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// Writes until the server pushes back, never reads, then leaves.
fn never_reader(addr: SocketAddr) {
    let client = connect(addr);
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = payload(256 << 10, 6);
    while (&client).write_all(&chunk).is_ok() {}
    thread::sleep(Duration::from_millis(500));
}

/// Connects and vanishes: some say nothing, some leave data unread.
fn vanisher(addr: SocketAddr, seed: u64) {
    let mut client = connect(addr);
    if seed % 2 == 0 {
        let _ = client.write_all(b"gone before the echo");
    }
}

/// Connection churn: connect and close a hundred times.
fn churn(addr: SocketAddr) {
    for _ in 0..100 {
        drop(connect(addr));
    }
}

/// A crowd of misbehaving clients (bursts, half-closers, tricklers,
/// resetters, never-readers, vanishers, churn) against one server: every
/// well-behaved byte comes back right, the server still serves afterwards,
/// no descriptor is left behind, memory stays bounded, and SIGTERM still
/// ends it cleanly.
fn chaos(mode: Mode) {
    let seed = 0x5eed_0000 + mode as u64;
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet", "--idle-timeout", "2s"]);
    let (addr, pid) = (server.addr, server.child.id());
    // The loop's own descriptors (epoll and friends) may be created after
    // the `listening on` line; once a client has been echoed they exist,
    // and that client holds exactly one more.
    let mut first = connect(addr);
    assert_echo(&mut first, b"is the loop running?");
    let idle_fds = open_descriptors(pid) - 1;
    drop(first);
    let verified = AtomicU64::new(0);
    let peak = AtomicU64::new(0);
    let running = AtomicBool::new(true);
    // One of each kind for the one-at-a-time model; a crowd for the others.
    let copies = if mode == Mode::Sequential { 1 } else { 4 };
    let started = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(resident_memory(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        let mut crowd = Vec::new();
        for i in 0..copies {
            let (verified, seed) = (&verified, seed + i);
            crowd.push(scope.spawn(move || bursts(addr, seed, verified)));
            crowd.push(scope.spawn(move || half_closer(addr, seed, verified)));
            crowd.push(scope.spawn(move || trickler(addr, verified)));
            crowd.push(scope.spawn(move || resetter(addr)));
            crowd.push(scope.spawn(move || never_reader(addr)));
            crowd.push(scope.spawn(move || vanisher(addr, seed)));
        }
        crowd.push(scope.spawn(move || churn(addr)));
        let clients = crowd.len();
        for client in crowd {
            client
                .join()
                .expect("a well-behaved client got wrong bytes or none");
        }
        running.store(false, Ordering::Relaxed);
        eprintln!(
            "chaos {mode}: {clients} client threads (+100 churned connections) in {:?}",
            started.elapsed()
        );
    });
    let mut client = connect(addr);
    assert_echo(&mut client, b"still serving after the chaos");
    drop(client);
    if !poll_until(PATIENCE, || open_descriptors(pid) == idle_fds) {
        let sockets = std::process::Command::new("ss")
            .args(["-tnpo"])
            .output()
            .unwrap();
        let lines = String::from_utf8_lossy(&sockets.stdout);
        let ours: Vec<&str> = lines
            .lines()
            .filter(|l| l.contains(&format!("pid={pid},")))
            .collect();
        panic!(
            "{mode}: {} descriptors, {idle_fds} when idle; its sockets:\n{}",
            open_descriptors(pid),
            ours.join("\n")
        );
    }
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak < CHAOS_MEMORY_BOUND,
        "{mode}: resident memory reached {peak} bytes"
    );
    eprintln!(
        "chaos {mode}: {} bytes verified, peak RSS {} KiB, descriptors {idle_fds} before and after",
        verified.load(Ordering::Relaxed),
        peak >> 10
    );
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

every_model!(backends: chaos);

every_model!(
    concurrent: clients_over_the_limit_are_closed_at_once,
    small_messages_never_read_starve_nobody,
);
