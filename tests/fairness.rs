//! No client can take a server away from the others: beside four clients
//! that send without pause (hogs), a fifth client's echoes still come back
//! promptly, on every concurrent model, every readiness backend, and both
//! protocols.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use echo_lab::serve::{Config, Mode, Protocol};
use echo_lab::tools::hogs::Hogs;

use crate::common::{connect, quiet, start_with};

/// Clients that never pause, beside the timed one.
const HOGS: usize = 4;

/// Round trips the timed client makes, one every [`PAUSE`].
const PINGS: usize = 15;

/// The timed client's pause between round trips: it is a polite client.
const PAUSE: Duration = Duration::from_millis(30);

/// The slowest echo the timed client may see. Generous, for a loaded 2-core
/// machine where the hogs' eight threads compete for the CPU; a loop that
/// lets a hog keep it (the async model before its budget) took seconds.
const BOUND: Duration = Duration::from_millis(750);

/// The worst round trip of a client that sends `line` and waits for
/// `reply`, [`PINGS`] times, while [`HOGS`] hogs keep the server busy.
fn worst_round_trip(addr: SocketAddr, protocol: Protocol) -> Duration {
    let hogs = Hogs::start(&addr.into(), HOGS, protocol).expect("the hogs start");
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let (line, reply) = match protocol {
        Protocol::Echo => ("ping\n", "ping\n"),
        Protocol::Chat => {
            writer.write_all(b"register,timed\n").unwrap();
            let mut ok = String::new();
            reader.read_line(&mut ok).expect("registered");
            assert_eq!(ok, "ok\n");
            ("chat,timed,ping\n", "from,timed,ping\n")
        }
    };
    // The hogs are under way once the server has echoed something to them.
    crate::common::wait_until("the hogs are served", || hogs.received() > 0);
    let mut worst = Duration::ZERO;
    for _ in 0..PINGS {
        let sent = Instant::now();
        writer.write_all(line.as_bytes()).unwrap();
        let mut got = String::new();
        reader.read_line(&mut got).expect("the reply in time");
        assert_eq!(got, reply);
        worst = worst.max(sent.elapsed());
        std::thread::sleep(PAUSE);
    }
    let before = hogs.received();
    crate::common::wait_until("the hogs are still served", || hogs.received() > before);
    worst
}

/// Four echo clients that never pause leave a fifth its turn.
fn echo_beside_hogs(mode: Mode) {
    let server = start_with(mode, quiet());
    let worst = worst_round_trip(server.addr(), Protocol::Echo);
    assert!(worst < BOUND, "{mode}: the worst echo took {worst:?}");
}

/// Four chat clients that never pause leave a fifth its turn.
fn chat_beside_hogs(mode: Mode) {
    let server = start_with(
        mode,
        Config {
            protocol: Protocol::Chat,
            ..quiet()
        },
    );
    let worst = worst_round_trip(server.addr(), Protocol::Chat);
    assert!(worst < BOUND, "{mode}: the worst line took {worst:?}");
}

every_model!(concurrent, backends: echo_beside_hogs);
every_model!(chat, backends: chat_beside_hogs);
