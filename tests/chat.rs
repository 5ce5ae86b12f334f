//! The chat (`serve --protocol chat`) keeps the same promises on every model
//! that can host it: the registration rules, list, direct and `*`
//! delivery, names freed by quit and by disconnect, an error for each bad
//! input, slow receivers cut off without holding anyone up, a hundred
//! clients with no line lost, and a clean shutdown mid-chat.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use echo_lab::serve::chat::protocol::MAX_LINE;
use echo_lab::serve::chat::room::MAX_ERRORS;
use echo_lab::serve::{Config, Mode, Protocol, Server};
use echo_lab::tools::bench::{self, chat::ChatBenchConfig};

use crate::common::{BinaryServer, PATIENCE, connect, quiet, run_binary, start_with, wait_until};

/// A chat server of `mode`, quiet.
fn chat_server(mode: Mode) -> Server {
    start_with(
        mode,
        Config {
            protocol: Protocol::Chat,
            ..quiet()
        },
    )
}

/// One chat client: lines out, lines in, every read bounded by PATIENCE.
struct Chatter {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Chatter {
    fn connect(addr: SocketAddr) -> Chatter {
        let stream = connect(addr);
        Chatter {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Connects and registers as `name`.
    fn named(addr: SocketAddr, name: &str) -> Chatter {
        let mut chatter = Chatter::connect(addr);
        assert_eq!(chatter.ask(&format!("register,{name}")), "ok");
        chatter
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("the server reads");
    }

    /// The next line, without its newline; panics at the end of the stream.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("a line in time");
        assert!(n > 0, "the server closed the connection");
        assert!(line.ends_with('\n'), "a torn line: {line:?}");
        line.pop();
        line
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Reads until the server closes; returns the lines it sent first.
    fn until_closed(&mut self) -> Vec<String> {
        let mut rest = String::new();
        match self.reader.read_to_string(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        rest.lines().map(str::to_owned).collect()
    }
}

/// Registering follows the rules on every model: nothing before it, no
/// empty or overlong name, no name twice, one name per connection.
fn registration_rules(mode: Mode) {
    let server = chat_server(mode);
    let mut alice = Chatter::connect(server.addr());
    assert_eq!(alice.ask("list"), "error,register first");
    assert_eq!(alice.ask("chat,bob,hi"), "error,register first");
    assert_eq!(alice.ask("register,"), "error,empty name");
    assert_eq!(
        alice.ask(&format!("register,{}", "a".repeat(33))),
        "error,name longer than 32 characters"
    );
    // Five errors in a row would end the connection: a fresh one.
    let mut alice = Chatter::connect(server.addr());
    assert_eq!(
        alice.ask("register,a,b"),
        "error,name has a comma or a control character"
    );
    assert_eq!(
        alice.ask("register,a\u{1}b"),
        "error,name has a comma or a control character"
    );
    assert_eq!(alice.ask("register,*"), "error,* means everyone");
    assert_eq!(alice.ask("register,alice"), "ok");
    assert_eq!(alice.ask("register,alicia"), "error,already registered");
    let mut other = Chatter::connect(server.addr());
    assert_eq!(other.ask("register,alice"), "error,name taken");
    assert_eq!(other.ask(&format!("register,{}", "é".repeat(32))), "ok");
}

/// `list` names everyone registered; a direct line reaches its receiver
/// whole (commas in the text kept), `*` everyone but the sender, and a
/// name nobody holds is answered with an error.
fn list_and_delivery(mode: Mode) {
    let server = chat_server(mode);
    let mut carol = Chatter::named(server.addr(), "carol");
    let mut alice = Chatter::named(server.addr(), "alice");
    let mut bob = Chatter::named(server.addr(), "bob");
    assert_eq!(bob.ask("list"), "alice,bob,carol");
    alice.send("chat,bob,hi, bob: commas stay");
    assert_eq!(bob.line(), "from,alice,hi, bob: commas stay");
    assert_eq!(alice.ask("chat,dave,hi"), "error,no such user");
    bob.send("chat,*,hello all");
    assert_eq!(alice.line(), "from,bob,hello all");
    assert_eq!(carol.line(), "from,bob,hello all");
    // The sender does not hear its own broadcast: its next line is the
    // answer to its next command.
    assert_eq!(bob.ask("list"), "alice,bob,carol");
    alice.send("chat,alice,note to self");
    assert_eq!(alice.line(), "from,alice,note to self");
}

/// A name is freed by `quit` (and nothing after it is read) and by
/// leaving without it, at once, for anyone to take.
fn quit_and_disconnect_free_the_name(mode: Mode) {
    let server = chat_server(mode);
    let mut alice = Chatter::named(server.addr(), "alice");
    let mut bob = Chatter::named(server.addr(), "bob");
    // Everything after quit is not read, and the server closes.
    alice.send("quit\nchat,bob,never");
    assert_eq!(alice.until_closed(), Vec::<String>::new());
    // Freed at once: anyone may take it, and it is gone from the list.
    assert_eq!(bob.ask("list"), "bob");
    let mut second = Chatter::named(server.addr(), "alice");
    bob.send("chat,alice,for the new alice");
    assert_eq!(second.line(), "from,bob,for the new alice");
    // Leaving without quit (end of stream, or a reset) frees it too.
    drop(second);
    let mut carol = Chatter::named(server.addr(), "carol");
    carol.writer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(carol.until_closed(), Vec::<String>::new());
    wait_until("alice and carol leave the list", || {
        bob.ask("list") == "bob"
    });
}

/// Every kind of bad line gets its own error, and the connection goes on.
fn each_bad_input_is_answered(mode: Mode) {
    let server = chat_server(mode);
    let mut alice = Chatter::named(server.addr(), "alice");
    let mut bob = Chatter::named(server.addr(), "bob");
    for (line, reason) in [
        (&b"hello"[..], "unknown command"),
        (b"", "unknown command"),
        (b"list,friends", "usage: list"),
        (b"chat,bob", "usage: chat,<name>,<text>"),
        (b"chat,bob,\x1b[31mred", "control character in text"),
        (b"chat,bob,\xff", "not UTF-8"),
    ] {
        alice.send_bytes(line);
        alice.send_bytes(b"\n");
        assert_eq!(alice.line(), format!("error,{reason}"));
        // A good line between keeps the count of errors in a row low.
        assert_eq!(alice.ask("list"), "alice,bob");
    }
    // A line over the limit is answered once, before its end arrives.
    alice.send_bytes(&vec![b'x'; MAX_LINE + 1]);
    assert_eq!(alice.line(), "error,line longer than 4096 bytes");
    alice.send_bytes(&vec![b'x'; 3 * MAX_LINE]);
    alice.send("\nchat,bob,after the long line");
    assert_eq!(bob.line(), "from,alice,after the long line");
    // A line exactly at the limit is fine, and \r\n is a newline (its
    // \r counts).
    let text = "y".repeat(MAX_LINE - "chat,bob,\r".len());
    alice.send_bytes(format!("chat,bob,{text}\r\n").as_bytes());
    assert_eq!(bob.line(), format!("from,alice,{text}"));
    // Nothing bad reached bob: his next line is the next good one.
    alice.send("chat,bob,last");
    assert_eq!(bob.line(), "from,alice,last");
}

/// A client that sends nothing but garbage is told so and disconnected
/// after the allowed errors in a row; what it sends after is not carried
/// out, and its name is freed.
fn garbage_gets_a_client_disconnected(mode: Mode) {
    let server = chat_server(mode);
    let mut bob = Chatter::named(server.addr(), "bob");
    let mut pest = Chatter::named(server.addr(), "pest");
    for _ in 0..MAX_ERRORS {
        pest.send_bytes(b"\x00\x01\x02 garbage\n");
    }
    pest.send("chat,bob,never delivered");
    let told = pest.until_closed();
    assert_eq!(told.len(), MAX_ERRORS as usize + 1, "{told:?}");
    assert_eq!(told.last().unwrap(), "error,too many errors");
    assert_eq!(bob.ask("list"), "bob", "the name is freed");
}

/// A receiver that never reads is cut off once it is owed 256 KiB, and
/// neither its sender nor anybody else waits for it meanwhile.
fn a_slow_receiver_is_dropped_while_others_chat(mode: Mode) {
    let server = chat_server(mode);
    let slow_socket = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small receive buffer, so the server's buffers fill sooner.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr().into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    };
    let mut slow = Chatter {
        writer: slow_socket.try_clone().unwrap(),
        reader: BufReader::new(slow_socket),
    };
    assert_eq!(slow.ask("register,slow"), "ok");
    let mut alice = Chatter::named(server.addr(), "alice");
    let mut bob = Chatter::named(server.addr(), "bob");
    let text = "z".repeat(4000);
    let started = Instant::now();
    let mut sent = 0;
    loop {
        for _ in 0..64 {
            alice.send(&format!("chat,slow,{text}"));
            sent += 1;
        }
        // The others' conversation goes on, promptly, the whole time.
        alice.send("chat,bob,still here");
        assert_eq!(bob.line(), "from,alice,still here");
        // Once slow is gone, alice's lines to it are answered with an
        // error each, before the list.
        alice.send("list");
        let mut list = alice.line();
        let gone = list == "error,no such user";
        while list == "error,no such user" {
            list = alice.line();
        }
        if gone || list == "alice,bob" {
            assert_eq!(list, "alice,bob");
            break;
        }
        assert_eq!(list, "alice,bob,slow");
        assert!(
            sent < 20_000,
            "slow was owed {sent} lines of 4 KB and was not dropped"
        );
        assert!(started.elapsed() < PATIENCE, "slow was not dropped in time");
    }
    // Slow gets whole lines, then perhaps the reason, then the end.
    let lines = slow.until_closed();
    assert!(!lines.is_empty());
    for line in &lines[..lines.len() - 1] {
        assert_eq!(line, &format!("from,alice,{text}"));
    }
    let last = lines.last().unwrap();
    assert!(
        last == "error,too slow" || last == &format!("from,alice,{text}"),
        "{} bytes: {:.40}",
        last.len(),
        last
    );
    assert!(
        lines.len() < sent,
        "slow got everything, so was not too slow"
    );
}

/// A hundred clients, each sending twenty lines to others: every line
/// arrives once, whole, from the right sender.
fn a_hundred_clients_lose_nothing(mode: Mode) {
    const CLIENTS: usize = 100;
    const LINES: usize = 20;
    let server = chat_server(mode);
    let mut clients: Vec<Chatter> = (0..CLIENTS)
        .map(|i| Chatter::named(server.addr(), &format!("c{i}")))
        .collect();
    let mut expected = vec![Vec::new(); CLIENTS];
    for (i, client) in clients.iter_mut().enumerate() {
        let mut batch = String::new();
        for k in 0..LINES {
            let to = (i + 1 + k * 7) % CLIENTS;
            batch.push_str(&format!("chat,c{to},{i}:{k}\n"));
            expected[to].push(format!("from,c{i},{i}:{k}"));
        }
        client.send_bytes(batch.as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got: Vec<String> = (0..expected[i].len()).map(|_| client.line()).collect();
        // Lines from one sender keep their order; across senders, any.
        for sender in 0..CLIENTS {
            let prefix = format!("from,c{sender},");
            let from: Vec<&String> = got.iter().filter(|l| l.starts_with(&prefix)).collect();
            let wanted: Vec<&String> = expected[i]
                .iter()
                .filter(|l| l.starts_with(&prefix))
                .collect();
            assert_eq!(from, wanted, "c{i} from c{sender}");
        }
        got.sort();
        expected[i].sort();
        assert_eq!(got, expected[i], "c{i}");
    }
    // And nothing more: each one's next line answers its own list.
    for client in clients.iter_mut().take(5) {
        assert!(client.ask("list").starts_with("c0,c1,c10,"));
    }
}

/// SIGTERM mid-chat: the server says goodbye to every client and exits 0.
fn shutdown_while_chatting(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--protocol", "chat", "--quiet"]);
    let mut alice = Chatter::named(server.addr, "alice");
    let mut bob = Chatter::named(server.addr, "bob");
    for k in 0..100 {
        alice.send(&format!("chat,bob,{k}"));
    }
    assert_eq!(bob.line(), "from,alice,0");
    let (status, took, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert!(status.success(), "{status}: {stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    alice.until_closed();
    bob.until_closed();
    assert!(stderr.contains("served 2 connections, sent "), "{stderr}");
}

every_model!(
    chat: registration_rules,
    list_and_delivery,
    quit_and_disconnect_free_the_name,
    each_bad_input_is_answered,
    garbage_gets_a_client_disconnected,
    a_slow_receiver_is_dropped_while_others_chat,
    a_hundred_clients_lose_nothing,
    shutdown_while_chatting,
);

every_model!(one_thread, backends: delivery_on_every_backend);

/// Delivery does not depend on how a loop waits: the same test on every
/// readiness backend.
fn delivery_on_every_backend(mode: Mode) {
    list_and_delivery(mode);
}

/// Flags that make no sense for the chat are refused, each with why, not
/// silently ignored.
#[test]
fn what_the_chat_cannot_do_is_refused() {
    for (args, says) in [
        (
            &["--mode", "sequential"][..],
            "sequential serves one client at a time",
        ),
        (
            &["--mode", "selector", "--threads", "2"],
            "--threads does not apply to --protocol chat",
        ),
        (
            &["--mode", "threadpool", "--workers", "4"],
            "--workers and --queue does not apply",
        ),
        (
            &["--mode", "async", "--idle-timeout", "1s"],
            "--idle-timeout does not apply",
        ),
        (
            &["--mode", "async", "--work", "cpu:1ms"],
            "--work does not apply",
        ),
    ] {
        let mut full = vec!["serve", "--protocol", "chat", "--addr", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let (code, _, stderr) = run_binary(&full);
        assert!(code.is_some_and(|c| c != 0), "{args:?} exited {code:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

fn chat_bench(addr: SocketAddr, connections: usize) -> ChatBenchConfig {
    ChatBenchConfig {
        addr: addr.into(),
        hogs: 0,
        connections,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        depth: 2,
        server_pid: None,
    }
}

/// The chat bench checks every line on every model, and finds none wrong.
fn the_bench_delivers_and_checks_every_line(mode: Mode) {
    let server = chat_server(mode);
    let results = bench::chat::run(&chat_bench(server.addr(), 10), |_, _| {}).unwrap();
    assert_eq!(results.errors, 0, "{:?}", results.error_samples);
    assert!(results.delivered > 0);
    assert!(results.latency_us.p99 >= results.latency_us.p50);
    // Every client said quit: the room empties.
    let mut last = Chatter::named(server.addr(), "last");
    wait_until("the bench's clients leave", || last.ask("list") == "last");
}

every_model!(chat: the_bench_delivers_and_checks_every_line);

/// A server that delivers each line back to its own sender: the bench
/// must call that an error, not a delivery.
#[test]
fn the_bench_catches_a_line_delivered_to_the_wrong_client() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            std::thread::spawn(move || {
                let stream = stream.unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut name = String::new();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if let Some(me) = line.strip_prefix("register,") {
                        name = me.to_owned();
                        let _ = writer.write_all(b"ok\n");
                    } else if let Some(rest) = line.strip_prefix("chat,") {
                        let text = rest.split_once(',').unwrap().1;
                        let _ = writer.write_all(format!("from,{name},{text}\n").as_bytes());
                    }
                }
            });
        }
    });
    let results = bench::chat::run(&chat_bench(addr, 2), |_, _| {}).unwrap();
    assert!(results.failed());
    assert!(
        results.error_samples[0].contains("not in flight")
            || results.error_samples[0].contains("reached client"),
        "{:?}",
        results.error_samples
    );
}

/// `bench --protocol chat` refuses the echo's flags, each with why.
#[test]
fn the_bench_refuses_what_does_not_apply_to_chat() {
    for (flag, value) in [
        ("--size", "100"),
        ("--rate", "10"),
        ("--idle", "5"),
        ("--threads", "2"),
    ] {
        let (code, _, stderr) = run_binary(&["bench", "--protocol", "chat", flag, value]);
        assert_eq!(code, Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag} does not apply to --protocol chat")),
            "{stderr}"
        );
    }
    let (code, _, stderr) = run_binary(&["bench", "--protocol", "chat", "-c", "1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("at least 2 connections"), "{stderr}");
}

/// `compare --protocol chat` sweeps the models that host the chat (`all`
/// leaves sequential out, and completion where there is no io_uring),
/// loads them with the chat bench, and says so in its results.
#[test]
fn compare_sweeps_the_chat() {
    let out = std::env::temp_dir().join(format!("echo-lab-compare-chat-{}", std::process::id()));
    let (status, stdout, stderr) = run_binary(&[
        "compare",
        "--protocol",
        "chat",
        "-c",
        "3",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest/results.json")).unwrap())
            .unwrap();
    assert_eq!(json["protocol"], "chat");
    let rows = json["rows"].as_array().unwrap();
    let servers: Vec<&str> = rows.iter().map(|r| r["server"].as_str().unwrap()).collect();
    let mut expected = vec!["threadpool", "selector", "statemachine", "async"];
    if echo_lab::serve::completion::available().is_ok() {
        expected.push("completion");
    }
    assert_eq!(servers, expected);
    for row in rows {
        assert_eq!(row["results"]["errors"], 0, "{row}");
        assert!(row["results"]["messages"].as_u64().unwrap() > 0, "{row}");
        assert!(row["note"].is_null(), "{row}");
    }
    let _ = std::fs::remove_dir_all(&out);
    let (status, _, stderr) =
        run_binary(&["compare", "--protocol", "chat", "--modes", "sequential"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "--modes does not apply to --protocol chat: sequential does not host the chat"
        ),
        "{stderr}"
    );
}

/// Two people in two terminals: `echo-lab client --protocol chat --name`
/// prints what others send while its own input is still open.
#[test]
fn the_client_shows_incoming_lines_while_its_user_types() {
    use std::process::{Command, Stdio};
    let server = chat_server(Mode::Selector);
    let addr = server.addr().to_string();
    let mut alice = Command::new(crate::common::binary())
        .args([
            "client",
            "--protocol",
            "chat",
            "--name",
            "alice",
            "--addr",
            &addr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut typed = alice.stdin.take().unwrap();
    let mut screen = BufReader::new(alice.stdout.take().unwrap());
    let mut seen = String::new();
    screen.read_line(&mut seen).unwrap();
    assert_eq!(seen, "ok\n");
    // Bob speaks while alice has typed nothing yet: it appears.
    let mut bob = Chatter::named(server.addr(), "bob");
    bob.send("chat,alice,are you there?");
    seen.clear();
    screen.read_line(&mut seen).unwrap();
    assert_eq!(seen, "from,bob,are you there?\n");
    typed.write_all(b"chat,bob,yes\n").unwrap();
    assert_eq!(bob.line(), "from,alice,yes");
    // The end of her input is a goodbye: the server closes, she exits 0.
    drop(typed);
    let output = crate::common::wait_with_patience(alice);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(bob.ask("list"), "bob");
}

/// `client --name` without `--protocol chat` is refused: a name means a chat.
#[test]
fn the_clients_name_needs_the_chat() {
    let (code, _, stderr) = run_binary(&["client", "--name", "alice"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--name registers in a chat: give --protocol chat too"),
        "{stderr}"
    );
}
