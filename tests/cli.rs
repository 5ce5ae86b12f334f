//! The command line fails well: every bad input is one clear line on stderr
//! and a non-zero exit, never a panic; help and version read well.

use std::net::{SocketAddr, TcpListener};

use crate::common::{BinaryServer, binary, run_binary, run_into_closed_pipe};

/// Asserts a clean failure: the expected exit code, the expected words on
/// stderr, and no panic or backtrace.
fn assert_fails(args: &[&str], code: i32, words: &str) {
    let (status, stdout, stderr) = run_binary(args);
    let shown = format!("echo-lab {args:?}\nstatus {status:?}\nstdout {stdout}\nstderr {stderr}");
    assert_eq!(status, Some(code), "{shown}");
    assert!(stderr.contains(words), "{shown}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{shown}"
    );
}

/// `--version` names the version and, built from a git checkout, the
/// commit (as the build recorded it for saved results).
#[test]
fn version_names_the_commit() {
    let (code, stdout, _) = run_binary(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(&format!("echo-lab {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let commit = option_env!("ECHO_LAB_GIT_COMMIT").unwrap_or_default();
    if !commit.is_empty() {
        assert!(stdout.contains(&format!("(commit {commit})")), "{stdout}");
    }
}

/// `completions SHELL` prints a script for each shell, and bash accepts
/// its own (`bash -n`). Completions come from the same clap definitions as
/// `--help`, so they name the same subcommands.
#[test]
fn completions_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, stdout, stderr) = run_binary(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(
            stdout.contains("serve") && stdout.contains("compare"),
            "{shell}"
        );
    }
    let (_, script, _) = run_binary(&["completions", "bash"]);
    let path = std::env::temp_dir().join(format!("echo-lab-{}.bash", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(checked.status.success(), "{checked:?}");
    let (code, _, stderr) = run_binary(&["completions", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("possible values: bash"), "{stderr}");
}

/// What bash offers for the command line `words` (the last one the word
/// being completed) with echo-lab's completion script sourced, as a
/// user's shell would after `source <(echo-lab completions bash)`.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_echo__lab echo-lab '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Completion goes on past the subcommand: its flags, and a flag's values
/// (clap_complete's bash script for a hyphenated name matched nothing
/// after the subcommand, clap-rs/clap#6421). Run in bash itself; zsh and
/// fish are checked where installed (by `zsh -n` and `fish -n`), and say
/// they were skipped where not.
#[test]
fn completion_reaches_flags_and_their_values() {
    let (_, script, _) = run_binary(&["completions", "bash"]);
    let path = std::env::temp_dir().join(format!("echo-lab-complete-{}.bash", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let offered = |words: &[&str]| bash_completes(&path, words);
    assert!(offered(&["echo-lab", "se"]).contains(&"serve".to_owned()));
    assert!(
        !offered(&["echo-lab", ""])
            .iter()
            .any(|w| w.contains("offload"))
    );
    assert_eq!(offered(&["echo-lab", "serve", "--mo"]), ["--mode"]);
    let backends = offered(&["echo-lab", "serve", "--poller", ""]);
    for backend in ["polling", "epoll", "poll", "spin"] {
        assert!(backends.contains(&backend.to_owned()), "{backends:?}");
    }
    assert_eq!(offered(&["echo-lab", "bench", "--pro"]), ["--protocol"]);
    let _ = std::fs::remove_file(&path);
    for (shell, flag) in [("zsh", "-n"), ("fish", "--no-execute")] {
        let (_, script, _) = run_binary(&["completions", shell]);
        let path = std::env::temp_dir().join(format!("echo-lab-{}.{shell}", std::process::id()));
        std::fs::write(&path, script).unwrap();
        match std::process::Command::new(shell)
            .arg(flag)
            .arg(&path)
            .output()
        {
            Ok(checked) => assert!(checked.status.success(), "{shell}: {checked:?}"),
            Err(_) => eprintln!("skipped: checking the {shell} script ({shell} is not installed)"),
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// `man` prints the top-level page, which refers to a page per subcommand,
/// and `man SUBCOMMAND` prints each of those; every page renders (through
/// groff, where installed) without a warning.
#[test]
fn every_man_page_renders() {
    let (code, page, _) = run_binary(&["man"]);
    assert_eq!(code, Some(0));
    assert!(page.contains(".TH echo-lab 1"), "{page}");
    let mut pages = vec![page];
    for name in echo_lab::cli::SUBCOMMANDS {
        assert!(
            pages[0].contains(&format!("echo\\-lab\\-{name}(1)")),
            "the top page does not refer to echo-lab-{name}(1)"
        );
        let (code, page, stderr) = run_binary(&["man", name]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert!(page.contains(&format!(".TH echo-lab-{name} 1")), "{page}");
        pages.push(page);
    }
    let (code, _, stderr) = run_binary(&["man", "nope"]);
    assert_eq!(code, Some(2), "{stderr}");
    for page in pages {
        let rendered = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut groff) = rendered else {
            eprintln!("skipped: rendering the man pages (groff is not installed)");
            return;
        };
        use std::io::Write as _;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let output = groff.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(warnings.is_empty(), "{warnings}\n{page}");
    }
}

/// A tool whose reader has gone (`| head`) ends quietly with status 0, as
/// `ls | head` does, never with a panic.
#[test]
fn a_closed_stdout_ends_a_tool_quietly() {
    for args in [&["man"][..], &["man", "serve"], &["completions", "bash"]] {
        let (code, stderr) = run_into_closed_pipe(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A `--work` whose kind is right and whose duration is wrong gets one
/// clause about the duration, not two "expected ..." run together.
#[test]
fn a_bad_work_duration_is_one_clear_clause() {
    assert_fails(&["serve", "--work", "cpu:abc"], 2, "the duration 'abc'");
    let (_, _, stderr) = run_binary(&["serve", "--work", "cpu:abc"]);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(first.matches("expected").count(), 1, "{first}");
    assert_fails(&["serve", "--work", "hot:1ms"], 2, "expected cpu:DURATION");
}

/// A port in use: exit 1 and one line that names the address, for every
/// model and every `--threads`, even when the holder shares its port with
/// SO_REUSEPORT (which would let a second `--threads` group join it).
#[test]
fn port_in_use_names_the_address() {
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let shared = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    shared.set_reuse_port(true).unwrap();
    shared
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    shared.listen(8).unwrap();
    let shared_addr = shared.local_addr().unwrap().as_socket().unwrap();
    for taken in [plain.local_addr().unwrap(), shared_addr] {
        let addr = taken.to_string();
        for args in [
            &["--mode", "sequential"][..],
            &["--mode", "threadpool"],
            &["--mode", "selector"],
            &["--mode", "selector", "--threads", "2"],
            &["--mode", "async", "--threads", "0"],
        ] {
            let mut command = vec!["serve", "--addr", &addr];
            command.extend_from_slice(args);
            let (status, stdout, stderr) = run_binary(&command);
            assert_eq!(status, Some(1), "{command:?}: {stderr}");
            assert_eq!(stdout, "");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.starts_with(&format!(
                    "echo-lab: cannot listen on {addr}: address already in use (another server holds it"
                )),
                "{stderr}"
            );
            assert!(stderr.contains("ECHO_LAB_ADDR=127.0.0.1:PORT"), "{stderr}");
        }
    }
}

/// `ECHO_LAB_ADDR` is every subcommand's default address: a server
/// started with it listens there, and a client, a probe and a bench given
/// only the variable find it; `--addr` still wins over it.
#[test]
fn echo_lab_addr_moves_every_subcommand() {
    use std::process::{Command, Stdio};
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(binary())
        .args(["serve", "--quiet"])
        .env("ECHO_LAB_ADDR", &addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), format!("listening on {addr}"));
    for args in [
        &["probe", "--clients", "2", "--hold", "0s"][..],
        &["bench", "-c", "2", "-d", "200ms", "--warmup", "0s"],
    ] {
        let output = Command::new(binary())
            .args(args)
            .env("ECHO_LAB_ADDR", &addr)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
    // `--addr` wins: nothing listens on port 1.
    let refused = Command::new(binary())
        .args([
            "probe",
            "--addr",
            "127.0.0.1:1",
            "--clients",
            "1",
            "--timeout",
            "1s",
        ])
        .env("ECHO_LAB_ADDR", &addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let _ = server.kill();
    let _ = server.wait();
}

/// A second `serve --threads 2` on the port of a running one is refused:
/// the first server's group of listeners is its own.
#[test]
fn a_group_of_loops_cannot_be_joined() {
    let first = BinaryServer::start(&["--mode", "selector", "--threads", "2", "--quiet"]);
    let addr = first.addr.to_string();
    let (status, _, stderr) = run_binary(&[
        "serve",
        "--mode",
        "statemachine",
        "--threads",
        "2",
        "--addr",
        &addr,
    ]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
}

/// A flag that belongs to other models is refused, in one sentence shape,
/// instead of being silently ignored.
#[test]
fn flags_of_other_models_are_refused() {
    for (args, words) in [
        (
            &["--mode", "selector", "--workers", "4"][..],
            "--workers applies to threadpool only, not to selector",
        ),
        (
            &["--mode", "async", "--queue", "0"],
            "--queue applies to threadpool only, not to async",
        ),
        (
            &["--mode", "sequential", "--threads", "1"],
            "--threads applies to selector, statemachine, async and completion only, not to sequential",
        ),
        (
            &["--mode", "threadpool", "--threads", "2"],
            "--threads applies to selector, statemachine, async and completion only, not to threadpool",
        ),
        (
            &["--mode", "sequential", "--poller", "poll"],
            "--poller applies to selector, statemachine and async only, not to sequential",
        ),
        (
            &["--mode", "selector", "--trace"],
            "--trace applies to statemachine and async only, not to selector",
        ),
    ] {
        let mut command = vec!["serve", "--addr", "127.0.0.1:0"];
        command.extend_from_slice(args);
        assert_fails(&command, 1, words);
    }
}

/// Malformed values are rejected by the parser with exit code 2.
#[test]
fn malformed_arguments_exit_2() {
    assert_fails(&["serve", "--addr", "localhost"], 2, "no port");
    assert_fails(&["serve", "--addr", "127.0.0.1:99999"], 2, "port '99999'");
    assert_fails(&["serve", "--addr", "::1:80"], 2, "brackets");
    assert_fails(&["serve", "--addr", ""], 2, "empty address");
    assert_fails(&["serve", "--workers", "0"], 2, "--workers");
    assert_fails(&["serve", "--workers", "-3"], 2, "'-3'");
    assert_fails(&["serve", "--backlog", "x"], 2, "--backlog");
    assert_fails(&["serve", "--idle-timeout", "30"], 2, "no unit");
    assert_fails(&["serve", "--idle-timeout", "0s"], 2, "longer than zero");
    assert_fails(
        &["serve", "--idle-timeout=-1s"],
        2,
        "does not start with a number",
    );
    assert_fails(
        &["serve", "--mode", "nope"],
        2,
        "possible values: sequential, threads, forking, threadpool, selector, statemachine, generator, async",
    );
    assert_fails(&["frobnicate"], 2, "unrecognized subcommand");
    assert_fails(
        &["serve", "--max-connections", "0"],
        2,
        "must be at least 1",
    );
    assert_fails(&["serve", "--workers", "0"], 2, "must be at least 1");
    assert_fails(
        &["serve", "--poller", "select"],
        2,
        "possible values: polling, epoll, poll",
    );
    assert_fails(&["bench", "--size", "4"], 2, "at least 12 bytes");
    assert_fails(&["compare", "--size", "11"], 2, "at least 12 bytes");
}

/// Help lists every model with its one-line description; version prints.
#[test]
fn help_and_version_read_well() {
    let (status, stdout, _) = run_binary(&["serve", "--help"]);
    assert_eq!(status, Some(0));
    for line in [
        "sequential:",
        "threadpool:",
        "selector:",
        "statemachine:",
        "generator:",
        "async:",
        "--idle-timeout <DURATION>",
        "[default: 127.0.0.1:55555]",
    ] {
        assert!(
            stdout.contains(line),
            "serve --help lacks {line:?}:\n{stdout}"
        );
    }
    let (status, stdout, _) = run_binary(&["--version"]);
    assert_eq!(status, Some(0));
    assert!(
        stdout.starts_with(&format!("echo-lab {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let (status, stdout, _) = run_binary(&["--help"]);
    assert_eq!(status, Some(0));
    assert!(stdout.contains("serve"), "{stdout}");
}

/// The help tells the truth: no model count (there are `Mode::ALL` of
/// them), no rustdoc link leaking into a flag's text, the chat's models
/// and the four backends named.
#[test]
fn the_help_names_what_exists() {
    let (_, top, _) = run_binary(&["--help"]);
    for word in ["six", "seven", "five"] {
        assert!(!top.contains(word), "{word}: {top}");
    }
    let (_, serve, _) = run_binary(&["serve", "--help"]);
    assert!(!serve.contains("super::"), "{serve}");
    assert!(serve.contains("on threads and threadpool"), "{serve}");
    for backend in ["`polling`", "`epoll`", "`poll`", "`spin`"] {
        assert!(serve.contains(backend), "{backend}: {serve}");
    }
}

/// A garbage `ECHO_LAB_ADDR` is reported as the variable's, not as a
/// `--addr` the user never typed; with `--addr` given, the variable does
/// not matter.
#[test]
fn a_bad_address_variable_is_named() {
    let output = std::process::Command::new(binary())
        .args(["probe"])
        .env("ECHO_LAB_ADDR", "garbage")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ECHO_LAB_ADDR='garbage'"), "{stderr}");
    assert!(!stderr.contains("--addr <"), "{stderr}");
    let output = std::process::Command::new(binary())
        .args(["man", "serve"])
        .env("ECHO_LAB_ADDR", "garbage")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
}

/// A port that is taken on the wildcard address gets a hint that keeps
/// the wildcard: only the port must change.
#[test]
fn a_taken_port_hint_keeps_the_host() {
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let addr = format!("0.0.0.0:{}", taken.local_addr().unwrap().port());
    let (code, _, stderr) = run_binary(&["serve", "--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--addr 0.0.0.0:PORT"), "{stderr}");
}
