//! Keeps the tutorial true: every shell command in `docs/tutorial/` runs,
//! every promised outcome is checked, and every quoted excerpt of source
//! still stands in the file it names.
//!
//! How a chapter is run:
//! - Its ```` ```sh ```` blocks run in order in one bash session, in a
//!   scratch directory, with the `echo-lab` under test first on `PATH`.
//! - The notes' port 55555 becomes a free port, and `echo-lab serve`,
//!   `client`, `probe` and `bench` without `--addr` are pointed at it.
//!   `target/release/` becomes the directory of the binaries under test
//!   (`cargo test` builds the examples there too).
//! - Everything a command writes, servers' logs on stderr included, is the
//!   block's output, as a reader sees it in a terminal.
//! - A server started with `&` is waited for until it accepts connections;
//!   `kill %N` of a server also checks that it exited 0 (clean shutdown).
//! - `cargo` lines are not run (the test is already inside a build); each
//!   must be one of the commands README.md and the tutorial promise.
//! - An `<!-- expect: ... -->` comment before a block states its outcome:
//!   `contains "TEXT"`, `exit N` (of the block's last command; otherwise
//!   every command must exit 0), `staircase`, `all-at-once`, `third-waits`,
//!   `one-at-a-time` and `two-at-a-time` (echoes 100 ms or more apart, one
//!   or two at a time), `picture NAME` (the block drew NAME with `probe
//!   --svg`, and the picture the chapter shows, `docs/tutorial/img/NAME`,
//!   has the same rows and marks, so it cannot drift from the code),
//!   `max-under DURATION` (a bench's slowest echo, the
//!   `max` of its latency line, is shorter), `order "LABEL" N` (the
//!   largest number printed right after LABEL is of N's order, within ten
//!   times either way: N is what the chapter's text quotes from the
//!   block, so the text cannot drift far from what the command prints),
//!   `at-least "LABEL" N` (that largest number is N or more: for a rate
//!   the test's debug build, on a loaded machine, cannot be held to the
//!   order of the release figure the text quotes).
//! - `<!-- needs: io_uring -->` before a block: it runs only where the
//!   completion model can (elsewhere the test says it skipped it, and why);
//!   `<!-- needs: python3 -->`, only where `python3` is installed (the
//!   notes' Python steps; elsewhere the test says it skipped them).
//! - An `<!-- excerpt: PATH -->` comment before a ```` ```rust ```` block
//!   makes the block a quotation: its lines (trimmed) must appear in PATH in
//!   order and contiguously, except where a `// ...` line marks a gap.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{binary, poll_until};

const ALLOWED_CARGO: [&str; 3] = [
    "cargo build --release",
    "cargo build --release --example tokio_echo",
    "cargo test",
];

#[derive(Debug)]
enum Expect {
    Contains(String),
    Exit(i32),
    Staircase,
    AllAtOnce,
    ThirdWaits,
    OneAtATime,
    TwoAtATime,
    MaxUnder(Duration),
    /// The largest number printed after the label is within ten times of
    /// this one, either way.
    Order(String, f64),
    /// The largest number printed after the label is this one or more.
    AtLeast(String, f64),
    /// Every worker of the last `--processes` summary served a client.
    EveryWorkerServes,
    Picture(String),
}

#[derive(Debug)]
struct Block {
    line: usize,
    expects: Vec<Expect>,
    /// It starts the completion model.
    needs_ring: bool,
    /// It runs one of the notes' Python steps.
    needs_python: bool,
    commands: Vec<String>,
}

#[derive(Debug)]
struct Excerpt {
    line: usize,
    file: String,
    code: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_expect(text: &str) -> Expect {
    let text = text.trim();
    if let Some(quoted) = text.strip_prefix("contains ") {
        return Expect::Contains(quoted.trim().trim_matches('"').to_owned());
    }
    if let Some(name) = text.strip_prefix("picture ") {
        return Expect::Picture(name.trim().to_owned());
    }
    if let Some(bound) = text.strip_prefix("max-under ") {
        let bound = echo_lab::parse::parse_duration(bound.trim()).expect("a duration");
        return Expect::MaxUnder(bound);
    }
    for (kind, make) in [
        ("order \"", Expect::Order as fn(String, f64) -> Expect),
        ("at-least \"", Expect::AtLeast),
    ] {
        if let Some(rest) = text.strip_prefix(kind) {
            let (label, number) = rest.split_once('"').expect("KIND \"LABEL\" N");
            let number = number.trim().replace(',', "").parse().expect("a number");
            return make(label.to_owned(), number);
        }
    }
    if let Some(code) = text.strip_prefix("exit ") {
        return Expect::Exit(code.trim().parse().expect("exit code"));
    }
    match text {
        "staircase" => Expect::Staircase,
        "all-at-once" => Expect::AllAtOnce,
        "third-waits" => Expect::ThirdWaits,
        "one-at-a-time" => Expect::OneAtATime,
        "two-at-a-time" => Expect::TwoAtATime,
        "every-worker-serves" => Expect::EveryWorkerServes,
        other => panic!("unknown expectation {other:?}"),
    }
}

fn parse_chapter(text: &str) -> (Vec<Block>, Vec<Excerpt>) {
    let (mut blocks, mut excerpts) = (Vec::new(), Vec::new());
    let (mut expects, mut excerpt_file, mut needs_ring) = (Vec::new(), None, false);
    let mut needs_python = false;
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("<!-- expect:") {
            expects.push(parse_expect(rest.trim_end_matches("-->")));
        } else if trimmed == "<!-- needs: io_uring -->" {
            needs_ring = true;
        } else if trimmed == "<!-- needs: python3 -->" {
            needs_python = true;
        } else if let Some(rest) = trimmed.strip_prefix("<!-- excerpt:") {
            excerpt_file = Some(rest.trim_end_matches("-->").trim().to_owned());
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let body: Vec<String> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| l.trim() != "```")
                .map(str::to_owned)
                .collect();
            match (info, excerpt_file.take()) {
                ("sh" | "bash", None) => blocks.push(Block {
                    line: number + 1,
                    expects: std::mem::take(&mut expects),
                    needs_ring: std::mem::take(&mut needs_ring),
                    needs_python: std::mem::take(&mut needs_python),
                    commands: body.into_iter().filter(|l| !l.trim().is_empty()).collect(),
                }),
                ("rust", Some(file)) => excerpts.push(Excerpt {
                    line: number + 1,
                    file,
                    code: body,
                }),
                (info, Some(file)) => panic!(
                    "line {}: excerpt of {file} in a ```{info} block",
                    number + 1
                ),
                _ => assert!(
                    expects.is_empty() && !needs_ring && !needs_python,
                    "line {}: expectation before a non-sh block",
                    number + 1
                ),
            }
        }
    }
    (blocks, excerpts)
}

/// Checks that the quoted lines stand in the named file, in order.
fn check_excerpt(chapter: &str, excerpt: &Excerpt) {
    let source = std::fs::read_to_string(root().join(&excerpt.file)).unwrap_or_else(|e| {
        panic!(
            "{chapter}:{}: cannot read {}: {e}",
            excerpt.line, excerpt.file
        )
    });
    let file: Vec<&str> = source.lines().map(str::trim).collect();
    let mut from = 0;
    for segment in excerpt.code.split(|l| l.trim() == "// ...") {
        let segment: Vec<&str> = segment.iter().map(|l| l.trim()).collect();
        if segment.is_empty() {
            continue;
        }
        let found = (from..=file.len().saturating_sub(segment.len()))
            .find(|&at| file[at..at + segment.len()] == segment[..]);
        let at = found.unwrap_or_else(|| {
            panic!(
                "{chapter}:{}: this excerpt no longer matches {}:\n{}",
                excerpt.line,
                excerpt.file,
                segment.join("\n")
            )
        });
        from = at + segment.len();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The command as the test runs it: on our port and our binaries.
fn rewrite(command: &str, port: u16, bin_dir: &Path) -> String {
    let bin = bin_dir.display().to_string();
    let mut line = command
        .replace("$PWD/target/release", &bin)
        .replace("target/release/", &format!("{bin}/"))
        .replace("55555", &port.to_string())
        .replace(
            "python3 docs/tutorial/",
            &format!("python3 -B {}/docs/tutorial/", root().display()),
        );
    for sub in ["serve", "client", "probe", "bench"] {
        let call = format!("echo-lab {sub}");
        if line.contains(&call) && !line.contains("--addr") {
            line = line.replacen(&call, &format!("{call} --addr 127.0.0.1:{port}"), 1);
        }
    }
    line
}

/// One probe table row of a client that did not fail: (connected,
/// echoed, closed).
fn probe_rows(output: &str) -> Vec<(f64, f64, f64)> {
    output
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 || fields[0].parse::<u32>().is_err() || fields[4] != "-" {
                return None;
            }
            let t = |f: &str| f.strip_suffix('s')?.parse::<f64>().ok();
            Some((t(fields[1])?, t(fields[2])?, t(fields[3])?))
        })
        .collect()
}

/// What a probe picture shows, timing aside: its row labels in order and
/// how many of each mark (echoes, closes by the server, bars).
fn picture_signature(svg: &str) -> (Vec<String>, usize, usize, usize) {
    let labels = svg
        .match_indices(">\nclient ")
        .filter_map(|(at, _)| {
            let rest = &svg[at + 2..];
            Some(rest[..rest.find('\n')?].to_owned())
        })
        .collect();
    (
        labels,
        svg.matches("<circle").count(),
        svg.matches("<polygon").count(),
        svg.matches("<rect").count(),
    )
}

/// The `max` of a bench report's latency line (`... max 4.647ms`).
fn bench_max(output: &str) -> Option<Duration> {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("latency"))?;
    let ms = line.split("max ").nth(1)?.trim().strip_suffix("ms")?;
    Some(Duration::from_secs_f64(ms.parse::<f64>().ok()? / 1000.0))
}

/// The clients each worker served, from the last `clients per worker: 1:
/// 4, 2: 4` line of a `--processes` master.
fn worker_shares(output: &str) -> Option<Vec<u64>> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("clients per worker: "))?;
    line.split(", ")
        .map(|share| share.split(": ").nth(1)?.parse().ok())
        .collect()
}

/// Every number printed right after `label` in `output`.
fn numbers_after<'o>(output: &'o str, label: &'o str) -> impl Iterator<Item = f64> + 'o {
    output.match_indices(label).filter_map(move |(at, _)| {
        let rest = &output[at + label.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// The largest number printed right after `label`; `shown` says where.
fn largest_after(output: &str, label: &str, shown: &str) -> f64 {
    numbers_after(output, label)
        .reduce(f64::max)
        .unwrap_or_else(|| panic!("no number after {label:?}: {shown}"))
}

fn check_expect(place: &str, expect: &Expect, output: &str, statuses: &[i32]) {
    let rows = probe_rows(output);
    let shown = format!("{place}: expected {expect:?}; output:\n{output}");
    match expect {
        Expect::Contains(text) => assert!(output.contains(text.as_str()), "{shown}"),
        Expect::Exit(code) => assert_eq!(statuses.last(), Some(code), "{shown}"),
        // Checked against the file, once the whole chapter has run.
        Expect::Picture(_) => {}
        Expect::EveryWorkerServes => {
            let shares = worker_shares(output).unwrap_or_else(|| panic!("no shares: {shown}"));
            assert!(shares.len() > 1 && !shares.contains(&0), "{shown}");
        }
        Expect::Order(label, quoted) => {
            let printed = largest_after(output, label, &shown);
            assert!(
                printed >= quoted / 10.0 && printed <= quoted * 10.0,
                "{place}: the text quotes {quoted} for {label:?}, the block printed {printed}: not of the same order\n{shown}"
            );
        }
        Expect::AtLeast(label, least) => {
            let printed = largest_after(output, label, &shown);
            assert!(
                printed >= *least,
                "{place}: {label:?} printed {printed}, under {least}\n{shown}"
            );
        }
        Expect::MaxUnder(bound) => {
            let max = bench_max(output).unwrap_or_else(|| panic!("no latency line: {shown}"));
            assert!(max < *bound, "{shown}");
        }
        Expect::Staircase => {
            let mut rows = rows;
            assert!(rows.len() >= 2, "{shown}");
            rows.sort_by(|a, b| a.1.total_cmp(&b.1));
            for pair in rows.windows(2) {
                assert!(pair[1].1 >= pair[0].2, "{shown}");
            }
        }
        Expect::AllAtOnce => {
            assert!(rows.len() >= 2, "{shown}");
            let last_echo = rows.iter().map(|r| r.1).fold(0.0, f64::max);
            let first_close = rows.iter().map(|r| r.2).fold(f64::MAX, f64::min);
            assert!(last_echo < first_close, "{shown}");
        }
        // The blocks' steps are 200 ms of work, and every client sends at
        // once: served N at a time, the k-th echo (from 0) cannot come
        // before k / N + 1 steps are done. Load only delays echoes, so this
        // bound cannot fail on a busy machine (a tenth of a step is left
        // for the clocks); served more at once, it fails.
        Expect::OneAtATime | Expect::TwoAtATime => {
            let mut echoes: Vec<f64> = rows.iter().map(|r| r.1).collect();
            echoes.sort_by(f64::total_cmp);
            let at_once = if matches!(expect, Expect::OneAtATime) {
                1
            } else {
                2
            };
            assert!(echoes.len() > at_once, "{shown}");
            for (k, at) in echoes.iter().enumerate() {
                assert!(*at >= (k / at_once + 1) as f64 * 0.2 * 0.9, "{shown}");
            }
        }
        Expect::ThirdWaits => {
            let mut rows = rows;
            assert_eq!(rows.len(), 3, "{shown}");
            rows.sort_by(|a, b| a.1.total_cmp(&b.1));
            assert!(
                rows[1].1 < rows[0].2,
                "two clients are served at once: {shown}"
            );
            assert!(rows[2].1 >= rows[0].2.min(rows[1].2), "{shown}");
        }
    }
}

fn run_chapter(name: &str) {
    let path = root().join("docs/tutorial").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    run_chapter_text(name, &text);
}

/// Runs the blocks of a chapter's `text` and checks what it promises.
fn run_chapter_text(name: &str, text: &str) {
    let (mut blocks, excerpts) = parse_chapter(text);
    if blocks.iter().any(|b| b.needs_ring)
        && crate::common::unavailable(echo_lab::serve::Mode::Completion)
    {
        // `unavailable` said why; the chapter's other blocks still run.
        blocks.retain(|b| !b.needs_ring);
    }
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if blocks.iter().any(|b| b.needs_python) && !python {
        eprintln!("skipped: {name}'s Python blocks (python3 is not installed)");
        blocks.retain(|b| !b.needs_python);
    }
    for excerpt in &excerpts {
        check_excerpt(name, excerpt);
    }
    let port = free_port();
    let bin_dir = Path::new(binary()).parent().unwrap().to_path_buf();
    let scratch =
        std::env::temp_dir().join(format!("echo-lab-tutorial-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    // The servers' logs (stderr) join the output, as in a reader's
    // terminal, so that a block can expect a line a server writes.
    let mut script = format!(
        "exec 2>&1\nexport PATH=\"{}:$PATH\"\nwait_port() {{ for _ in $(seq 400); do (exec 9<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }}\n",
        bin_dir.display()
    );
    // Which background jobs are servers, as bash numbers them.
    let mut jobs: Vec<(usize, bool)> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        script += &format!("echo '@@block {i}@@'\n");
        for command in &block.commands {
            let command = command.trim();
            if command.starts_with("cargo ") {
                assert!(
                    ALLOWED_CARGO.contains(&command),
                    "{name}:{}: unexpected `{command}`",
                    block.line
                );
                continue;
            }
            let line = rewrite(command, port, &bin_dir);
            if let Some(job) = command.strip_prefix("kill %") {
                let job: usize = job.parse().expect("kill %N");
                let server = jobs.iter().find(|j| j.0 == job).is_some_and(|j| j.1);
                jobs.retain(|j| j.0 != job);
                script += &format!(
                    "kill %{job}; wait %{job}; echo \"@@job {} $?@@\"\n",
                    u8::from(server)
                );
            } else if command.ends_with('&') {
                let number = jobs.iter().map(|j| j.0).max().unwrap_or(0) + 1;
                let server = command.contains("echo-lab serve");
                // A notes step listens too, but ends by the signal itself
                // (no summary, status 143), as the Python would.
                let listens = server
                    || command.contains("echo-lab notes ")
                    || command.starts_with("python3 docs/tutorial/notes/");
                jobs.push((number, server));
                script += &format!("{line}\n");
                if listens {
                    script += &format!("wait_port {port}\n");
                }
            } else {
                script += &format!("{line}\necho \"@@status $?@@\"\n");
            }
        }
    }
    script += "kill $(jobs -p) 2>/dev/null; wait\n";
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        // The chapters' commands use the notes' address, which the test
        // moves to `port`; a reader's own setting must not move it again.
        .env("ECHO_LAB_ADDR", format!("127.0.0.1:{port}"))
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if !poll_until(Duration::from_secs(180), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
        panic!("{name}: the chapter's commands did not finish in 180 s");
    }
    let output = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    // The pictures the blocks drew, read before the scratch goes.
    for expect in blocks.iter().flat_map(|b| &b.expects) {
        if let Expect::Picture(name) = expect {
            let drawn = std::fs::read_to_string(scratch.join(name))
                .unwrap_or_else(|e| panic!("{name}: the chapter's block drew no picture: {e}"));
            let shown = std::fs::read_to_string(root().join("docs/tutorial/img").join(name))
                .unwrap_or_else(|e| panic!("docs/tutorial/img/{name}: {e}"));
            assert_eq!(
                picture_signature(&drawn),
                picture_signature(&shown),
                "{name}: the picture the chapter shows no longer matches what the command draws"
            );
            assert!(
                text.contains(&format!("](img/{name})")),
                "{name}: the chapter does not show it"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let segments: Vec<&str> = output.split("@@block ").skip(1).collect();
    assert_eq!(segments.len(), blocks.len(), "{name}: output:\n{output}");
    for (block, segment) in blocks.iter().zip(segments) {
        let place = format!("{name}:{}", block.line);
        let mut statuses = Vec::new();
        for line in segment.lines() {
            if let Some(status) = line
                .strip_prefix("@@status ")
                .and_then(|s| s.strip_suffix("@@"))
            {
                statuses.push(status.parse::<i32>().unwrap());
            }
            if let Some(job) = line
                .strip_prefix("@@job 1 ")
                .and_then(|s| s.strip_suffix("@@"))
            {
                assert_eq!(
                    job, "0",
                    "{place}: a server did not exit cleanly:\n{segment}"
                );
            }
            // Another background command: stopped by the block's `kill`
            // (143), or done by then (0); anything else is its own failure.
            if let Some(job) = line
                .strip_prefix("@@job 0 ")
                .and_then(|s| s.strip_suffix("@@"))
            {
                assert!(
                    job == "0" || job == "143",
                    "{place}: a background command failed (status {job}):\n{segment}"
                );
            }
        }
        let expected_exit = block.expects.iter().any(|e| matches!(e, Expect::Exit(_)));
        let must_succeed = if expected_exit {
            &statuses[..statuses.len().saturating_sub(1)]
        } else {
            &statuses[..]
        };
        assert!(
            must_succeed.iter().all(|&s| s == 0),
            "{place}: a command failed:\n{segment}"
        );
        for expect in &block.expects {
            check_expect(&place, expect, segment, &statuses);
        }
    }
}

/// The test itself fails when any command of a block fails, its first
/// included, and when a background command fails before the block stops
/// it, not only when an `expect:` is missed.
#[test]
fn a_failing_command_fails_the_chapter() {
    for (what, text) in [
        ("a first command", "```sh\nfalse\necho fine\n```\n"),
        (
            "a later command",
            "```sh\necho fine\nls /no/such/file\n```\n",
        ),
        (
            "a background command",
            "```sh\n(exit 3) &\nsleep 0.2\nkill %1\n```\n",
        ),
    ] {
        let ran = std::panic::catch_unwind(|| run_chapter_text("broken.md", text));
        assert!(ran.is_err(), "{what} failed and the chapter passed");
    }
    run_chapter_text("fine.md", "```sh\necho fine\nsleep 5 &\nkill %1\n```\n");
}

/// A number the text quotes holds the block to its order: ten times off,
/// either way, fails the chapter; within, it passes. `at-least` is a floor.
#[test]
fn a_quoted_number_holds_its_block_to_the_same_order() {
    let block = |quoted: &str| {
        format!(
            "<!-- expect: order \"waits/s=\" {quoted} -->\n```sh\necho 'a waits/s=3 b waits/s=639288 c'\n```\n"
        )
    };
    for far in ["63,928,800", "60,000"] {
        let ran = std::panic::catch_unwind(|| run_chapter_text("far.md", &block(far)));
        assert!(ran.is_err(), "{far} passed against 639288");
    }
    run_chapter_text("near.md", &block("600,000"));
    let least = |n: &str| {
        format!(
            "<!-- expect: at-least \"waits/s=\" {n} -->\n```sh\necho 'waits/s=3 waits/s=639288'\n```\n"
        )
    };
    let ran = std::panic::catch_unwind(|| run_chapter_text("under.md", &least("700,000")));
    assert!(ran.is_err(), "639288 passed as at least 700,000");
    run_chapter_text("over.md", &least("10,000"));
}

/// The chapters in `dir` (the files whose name starts with a number), in
/// the order of their numbers: 10 after 9, where names would put it
/// after 1.
fn chapters_on_disk(dir: &Path) -> Vec<String> {
    let number = |name: &str| {
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(u32::MAX)
    };
    let mut chapters: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md") && name.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    chapters.sort_by_key(|name| number(name));
    chapters
}

macro_rules! chapters {
    ($($test:ident => $file:expr),* $(,)?) => {$(
        /// Runs this chapter's commands and checks its excerpts.
        #[test]
        fn $test() {
            run_chapter($file)
        }
    )*};
}

chapters! {
    chapter_0 => "0-concurrency-is-not-parallelism.md",
    chapter_1 => "1-one-client-at-a-time.md",
    chapter_2 => "2-a-pool-of-threads.md",
    chapter_3 => "3-readiness-and-epoll.md",
    chapter_4 => "4-generators-are-state-machines.md",
    chapter_5 => "5-async-await-from-the-ground-up.md",
    chapter_6 => "6-measure-compare-conclude.md",
    chapter_7 => "7-when-the-loop-stalls.md",
    chapter_8 => "8-shared-state-a-chat-server.md",
    chapter_9 => "9-completion-instead-of-readiness.md",
    chapter_10 => "10-threads-or-processes.md",
}

/// The index lists every chapter, each chapter links the next, and every
/// model's source links its chapter.
#[test]
fn chapters_and_modules_link_each_other() {
    let dir = root().join("docs/tutorial");
    let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let chapters = chapters_on_disk(&dir);
    assert_eq!(chapters.len(), 11);
    for (i, chapter) in chapters.iter().enumerate() {
        assert!(
            index.contains(&format!("({chapter})")),
            "the index does not link {chapter}"
        );
        let text = std::fs::read_to_string(dir.join(chapter)).unwrap();
        if let Some(next) = chapters.get(i + 1) {
            assert!(
                text.contains(&format!("({next})")),
                "{chapter} does not link {next}"
            );
        }
    }
    for (module, chapter) in [
        (
            "src/serve/blocking/sequential.rs",
            "1-one-client-at-a-time.md",
        ),
        ("src/serve/blocking/threads.rs", "2-a-pool-of-threads.md"),
        (
            "src/serve/blocking/forking.rs",
            "10-threads-or-processes.md",
        ),
        ("src/serve/processes.rs", "10-threads-or-processes.md"),
        ("src/serve/blocking/threadpool.rs", "2-a-pool-of-threads.md"),
        (
            "src/serve/readiness/selector/mod.rs",
            "3-readiness-and-epoll.md",
        ),
        (
            "src/serve/statemachine/mod.rs",
            "4-generators-are-state-machines.md",
        ),
        (
            "src/serve/asynchronous/mod.rs",
            "5-async-await-from-the-ground-up.md",
        ),
        ("src/lab/work.rs", "7-when-the-loop-stalls.md"),
        ("src/lab/offload.rs", "7-when-the-loop-stalls.md"),
        ("src/lab/stall.rs", "7-when-the-loop-stalls.md"),
        ("src/serve/chat/mod.rs", "8-shared-state-a-chat-server.md"),
        (
            "src/serve/completion/mod.rs",
            "9-completion-instead-of-readiness.md",
        ),
    ] {
        let source = std::fs::read_to_string(root().join(module)).unwrap();
        assert!(
            source.contains(&format!("docs/tutorial/{chapter}")),
            "{module} does not name its chapter"
        );
        let text = std::fs::read_to_string(dir.join(chapter)).unwrap();
        assert!(text.contains(module), "{chapter} does not name {module}");
    }
}

/// Commands written inline in the tutorial and the docs (exercises, prose)
/// are not run, but each must still parse with the real command line, so
/// that a renamed flag breaks the build rather than a reader's afternoon.
#[test]
fn inline_commands_still_parse() {
    use clap::Parser;
    // The chapters (and SUMMARY.md), not a built book beside them.
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs/tutorial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.extend([
        root().join("README.md"),
        root().join("docs/architecture.md"),
        root().join("docs/performance.md"),
    ]);
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Inline spans, and the lines of code blocks (where the tutorial's
        // blocks are also run, README's are only parsed), without what the
        // shell adds around them (`&`, pipes, redirections, comments).
        let spans = text.split('`').skip(1).step_by(2);
        // A synopsis continues on indented lines that start with `[`, and
        // a shell line on the next after a trailing `\`.
        let mut joined = String::new();
        for line in text.lines() {
            if joined.ends_with('\\') {
                joined.pop();
                joined.push(' ');
                joined.push_str(line.trim());
            } else if line.starts_with(' ') && line.trim_start().starts_with('[') {
                joined.push(' ');
                joined.push_str(line.trim());
            } else {
                joined.push('\n');
                joined.push_str(line);
            }
        }
        let mut in_fence = false;
        let lines = joined.lines().filter_map(move |l| {
            if l.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return None;
            }
            let command = l.split([';', '|', '>', '#']).next().unwrap_or(l);
            in_fence.then(|| command.trim().trim_end_matches('&').trim())
        });
        for span in spans.chain(lines) {
            let Some(args) = span.strip_prefix("echo-lab ") else {
                continue;
            };
            if args.contains('[') {
                // A usage synopsis: every flag it names must exist.
                check_synopsis(&file, args);
                checked += 1;
                continue;
            }
            let argv: Vec<String> = std::iter::once("echo-lab".to_owned())
                .chain(shell_words(args))
                .collect();
            match echo_lab::cli::Cli::try_parse_from(&argv) {
                Ok(_) => {}
                // `--help` and `--version` "fail" by printing, which is fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp
                            | clap::error::ErrorKind::DisplayVersion
                    ) => {}
                Err(e) => panic!("{}: `{span}` no longer parses:\n{e}", file.display()),
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "found only {checked} inline commands");
}

/// Splits a command line as the shell would for the simple cases the docs
/// use: whitespace separates words; single or double quotes group them.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Checks that every `--flag` in a synopsis like
/// `serve [--mode MODE] [--addr HOST:PORT]` is a flag of that subcommand.
fn check_synopsis(file: &Path, synopsis: &str) {
    use clap::CommandFactory;
    let command = echo_lab::cli::Cli::command();
    let name = synopsis.split_whitespace().next().unwrap_or_default();
    let sub = command
        .find_subcommand(name)
        .unwrap_or_else(|| panic!("{}: no subcommand `{name}`", file.display()));
    for flag in synopsis.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        let Some(long) = flag.strip_prefix("--") else {
            continue;
        };
        assert!(
            sub.get_arguments().any(|a| a.get_long() == Some(long)),
            "{}: `echo-lab {name}` has no --{long}",
            file.display()
        );
    }
}

/// The tutorial reads as a book (`mdbook serve docs/tutorial`): its
/// SUMMARY lists every chapter, in order, and nothing else.
#[test]
fn the_summary_lists_every_chapter() {
    let dir = root().join("docs/tutorial");
    let summary = std::fs::read_to_string(dir.join("SUMMARY.md")).unwrap();
    let chapters = chapters_on_disk(&dir);
    let listed: Vec<String> = links(&summary)
        .into_iter()
        .filter(|target| target != "README.md" && target != "glossary.md")
        .collect();
    assert_eq!(listed, chapters, "SUMMARY.md against the chapters on disk");
    assert!(
        summary.contains("(glossary.md)"),
        "the glossary is not listed"
    );
}

/// Every relative link in README.md and docs/ points at a file that
/// exists, and every `#anchor` into a Markdown file at one of its
/// headings (as GitHub and mdBook make anchors of them).
#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "docs/tutorial"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                resolved.exists(),
                "{}: link to {target} finds nothing",
                file.display()
            );
            if let (Some(anchor), true) = (anchor, resolved.extension().is_some_and(|e| e == "md"))
            {
                let headings = std::fs::read_to_string(&resolved).unwrap();
                let anchors: Vec<String> = headings
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| slug(h.trim_start_matches('#')))
                    .collect();
                assert!(
                    anchors.iter().any(|a| a == anchor),
                    "{}: no heading #{anchor} in {}",
                    file.display(),
                    resolved.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}

/// The targets of the Markdown links `[text](target)` in `text`, outside
/// code blocks.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// A heading's anchor as GitHub and mdBook make it: lower case, spaces to
/// dashes, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The count of models is written in prose only where this test checks it:
/// "N models", "N concurrency models" and "N servers built" in README,
/// the crate doc, architecture.md and every chapter say as many as
/// `Mode::ALL` holds (the count once drifted to five, six and seven).
#[test]
fn the_count_of_models_is_true() {
    const WORDS: [&str; 12] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven",
    ];
    let count = WORDS[echo_lab::serve::Mode::ALL.len()];
    let mut files = vec![
        root().join("README.md"),
        root().join("src/lib.rs"),
        root().join("docs/architecture.md"),
    ];
    files.extend(
        std::fs::read_dir(root().join("docs/tutorial"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "md")),
    );
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap().to_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, pair) in words.windows(3).enumerate() {
            let said = match pair {
                [n, "models" | "models," | "models.", _] => n,
                [n, "concurrency", "models" | "models," | "models."] => n,
                [n, "servers", "built"] => n,
                _ => continue,
            };
            if WORDS.contains(said) {
                checked += 1;
                assert_eq!(
                    *said,
                    count,
                    "{}: \"{}\" (word {i}): there are {count}",
                    file.display(),
                    pair.join(" ")
                );
            }
        }
    }
    assert!(checked >= 2, "found only {checked} counts of models");
}
