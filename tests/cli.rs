//! The command line fails well: every bad input is one clear line on stderr
//! and a non-zero exit, never a panic; help and version read well.

use std::net::TcpListener;

use crate::common::run_binary;

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

/// A port in use: exit 1 and one line that names the address.
#[test]
fn port_in_use_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for mode in ["sequential", "threadpool"] {
        let (status, stdout, stderr) = run_binary(&["serve", "--mode", mode, "--addr", &addr]);
        assert_eq!(status, Some(1), "{stderr}");
        assert_eq!(stdout, "");
        assert_eq!(
            stderr,
            format!("echo-lab: cannot listen on {addr}: address already in use\n")
        );
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
        "possible values: sequential, threadpool",
    );
    assert_fails(&["frobnicate"], 2, "unrecognized subcommand");
    assert_fails(
        &[
            "serve",
            "--mode",
            "threadpool",
            "--threads",
            "2",
            "--addr",
            "127.0.0.1:0",
        ],
        1,
        "--workers",
    );
    assert_fails(&["serve", "--max-connections", "0"], 2, "--max-connections");
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
    assert_eq!(stdout, format!("echo-lab {}\n", env!("CARGO_PKG_VERSION")));
    let (status, stdout, _) = run_binary(&["--help"]);
    assert_eq!(status, Some(0));
    assert!(stdout.contains("serve"), "{stdout}");
}
