//! What stalls a one-thread loop, and what does not: `--work`, `--offload`,
//! `--global-lock` and the stall warning, held to the shapes chapter 7 of
//! the tutorial promises. Each work step is 200 ms, far above a noisy
//! machine's jitter. "One at a time" is judged by a causal lower bound
//! (load cannot break it), "together" by half the span one at a time
//! would take (see tests/README.md).

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::common::*;
use echo_lab::lab::work::parse_work;
use echo_lab::serve::{Config, Mode};
use echo_lab::tools::bench::{self, BenchConfig};
use echo_lab::tools::probe::{self, ProbeConfig};
use socket2::SockRef;

/// One step of work in these tests.
const STEP: Duration = Duration::from_millis(200);

/// A quiet configuration with `--work spec` and `--offload offload`.
fn working(spec: &str, offload: usize) -> Config {
    Config {
        work: Some(parse_work(spec).unwrap()),
        offload,
        ..quiet()
    }
}

/// When each of `clients` probe clients got its echo, in seconds from the
/// start, earliest first; each holds its connection for `hold`.
fn echo_times(addr: SocketAddr, clients: usize, hold: Duration) -> Vec<f64> {
    let report = probe::run(&ProbeConfig {
        addr: addr.into(),
        clients,
        hold,
        timeout: PATIENCE,
    });
    assert!(report.all_ok(), "{report:?}");
    let mut echoed: Vec<f64> = report.clients.iter().filter_map(|c| c.echoed).collect();
    echoed.sort_by(f64::total_cmp);
    echoed
}

/// Served one after another. Judged by a bound that load cannot break:
/// every client sent at once, so served one at a time the k-th echo (from
/// 0) cannot come before its k + 1 steps of work are done; delays only make
/// echoes later. Served together, the second echo would come after one
/// step, well under the two this asks (the margin: a tenth of a step for
/// the clocks).
fn assert_one_at_a_time(echoed: &[f64], what: &str) {
    for (k, &at) in echoed.iter().enumerate() {
        assert!(
            at >= (k + 1) as f64 * STEP.as_secs_f64() * 0.9,
            "{what}: echoes at {echoed:?} are not a step apart"
        );
    }
}

/// Served together: every echo within half of what one at a time would
/// span (a staircase of n spans n - 1 steps). Load can only delay some
/// echoes; the margin it has is (n - 1) / 2 steps, 400 ms for five.
fn assert_all_at_once(echoed: &[f64], what: &str) {
    let spread = echoed[echoed.len() - 1] - echoed[0];
    let staircase = (echoed.len() - 1) as f64 * STEP.as_secs_f64();
    assert!(
        spread < staircase / 2.0,
        "{what}: echoes at {echoed:?} are not together"
    );
}

/// A blocking sleep inside a loop's handler stalls every client: five
/// clients, their sleeps one after another, so the k-th echo comes at
/// least k - 1/2 steps after the start. A readiness loop writes each echo
/// as its sleep ends, 200 ms apart; the completion loop submits its sends
/// when the turn ends, so the echoes of one stalled turn leave together,
/// after every sleep of that turn.
fn a_blocking_sleep_stalls_the_loop(mode: Mode) {
    let server = start_with(mode, working("sleep:200ms", 0));
    let echoed = echo_times(server.addr(), 5, Duration::ZERO);
    for (k, at) in (1..).zip(&echoed) {
        assert!(
            *at >= (f64::from(k) - 0.5) * STEP.as_secs_f64(),
            "{mode}: echo {k} at {at}, sooner than {k} sleeps in a row: {echoed:?}"
        );
    }
    if mode != Mode::Completion {
        assert_one_at_a_time(&echoed, mode.name());
    }
}

/// The loop's own wait (a timer, a yielded deadline, an awaited sleep)
/// stalls nobody: five clients, echoed together.
fn the_loops_own_wait_stalls_nobody(mode: Mode) {
    let server = start_with(mode, working("wait:200ms", 0));
    assert_all_at_once(&echo_times(server.addr(), 5, Duration::ZERO), mode.name());
}

/// The same blocking sleep on an offload pool of five: echoed together.
fn offloaded_sleep_stalls_nobody(mode: Mode) {
    let server = start_with(mode, working("sleep:200ms", 5));
    assert_all_at_once(&echo_times(server.addr(), 5, Duration::ZERO), mode.name());
}

/// CPU work on a pool of two: at most two at a time, so the third echo
/// comes at least a step after the first.
fn offloaded_cpu_runs_two_at_a_time(mode: Mode) {
    let server = start_with(mode, working("cpu:200ms", 2));
    let echoed = echo_times(server.addr(), 4, Duration::ZERO);
    for i in 0..2 {
        assert!(
            echoed[i + 2] - echoed[i] >= STEP.as_secs_f64() / 2.0,
            "{mode}: more than two at once: {echoed:?}"
        );
    }
}

/// With work offloaded and clients pipelining, every byte still comes back
/// in order: bench checks each one.
fn offloaded_work_keeps_bytes_in_order(mode: Mode) {
    let server = start_with(mode, working("sleep:1ms", 4));
    let config = BenchConfig {
        addr: server.addr().into(),
        hogs: 0,
        connections: 8,
        idle: 0,
        duration: Duration::from_millis(700),
        warmup: Duration::ZERO,
        size: 700,
        depth: 4,
        rate: None,
        threads: 1,
        pin_cpu: None,
        server_pid: None,
        churn: false,
    };
    let results = bench::run(&config, |_, _| {}).unwrap();
    assert_eq!(results.errors, 0, "{mode}: {results:?}");
    assert!(results.messages > 0, "{mode}: {results:?}");
}

/// A client that resets while its chunk is on the pool costs nothing else:
/// its job finishes and finds no one, the others are served, and the
/// server holds no connection afterwards.
fn a_client_that_leaves_during_its_job_leaks_nothing(mode: Mode) {
    let server = start_with(mode, working("sleep:300ms", 1));
    let mut leaver = connect(server.addr());
    leaver.write_all(b"gone before the echo").unwrap();
    SockRef::from(&leaver)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(leaver); // A reset, while its job sleeps.
    let mut stayer = connect(server.addr());
    assert_echo(&mut stayer, b"still served");
    drop(stayer);
    wait_until("no connection is held", || server.stats().active() == 0);
}

/// A client whose chunk is with its work is busy, not idle: a wait three
/// times `--idle-timeout` long still ends in its echo.
fn a_client_waiting_for_its_work_is_not_idle(mode: Mode) {
    let config = Config {
        idle_timeout: Some(STEP),
        ..working("wait:600ms", 0)
    };
    let server = start_with(mode, config);
    let mut client = connect(server.addr());
    assert_echo(&mut client, b"worth the wait");
}

/// Shutdown does not wait for a long job: a server whose pool computes for
/// ten seconds still stops within two of SIGTERM, cleanly.
fn shutdown_with_a_job_running_is_prompt(mode: Mode) {
    let server = BinaryServer::start(&[
        "--mode",
        mode.name(),
        "--quiet",
        "--work",
        "cpu:10s",
        "--offload",
        "1",
    ]);
    let mut client = connect(server.addr);
    client.write_all(b"a long job").unwrap();
    wait_until("the job is computing", || {
        server.cpu_time() > Duration::from_millis(100)
    });
    let (status, took, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{mode}: {stderr}");
    assert!(took < Duration::from_secs(2), "{mode}: took {took:?}");
}

/// A stalled loop says so on stderr, `--quiet` or not, once, with what to
/// do, and the summary counts it; `--slow-handler 0` silences it.
fn a_stall_is_reported(mode: Mode) {
    for (extra, warned) in [(None, true), (Some("0"), false)] {
        let mut args = vec!["--mode", mode.name(), "--quiet", "--work", "sleep:200ms"];
        if let Some(threshold) = extra {
            args.extend(["--slow-handler", threshold]);
        }
        let server = BinaryServer::start(&args);
        let mut client = connect(server.addr);
        assert_echo(&mut client, b"slow");
        drop(client);
        let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
        assert_eq!(status.code(), Some(0), "{stderr}");
        let line = format!("warning: the {mode} loop ran");
        assert_eq!(stderr.contains(&line), warned, "{mode} {extra:?}: {stderr}");
        assert_eq!(stderr.contains("--offload N"), warned, "{stderr}");
        assert_eq!(stderr.contains("stalled 1 time"), warned, "{stderr}");
    }
}

every_model!(
    loops: a_blocking_sleep_stalls_the_loop,
    the_loops_own_wait_stalls_nobody,
    offloaded_sleep_stalls_nobody,
    offloaded_cpu_runs_two_at_a_time,
    offloaded_work_keeps_bytes_in_order,
    a_client_that_leaves_during_its_job_leaks_nothing,
    a_client_waiting_for_its_work_is_not_idle,
    shutdown_with_a_job_running_is_prompt,
    a_stall_is_reported,
);

/// In the thread pool a blocking sleep holds only its own worker: five
/// clients, echoed together. Threads are where a blocking call is harmless.
#[test]
fn the_thread_pool_sleeps_in_parallel() {
    let server = start_with(Mode::Threadpool, working("sleep:200ms", 0));
    assert_all_at_once(&echo_times(server.addr(), 5, Duration::ZERO), "threadpool");
}

/// With `--global-lock`, our GIL, CPU work in the pool runs one worker at
/// a time: four clients, a step apart.
#[test]
fn the_global_lock_serialises_cpu_work() {
    let config = Config {
        global_lock: true,
        workers: NonZeroUsize::new(4).unwrap(),
        ..working("cpu:200ms", 0)
    };
    let server = start_with(Mode::Threadpool, config);
    assert_one_at_a_time(&echo_times(server.addr(), 4, Duration::ZERO), "global lock");
}

/// ...and sleeping releases it, as `time.sleep` releases the GIL: sleep
/// work under the lock is still served together.
#[test]
fn the_global_lock_is_released_while_sleeping() {
    let config = Config {
        global_lock: true,
        ..working("sleep:200ms", 0)
    };
    let server = start_with(Mode::Threadpool, config);
    assert_all_at_once(&echo_times(server.addr(), 4, Duration::ZERO), "global lock");
}

/// The blocking models do `wait` work as what it is for a thread, a
/// blocking sleep: sequential serves one at a time.
#[test]
fn sequential_waits_by_sleeping() {
    let server = start_with(Mode::Sequential, working("wait:200ms", 0));
    let started = Instant::now();
    assert_one_at_a_time(&echo_times(server.addr(), 3, Duration::ZERO), "sequential");
    assert!(started.elapsed() >= 3 * STEP);
}

/// Bad `--work`, `--offload` or `--global-lock` is one line and a non-zero
/// exit, naming what is accepted.
#[test]
fn bad_work_flags_are_refused() {
    for (args, code, words) in [
        (
            &["--work", "io:2ms"][..],
            2,
            "cpu:DURATION, sleep:DURATION or wait:DURATION",
        ),
        (&["--work", "cpu"], 2, "cpu:DURATION"),
        (&["--work", "cpu:0s"], 2, "longer than zero"),
        (
            &[
                "--mode",
                "threadpool",
                "--work",
                "cpu:1ms",
                "--offload",
                "2",
            ],
            1,
            "--offload applies to selector, statemachine, async and completion only, not to threadpool",
        ),
        (
            &[
                "--mode",
                "sequential",
                "--work",
                "cpu:1ms",
                "--offload",
                "2",
            ],
            1,
            "not to sequential",
        ),
        (
            &["--offload", "2"],
            1,
            "--offload and --offload-processes run --work cpu",
        ),
        (
            &["--offload-processes", "2"],
            1,
            "--offload and --offload-processes run --work cpu",
        ),
        (
            &[
                "--work",
                "cpu:1ms",
                "--offload",
                "2",
                "--offload-processes",
                "2",
            ],
            2,
            "cannot be used with",
        ),
        (
            &[
                "--mode",
                "threadpool",
                "--work",
                "cpu:1ms",
                "--offload-processes",
                "2",
            ],
            1,
            "--offload-processes applies to selector, statemachine, async and completion only",
        ),
        (
            &["--work", "wait:1ms", "--offload", "2"],
            1,
            "wait never blocks",
        ),
        (
            &["--mode", "selector", "--global-lock", "--work", "cpu:1ms"],
            1,
            "give --offload or --offload-processes",
        ),
        (
            &["--mode", "threads", "--global-lock", "--work", "cpu:1ms"],
            1,
            "--global-lock applies to threadpool, selector, statemachine, async and completion only",
        ),
        (
            &["--mode", "threadpool", "--global-lock"],
            1,
            "give --work too",
        ),
        (
            &["--mode", "threadpool", "--slow-handler", "1s"],
            1,
            "not to threadpool",
        ),
    ] {
        let mut command = vec!["serve", "--addr", "127.0.0.1:0"];
        command.extend_from_slice(args);
        let (status, stdout, stderr) = run_binary(&command);
        assert_eq!(status, Some(code), "{command:?}: {stderr}");
        assert_eq!(stdout, "", "{command:?}");
        assert!(stderr.contains(words), "{command:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
