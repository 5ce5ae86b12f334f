//! The completion model (`serve --mode completion`, io_uring) where the
//! kernel does not offer io_uring: one line pointing to `--mode async`,
//! compare going on without it, and the tests that need the ring saying
//! they skipped.
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

/// compare where there is no io_uring: `--modes completion` is refused at
/// once with the same line, and `all` measures the other five, saying it
/// left completion out.
#[test]
fn compare_without_io_uring_leaves_completion_out_or_refuses_it() {
    let out = std::env::temp_dir().join(format!("echo-lab-no-ring-{}", std::process::id()));
    let compare = |modes: &str| {
        Command::new(binary())
            .args(["compare", "--modes", modes, "-c", "1", "-d", "100ms"])
            .args(["--warmup", "0s", "--out"])
            .arg(&out)
            .env(echo_lab::serve::completion::DISABLE_VAR, "1")
            .output()
            .unwrap()
    };
    let refused = compare("selector,completion");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(refused.stdout.is_empty(), "it ran something first");
    assert!(
        stderr.contains("io_uring is not available here"),
        "{stderr}"
    );

    let all = compare("all");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&all.stdout),
        String::from_utf8_lossy(&all.stderr),
    );
    assert!(all.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("compare: leaving out completion: io_uring is not available here"),
        "{stderr}"
    );
    assert!(stdout.contains("async"), "{stdout}");
    assert!(!stdout.contains("completion "), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
