//! The echo contract (RFC 862 over TCP) that every model keeps, run against
//! every model: each test body below runs once per mode, through
//! `every_model!` at the bottom.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use echo_lab::serve::{Config, Mode};
use socket2::SockRef;

/// A short text message comes back unchanged.
fn echoes_a_short_message(mode: Mode) {
    let server = start(mode);
    let mut client = connect(server.addr());
    assert_echo(&mut client, b"hello, echo\n");
    assert_echo(&mut client, b"and again\n");
}

/// Every byte value, 0 to 255, survives the trip: the server does not treat
/// the stream as text.
fn echoes_every_byte_value(mode: Mode) {
    let server = start(mode);
    let mut client = connect(server.addr());
    let all: Vec<u8> = (0..=255).cycle().take(256 * 64).collect();
    assert_echo(&mut client, &all);
}

/// 16 MiB written by one thread while another reads: the server must keep
/// both directions moving and handle partial writes, or the two sides
/// deadlock with full socket buffers.
fn echoes_16_mib_full_duplex(mode: Mode) {
    const LEN: usize = 16 << 20;
    let server = start(mode);
    let client = connect(server.addr());
    let data = payload(LEN, 16);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let writing = thread::spawn(move || {
        for chunk in sent.chunks(100_003) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::with_capacity(LEN);
    (&client)
        .read_to_end(&mut echoed)
        .expect("read the whole echo");
    writing.join().unwrap();
    assert_eq!(echoed.len(), LEN);
    assert!(echoed == data, "16 MiB echo differs from what was sent");
}

/// One byte per write, each echoed before the next: nothing is buffered
/// waiting for "enough" data.
fn echoes_byte_at_a_time(mode: Mode) {
    let server = start(mode);
    let mut client = connect(server.addr());
    for &byte in b"one byte at a time, 0123456789" {
        assert_echo(&mut client, &[byte]);
    }
}

/// After the client shuts down its write side, the server echoes what it
/// still holds and then closes the connection.
fn half_close_gets_the_rest_then_eof(mode: Mode) {
    let server = start(mode);
    let mut client = connect(server.addr());
    let data = payload(300_000, 3);
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client
        .read_to_end(&mut echoed)
        .expect("echo, then end of stream");
    assert!(echoed == data, "half-closed echo differs");
}

/// Clients that reset (RST) — idle, mid-echo, or mid-write of a large
/// payload — are dropped without harm: the server serves the next client and
/// holds no connection afterwards.
fn resets_cost_nothing(mode: Mode) {
    let server = start(mode);
    for size in [0, 10, 1 << 20] {
        let mut client = connect(server.addr());
        if size > 0 {
            client.write_all(&payload(size, 7)).unwrap();
        }
        // Linger 0: close() sends RST instead of FIN.
        SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
    }
    let mut client = connect(server.addr());
    assert_echo(&mut client, b"still serving");
    drop(client);
    wait_until("every connection is gone", || server.stats().active() == 0);
    assert_eq!(server.stats().served(), 4);
}

/// 500 connect/close cycles in a row leak nothing and leave the server
/// serving.
fn survives_500_quick_connections(mode: Mode) {
    let server = start(mode);
    for _ in 0..500 {
        drop(connect(server.addr()));
    }
    let mut client = connect(server.addr());
    assert_echo(&mut client, b"after the churn");
    drop(client);
    wait_until("all 501 connections are served and gone", || {
        server.stats().served() == 501 && server.stats().active() == 0
    });
}

/// With `--idle-timeout`, a client that sends nothing is disconnected, while
/// a client that keeps talking is not.
fn idle_timeout_disconnects_silent_clients(mode: Mode) {
    let server = start_with(
        mode,
        Config {
            idle_timeout: Some(Duration::from_millis(300)),
            ..quiet()
        },
    );
    let mut silent = connect(server.addr());
    assert_echo(&mut silent, b"then nothing");
    let started = Instant::now();
    assert_closed_by_server(&mut silent);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut talker = connect(server.addr());
    for _ in 0..5 {
        assert_echo(&mut talker, b"still here");
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM with clients connected (one of them in the middle of an echo,
/// one silent) stops the real binary within 2 seconds, with exit code 0 and
/// the summary on stderr.
fn sigterm_with_clients_exits_cleanly(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name()]);
    let mut talking = connect(server.addr);
    assert_echo(&mut talking, b"before the signal");
    talking.write_all(&payload(1 << 20, 1)).unwrap();
    let _silent = connect(server.addr);
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("shutting down after"), "stderr: {stderr}");
    assert!(stderr.contains("peak"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// A SIGTERM at any moment of a server's start, from its `exec` to just
/// after `listening on`, stops it cleanly: exit 0 and the summary, never
/// the default action's death (status 143) nor a signal heard and then
/// forgotten (a server that runs on). The moments are spread over the
/// start-up as this machine times it, by a fixed pseudo-random sequence.
///
/// Before `main`, while the kernel and the loader start the process, no
/// program can catch a signal. So the child is started as `main` would
/// leave it from its first line, holding SIGINT and SIGTERM back (a mask
/// survives `exec`): a signal in that first half-millisecond waits, and
/// the server must take it up once its handlers are in place.
fn sigterm_during_start_up_is_never_lost(mode: Mode) {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    // How long a start takes here, to spread the signals over it.
    let started = Instant::now();
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let start_up = started.elapsed();
    drop(server);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for attempt in 0..TRIES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // From 0 to 1.5 start-ups: the last third lands after `listening`.
        let delay = start_up.mul_f64((seed % 1000) as f64 / 1000.0 * 1.5);
        let mut command = Command::new(crate::common::binary());
        command
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--quiet",
                "--mode",
                mode.name(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: pthread_sigmask is one, and
        // the closure allocates nothing.
        unsafe { command.pre_exec(echo_lab::sys::hold_stop_signals) };
        let child = command.spawn().unwrap();
        std::thread::sleep(delay);
        echo_lab::sys::signal(child.id(), libc::SIGTERM).unwrap();
        let signalled = Instant::now();
        let output = crate::common::wait_with_patience(child);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "attempt {attempt}, SIGTERM {delay:?} into the start: {}; stderr: {stderr}",
            output.status
        );
        assert!(
            stderr.contains("shutting down after"),
            "attempt {attempt}, {delay:?}: no summary; stderr: {stderr}"
        );
        // README promises 2 s; a loaded test machine gets more room.
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "attempt {attempt}"
        );
    }
}

/// Signals per model in [`sigterm_during_start_up_is_never_lost`].
const TRIES: usize = 60;

/// SIGINT (Ctrl-C) does the same as SIGTERM.
fn sigint_exits_cleanly(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let _client = connect(server.addr);
    let (status, _, stderr) = server.signal_and_wait(libc::SIGINT, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("shutting down after"), "stderr: {stderr}");
}

/// A second signal ends the process at once, without the orderly shutdown
/// the first one began. Both arrive while the server is stopped, so the
/// second lands before any code of ours has run since the first.
fn a_second_signal_exits_at_once(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--quiet"]);
    let pid = server.child.id();
    echo_lab::sys::signal(pid, libc::SIGSTOP).unwrap();
    // SIGSTOP takes effect asynchronously, thread by thread: until every
    // thread is stopped, one of them could run the first handler and shut
    // down cleanly before the second signal is even sent.
    wait_until("every thread of the server is stopped", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                stat.rfind(')')
                    .is_some_and(|end| &stat[end + 2..end + 3] == "T")
            })
    });
    for signal in [libc::SIGTERM, libc::SIGINT] {
        echo_lab::sys::signal(pid, signal).unwrap();
    }
    let (status, _, stderr) = server.signal_and_wait(libc::SIGCONT, Duration::from_secs(2));
    // 128 + the signal number, whichever of the two the kernel delivered
    // second.
    assert!(
        [Some(128 + libc::SIGTERM), Some(128 + libc::SIGINT)].contains(&status.code()),
        "{status:?}, stderr: {stderr}"
    );
    assert!(!stderr.contains("shutting down after"), "stderr: {stderr}");
}

/// Under a limit of 48 descriptors with 150 clients knocking, accept fails
/// with EMFILE: the server must neither crash nor spin, must say so once per
/// burst, and must serve again once the clients leave. (The sequential model
/// holds one client at a time and never runs out; it must not spin either.)
fn out_of_descriptors_backs_off_and_recovers(mode: Mode) {
    // A deep queue makes the thread pool accept past its 20 workers.
    let mut args = vec!["--mode", mode.name(), "--quiet"];
    if mode == Mode::Threadpool {
        args.extend(["--queue", "200"]);
    }
    let server = BinaryServer::start_with_fd_limit(&args, Some(48));
    let mut crowd: Vec<_> = (0..150)
        .map(|_| {
            let mut client = connect(server.addr);
            client.write_all(b"knock").unwrap();
            client
        })
        .collect();
    let burned = server.cpu_burned_during(Duration::from_secs(2));
    // A spinning accept loop burns the full 2 s; backing off costs ~nothing.
    // The bound is loose so that a noisy machine cannot fail it.
    assert!(
        burned < Duration::from_millis(700),
        "burned {burned:?} of CPU in 2 s"
    );
    crowd.truncate(0);
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"served again");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{status:?}, stderr: {stderr}");
    if mode != Mode::Sequential {
        assert!(stderr.contains("Too many open files"), "stderr: {stderr}");
        assert!(stderr.contains("accepting again after"), "stderr: {stderr}");
    }
}

/// A listener that breaks under a running server (here: shut down behind
/// its back, so `accept()` fails with EINVAL) stops the server with an
/// error, in every model, so that `serve` exits non-zero instead of
/// pretending it shut down cleanly; the clients it held are let go.
fn a_broken_listener_stops_the_server_with_an_error(mode: Mode) {
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = echo_lab::serve::bind(mode, &addr.into(), &quiet()).unwrap();
    let listener = listeners.sockets()[0].try_clone().unwrap();
    let server = echo_lab::serve::Server::start_on(mode, listeners, quiet()).unwrap();
    let mut client = connect(server.addr());
    assert_echo(&mut client, b"before");
    if mode == Mode::Sequential {
        // It is not accepting while it serves: the client leaves first.
        drop(client);
    }
    SockRef::from(&listener).shutdown(Shutdown::Read).unwrap();
    wait_until("the server stops by itself", || server.is_finished());
    let ended = server.stop();
    assert!(ended.is_err(), "{mode} ended with {ended:?}");
}

every_model!(
    backends: echoes_a_short_message,
    echoes_every_byte_value,
    echoes_16_mib_full_duplex,
    echoes_byte_at_a_time,
    half_close_gets_the_rest_then_eof,
    resets_cost_nothing,
    survives_500_quick_connections,
    idle_timeout_disconnects_silent_clients,
    sigterm_with_clients_exits_cleanly,
    sigint_exits_cleanly,
    a_second_signal_exits_at_once,
    out_of_descriptors_backs_off_and_recovers,
    a_broken_listener_stops_the_server_with_an_error,
);

every_model!(sigterm_during_start_up_is_never_lost);
