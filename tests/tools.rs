//! The instruments: `client`, `probe`, `bench` and `compare`, run against
//! real servers (ours, and deliberately wrong ones) over loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::common::*;
use echo_lab::parse::HostPort;
use echo_lab::serve::Mode;
use echo_lab::tools::bench::{self, BenchConfig};
use serde_json::Value;

fn short_bench(addr: HostPort, connections: usize) -> BenchConfig {
    BenchConfig {
        addr,
        connections,
        idle: 0,
        hogs: 0,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        size: 512,
        depth: 2,
        rate: None,
        threads: 2,
        pin_cpu: None,
        server_pid: None,
        churn: false,
    }
}

/// Runs `compare` with `args` and two clients for 300 ms a run, no
/// warm-up, into a directory of its own (`name` in the temporary
/// directory); returns what it printed and its results.json, and removes
/// the directory. Fails the test if compare fails.
fn short_compare(name: &str, args: &[&str]) -> (String, Value) {
    let out = std::env::temp_dir().join(format!("echo-lab-{name}-{}", std::process::id()));
    let mut full = vec!["compare", "-c", "2", "-d", "300ms", "--warmup", "0s"];
    full.extend_from_slice(args);
    full.extend(["--out", out.to_str().unwrap()]);
    let (status, stdout, stderr) = run_binary(&full);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let json =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest/results.json")).unwrap())
            .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    (stdout, json)
}

/// `bench --churn` against every model: each message on a connection of
/// its own, so the connections made are the messages echoed (and more,
/// outside the window), every echo checked, and the server counts every
/// one of them as served.
fn churn_makes_a_connection_per_message(mode: Mode) {
    let server = start(mode);
    let config = BenchConfig {
        churn: true,
        depth: 1,
        threads: 1,
        ..short_bench(server.addr().into(), 2)
    };
    let results = bench::run(&config, |_, _| {}).unwrap();
    assert!(results.messages > 0, "{mode}: {results:?}");
    assert_eq!(
        results.errors + results.connect_failures,
        0,
        "{mode}: {results:?}"
    );
    assert!(
        results.served_connections >= results.messages,
        "{mode}: {results:?}"
    );
    // Named for what it counts, in --json too.
    assert_eq!(
        results.connections_per_sec,
        Some(results.messages_per_sec),
        "{mode}"
    );
    wait_until("every churned connection closed", || {
        server.stats().active() == 0
    });
    assert_eq!(
        server.stats().served(),
        results.served_connections,
        "{mode}"
    );
}

every_model!(churn_makes_a_connection_per_message);

/// "Abandoned" means one thing on both ends (README): the client left
/// while an echo was owed to it. `bench --idle 50` against every model:
/// bench closes its idle connections with a reset, owing and owed
/// nothing, and the server must not count them (it once counted every
/// one). (Sequential gets one measured connection: a second would wait in
/// the backlog, and whether the kernel keeps its bytes once bench resets
/// it there is a race; see README.)
fn abandoned_means_the_same_on_both_ends(mode: Mode) {
    let server = start(mode);
    let connections = if mode == Mode::Sequential { 1 } else { 2 };
    let config = BenchConfig {
        idle: 50,
        ..short_bench(server.addr().into(), connections)
    };
    let results = bench::run(&config, |_, _| {}).unwrap();
    wait_until("the server has met every connection's end", || {
        server.stats().active() == 0
    });
    assert_eq!(
        server.stats().abandoned(),
        results.abandoned_connections,
        "{mode}: the server's count against bench's: {results:?}"
    );
}

every_model!(abandoned_means_the_same_on_both_ends);

/// A client that sends, then resets while its echo is still owed (the
/// server holds it for 200 ms of `--work wait`), is counted as abandoned
/// by every model: the server meets the reset when it writes the echo.
fn a_reset_with_an_echo_owed_is_abandoned(mode: Mode) {
    let work = echo_lab::lab::work::parse_work("wait:200ms").unwrap();
    let server = start_with(
        mode,
        echo_lab::serve::Config {
            work: Some(work),
            ..quiet()
        },
    );
    let client = connect(server.addr());
    (&client).write_all(b"owed").unwrap();
    // Accepted: from now on the kernel hands the server the bytes before
    // the reset (taken out of the backlog, they could be discarded with it).
    wait_until("the server has taken the client", || {
        server.stats().active() == 1
    });
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    wait_until("the client's end met", || server.stats().active() == 0);
    assert_eq!(server.stats().abandoned(), 1, "{mode}");
}

every_model!(a_reset_with_an_echo_owed_is_abandoned);

/// bench against every model: echoes counted, every byte verified, no errors.
fn bench_verifies_every_model(mode: Mode) {
    let server = start(mode);
    let connections = if mode == Mode::Sequential { 1 } else { 8 };
    let results = bench::run(&short_bench(server.addr().into(), connections), |_, _| {}).unwrap();
    assert!(results.messages > 0, "{mode}: {results:?}");
    assert_eq!(results.errors, 0, "{mode}: {results:?}");
    assert_eq!(results.served_connections, connections as u64, "{mode}");
    assert!(!results.failed(), "{mode}");
}

/// `bench --idle` holds that many silent connections beside the active
/// ones for the whole run, on every backend: the server sees them all at
/// once, and the active ones are served regardless.
#[test]
fn bench_holds_idle_connections_beside_the_active_ones() {
    for backend in echo_lab::poller::Backend::ALL {
        let config = echo_lab::serve::Config {
            poller: backend,
            ..quiet()
        };
        let server = start_with(Mode::Selector, config);
        let mut bench_config = short_bench(server.addr().into(), 4);
        bench_config.idle = 200;
        let results = bench::run(&bench_config, |_, _| {}).unwrap();
        assert_eq!(results.errors, 0, "{backend}: {results:?}");
        assert_eq!(results.served_connections, 4, "{backend}");
        assert_eq!(server.stats().peak(), 204, "{backend}");
    }
}

/// `bench --hogs` runs its hogs beside the measured connections for the
/// whole run: the server holds them all, the hogs are echoed to, and the
/// measured connections are served and verified regardless; the report
/// says so.
#[test]
fn bench_runs_hogs_beside_the_measured_connections() {
    let server = start(Mode::Async);
    let mut config = short_bench(server.addr().into(), 2);
    config.hogs = 3;
    let results = bench::run(&config, |_, _| {}).unwrap();
    assert_eq!(results.errors, 0, "{results:?}");
    assert_eq!(results.served_connections, 2);
    assert!(results.hogs_received > 0, "{results:?}");
    assert_eq!(server.stats().peak(), 5);
    let report = bench::BenchReport {
        parameters: config,
        results,
        environment: bench::Environment::current(),
    };
    assert!(bench::render(&report).contains("hogs         3 more sending without pause"));
}

/// `compare --hogs` gives every run its hogs, says so above the table and
/// records it in results.json; the chat's hogs speak the chat.
#[test]
fn compare_runs_hogs_beside_every_run() {
    for protocol in ["echo", "chat"] {
        let (stdout, json) = short_compare(
            &format!("compare-hogs-{protocol}"),
            &[
                "--protocol",
                protocol,
                "--modes",
                "selector,async",
                "--hogs",
                "2",
            ],
        );
        assert!(stdout.contains("# 2 hogs beside every run"), "{stdout}");
        assert_eq!(json["hogs"], 2);
        for row in json["rows"].as_array().unwrap() {
            assert!(
                row["results"]["hogs_received"].as_u64().unwrap() > 0,
                "{row}"
            );
        }
    }
}

/// bench and the server count the same abandoned clients: against a pool
/// of two that serves two connections and leaves six waiting, bench gives
/// up on six, and the server, once it has met them all, says six clients
/// abandoned it (each is closed with a reset, so the server cannot take
/// one for a client that left in good order).
#[test]
fn bench_and_server_agree_on_abandoned_clients() {
    let server = start_with(Mode::Threadpool, pool_of(2));
    let mut config = short_bench(server.addr().into(), 8);
    config.threads = 1;
    let results = bench::run(&config, |_, _| {}).unwrap();
    assert_eq!(results.abandoned_connections, 6, "{results:?}");
    wait_until("the server has met every client", || {
        server.stats().served() == 8 && server.stats().active() == 0
    });
    assert_eq!(server.stats().abandoned(), 6);
}

/// bench's open loop keeps its schedule and verifies just the same.
#[test]
fn bench_open_loop_at_a_fixed_rate() {
    let server = start(Mode::Selector);
    let config = BenchConfig {
        rate: Some(2000.0),
        duration: Duration::from_secs(1),
        ..short_bench(server.addr().into(), 4)
    };
    let results = bench::run(&config, |_, _| {}).unwrap();
    assert_eq!(results.errors, 0);
    // 2,000 msg/s for 1 s; loose bounds, the machine may be slow.
    assert!((1000..=2200).contains(&results.messages), "{results:?}");
}

/// How a broken server changes the bytes of its `n`th read.
type Damage = fn(&mut Vec<u8>, u64);

/// A broken echo server for bench to catch: it answers each read with the
/// bytes changed by `damage`.
fn broken_server(damage: Damage) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0; 4096];
        let mut reads = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            let mut data = buf[..n].to_vec();
            damage(&mut data, reads);
            reads += 1;
            if stream.write_all(&data).is_err() {
                break;
            }
        }
    });
    (addr, handle)
}

/// Flipped, dropped and duplicated bytes are each reported as errors, and
/// make bench exit non-zero.
#[test]
fn bench_catches_a_server_that_damages_bytes() {
    let damages: [(&str, Damage); 3] = [
        ("flips", |data, reads| {
            if reads == 20 {
                data[0] ^= 0x01;
            }
        }),
        ("drops", |data, reads| {
            if reads == 20 {
                data.remove(0);
            }
        }),
        ("duplicates", |data, reads| {
            if reads == 20 {
                let copy = data.clone();
                data.extend(copy);
            }
        }),
    ];
    for (what, damage) in damages {
        let (addr, server) = broken_server(damage);
        let addr = addr.to_string();
        let (status, stdout, stderr) = run_binary(&[
            "bench", "--addr", &addr, "-c", "1", "-d", "500ms", "--warmup", "0s", "--json",
        ]);
        assert_eq!(
            status,
            Some(1),
            "a server that {what} bytes: {stdout}{stderr}"
        );
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["results"]["errors"], 1, "{what}: {stdout}");
        server.join().unwrap();
    }
}

/// `--json` is one self-describing object: parameters, results, environment.
#[test]
fn bench_json_describes_itself() {
    let server = start(Mode::Async);
    let addr = server.addr().to_string();
    let (status, stdout, stderr) = run_binary(&[
        "bench", "--addr", &addr, "-c", "3", "-d", "200ms", "--warmup", "0s", "--json",
    ]);
    assert_eq!(status, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["parameters"]["connections"], 3);
    assert!(report["results"]["messages"].as_u64().unwrap() > 0);
    assert!(report["results"]["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(report["environment"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(report["environment"]["cpus"].as_u64().unwrap() >= 1);
}

/// Runs `probe --json` and returns (connected, echoed, closed) per client.
fn probe_timeline(addr: &str, clients: &str) -> Vec<(f64, f64, f64)> {
    let (status, stdout, stderr) = run_binary(&[
        "probe",
        "--addr",
        addr,
        "--clients",
        clients,
        "--hold",
        "400ms",
        "--json",
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let t = |k: &str| c[k].as_f64().unwrap();
            (t("connected"), t("echoed"), t("closed"))
        })
        .collect()
}

/// Against `sequential`, probe shows the staircase: each echo comes only
/// after the previous client has closed.
#[test]
fn probe_shows_the_sequential_staircase() {
    let server = start(Mode::Sequential);
    let mut clients = probe_timeline(&server.addr().to_string(), "3");
    clients.sort_by(|a, b| a.1.total_cmp(&b.1));
    for pair in clients.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "an echo came before the previous client left: {clients:?}"
        );
    }
}

/// Rows are numbered in the order the clients were served: against the
/// staircase of a loop that sleeps 200 ms per echo, client 1's echo came
/// first, client 2's next, and so on, whatever order the threads started.
#[test]
fn probe_numbers_clients_in_the_order_served() {
    let config = echo_lab::serve::Config {
        work: Some(echo_lab::lab::work::parse_work("sleep:100ms").unwrap()),
        slow_handler: None,
        ..quiet()
    };
    let server = start_with(Mode::Selector, config);
    let report = echo_lab::tools::probe::run(&echo_lab::tools::probe::ProbeConfig {
        addr: server.addr().into(),
        clients: 5,
        hold: Duration::ZERO,
        timeout: PATIENCE,
    });
    assert!(report.all_ok(), "{report:?}");
    let echoes: Vec<(usize, f64)> = report
        .clients
        .iter()
        .map(|c| (c.client, c.echoed.unwrap()))
        .collect();
    for (i, pair) in echoes.windows(2).enumerate() {
        assert_eq!(pair[0].0, i + 1, "{echoes:?}");
        assert!(pair[0].1 <= pair[1].1, "{echoes:?}");
    }
}

/// A server that closes its clients during their hold (an idle timeout
/// shorter than the hold) is shown doing so: each client is marked closed
/// by the server, at the moment it happened, not at the end of the hold.
#[test]
fn probe_shows_a_close_by_the_server() {
    let config = echo_lab::serve::Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..pool_of(2)
    };
    let server = start_with(Mode::Threadpool, config);
    let report = echo_lab::tools::probe::run(&echo_lab::tools::probe::ProbeConfig {
        addr: server.addr().into(),
        clients: 3,
        hold: Duration::from_secs(10),
        timeout: PATIENCE,
    });
    assert!(report.all_ok(), "{report:?}");
    for c in &report.clients {
        assert!(c.closed_by_server, "{c:?}");
        assert!(
            c.closed.unwrap() < 9.0,
            "held past the server's close: {c:?}"
        );
    }
    let text = echo_lab::tools::probe::render(&report);
    assert!(text.contains("3 of 3 closed by the server"), "{text}");
    assert!(text.contains('!'), "{text}");
}

/// `probe --svg` draws the timeline it prints: the picture has a row for
/// each client of the JSON, labelled in the same order, and an echo mark
/// for each client echoed.
#[test]
fn probe_draws_the_timeline_it_reports() {
    let server = start(Mode::Sequential);
    let svg = std::env::temp_dir().join(format!("echo-lab-probe-{}.svg", std::process::id()));
    let (code, stdout, stderr) = run_binary(&[
        "probe",
        "--addr",
        &server.addr().to_string(),
        "--clients",
        "3",
        "--hold",
        "100ms",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let clients = json["clients"].as_array().unwrap();
    let picture = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    let rows: Vec<usize> = picture
        .match_indices(">\nclient ")
        .filter_map(|(at, _)| {
            let rest = &picture[at + 9..];
            rest[..rest.find('\n')?].parse().ok()
        })
        .collect();
    let expected: Vec<usize> = clients
        .iter()
        .map(|c| c["client"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(rows, expected, "{picture}");
    assert_eq!(
        picture.matches("<circle").count(),
        clients.len(),
        "{picture}"
    );
}

/// Against `selector`, every echo arrives before any client closes.
#[test]
fn probe_shows_the_event_loop_serving_all_at_once() {
    let server = start(Mode::Selector);
    let clients = probe_timeline(&server.addr().to_string(), "3");
    let last_echo = clients.iter().map(|c| c.1).fold(0.0, f64::max);
    let first_close = clients.iter().map(|c| c.2).fold(f64::MAX, f64::min);
    assert!(last_echo < first_close, "{clients:?}");
}

/// The text probe draws one chart row per client and says all were correct.
#[test]
fn probe_text_has_a_row_per_client() {
    let server = start(Mode::Async);
    let addr = server.addr().to_string();
    let (status, stdout, _) = run_binary(&[
        "probe",
        "--addr",
        &addr,
        "--clients",
        "4",
        "--hold",
        "100ms",
    ]);
    assert_eq!(status, Some(0));
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("client ") && l.contains('|'))
            .count(),
        4,
        "{stdout}"
    );
    assert!(stdout.contains("all 4 echoes correct"), "{stdout}");
}

/// probe against a server that never answers reports it and exits non-zero.
#[test]
fn probe_reports_a_missing_echo() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (status, stdout, _) = run_binary(&[
        "probe",
        "--addr",
        &addr,
        "--clients",
        "2",
        "--hold",
        "0s",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(status, Some(1), "{stdout}");
    assert!(stdout.contains("no echo within"), "{stdout}");
}

/// bench against a server that accepts and never answers says so, in the
/// words the server's summary uses for the same event, and exits 1.
#[test]
fn bench_says_why_nothing_was_served() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (status, stdout, stderr) = run_binary(&[
        "bench", "--addr", &addr, "-c", "2", "-d", "500ms", "--warmup", "0s",
    ]);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "no echo came back in 0.5s: the server accepted 2 connections and answered none"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("abandoned    2 connections: 2 messages waited"),
        "{stdout}"
    );
}

/// A client that never connected is drawn as failed, with the reason, not
/// as a row of waiting; the axis still spans every instant.
#[test]
fn probe_draws_a_client_that_never_connected_as_failed() {
    let refused = free_port();
    let (status, stdout, _) = run_binary(&[
        "probe",
        "--addr",
        &refused,
        "--clients",
        "2",
        "--hold",
        "0s",
    ]);
    assert_eq!(status, Some(1), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("client ") && l.contains('|'))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        assert!(row.contains("|  failed: cannot connect to"), "{row}");
        let bar = row.split('|').nth(1).unwrap();
        assert!(bar.contains('x') && !bar.contains('.'), "{row}");
    }
    assert!(!stdout.contains("0.00s"), "{stdout}");
}

/// In a pipe, client sends stdin, prints the echo, and exits 0.
#[test]
fn client_in_a_pipe_echoes_and_exits() {
    let server = start(Mode::Statemachine);
    let addr = server.addr().to_string();
    let mut child = Command::new(binary())
        .args(["client", "--addr", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<u8> = b"hello\n"
        .iter()
        .copied()
        .chain(payload(200_000, 9))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let expected = input.clone();
    let writer = thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == expected, "the piped echo differs");
}

/// A free port on loopback, free when this returns (nothing holds it).
fn free_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `serve ... &` then a client on the next line, as the tutorial pastes
/// them: the client must not lose the race against the server's start. A
/// server and a probe start together, twenty times; every probe succeeds.
#[test]
fn a_client_started_with_the_server_waits_for_it() {
    for round in 0..20 {
        let addr = free_port();
        let mut server = Command::new(binary())
            .args(["serve", "--mode", "async", "--quiet", "--addr", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (status, stdout, stderr) =
            run_binary(&["probe", "--addr", &addr, "--clients", "3", "--hold", "0s"]);
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(status, Some(0), "round {round}: {stdout}{stderr}");
        assert!(stdout.contains("all 3 echoes correct"), "{stdout}");
    }
}

/// `probe --register` and `probe --flood` wait for a chat server still
/// starting, as every tool does: each is started first, against a port
/// nobody listens on yet; once it says it is retrying, the server starts,
/// and the probe reports as against a server that was there all along.
#[test]
fn the_chat_probes_wait_for_a_server_still_starting() {
    use std::io::BufRead;
    for (probe, expected) in [
        ("--register", "1 of 2 got ok for alice"),
        ("--flood", "bob was cut off as too slow"),
    ] {
        let addr = free_port();
        let mut child = Command::new(binary())
            .args([
                "probe",
                probe,
                if probe == "--flood" { "bob" } else { "alice" },
            ])
            .args(["--clients", "2", "--addr", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("retrying"), "{probe}: {line}");
        let mut server = Command::new(binary())
            .args([
                "serve",
                "--mode",
                "threads",
                "--protocol",
                "chat",
                "--quiet",
            ])
            .args(["--addr", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let output = wait_with_patience(child);
        let _ = server.kill();
        let _ = server.wait();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{probe}: {stdout}");
        assert!(stdout.contains(expected), "{probe}: {stdout}");
    }
}

/// `client` against a server that accepts and never answers gives up after
/// `--timeout` with a line that says what happened, and exits 1.
#[test]
fn client_times_out_on_a_silent_server() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let child = Command::new(binary())
        .args(["client", "--addr", &addr, "--timeout", "500ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.as_ref().unwrap();
    stdin.write_all(b"anyone there?\n").unwrap();
    // stdin stays open: a person still at the keyboard.
    let output = wait_with_patience(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no echo for 500ms"), "{stderr}");
}

/// A refused connection is one clear line and exit code 1, for the client
/// and for bench (which says so at once instead of measuring nothing for
/// its whole duration).
#[test]
fn refused_connections_are_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["client", "--addr", &addr],
        // run_binary gives up long before 60 s.
        vec!["bench", "--addr", &addr, "-c", "3", "-d", "60s"],
    ] {
        let (status, stdout, stderr) = run_binary(&args);
        assert_eq!(status, Some(1), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        // One line says why; at most one more said it retried first.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("retrying")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot connect to") && stderr.contains("refused"),
            "{args:?}: {stderr}"
        );
    }
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent is the second field after the parenthesised name.
        let parent = stat
            .rfind(')')
            .and_then(|end| stat[end + 2..].split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// Whether process `pid` is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .is_some_and(|end| &stat[end + 2..end + 3] != "Z")
    })
}

/// Ctrl-C in a terminal sends SIGINT to compare's process group, not to the
/// servers it started in groups of their own: compare must stop them
/// itself, write what it measured (marked partial) and exit 130.
#[test]
fn ctrl_c_on_compare_stops_its_servers_and_keeps_what_was_measured() {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    let out = std::env::temp_dir().join(format!("echo-lab-ctrl-c-{}", std::process::id()));
    let mut compare = Command::new(binary())
        .args(["compare", "--modes", "selector,async", "-c", "1"])
        .args(["-d", "1s", "--warmup", "0s", "--repeat", "30", "--out"])
        .arg(&out)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = compare.stdout.take().unwrap();
    let (rows, lines) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = rows.send(line);
        }
    });
    // A first row measured, then a server of the next run up.
    loop {
        let line = lines.recv_timeout(PATIENCE).expect("a first row");
        if line.starts_with("selector") || line.starts_with("async") {
            break;
        }
    }
    let mut servers = Vec::new();
    wait_until("compare runs a server", || {
        servers = children_of(compare.id());
        !servers.is_empty()
    });
    echo_lab::sys::signal_group(compare.id(), libc::SIGINT).unwrap();
    let output = wait_with_patience(compare);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for server in servers {
        assert!(!running(server), "server {server} outlived compare");
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest/results.json")).unwrap())
            .unwrap();
    assert_eq!(json["partial"], true);
    assert!(!json["rows"].as_array().unwrap().is_empty(), "{json}");
    let _ = std::fs::remove_dir_all(&out);
}

/// `compare --work` reaches every echo-lab server it starts: one
/// connection against 20 ms of sleep per message makes at most 50 a second.
#[test]
fn compare_passes_work_to_its_servers() {
    let out = std::env::temp_dir().join(format!("echo-lab-compare-work-{}", std::process::id()));
    let (status, stdout, stderr) = run_binary(&[
        "compare",
        "--modes",
        "threadpool,selector",
        "-c",
        "1",
        "-d",
        "500ms",
        "--warmup",
        "0s",
        "--work",
        "sleep:20ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest/results.json")).unwrap())
            .unwrap();
    assert_eq!(json["work"], "sleep:20ms");
    for row in json["rows"].as_array().unwrap() {
        let rate = row["results"]["messages_per_sec"].as_f64().unwrap();
        assert!(rate > 0.0 && rate <= 55.0, "{row}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Two compares into one `--out` (chapter 7's, then chapter 8's chat):
/// each keeps its own directory, `latest` names the second, the first is
/// still there, and the chat run shows and records only the counters its
/// own servers wrote (it used to read the first run's back): the chat's.
#[test]
fn a_second_compare_keeps_the_first_and_shows_only_its_own_numbers() {
    let out = std::env::temp_dir().join(format!("echo-lab-compare-twice-{}", std::process::id()));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "compare", "--modes", "selector", "-c", "2", "-d", "300ms", "--warmup", "0s", "--out",
        ];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        let (status, stdout, stderr) = run_binary(&args);
        assert_eq!(status, Some(0), "{stdout}{stderr}");
        stdout
    };
    let first = run(&["--work", "cpu:1ms"]);
    let second = run(&["--protocol", "chat"]);
    assert!(second.contains("names the latest run"), "{second}");
    let runs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("run-"))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let read = |path: std::path::PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let latest = read(out.join("latest/results.json"));
    assert_eq!(latest["protocol"], "chat");
    for row in latest["rows"].as_array().unwrap() {
        let lines = row["counters"]["lines"].as_array().expect("counters");
        assert!(lines.iter().all(|l| l["delivered"].is_u64()), "{row}");
        // The server's memory over the run, read from /proc.
        if cfg!(target_os = "linux") {
            assert!(row["memory"]["peak"].as_u64() > Some(0), "{row}");
            assert!(row["memory"]["per_connection"].is_u64(), "{row}");
        }
    }
    let chat_row = second
        .lines()
        .find(|l| l.starts_with("selector "))
        .expect("a row");
    let fields: Vec<&str> = chat_row.split_whitespace().collect();
    assert!(fields[7].parse::<f64>().is_ok(), "{chat_row}");
    // The first run is intact, with the counters its servers wrote.
    let first_dir = runs
        .iter()
        .map(|name| out.join(name))
        .find(|dir| dir.canonicalize().unwrap() != out.join("latest").canonicalize().unwrap())
        .unwrap();
    let earlier = read(first_dir.join("results.json"));
    assert_eq!(earlier["work"], "cpu:1ms", "{first}");
    assert!(!earlier["rows"][0]["counters"].is_null());
    let _ = std::fs::remove_dir_all(&out);
}

/// A results.json says what produced it; `report` re-prints a saved run
/// and redraws its chart without running anything; `--against` calls a run
/// held against itself noise, and a run made twice as costly slower, which
/// `--fail-if-slower` turns into exit 1.
#[test]
fn saved_results_describe_themselves_and_can_be_held_against_each_other() {
    let dir = std::env::temp_dir().join(format!("echo-lab-report-{}", std::process::id()));
    let (old, new) = (dir.join("old"), dir.join("new"));
    let (status, stdout, stderr) = run_binary(&[
        "compare",
        "--modes",
        "selector",
        "-c",
        "1",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--repeat",
        "2",
        "--out",
        old.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("# echo-lab "), "{stdout}");
    let text = std::fs::read_to_string(old.join("latest/results.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    let env = &json["environment"];
    for field in ["version", "command", "cpu_model", "kernel", "date"] {
        assert!(
            env[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {env}"
        );
    }
    assert!(
        env["command"]
            .as_str()
            .unwrap()
            .contains("compare --modes selector")
    );
    // Two 300 ms runs on a busy machine can differ by twice, which the
    // verdict rightly calls noise: give both repeats the first one's cost
    // per message, so that "twice as costly" below is beyond any spread.
    let first = json["rows"][0]["results"].clone();
    for row in json["rows"].as_array_mut().unwrap() {
        for field in ["server_cpu", "messages_per_sec"] {
            row["results"][field] = first[field].clone();
        }
    }
    std::fs::write(old.join("latest/results.json"), json.to_string()).unwrap();
    std::fs::remove_file(old.join("latest/throughput.svg")).unwrap();
    let (status, stdout, _) = run_binary(&["report", old.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{stdout}");
    // `report DIR | head -1`: a reader that has gone ends it quietly.
    let (status, stderr) = run_into_closed_pipe(&["report", old.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("selector "))
            .count(),
        2,
        "{stdout}"
    );
    assert!(old.join("latest/throughput.svg").exists());
    let (status, stdout, _) = run_binary(&[
        "report",
        old.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
        "--fail-if-slower",
        "10",
    ]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("| +0.0% | noise |"), "{stdout}");
    // The same run, made to cost twice the server CPU per message.
    for row in json["rows"].as_array_mut().unwrap() {
        let cpu = row["results"]["server_cpu"].as_f64().unwrap();
        row["results"]["server_cpu"] = Value::from(cpu * 2.0);
    }
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("results.json"), json.to_string()).unwrap();
    let (status, stdout, stderr) = run_binary(&[
        "report",
        new.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
        "--fail-if-slower",
        "10",
    ]);
    assert_eq!(status, Some(1), "{stdout}");
    assert!(stdout.contains("| +100.0% | slower |"), "{stdout}");
    assert!(stderr.contains("slower by 100.0%"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// compare on two models (and a peer given with --also) writes the three
/// files, with one row per server and connection count, in the order run,
/// each with the server's CPU use.
#[test]
fn compare_writes_json_csv_and_chart() {
    let out = std::env::temp_dir().join(format!("echo-lab-compare-{}", std::process::id()));
    let peer = format!(
        "peer={} serve --mode async --addr 127.0.0.1:{{port}} --quiet",
        binary()
    );
    let (status, stdout, stderr) = run_binary(&[
        "compare",
        "--modes",
        "sequential,selector",
        "-c",
        "1,4",
        "-d",
        "200ms",
        "--warmup",
        "50ms",
        "--also",
        &peer,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest/results.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    let keys: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["server"].as_str().unwrap().to_owned(),
                r["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    // The servers run side by side for each connection count.
    let expected: Vec<(String, u64)> = [1, 4]
        .iter()
        .flat_map(|&c| ["sequential", "selector", "peer"].map(|s| (s.to_string(), c)))
        .collect();
    assert_eq!(keys, expected);
    // compare started every server, so it measured their CPU use too.
    for row in rows {
        let cpu = row["results"]["server_cpu"].as_f64();
        assert!(cpu.is_some_and(|cpu| cpu > 0.0), "{row}");
        // What our servers counted inside: a loop's events per wait and
        // busy share; nothing of a peer's, nor a loop figure of a blocking
        // model.
        let counters = &row["counters"];
        match row["server"].as_str().unwrap() {
            "selector" => {
                assert!(counters["events_per_wait"].as_f64() > Some(0.0), "{row}");
                assert!(counters["busy_percent"].as_f64() > Some(0.0), "{row}");
            }
            "sequential" => {
                assert!(counters["lines"][0]["messages"].as_u64() > Some(0), "{row}");
                assert!(counters["events_per_wait"].is_null(), "{row}");
            }
            _ => assert!(counters.is_null(), "{row}"),
        }
    }
    let csv = std::fs::read_to_string(out.join("latest/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",server_cpu,peak_memory,memory_per_connection"),
        "{csv}"
    );
    let svg = std::fs::read_to_string(out.join("latest/throughput.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("selector") && svg.contains("peer"));
    assert!(
        stdout.contains("only 1 of 4 connections served"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// compare's arguments reject bad input cleanly, before any run.
#[test]
fn compare_rejects_bad_lists() {
    for (args, words) in [
        (
            &["compare", "--modes", "selector,nope"][..],
            "unknown model 'nope'",
        ),
        (&["compare", "-c", "1,,10"], "is not a count"),
        (&["compare", "-c", "0"], "at least 1"),
        (&["compare", "--also", "tokio"], "NAME=COMMAND"),
        (&["compare", "--also", "x=cmd without port"], "{port}"),
        (&["bench", "--size", "4"], "at least 12"),
        // Refused before any run: a 30-minute compare would outlast the
        // test's patience.
        (
            &["compare", "--out", "Cargo.toml/results", "-d", "30s"],
            "creating Cargo.toml/results",
        ),
    ] {
        let (status, _, stderr) = run_binary(args);
        assert!(status == Some(2) || status == Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

every_model!(bench_verifies_every_model);

/// On Linux, a churning client connects to a server on 127.0.0.1 from
/// loopback addresses in turn (127.0.0.2 and on), so that the port reuse
/// of one address (a second per port after TIME-WAIT) cannot cap the run:
/// the server's log names more than one source.
#[cfg(target_os = "linux")]
#[test]
fn churn_connects_from_several_loopback_addresses() {
    let server = BinaryServer::start(&["--mode", "selector"]);
    let addr = server.addr.to_string();
    let (status, stdout, stderr) = run_binary(&[
        "bench", "--churn", "-c", "1", "-d", "200ms", "--warmup", "0s", "--addr", &addr,
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let (_, _, log) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    let sources: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("connection from "))
        .filter_map(|peer| peer.split(':').next())
        .collect();
    assert!(sources.len() > 1, "{sources:?}");
    assert!(
        sources.iter().all(|ip| ip.starts_with("127.0.0.")),
        "{sources:?}"
    );
    assert!(!sources.contains("127.0.0.1"), "{sources:?}");
}

/// `bench --churn` and `compare --churn` from the command line: the report
/// speaks of connections per second, and compare's rows are churn runs.
#[test]
fn churn_from_the_command_line() {
    let server = BinaryServer::start(&["--mode", "forking", "--quiet"]);
    let addr = server.addr.to_string();
    let (status, stdout, stderr) = run_binary(&[
        "bench", "--churn", "-c", "2", "-d", "300ms", "--warmup", "0s", "--addr", &addr,
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("connections/s: "), "{stdout}");
    assert!(stdout.contains("0 connect failures, 0 errors"), "{stdout}");
    let (_, json) = short_compare("churn", &["--modes", "threads,selector", "--churn"]);
    assert_eq!(json["churn"], true);
    for row in json["rows"].as_array().unwrap() {
        assert!(row["results"]["messages"].as_u64() > Some(0), "{row}");
        // No connection stays: no memory per connection to show.
        if cfg!(target_os = "linux") {
            assert!(row["memory"]["peak"].as_u64() > Some(0), "{row}");
            assert!(row["memory"]["per_connection"].is_null(), "{row}");
        }
    }
}
