//! The completion model (`serve --mode completion`, io_uring) where the
//! kernel does not offer io_uring: one line pointing to `--mode async`,
//! and the tests that need the ring say they skipped.
//!
//! Everything else the completion model promises is in the conformance,
//! hardening, event-loop, statistics and tool tests, which run it beside
//! every other model.

use std::process::Command;

use crate::common::binary;

/// `ECHO_LAB_NO_IO_URING` takes the branch a kernel without io_uring
/// takes: a one-line error naming the reason and the way out, before
/// listening, and a non-zero exit.
#[test]
fn without_io_uring_the_server_says_why_and_where_to_go() {
    let output = Command::new(binary())
        .args(["serve", "--mode", "completion", "--addr", "127.0.0.1:0"])
        .env(echo_lab::serve::completion::DISABLE_VAR, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "it listened first");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("io_uring is not available here: ECHO_LAB_NO_IO_URING is set; --mode async serves the same clients"),
        "{stderr}"
    );
}

/// A test that needs the ring, run where there is none, passes and says
/// it skipped and why (the suite's other tests still run).
#[test]
fn tests_that_need_the_ring_skip_and_say_so() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conformance::echoes_a_short_message::completion",
            "--nocapture",
        ])
        .env(echo_lab::serve::completion::DISABLE_VAR, "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("1 passed"), "{out}");
    assert!(
        out.contains("skipped: completion needs io_uring, and ECHO_LAB_NO_IO_URING is set"),
        "{out}"
    );
}
