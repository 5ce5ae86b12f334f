//! Helpers shared by the integration tests: start a server on port 0, talk
//! to it with timeouts on every blocking call, run the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use echo_lab::poller::Backend;
use echo_lab::serve::{Config, Mode, Server};

/// The longest any single step of a test may wait. Generous on purpose: the
/// machines are small and noisy, and a correct server answers in
/// milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

thread_local! {
    /// The readiness backend of the test running on this thread, when
    /// `every_model!(backends: ...)` runs it once per backend.
    static BACKEND: std::cell::Cell<Option<Backend>> = const { std::cell::Cell::new(None) };
}

/// Runs `test` with the one-thread loops it starts waiting on `backend`:
/// through [`quiet`] in this process, through `--poller` in a
/// [`BinaryServer`].
pub fn with_backend(backend: Backend, test: impl FnOnce()) {
    BACKEND.with(|b| b.set(Some(backend)));
    test();
    BACKEND.with(|b| b.set(None));
}

/// A quiet server configuration, as tests want it.
pub fn quiet() -> Config {
    Config {
        quiet: true,
        poller: BACKEND.with(|b| b.get()).unwrap_or_default(),
        ..Config::default()
    }
}

/// A quiet configuration with a thread pool of `workers` threads.
pub fn pool_of(workers: usize) -> Config {
    Config {
        workers: std::num::NonZeroUsize::new(workers).expect("at least one worker"),
        ..quiet()
    }
}

/// Whether `mode` cannot run on this machine (completion without
/// io_uring): the test says it skipped, and why, and passes.
pub fn unavailable(mode: Mode) -> bool {
    if mode != Mode::Completion {
        return false;
    }
    match echo_lab::serve::completion::available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("skipped: completion needs io_uring, and {why}");
            true
        }
    }
}

/// Starts `mode` on 127.0.0.1 with a free port; stopped when dropped.
pub fn start(mode: Mode) -> Server {
    start_with(mode, quiet())
}

/// Starts `mode` with `config` on 127.0.0.1 with a free port.
pub fn start_with(mode: Mode, config: Config) -> Server {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Server::start(mode, &addr.into(), config).expect("server starts")
}

/// Connects with read and write timeouts of [`PATIENCE`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `len` bytes, failing the test on a timeout or early EOF.
pub fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read the echo");
    buf
}

/// Sends `message` and asserts that exactly it comes back.
pub fn assert_echo(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("send");
    assert_eq!(read_exact(stream, message.len()), message);
}

/// Whether `stream` receives nothing within `window`. Used only to show that
/// a server is (correctly) making a client wait: a correct server never
/// answers early, so a slow machine cannot make this fail.
pub fn stays_silent(stream: &mut TcpStream, window: Duration) -> bool {
    let until = Instant::now() + window;
    let mut byte = [0];
    let silent = loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut byte) {
            // A signal to this process (a forking server under test reaps
            // its children on SIGCHLD) ends a read that has a timeout with
            // EINTR, whatever SA_RESTART says: not an answer, wait on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                break matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
            Ok(_) => break false,
        }
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    silent
}

/// Asserts that the server closes `stream`: a read returns end of stream
/// (or a reset) within [`PATIENCE`].
pub fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out. For state that
/// lives inside the server (counters) and has no event a test could wait on.
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(PATIENCE, condition),
        "timed out waiting until {what}"
    );
}

/// Polls `condition` every few milliseconds until it holds (`true`) or
/// `limit` passes (`false`): the one deadline loop of the tests, for those
/// that say more than [`wait_until`] when time runs out.
pub fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A deterministic, non-repeating-looking payload of `len` bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The path of the real `echo-lab` binary that cargo built for the tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_echo-lab")
}

/// The real binary, serving; killed when dropped.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Option<thread::JoinHandle<String>>,
}

/// Starts `echo-lab serve <args>` writing its `--stats` lines every
/// `every` to a JSON-lines file named after `test`; returns the server and
/// the file's path.
pub fn start_counting_every(
    test: &str,
    every: &str,
    args: &[&str],
) -> (BinaryServer, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "echo-lab-stats-{test}-{}.jsonl",
        std::process::id()
    ));
    let mut all = args.to_vec();
    all.extend(["--stats", every, "--stats-json", path.to_str().unwrap()]);
    (BinaryServer::start(&all), path)
}

impl BinaryServer {
    /// Runs `echo-lab serve --addr 127.0.0.1:0 <args>` and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> BinaryServer {
        Self::start_with_fd_limit(args, None)
    }

    /// Runs `echo-lab notes STEP --addr 127.0.0.1:0 <args>`, one of the
    /// notes' programs, and waits for its `listening on` line.
    pub fn start_notes(step: &str, args: &[&str]) -> BinaryServer {
        let mut command = Command::new(binary());
        command
            .args(["notes", step, "--addr", "127.0.0.1:0"])
            .args(args);
        Self::spawn(command)
    }

    /// As [`BinaryServer::start`], with the server's descriptor limit (soft
    /// and hard) set to `fd_limit`, as `prlimit --nofile=N:N` would.
    pub fn start_with_fd_limit(args: &[&str], fd_limit: Option<u64>) -> BinaryServer {
        let mut command = Command::new(binary());
        command.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
        if let Some(backend) = BACKEND.with(|b| b.get()) {
            command.args(["--poller", backend.name()]);
        }
        if let Some(limit) = fd_limit {
            echo_lab::sys::limit_descriptors(&mut command, limit);
        }
        Self::spawn(command)
    }

    /// Starts `command` and waits for its `listening on` line.
    pub fn spawn(mut command: Command) -> BinaryServer {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start echo-lab");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(PATIENCE).expect("a `listening on` line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        BinaryServer {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Sends `signal` and waits up to `deadline` for the process to exit.
    /// Returns its exit status, how long it took, and everything it wrote to
    /// stderr.
    pub fn signal_and_wait(
        mut self,
        signal: i32,
        deadline: Duration,
    ) -> (std::process::ExitStatus, Duration, String) {
        echo_lab::sys::signal(self.child.id(), signal).expect("signal the server");
        let sent = Instant::now();
        let mut status = None;
        let exited = poll_until(deadline, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "echo-lab did not exit within {deadline:?} of signal {signal}"
        );
        let elapsed = sent.elapsed();
        // Read to its end: a process the server started that outlives it
        // keeps it open, which must fail the test, not hang it.
        let reader = self.stderr.take().unwrap();
        assert!(
            poll_until(PATIENCE, || reader.is_finished()),
            "the server's stderr stayed open {PATIENCE:?} after it exited: a process it started holds it"
        );
        let stderr = reader.join().unwrap();
        (status.unwrap(), elapsed, stderr)
    }

    /// Threads the process runs right now.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map_or(0, |tasks| tasks.count())
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        echo_lab::sys::process_cpu_time(self.child.id()).expect("the server's CPU time")
    }

    /// CPU time the server burns while the test waits `wait`: what an idle
    /// or backing-off server must keep near zero.
    pub fn cpu_burned_during(&self, wait: Duration) -> Duration {
        let before = self.cpu_time();
        thread::sleep(wait);
        self.cpu_time() - before
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in bytes, from /proc (0 once it is gone).
pub fn resident_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Open descriptors of process `pid`, from /proc.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits for `child` to exit, for at most [`PATIENCE`], and collects its
/// output; kills it and fails the test if it does not exit.
pub fn wait_with_patience(mut child: Child) -> std::process::Output {
    if !poll_until(PATIENCE, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        panic!("a child process did not finish within {PATIENCE:?}");
    }
    child.wait_with_output().unwrap()
}

/// Runs the real binary with `args` to completion (bounded by [`PATIENCE`])
/// and returns its exit code, stdout and stderr.
pub fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo-lab");
    let output = wait_with_patience(child);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the real binary with `args`, its standard output a pipe whose
/// reading end is closed before it writes (as `| head` does once it has
/// its lines); returns its exit code and stderr.
pub fn run_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo-lab");
    drop(child.stdout.take());
    let output = wait_with_patience(child);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Makes a test of each function named, once per model: `every_model!(f)`
/// turns `fn f(mode: Mode)` into a module `f` with a `#[test]` per model
/// (`f::selector`, `f::asynchronous`, ...), so that a failing model never
/// hides the others and each can be run alone. `every_model!(one_thread:
/// f)` runs `f` on the one-thread readiness loops only, `loops:` on those
/// and completion, `concurrent:` on every model that serves more than one
/// client at once, `chat:` on the models that host the chat,
/// `processes:` on those `--processes` runs (all but forking); with
/// `backends:` (alone or after `one_thread,`, `loops,`, `concurrent,` or
/// `chat,`)
/// each readiness loop runs once per backend (`f::selector::poll`).
///
/// The models that are not readiness loops are listed once, in `@models`,
/// each with the sets it is in; the three readiness loops and the three
/// backends are written only in `@each`. A new model is one line in one
/// of the two.
macro_rules! every_model {
    (backends: $($test:ident),+ $(,)?) => {
        $(every_model!(@models all $test backends);)+
    };
    ($set:ident, backends: $($test:ident),+ $(,)?) => {
        every_model!(@known $set);
        $(every_model!(@models $set $test backends);)+
    };
    ($set:ident: $($test:ident),+ $(,)?) => {
        every_model!(@known $set);
        $(every_model!(@models $set $test plain);)+
    };
    ($($test:ident),+ $(,)?) => {
        $(every_model!(@models all $test plain);)+
    };
    // The sets a test may ask for; any other name is a compile error.
    (@known concurrent) => {};
    (@known chat) => {};
    (@known processes) => {};
    (@known loops) => {};
    (@known one_thread) => {};
    // The one list of the models that are not readiness loops (`@each`
    // adds those), each with the sets it is in:
    // (concurrent chat processes loops). A new model is one line here.
    (@models $set:ident $test:ident $kind:ident) => {
        every_model!(@pick $set $test $kind [] [
            sequential => Sequential (no no yes no),
            threads => Threads (yes yes yes no),
            forking => Forking (yes no no no),
            threadpool => Threadpool (yes yes yes no),
            completion => Completion (yes yes yes yes),
        ]);
    };
    // Keeps the models of the set, one at a time, then makes the tests.
    (@pick $set:ident $test:ident $kind:ident [$($kept:tt)*] []) => {
        every_model!(@each $test [$($kept)*] $kind);
    };
    (@pick all $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident $sets:tt, $($rest:tt)*]) => {
        every_model!(@pick all $test $kind [$($kept)* $name => $mode,] [$($rest)*]);
    };
    (@pick concurrent $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident (yes $b:ident $c:ident $d:ident), $($rest:tt)*]) => {
        every_model!(@pick concurrent $test $kind [$($kept)* $name => $mode,] [$($rest)*]);
    };
    (@pick chat $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident ($a:ident yes $c:ident $d:ident), $($rest:tt)*]) => {
        every_model!(@pick chat $test $kind [$($kept)* $name => $mode,] [$($rest)*]);
    };
    (@pick processes $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident ($a:ident $b:ident yes $d:ident), $($rest:tt)*]) => {
        every_model!(@pick processes $test $kind [$($kept)* $name => $mode,] [$($rest)*]);
    };
    (@pick loops $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident ($a:ident $b:ident $c:ident yes), $($rest:tt)*]) => {
        every_model!(@pick loops $test $kind [$($kept)* $name => $mode,] [$($rest)*]);
    };
    // Not in the set (`one_thread` keeps none of them).
    (@pick $set:ident $test:ident $kind:ident [$($kept:tt)*]
        [$name:ident => $mode:ident $sets:tt, $($rest:tt)*]) => {
        every_model!(@pick $set $test $kind [$($kept)*] [$($rest)*]);
    };
    // The models listed, then the readiness loops: `plain`, a test each;
    // `backends`, a test per backend.
    (@each $test:ident [$($name:ident => $mode:ident),* $(,)?] plain) => {
        every_model!(@tests $test [
            $($name => $mode,)*
            selector => Selector,
            statemachine => Statemachine,
            asynchronous => Async,
        ] []);
    };
    (@each $test:ident [$($name:ident => $mode:ident),* $(,)?] backends) => {
        every_model!(@tests $test [$($name => $mode,)*] [
            selector => Selector,
            statemachine => Statemachine,
            asynchronous => Async,
        ]);
    };
    // A test per model of the first list; per model and backend of the
    // second.
    (@tests $test:ident [$($name:ident => $mode:ident),* $(,)?] [$($loop:ident => $loop_mode:ident),* $(,)?]) => {
        mod $test {
            $(
                #[test]
                fn $name() {
                    if $crate::common::unavailable(echo_lab::serve::Mode::$mode) {
                        return;
                    }
                    super::$test(echo_lab::serve::Mode::$mode)
                }
            )*
            $(
                mod $loop {
                    every_model!(@backend $test $loop_mode polling Polling);
                    every_model!(@backend $test $loop_mode epoll Epoll);
                    every_model!(@backend $test $loop_mode poll Poll);
                }
            )*
        }
    };
    (@backend $test:ident $mode:ident $name:ident $backend:ident) => {
        #[test]
        fn $name() {
            $crate::common::with_backend(echo_lab::poller::Backend::$backend, || {
                super::super::$test(echo_lab::serve::Mode::$mode)
            })
        }
    };
}
