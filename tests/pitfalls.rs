//! The notes' pitfalls, made to happen on purpose and checked: the
//! blocking `sendall` inside a loop's handler (`--naive-send`), against the
//! selector that counts its short writes instead; busy polling
//! (`--poller spin`), a loop that never sleeps; a race in the chat's
//! registration (`--racy-register`), on threads and on one thread; a
//! deadlock between the thread chat's two kinds of lock
//! (`--lock-order-bug`), named; and a task's life told by `--trace`, up to
//! its end at an idle timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use echo_lab::tools::flood::flood;

/// Pours bytes into the server without reading, until the server stops
/// taking them (its buffers and ours are full): the client of chapter 3
/// that never reads.
fn never_reader(server: &BinaryServer) -> TcpStream {
    let stream = connect(server.addr);
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let block = [0u8; 64 << 10];
    // At most 256 MiB: far past any socket buffers.
    for _ in 0..4096 {
        if (&stream).write_all(&block).is_err() {
            return stream;
        }
    }
    panic!("the server took 256 MiB from a client that reads nothing");
}

/// `--naive-send`: once one client stops reading, the loop blocks inside
/// its write, and another client gets nothing; when that client goes, the
/// loop comes back, the other client gets its echo, and the stall warning
/// says how long everyone waited. The server said at its start that it is
/// wrong on purpose.
#[test]
fn a_blocking_send_in_the_loop_stops_every_client() {
    let server = BinaryServer::start(&["--mode", "selector", "--naive-send", "--quiet"]);
    let stuck = never_reader(&server);
    let mut other = connect(server.addr);
    other.write_all(b"anyone?").unwrap();
    assert!(
        stays_silent(&mut other, Duration::from_millis(500)),
        "the loop answered while blocked in a write"
    );
    drop(stuck);
    let mut echo = [0; 7];
    other.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"anyone?");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("wrong on purpose: --naive-send"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ran ") && stderr.contains("without waiting"),
        "{stderr}"
    );
    // The warning names the blocking send as the cause, not "no handler
    // blocked".
    assert!(stderr.contains("A handler blocked in its send"), "{stderr}");
    assert!(!stderr.contains("No handler blocked"), "{stderr}");
}

/// The selector itself meets the same client with short writes, keeps the
/// rest, and serves everyone else meanwhile; `--stats` counts them.
#[test]
fn the_selector_counts_its_short_writes_and_goes_on() {
    let (server, path) = start_counting_every("short", "100ms", &["--mode", "selector", "--quiet"]);
    let _stuck = never_reader(&server);
    let mut other = connect(server.addr);
    assert_echo(&mut other, b"still served");
    wait_until("a line counts a short write", || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .any(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|l| l["short_writes"].as_u64() > Some(0))
            })
    });
    let _ = std::fs::remove_file(&path);
}

/// `--poller spin`: with no client at all, the loop asks its sockets over
/// and over and never sleeps: its `--stats` lines say it is busy nearly all
/// the time, its CPU clock runs with the wall clock, and every turn's read
/// is a `would_block`. It still serves (slowly burning a core).
#[test]
fn busy_polling_burns_a_core_with_no_client() {
    let (server, path) = start_counting_every(
        "spin",
        "200ms",
        &["--mode", "selector", "--poller", "spin", "--quiet"],
    );
    let burned = server.cpu_burned_during(Duration::from_millis(600));
    assert!(
        burned >= Duration::from_millis(300),
        "{burned:?} of CPU in 600 ms idle"
    );
    let busiest = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| line["busy%"].as_f64())
        .fold(0.0, f64::max);
    assert!(busiest > 50.0, "idle yet busy {busiest}%");
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"served all the same");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("wrong on purpose: --poller spin"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&path);
}

/// How many of eight clients registering `alice` at once a chat server
/// started with `args` tells `ok`.
fn winners(args: &[&str]) -> usize {
    let mut full = vec!["--protocol", "chat", "--quiet"];
    full.extend_from_slice(args);
    let server = BinaryServer::start(&full);
    let report =
        echo_lab::tools::race::register_at_once(&server.addr.into(), "alice", 8, PATIENCE).unwrap();
    assert!(report.all_answered(), "{report:?}");
    report.winners()
}

/// The chat's registration is one step under the registry's lock (or
/// between two awaits): of eight clients asking for one name at once,
/// exactly one gets it. `--racy-register` splits the step, letting go in
/// between (the thread chat drops its lock, the async chat awaits a
/// timer), and all eight get it: a race with threads, and a race on one
/// thread with no lock in sight.
#[test]
fn a_registration_that_lets_go_between_check_and_take_races() {
    for mode in ["threads", "async"] {
        assert_eq!(winners(&["--mode", mode]), 1, "{mode}");
        let racy = winners(&["--mode", mode, "--racy-register", "300ms"]);
        assert_eq!(racy, 8, "{mode} with --racy-register");
    }
    // Where the registry cannot be let go of mid-step, the flag is refused.
    for args in [
        &["serve", "--racy-register", "1s"][..],
        &[
            "serve",
            "--protocol",
            "chat",
            "--mode",
            "selector",
            "--racy-register",
            "1s",
        ],
    ] {
        let (code, _, stderr) = run_binary(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(stderr.contains("--racy-register splits"), "{stderr}");
    }
}

/// A receiver that never reads, flooded by two senders (`probe --flood`):
/// a sound chat cuts it off and tells its senders so, on threads and on a
/// loop.
#[test]
fn a_flooded_receiver_is_cut_off_and_its_senders_go_on() {
    for mode in ["threads", "async"] {
        let server = BinaryServer::start(&["--mode", mode, "--protocol", "chat", "--quiet"]);
        let report = flood(&server.addr.into(), "bob", 2, PATIENCE).unwrap();
        assert!(report.cut_off(), "{mode}: {report:?}");
        assert_eq!(
            report.receiver_last.as_deref(),
            Some("error,too slow"),
            "{mode}"
        );
        let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
        assert_eq!(status.code(), Some(0), "{mode}: {stderr}");
    }
}

/// `--lock-order-bug`: the same flood deadlocks the thread chat (the
/// receiver's writer holds its outbox and waits for the registry, a
/// sender's reader holds the registry and waits for that outbox), and the
/// lock watch names both threads and both locks and ends the server with
/// status 3. The senders see the server go; the receiver is never cut off.
#[test]
fn a_lock_order_bug_deadlocks_the_thread_chat_and_is_named() {
    let server = BinaryServer::start(&[
        "--mode",
        "threads",
        "--protocol",
        "chat",
        "--lock-order-bug",
        "--quiet",
    ]);
    let report = flood(&server.addr.into(), "bob", 2, PATIENCE).unwrap();
    assert!(!report.cut_off(), "{report:?}");
    // Signal 0 sends nothing: this waits for the server to end by itself.
    let (status, _, stderr) = server.signal_and_wait(0, PATIENCE);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.starts_with("wrong on purpose: --lock-order-bug"),
        "{stderr}"
    );
    let named = stderr
        .lines()
        .find(|l| l.starts_with("deadlock: chat-"))
        .unwrap_or_else(|| panic!("no deadlock named\n{stderr}"));
    assert!(
        named.contains("waits for the registry, which chat-"),
        "{named}"
    );
    assert!(
        named.contains("waits for the outbox of 127.0.0.1:"),
        "{named}"
    );
    assert!(
        stderr.contains("deadlock: exiting with status 3"),
        "{stderr}"
    );
}

/// Serves one echo and lets the client fall silent until the idle timeout
/// closes it, under `--trace`; returns the server's stderr.
fn traced_life(mode: &str) -> String {
    let server = BinaryServer::start(&[
        "--mode",
        mode,
        "--trace",
        "--idle-timeout",
        "300ms",
        "--quiet",
    ]);
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"hello");
    // The server closes the silent client: the read sees the end.
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    stderr
}

/// `--trace` on the statemachine tells a client's generator in the notes'
/// words, in order: created, `next()` to its first `yield WAIT_READ`,
/// resumed when readable, and `close()` at its idle deadline.
#[test]
fn the_statemachine_trace_tells_a_generators_life() {
    let stderr = traced_life("statemachine");
    let client: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("handle_client"))
        .collect();
    let expected = [
        "created, a generator object",
        "next() → yield WAIT_READ",
        "send(readable) → yield WAIT_READ",
        "close() at its idle deadline",
    ];
    assert_eq!(client.len(), expected.len(), "{stderr}");
    for (line, words) in client.iter().zip(expected) {
        assert!(line.contains(words), "{line:?} lacks {words:?}\n{stderr}");
    }
}

/// `--trace` on async tells a task's life in the runtime's words: spawned,
/// polled to `Pending`, its `recv` dropped at the idle timeout (cancelled),
/// and woken by the timer for its last poll, `Ready`. (Whether the echo
/// takes a poll of its own depends on when the message arrives.)
#[test]
fn the_async_trace_tells_a_tasks_life() {
    let stderr = traced_life("async");
    let mut from = 0;
    for words in [
        "spawned (asyncio's create_task)",
        "polled for the first time → Pending",
        "idle timeout: the timer was ready first",
        "cancelled",
        "woken (its waker queued it), polled → Ready",
    ] {
        let at = stderr[from..]
            .find(words)
            .unwrap_or_else(|| panic!("{words:?} missing after byte {from}\n{stderr}"));
        from += at + words.len();
    }
    // One loop's tasks only: several would number theirs alike.
    for several in [["--threads", "2"], ["--processes", "2"]] {
        let mut args = vec!["serve", "--mode", "async", "--trace"];
        args.extend(several);
        let (code, _, stderr) = run_binary(&args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            stderr.contains("--trace follows the tasks of one loop"),
            "{stderr}"
        );
    }
}

/// A loop whose client's chunk waits out `--work wait` must not spin on
/// the bytes that client sends meanwhile: nobody will read them before the
/// wait is over, and a level-triggered registration still watching them
/// would make every wait return at once. Every readiness loop, on every
/// backend (the async reactor registers level-triggered on `polling`).
#[test]
fn a_waiting_chunk_with_more_behind_it_does_not_spin_the_loop() {
    let modes = ["selector", "statemachine", "async"];
    let backends = ["polling", "epoll", "poll"];
    std::thread::scope(|scope| {
        for mode in modes {
            for backend in backends {
                scope.spawn(move || waiting_chunk_does_not_spin(mode, backend));
            }
        }
    });
}

fn waiting_chunk_does_not_spin(mode: &str, backend: &str) {
    let args = [
        "--mode",
        mode,
        "--poller",
        backend,
        "--work",
        "wait:1500ms",
        "--quiet",
    ];
    let server = BinaryServer::start(&args);
    let mut client = connect(server.addr);
    client.write_all(b"first").unwrap();
    // Held for 1.5 s; these wait unread in the socket meanwhile.
    std::thread::sleep(Duration::from_millis(100));
    client.write_all(b"second").unwrap();
    let burned = server.cpu_burned_during(Duration::from_millis(800));
    // Spinning burns the whole window; waiting costs ~nothing. The bound
    // is loose so that a noisy machine cannot fail it.
    assert!(
        burned < Duration::from_millis(300),
        "{mode} on {backend}: burned {burned:?} of CPU in 800 ms"
    );
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut echoed = [0; 11];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"firstsecond", "{mode} on {backend}");
}
