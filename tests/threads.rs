//! The thread-per-client model holds as many clients as come, each on a
//! thread of its own with the stack it was given.

use std::io::{Read, Write};

use echo_lab::serve::{Config, Mode};

use crate::common::{assert_echo, binary, connect, quiet, run_binary, start_with, wait_until};

/// Clients held at once by the test below.
const CLIENTS: usize = 1000;

/// A thousand clients connected at once are a thousand threads, each
/// serving its own: every one is echoed while all the others stay
/// connected, and the server counts them all at the peak.
#[test]
fn threads_serves_a_thousand_clients_at_once() {
    let _ = echo_lab::sys::raise_fd_limit();
    let (soft, _) = echo_lab::sys::fd_limits().unwrap();
    // Both ends live in this process: two descriptors per client.
    if soft < (2 * CLIENTS + 100) as u64 {
        eprintln!(
            "skipped: {CLIENTS} clients need {} descriptors, the limit is {soft}",
            2 * CLIENTS + 100
        );
        return;
    }
    let server = start_with(Mode::Threads, quiet());
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut stream = connect(server.addr());
        stream
            .write_all(format!("client {i}\n").as_bytes())
            .unwrap();
        clients.push(stream);
    }
    for (i, stream) in clients.iter_mut().enumerate() {
        let expected = format!("client {i}\n");
        let mut echo = vec![0; expected.len()];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(echo, expected.as_bytes());
    }
    wait_until("every client is being served", || {
        server.stats().active() == CLIENTS as u64
    });
    assert_eq!(server.stats().peak(), CLIENTS as u64);
    // Every thread still answers, after all the others connected.
    assert_echo(&mut clients[0], b"first, again");
    assert_echo(&mut clients[CLIENTS - 1], b"last, again");
    drop(clients);
    wait_until("every client thread is done", || {
        server.stats().active() == 0
    });
}

/// The stack is stated and settable, for `threads` only, and never too
/// small for the echo.
#[test]
fn the_stack_size_belongs_to_threads_and_is_checked() {
    let config = Config {
        stack_size: 256 * 1024,
        ..quiet()
    };
    let server = start_with(Mode::Threads, config);
    assert_echo(&mut connect(server.addr()), b"on a 256 KiB stack");
    let (code, _, stderr) = run_binary(&["serve", "--mode", "selector", "--stack-size", "1MiB"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--stack-size applies to threads only"),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(&["serve", "--mode", "threads", "--stack-size", "16KiB"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at least 64KiB"), "{stderr}");
    let help = std::process::Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--stack-size"), "{help}");
}
