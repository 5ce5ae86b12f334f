//! `echo-lab notes`: each of the notes' programs runs from the binary,
//! echoes small and large messages exactly, serves several clients where
//! it can, and shows the behaviour its chapter claims: the staircase of
//! the sequential server, the client past the pool waiting, the callback
//! loop stopped by a client that never reads, the round-robin loop stuck
//! in `accept`, and the others serving everyone together. The Python
//! beside each step (`docs/tutorial/notes/`) is held to the same shape in
//! the same test, where `python3` is installed (each test says it skipped
//! the Python where it is not).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// Which program of a step: ours, or the notes' Python beside it.
#[derive(Clone, Copy, Debug)]
enum Lang {
    Rust,
    Python,
}

/// Both, or only Rust where there is no `python3` (said once per test).
fn languages() -> Vec<Lang> {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !python {
        eprintln!("skipped: the Python steps (python3 is not installed)");
        return vec![Lang::Rust];
    }
    vec![Lang::Rust, Lang::Python]
}

/// Starts `step` in `lang` on a free port (`workers`: the pool's size).
fn start(lang: Lang, step: &str, workers: Option<&str>) -> BinaryServer {
    match lang {
        Lang::Rust => {
            let args: Vec<&str> = workers.map(|w| vec!["--workers", w]).unwrap_or_default();
            BinaryServer::start_notes(step, &args)
        }
        Lang::Python => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial/notes");
            let mut command = std::process::Command::new("python3");
            command
                .arg("-B")
                .arg(match step {
                    "async" => "async_await.py".to_owned(),
                    step => format!("{}.py", step.replace('-', "_")),
                })
                .arg("0")
                .args(workers)
                .current_dir(dir);
            BinaryServer::spawn(command)
        }
    }
}

/// A window in which a blocked client gets nothing (load can delay an
/// echo, never make one appear).
const SILENCE: Duration = Duration::from_millis(300);

/// Sends `message` and reads it back on another thread meanwhile, so that
/// a message larger than the socket buffers cannot deadlock the test.
fn echo_large(stream: &mut TcpStream, message: &[u8]) {
    let mut writer = stream.try_clone().unwrap();
    let sent = message.to_vec();
    let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let echoed = read_exact(stream, message.len());
    writing.join().unwrap();
    assert!(echoed == message, "the echo differs");
}

/// Every step that echoes: a short line, then 1 MiB, exactly.
#[test]
fn every_echo_step_echoes_exactly() {
    for step in [
        "sequential",
        "threads",
        "pool",
        "callbacks",
        "select-queues",
        "wait-read",
        "yield-from",
        "async",
    ] {
        for lang in languages() {
            let server = start(lang, step, None);
            let mut client = connect(server.addr);
            assert_echo(&mut client, b"hello\n");
            echo_large(&mut client, &payload(1 << 20, 3));
            // Half-closed: what it sent last still comes back, then the end.
            client.write_all(b"last").unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"last", "{lang:?} {step}");
        }
    }
}

/// The steps that serve clients at once: three connected together, each
/// echoed while the others stay connected.
#[test]
fn the_concurrent_steps_serve_everyone_together() {
    for step in [
        "threads",
        "pool",
        "callbacks",
        "select-queues",
        "wait-read",
        "yield-from",
        "async",
    ] {
        for lang in languages() {
            let server = start(lang, step, None);
            let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
            for (i, client) in clients.iter_mut().enumerate().rev() {
                assert_echo(client, format!("{step} {i}\n").as_bytes());
            }
        }
    }
}

/// The sequential step serves one client at a time: the second gets its
/// echo only once the first has gone (the staircase).
#[test]
fn the_sequential_step_serves_one_at_a_time() {
    for lang in languages() {
        let server = start(lang, "sequential", None);
        let mut first = connect(server.addr);
        assert_echo(&mut first, b"first\n");
        let mut second = connect(server.addr);
        second.write_all(b"second\n").unwrap();
        let silent = stays_silent(&mut second, SILENCE);
        assert!(silent, "{lang:?}: served beside the first");
        drop(first);
        assert_eq!(read_exact(&mut second, 7), b"second\n");
    }
}

/// The pool of N serves N clients; client N + 1 waits in the queue until
/// one of them leaves (the notes' "long running clients").
#[test]
fn the_pool_step_makes_the_client_past_it_wait() {
    for lang in languages() {
        let server = start(lang, "pool", Some("2"));
        let mut held: Vec<TcpStream> = (0..2).map(|_| connect(server.addr)).collect();
        for client in &mut held {
            assert_echo(client, b"in\n");
        }
        let mut third = connect(server.addr);
        third.write_all(b"third\n").unwrap();
        assert!(
            stays_silent(&mut third, SILENCE),
            "{lang:?}: served past the pool"
        );
        held.pop();
        assert_eq!(read_exact(&mut third, 6), b"third\n");
    }
}

/// The callback loop keeps the notes' "assume sendall won't block": one
/// client that sends and never reads blocks its `sendall`, and the loop
/// with it; another client gets nothing. The select() step, which queues
/// what a client cannot take, serves the other client all the same.
#[test]
fn a_client_that_never_reads_stops_the_callback_loop_only() {
    for (step, stops, lang) in languages()
        .into_iter()
        .flat_map(|lang| [("callbacks", true, lang), ("select-queues", false, lang)])
    {
        let server = start(lang, step, None);
        let hog = connect(server.addr);
        hog.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let block = [7u8; 64 << 10];
        // Until the kernel's buffers are full both ways (at most 64 MiB).
        for _ in 0..1024 {
            if (&hog).write_all(&block).is_err() {
                break;
            }
        }
        let mut other = connect(server.addr);
        other.write_all(b"anyone?\n").unwrap();
        if stops {
            assert!(
                stays_silent(&mut other, SILENCE),
                "{lang:?} {step}: answered"
            );
            drop(hog);
            assert_eq!(read_exact(&mut other, 8), b"anyone?\n");
        } else {
            assert_eq!(read_exact(&mut other, 8), b"anyone?\n", "{lang:?} {step}");
        }
    }
}

/// The round-robin loop of bare generators blocks in `accept()`: a client
/// alone is never echoed; its `recv` runs after the next client connects,
/// its `sendall` after the one after that.
#[test]
fn the_round_robin_step_waits_in_accept() {
    for lang in languages() {
        let server = start(lang, "round-robin", None);
        let mut first = connect(server.addr);
        first.write_all(b"first\n").unwrap();
        let silent = stays_silent(&mut first, SILENCE);
        assert!(silent, "{lang:?}: echoed with no other client");
        let _second = connect(server.addr);
        let _third = connect(server.addr);
        assert_eq!(read_exact(&mut first, 6), b"first\n");
    }
}

/// The chat on threads and on the async step: names are taken once, a
/// line reaches its receiver, and a line to everyone reaches everyone
/// else.
#[test]
fn the_chat_steps_register_and_deliver() {
    for lang in languages() {
        for step in ["chat-threads", "chat-async"] {
            chat_registers_and_delivers(lang, step);
        }
    }
}

fn chat_registers_and_delivers(lang: Lang, step: &str) {
    let server = start(lang, step, None);
    let lines = |name: &str| {
        let stream = connect(server.addr);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        (&stream)
            .write_all(format!("register,{name}\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        (stream, reader, reply)
    };
    let (alice, _, ok) = lines("alice");
    assert_eq!(ok, "ok\n");
    let (_, mut bob, ok) = lines("bob");
    assert_eq!(ok, "ok\n");
    let (_, _, taken) = lines("alice");
    assert_eq!(taken, "error,name taken\n");
    (&alice)
        .write_all(b"chat,bob,hello bob\nchat,*,hello all\n")
        .unwrap();
    for expected in ["from,alice,hello bob\n", "from,alice,hello all\n"] {
        let mut line = String::new();
        bob.read_line(&mut line).unwrap();
        assert_eq!(line, expected, "{lang:?} {step}");
    }
    // `quit` closes the connection, and the name is free again.
    (&alice).write_all(b"quit\n").unwrap();
    let mut rest = Vec::new();
    (&alice).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{lang:?} {step}: {rest:?}");
    let (_, _, again) = lines("alice");
    assert_eq!(again, "ok\n", "{lang:?} {step}");
}

/// `echo-lab notes` lists every step with the listing it mirrors and the
/// model it grows into; a step that does not exist is refused.
#[test]
fn the_steps_are_listed() {
    let (code, stdout, stderr) = run_binary(&["notes"]);
    assert_eq!(code, Some(0), "{stderr}");
    for step in echo_lab::notes::STEPS {
        assert!(stdout.contains(step.name), "{stdout}");
        assert!(stdout.contains(step.grows_into), "{stdout}");
    }
    assert!(echo_lab::notes::STEPS.len() >= 10);
    let (code, _, _) = run_binary(&["notes", "nope"]);
    assert_eq!(code, Some(2));
    let (code, _, stderr) = run_binary(&["notes", "sequential", "--workers", "3"]);
    assert_eq!(code, Some(1), "{stderr}");
    // A chat step does not echo: compare cannot measure it, and says so.
    let (code, _, stderr) = run_binary(&["compare", "--notes", "chat-async"]);
    assert_eq!(code, Some(2), "{stderr}");
}

/// Every step is short, as the notes' listings are: under 120 lines
/// (250 for the executor and reactor), and none imports an echo-lab module
/// but the notes' own kit and the socket setup.
#[test]
fn every_step_is_short_and_stands_alone() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/notes");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "mod.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let most = if name == "async_await.rs" { 250 } else { 120 };
        let lines = text.lines().count();
        assert!(lines <= most, "{name}: {lines} lines, more than {most}");
        for line in text.lines().filter(|l| l.starts_with("use crate::")) {
            assert!(line == "use crate::net::Blocking;", "{name}: {line}");
        }
    }
}

/// `compare --notes` and `--python` put a step and its Python in the same
/// run as a lab model, each a row of the table and of results.json.
#[test]
fn compare_runs_the_steps_beside_a_model() {
    let out = std::env::temp_dir().join(format!("echo-lab-notes-compare-{}", std::process::id()));
    let python = languages().len() == 2;
    let mut args = vec!["compare", "--modes", "selector", "--notes", "select-queues"];
    if python {
        args.extend(["--python", "select-queues"]);
    }
    args.extend([
        "-c",
        "2",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (status, stdout, stderr) = run_binary(&args);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let json = std::fs::read_to_string(out.join("latest/results.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let results: serde_json::Value = serde_json::from_str(&json).unwrap();
    let servers: Vec<&str> = results["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["server"].as_str().unwrap())
        .collect();
    assert!(servers.contains(&"notes-select-queues"), "{servers:?}");
    assert_eq!(
        servers.contains(&"python-select-queues"),
        python,
        "{servers:?}"
    );
    for row in results["rows"].as_array().unwrap() {
        assert!(row["results"]["messages"].as_u64() > Some(0), "{row}");
        assert_eq!(row["results"]["errors"], 0, "{row}");
    }
}
