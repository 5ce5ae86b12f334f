//! Each model's concurrency, seen from its clients: who is served while
//! whom waits. Asserted on order (who got an echo before whom left), never on
//! how fast.

use std::io::Write;
use std::time::Duration;

use crate::common::*;
use echo_lab::serve::{Config, Mode};

/// Long enough that a server which would answer does answer; only used to
/// show that a client is (correctly) kept waiting.
const WAIT_WINDOW: Duration = Duration::from_millis(300);

/// Sequential: while one client is connected, a second one's message is not
/// echoed; it is echoed as soon as the first client leaves.
#[test]
fn sequential_serves_the_second_client_after_the_first_leaves() {
    let server = start(Mode::Sequential);
    let mut first = connect(server.addr());
    assert_echo(&mut first, b"first");
    let mut second = connect(server.addr());
    second.write_all(b"second").unwrap();
    assert!(
        stays_silent(&mut second, WAIT_WINDOW),
        "second was served while first was connected"
    );
    drop(first);
    assert_eq!(read_exact(&mut second, 6), b"second");
}

/// Thread pool with 2 workers: two clients are served at once, a third
/// waits until one of them leaves.
#[test]
fn threadpool_of_two_serves_two_and_the_third_waits() {
    let server = start_with(Mode::Threadpool, pool_of(2));
    let mut first = connect(server.addr());
    assert_echo(&mut first, b"first");
    let mut second = connect(server.addr());
    assert_echo(&mut second, b"second");
    let mut third = connect(server.addr());
    third.write_all(b"third").unwrap();
    assert!(
        stays_silent(&mut third, WAIT_WINDOW),
        "third was served while both workers were busy"
    );
    drop(first);
    assert_eq!(read_exact(&mut third, 5), b"third");
    assert_echo(&mut second, b"second still served");
}

/// The thread pool's queue is bounded: with 1 worker and a queue of 1, the
/// server accepts the worker's client and one queued client; a third client
/// waits in the kernel's backlog, not accepted.
#[test]
fn threadpool_stops_accepting_when_the_queue_is_full() {
    let server = start_with(
        Mode::Threadpool,
        Config {
            queue: 1,
            ..pool_of(1)
        },
    );
    let mut busy = connect(server.addr());
    assert_echo(&mut busy, b"busy");
    // Connects complete in the kernel whether or not the server accepts.
    let _queued = connect(server.addr());
    let _held_by_acceptor = connect(server.addr());
    let _in_backlog = connect(server.addr());
    wait_until("the acceptor has taken what it can", || {
        server.stats().served() >= 3
    });
    std::thread::sleep(WAIT_WINDOW);
    assert_eq!(
        server.stats().served(),
        3,
        "accepted past the queue's bound"
    );
}

/// The readiness-loop models: three clients connected at once are all
/// echoed before any of them leaves.
fn event_loops_serve_every_client_at_once(mode: Mode) {
    let server = start(mode);
    let mut clients: Vec<_> = (0..3).map(|_| connect(server.addr())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_echo(client, format!("client {i}").as_bytes());
    }
    assert_eq!(server.stats().active(), 3, "{mode}");
}

every_model!(loops: event_loops_serve_every_client_at_once);
