//! The instruments' commands: `probe`, `bench`, `compare` and `report`.

use super::*;
use crate::tools::bench::chat::{self, ChatBenchConfig, ChatBenchReport};

pub(super) fn probe_command(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let clients = usize::from(args.clients);
    // The chat's pitfalls, tried from outside (chapter 8).
    let chat_timeout = args.timeout.unwrap_or(Duration::from_secs(10));
    if let Some(name) = &args.register {
        let report = crate::tools::race::register_at_once(&args.addr, name, clients, chat_timeout)?;
        out!("{}", crate::tools::race::render(&report))?;
        return Ok(success_if(report.all_answered()));
    }
    if let Some(name) = &args.flood {
        let report = crate::tools::flood::flood(&args.addr, name, clients, chat_timeout)?;
        out!("{}", crate::tools::flood::render(&report))?;
        return Ok(success_if(report.cut_off()));
    }
    let config = probe::ProbeConfig {
        addr: args.addr,
        clients,
        hold: args.hold,
        timeout: args
            .timeout
            .unwrap_or(args.hold.saturating_mul(clients as u32) + Duration::from_secs(5)),
    };
    let report = probe::run(&config);
    if let Some(path) = &args.svg {
        crate::tools::probe_svg::draw(&report, path)
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    if args.json {
        announce(&serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", probe::render(&report))?;
    }
    Ok(success_if(report.all_ok()))
}

/// The tool's exit status: success if `ok`, failure otherwise.
fn success_if(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(super) fn bench_command(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.protocol == Protocol::Chat {
        return chat_bench_command(args);
    }
    let config = BenchConfig {
        addr: args.addr,
        connections: args.connections as usize,
        idle: args.idle,
        hogs: args.hogs,
        duration: args.duration,
        warmup: args.warmup,
        size: args.size.unwrap_or(bench::DEFAULT_MESSAGE_SIZE),
        depth: args.depth as usize,
        rate: args.rate,
        threads: args.threads.map_or(1, usize::from),
        pin_cpu: None,
        server_pid: None,
        churn: args.churn,
    };
    bench::validate(&config)?;
    let results = with_progress("echoes", |progress| bench::run(&config, progress))?;
    let report = BenchReport {
        parameters: config,
        results,
        environment: Environment::current(),
    };
    let failed = report.results.failed();
    print_report(&report, args.json, bench::render, failed)
}

/// Prints a bench's report, as text or (`--json`) one JSON object; exits 1
/// if the run `failed`.
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    render: impl FnOnce(&R) -> String,
    failed: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        announce(&serde_json::to_string_pretty(report)?);
    } else {
        out!("{}", render(report))?;
    }
    Ok(success_if(!failed))
}

/// The table of medians, when there are repeats or baselines.
fn print_medians(
    comparison: &compare::Comparison,
    repeat: usize,
    baselines: &[String],
) -> std::io::Result<()> {
    if repeat > 1 || !baselines.is_empty() {
        let medians = compare::medians(comparison, baselines);
        outln!(
            "\nmedians of {} ({}):\n",
            counted(repeat as u64, "run"),
            comparison.placement
        )?;
        out!("{}", compare::render_medians(&medians, baselines))?;
    }
    Ok(())
}

/// With `--against`, prints each cell's change against the earlier run;
/// returns whether a cell got slower for real beyond `--fail-if-slower`.
fn hold_against(comparison: &compare::Comparison, judge: &JudgeArgs) -> anyhow::Result<bool> {
    let Some(path) = &judge.against else {
        return Ok(false);
    };
    let old = compare::against::load(path)?;
    outln!(
        "\nagainst {} ({}):\n",
        path.display(),
        old.environment.headline()
    )?;
    let changes = compare::against::against(comparison, &old);
    out!("{}", compare::against::render_changes(&changes))?;
    let Some(percent) = judge.fail_if_slower else {
        return Ok(false);
    };
    let slower = compare::against::slower_than(&changes, percent);
    for change in &slower {
        eprintln!(
            "slower by {:.1}% (beyond both runs' spread): {} at {} connections",
            change.change * 100.0,
            change.server,
            change.connections
        );
    }
    Ok(!slower.is_empty())
}

pub(super) fn report_command(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let comparison = compare::against::load(&args.dir)?;
    outln!(
        "# {}; placement {}",
        comparison.environment.headline(),
        comparison.placement
    )?;
    if !comparison.environment.command.is_empty() {
        outln!("# {}", comparison.environment.command)?;
    }
    out!("{}", compare::header())?;
    for row in &comparison.rows {
        out!("{}", compare::render_row(row))?;
    }
    out!("\n{}", compare::LEGEND)?;
    let repeat = comparison.rows.iter().map(|r| r.repeat).max().unwrap_or(1);
    print_medians(&comparison, repeat, &args.baseline)?;
    compare::write_chart(&comparison, &comparison.dir)?;
    outln!("\nredrew throughput.svg in {}", comparison.dir.display())?;
    let slower = hold_against(&comparison, &args.judge)?;
    Ok(success_if(!slower))
}

/// A progress bar on a terminal; nothing when stderr is piped.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1000);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs a bench, handing it what to call with its progress (the share of
/// the run done, and how many `what` so far), under the bar above.
fn with_progress<T>(
    what: &str,
    run: impl FnOnce(&mut dyn FnMut(f64, u64)) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let bar = progress_bar();
    let result = run(&mut |done, count| {
        bar.set_position((done * 1000.0) as u64);
        bar.set_message(format!("{count} {what}"));
    });
    bar.finish_and_clear();
    result
}

/// `bench --protocol chat`: the chat load, one client thread.
fn chat_bench_command(args: BenchArgs) -> anyhow::Result<ExitCode> {
    refuse_for_chat(&[
        (
            args.size.is_some(),
            "--size",
            "a chat line is as long as its text",
        ),
        (
            args.rate.is_some(),
            "--rate",
            "the chat load is a closed loop (--depth)",
        ),
        (
            args.idle > 0,
            "--idle",
            "idle clients are the echo's C10K shape",
        ),
        (
            args.threads.is_some(),
            "--threads",
            "one client thread drives every connection, so it knows what each sent",
        ),
    ])?;
    let config = ChatBenchConfig {
        addr: args.addr,
        connections: args.connections as usize,
        duration: args.duration,
        warmup: args.warmup,
        depth: args.depth as usize,
        hogs: args.hogs,
        server_pid: None,
    };
    chat::validate(&config)?;
    let results = with_progress("lines delivered", |progress| chat::run(&config, progress))?;
    let report = ChatBenchReport {
        parameters: config,
        results,
        environment: Environment::current(),
    };
    let failed = report.results.failed();
    print_report(&report, args.json, chat::render, failed)
}

pub(super) fn compare_command(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let chat = args.protocol == Protocol::Chat;
    let all = args.modes.0 == Mode::ALL;
    let mut modes = match args.modes.0 {
        // Sequential and forking do not chat: `all` means the models that
        // do. The chat on `threads` is the chat on `threadpool` (a thread
        // per client either way): `all` runs it once, as threadpool.
        modes if chat && all => modes
            .into_iter()
            .filter(|&m| !matches!(m, Mode::Sequential | Mode::Threads | Mode::Forking))
            .collect(),
        modes if chat => modes
            .into_iter()
            .filter(|&m| !matches!(m, Mode::Sequential | Mode::Forking))
            .collect(),
        modes => modes,
    };
    if modes.contains(&Mode::Completion) {
        // Before minutes of other runs: `all` goes on without it, a
        // completion asked for by name is refused.
        if let Err(why) = serve::completion::available() {
            let why = serve::completion::unavailable(&why);
            if !all {
                return Err(why.into());
            }
            eprintln!("compare: leaving out completion: {why}");
            modes.retain(|&m| m != Mode::Completion);
        }
    }
    if chat {
        refuse_for_chat(&[
            (
                modes.is_empty(),
                "--modes",
                "sequential does not host the chat",
            ),
            (
                args.work.is_some(),
                "--work",
                "it is work done before an echo",
            ),
            (
                args.idle > 0,
                "--idle",
                "idle clients are the echo's C10K shape",
            ),
            (
                args.server_threads != 1,
                "--server-threads",
                "a chat is one room, one loop",
            ),
            (
                !args.also.is_empty(),
                "--also",
                "other servers speak echo, not our chat",
            ),
            (
                !args.notes.is_empty() || !args.python.is_empty(),
                "--notes and --python",
                "the notes' steps are compared as echo servers",
            ),
        ])?;
    }
    let mut also = args.also;
    also.extend(notes_peers(&args.notes, &args.python)?);
    let config = CompareConfig {
        modes,
        protocol: args.protocol,
        also,
        connections: args.connections.0,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        pin: args.pin,
        shared_core: args.shared_core,
        repeat: usize::from(args.repeat),
        server_threads: args.server_threads,
        idle: args.idle,
        hogs: args.hogs,
        churn: args.churn,
        poller: args.poller,
        work: args.work,
        offload: args.offload.map_or(0, NonZeroUsize::get),
        out: args.out,
    };
    if config.offload > 0 && !config.work.is_some_and(Work::blocks) {
        anyhow::bail!(
            "--offload runs --work cpu:... or sleep:... on its threads; wait never blocks the loop"
        );
    }
    let runs = (config.modes.len() + config.also.len()) * config.connections.len() * config.repeat;
    eprintln!(
        "compare: {} of {:.1}s (+{:.1}s warm-up) each",
        counted(runs as u64, "run"),
        config.duration.as_secs_f64(),
        config.warmup.as_secs_f64()
    );
    // Ctrl-C must not orphan the server under test (its own process
    // group): caught, it ends the sweep, which stops it and writes what was
    // measured.
    let interrupt = Interrupt::catch()?;
    outln!(
        "# {}; placement {}",
        Environment::current().headline(),
        compare::placement(&config).2
    )?;
    if config.hogs > 0 {
        outln!(
            "# {} beside every run; latencies are the measured connections'",
            counted(config.hogs as u64, "hog")
        )?;
    }
    out!("{}", compare::header())?;
    // A row that cannot be shown (stdout closed) is still measured and
    // written to the files; the next line out ends the command quietly.
    let comparison = compare::run(&config, interrupt.flag(), |row| {
        let _ = out!("{}", compare::render_row(row)).and_then(|()| std::io::stdout().flush());
    })?;
    out!("\n{}", compare::LEGEND)?;
    for unclean in &comparison.unclean_exits {
        outln!("did not stop cleanly: {unclean}")?;
    }
    print_medians(&comparison, config.repeat, &args.baseline)?;
    outln!(
        "\nwrote results.json, results.csv and throughput.svg to {} ({} names the latest run; earlier runs stay beside it)",
        comparison.dir.display(),
        config.out.join(compare::LATEST).display()
    )?;
    let slower = hold_against(&comparison, &args.judge)?;
    if let Some(code) = interrupt.exit_code() {
        eprintln!(
            "compare: interrupted after {} runs; the files hold those (marked partial)",
            comparison.rows.len()
        );
        return Ok(ExitCode::from(code));
    }
    let failed = slower
        || !comparison.unclean_exits.is_empty()
        || comparison
            .rows
            .iter()
            .any(|r| r.results.errors > 0 || r.results.connect_failures > 0);
    Ok(success_if(!failed))
}

/// `compare --notes` and `--python`: each step a server like `--also`'s,
/// started by its command on the port compare picks.
fn notes_peers(notes: &[String], python: &[String]) -> anyhow::Result<Vec<compare::Peer>> {
    let quote =
        |path: &std::path::Path| format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
    let exe = std::env::current_exe().context("finding echo-lab itself")?;
    let mut peers: Vec<compare::Peer> = notes
        .iter()
        .map(|step| compare::Peer {
            name: format!("notes-{step}"),
            command: format!("{} notes {step} --addr 127.0.0.1:{{port}}", quote(&exe)),
        })
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial/notes");
    for step in python {
        let file = match step.as_str() {
            "async" => "async_await.py".to_owned(),
            step => format!("{}.py", step.replace('-', "_")),
        };
        let path = dir.join(&file);
        if !path.exists() {
            anyhow::bail!(
                "--python runs the notes' Python from the source tree; {} is not there",
                path.display()
            );
        }
        peers.push(compare::Peer {
            name: format!("python-{step}"),
            command: format!("python3 -B {} {{port}}", quote(&path)),
        });
    }
    Ok(peers)
}
