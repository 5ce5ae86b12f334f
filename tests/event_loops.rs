//! What the one-thread readiness-loop models promise beyond the echo
//! contract: thousands of clients on one thread, bounded memory under a
//! client that never reads, and no busy loops.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use echo_lab::serve::Mode;

/// 1,000 clients connected at once, each echoed while all are connected,
/// by a server on one thread.
fn one_thread_serves_1000_simultaneous_clients(mode: Mode) {
    let server = start(mode);
    let mut clients: Vec<_> = (0..1000).map(|_| connect(server.addr())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("client {i:04}\n").as_bytes())
            .unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            read_exact(client, 12),
            format!("client {i:04}\n").as_bytes(),
            "{mode}"
        );
    }
    wait_until("all 1000 are connected", || server.stats().active() == 1000);
    assert_eq!(server.stats().peak(), 1000, "{mode}");
}

/// A client that writes up to 256 MiB and never reads: the server stops
/// reading it once its unsent bytes reach the cap, so its memory stays
/// under 64 MiB and its CPU near zero, and another client keeps getting
/// each echo within a second meanwhile.
fn a_client_that_never_reads_costs_bounded_memory(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let pid = server.child.id();
    let hog = connect(server.addr);
    hog.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut hog_writer = hog.try_clone().unwrap();
    let writing = thread::spawn(move || {
        let chunk = vec![0x5a; 1 << 20];
        let mut sent = 0u64;
        // Stops when a write stalls for 1 s: the server pushed back.
        while sent < 256 << 20 {
            match hog_writer.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    });
    let mut neighbour = connect(server.addr);
    let started = Instant::now();
    let mut peak = 0;
    let mut cpu_before = None;
    while started.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        assert_echo(&mut neighbour, b"still answered?");
        let waited = asked.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "{mode}: an echo took {waited:?}"
        );
        peak = peak.max(resident_memory(pid));
        if cpu_before.is_none() && started.elapsed() > Duration::from_secs(1) {
            cpu_before = Some((server.cpu_time(), Instant::now()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (cpu_then, then) = cpu_before.unwrap();
    let cpu = server.cpu_time() - cpu_then;
    let window = then.elapsed();
    let sent = writing.join().unwrap();
    assert!(
        sent < 256 << 20,
        "{mode}: the server read all 256 MiB without the client reading"
    );
    assert!(
        peak < 64 << 20,
        "{mode}: resident memory reached {peak} bytes"
    );
    // Mostly the neighbour's echoes; a spinning loop would burn ~3 s.
    assert!(
        cpu < window / 3,
        "{mode}: burned {cpu:?} in {window:?} while stalled"
    );
    eprintln!(
        "{mode}: stalled after {} MiB, peak RSS {} KiB, {cpu:?} CPU in {window:?}",
        sent >> 20,
        peak >> 10
    );
    drop(hog);
}

/// A client between messages holds no read buffer: 1,000 clients, each
/// echoed once and then silent, grow the server's resident memory by far
/// less than the 4 MiB that a 4 KiB buffer per client would take.
fn clients_between_messages_hold_no_read_buffer(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let pid = server.child.id();
    // The first echo makes what every later client shares: the loop's
    // buffers, the allocator's arena.
    assert_echo(&mut connect(server.addr), &[7; 512]);
    let before = resident_memory(pid);
    let mut clients: Vec<_> = (0..1000).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        assert_echo(client, &[7; 512]);
    }
    let grown = resident_memory(pid).saturating_sub(before);
    // The completion loop lends the kernel a fixed pool of buffers, which
    // it takes in ring order: a thousand clients touch all of it once.
    // Its read memory is that pool, whatever the number of clients.
    let pool = match mode {
        Mode::Completion => 4 << 20,
        _ => 0,
    };
    assert!(
        grown < (2 << 20) + pool,
        "{mode}: 1,000 silent clients grew resident memory by {} KiB",
        grown >> 10
    );
    eprintln!("{mode}: 1,000 silent clients, +{} KiB", grown >> 10);
}

/// An idle server sleeps in the kernel: next to no CPU.
fn an_idle_server_uses_no_cpu(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"wake up, then idle");
    let burned = server.cpu_burned_during(Duration::from_secs(1));
    assert!(
        burned < Duration::from_millis(200),
        "{mode}: idle server burned {burned:?} in 1 s"
    );
}

/// One loop is one thread, as tokio's current-thread runtime is: no thread
/// waits for signals, the loop hears them through the shutdown's bell. (A
/// second thread would make the kernel count references on every socket
/// call.) SIGINT still stops it, with the summary.
fn one_loop_is_one_thread(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"one thread");
    let threads = server.threads();
    assert_eq!(threads, 1, "{mode}");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGINT, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{mode}: {stderr}");
    assert!(stderr.contains("served 1 connection,"), "{mode}: {stderr}");
}

/// `--threads 2`: two loops share the port (SO_REUSEPORT); every client is
/// echoed whichever loop the kernel gives it to, and SIGTERM stops both.
fn several_loops_share_one_port(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet", "--threads", "2"]);
    let mut clients: Vec<_> = (0..50).map(|_| connect(server.addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_echo(client, format!("client {i:02}").as_bytes());
    }
    let threads = server.threads();
    assert!(
        threads >= 3,
        "{mode}: main and 2 loops expected, found {threads} threads"
    );
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{mode}: {stderr}");
    assert!(stderr.contains("served 50 connections"), "{mode}: {stderr}");
}

every_model!(loops, backends: one_thread_serves_1000_simultaneous_clients, clients_between_messages_hold_no_read_buffer, an_idle_server_uses_no_cpu, one_loop_is_one_thread, several_loops_share_one_port);

every_model!(concurrent, backends: a_client_that_never_reads_costs_bounded_memory);
