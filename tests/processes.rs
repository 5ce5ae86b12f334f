//! Processes (`serve --mode forking`, `--processes N`, `--crash-on`): a
//! process per client leaves no zombie and no child behind; workers serve
//! one port; a worker killed takes only its own clients, and the master
//! starts another; SIGTERM leaves no process behind; a crash under threads
//! takes every client, under processes one process's; each process has
//! its own global lock.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use echo_lab::serve::Mode;

/// The processes `pid` has started and not yet reaped.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children: Vec<u32> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children.sort_unstable();
    children
}

/// Whether process `pid` still exists (a zombie counts: it is not reaped).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Which of `workers` holds the server's end of `client`: the socket whose
/// remote port is the client's own, found in /proc/net/tcp and then among
/// each worker's descriptors.
fn owner(client: &TcpStream, workers: &[u32]) -> Option<u32> {
    let (local, server) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    let wanted = (
        format!("{:04X}", server.port()),
        format!("{:04X}", local.port()),
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| field.rsplit(':').next().unwrap_or("").to_owned();
        ((port(fields[1]), port(fields[2])) == wanted).then(|| fields[9].to_owned())
    })?;
    let target = format!("socket:[{inode}]");
    workers.iter().copied().find(|&worker| {
        std::fs::read_dir(format!("/proc/{worker}/fd")).is_ok_and(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .any(|link| link.to_string_lossy() == target)
        })
    })
}

/// Whether `client` still gets its echo (false: closed or reset).
fn still_echoes(client: &mut TcpStream) -> bool {
    if client.write_all(b"still there?").is_err() {
        return false;
    }
    let mut echo = [0; 12];
    client.read_exact(&mut echo).is_ok() && &echo == b"still there?"
}

/// Connects clients until each of `workers` holds at least `each` of them
/// (the kernel hands a new client to whichever worker takes it first), and
/// returns them with their worker.
fn clients_of_every_worker(
    server: &BinaryServer,
    workers: &[u32],
    each: usize,
) -> Vec<(TcpStream, u32)> {
    let mut clients = Vec::new();
    for _ in 0..200 {
        let held =
            |w: u32, clients: &[(TcpStream, u32)]| clients.iter().filter(|c| c.1 == w).count();
        if workers.iter().all(|&w| held(w, &clients) >= each) {
            return clients;
        }
        let mut client = connect(server.addr);
        // Echoed: a worker has accepted it and holds its socket.
        assert_echo(&mut client, b"hello");
        let worker = owner(&client, workers).expect("a worker holds the client");
        if held(worker, &clients) < each {
            clients.push((client, worker));
        }
    }
    panic!("200 clients and some worker never took {each}");
}

/// Three workers serve; `kill -9` of one closes its clients only, the
/// others' stay served, and a new worker serves within 2 s; SIGTERM to the
/// master then stops every worker and leaves no process behind.
#[test]
fn a_killed_worker_takes_only_its_clients_and_is_replaced() {
    let server = BinaryServer::start(&["--mode", "selector", "--processes", "3", "--quiet"]);
    let master = server.child.id();
    wait_until("three workers", || children(master).len() == 3);
    let workers = children(master);
    let mut clients = clients_of_every_worker(&server, &workers, 2);
    let victim = workers[0];
    echo_lab::sys::signal(victim, libc::SIGKILL).unwrap();
    let replaced = poll_until(Duration::from_secs(2), || {
        let now = children(master);
        now.len() == 3 && !now.contains(&victim)
    });
    assert!(replaced, "no new worker within 2 s: {:?}", children(master));
    for (client, worker) in &mut clients {
        assert_eq!(
            still_echoes(client),
            *worker != victim,
            "a client of {worker}"
        );
    }
    // The new worker serves too: clients reach all three.
    let workers = children(master);
    drop(clients_of_every_worker(&server, &workers, 1));
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("was killed by signal 9"), "{stderr}");
    assert!(stderr.contains("shutting down after"), "{stderr}");
    for worker in workers {
        assert!(
            !exists(worker),
            "worker {worker} outlived its master: {stderr}"
        );
    }
}

/// `--crash-on` under threads: one handler's crash takes the whole process,
/// so every other client is dropped too.
#[test]
fn a_crash_under_threads_drops_every_client() {
    let mut server = BinaryServer::start(&["--mode", "threads", "--crash-on", "boom", "--quiet"]);
    let mut others: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
    for other in &mut others {
        assert_echo(other, b"fine");
    }
    let mut crasher = connect(server.addr);
    let _ = crasher.write_all(b"boom");
    let mut status = None;
    assert!(poll_until(PATIENCE, || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    }));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.unwrap().signal(), Some(libc::SIGABRT));
    for other in &mut others {
        assert!(!still_echoes(other), "a client outlived the crash");
    }
}

/// `--crash-on` under `--processes 2`: the crash takes one worker and its
/// clients; the other worker's clients are still served, and the master
/// starts a worker in place of the one that died.
#[test]
fn a_crash_under_processes_drops_only_that_workers_clients() {
    let server = BinaryServer::start(&[
        "--mode",
        "threadpool",
        "--processes",
        "2",
        "--crash-on",
        "boom",
        "--quiet",
    ]);
    let master = server.child.id();
    wait_until("two workers", || children(master).len() == 2);
    let workers = children(master);
    let mut clients = clients_of_every_worker(&server, &workers, 2);
    let victim = clients[0].1;
    let _ = clients[0].0.write_all(b"boom");
    wait_until("the crashed worker replaced", || {
        let now = children(master);
        now.len() == 2 && !now.contains(&victim)
    });
    for (client, worker) in &mut clients[1..] {
        assert_eq!(
            still_echoes(client),
            *worker != victim,
            "a client of {worker}"
        );
    }
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("(SIGABRT: it aborted)"), "{stderr}");
}

/// `--global-lock` is per process, as CPython's GIL: with two worker
/// processes, two clients' `cpu` work runs at once (one in each), where one
/// process runs one at a time. Seen in the workers' CPU time: when the first
/// echo is back after its 200 ms of CPU, the other worker has been
/// computing meanwhile, not waiting for a lock.
#[test]
fn each_process_has_its_own_global_lock() {
    let server = BinaryServer::start(&[
        "--mode",
        "threadpool",
        "--workers",
        "4",
        "--global-lock",
        "--work",
        "cpu:200ms",
        "--processes",
        "2",
        "--quiet",
    ]);
    let master = server.child.id();
    wait_until("two workers", || children(master).len() == 2);
    let workers = children(master);
    // Tiny messages first, to learn which worker holds which client: each
    // costs 200 ms of CPU.
    let mut clients = clients_of_every_worker(&server, &workers, 1);
    let cpu = |pid: u32| echo_lab::sys::process_cpu_time(pid).unwrap_or_default();
    let before: Vec<Duration> = workers.iter().map(|&w| cpu(w)).collect();
    let started = Instant::now();
    for (client, _) in &mut clients[..2] {
        client.write_all(b"x").unwrap();
    }
    let mut echo = [0; 1];
    clients[0].0.read_exact(&mut echo).unwrap();
    let other = workers.iter().position(|&w| w != clients[0].1).unwrap();
    let computed = cpu(workers[other]) - before[other];
    assert!(
        computed >= Duration::from_millis(50),
        "the other worker computed {computed:?} in the {:?} the first took",
        started.elapsed()
    );
    clients[1].0.read_exact(&mut echo).unwrap();
}

/// `forking` serves 200 clients, 20 at a time, each in a process of its
/// own, and reaps every one of them: no zombie is left once they are gone.
#[test]
fn forking_leaves_no_zombie() {
    let server = BinaryServer::start(&["--mode", "forking", "--quiet"]);
    for batch in 0..10u8 {
        let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(server.addr)).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            assert_echo(client, &[batch, i as u8, b'\n']);
        }
    }
    let pid = server.child.id();
    wait_until("every child reaped", || children(pid).is_empty());
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("served 200 connections"), "{stderr}");
}

/// SIGTERM to a forking server with clients connected: every child is
/// stopped and reaped, the clients see their connections end, and the
/// summary counts them as ended by the shutdown.
#[test]
fn forking_leaves_no_child_after_sigterm() {
    let server = BinaryServer::start(&["--mode", "forking"]);
    let pid = server.child.id();
    let mut clients: Vec<TcpStream> = (0..5).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        assert_echo(client, b"here");
    }
    let kids = children(pid);
    assert_eq!(kids.len(), 5, "a process per client: {kids:?}");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for kid in kids {
        assert!(!exists(kid), "child {kid} outlived the server: {stderr}");
    }
    for client in &mut clients {
        assert!(!still_echoes(client));
    }
    // Each child said what it echoed before it went.
    assert!(
        stderr.contains("disconnected after 4 bytes (server shutdown)"),
        "{stderr}"
    );
}

/// `--crash-on` under forking: the crash takes one child, and only its
/// client; the server and its other clients go on.
#[test]
fn a_crash_under_forking_takes_one_client() {
    let server = BinaryServer::start(&["--mode", "forking", "--crash-on", "boom"]);
    let mut others: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
    for other in &mut others {
        assert_echo(other, b"fine");
    }
    let mut crasher = connect(server.addr);
    let _ = crasher.write_all(b"boom");
    let mut rest = Vec::new();
    let _ = crasher.read_to_end(&mut rest);
    for other in &mut others {
        assert!(
            still_echoes(other),
            "another client went down with the crash"
        );
    }
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("its process aborted"), "{stderr}");
}

/// The `offload-worker` processes under `pid`.
fn offload_workers(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|&kid| {
            std::fs::read(format!("/proc/{kid}/cmdline"))
                .is_ok_and(|line| line.split(|&b| b == 0).any(|arg| arg == b"offload-worker"))
        })
        .collect()
}

/// A `mode` server doing 200 ms of CPU work per chunk on a pool of two,
/// `pool` being `--offload` or `--offload-processes`, under
/// `--global-lock`.
fn start_two_pool_under_the_lock(mode: &str, pool: &str) -> BinaryServer {
    BinaryServer::start(&[
        "--mode",
        mode,
        "--work",
        "cpu:200ms",
        pool,
        "2",
        "--global-lock",
        "--quiet",
    ])
}

/// Sends one byte on each client at once, and waits for the first echo.
fn send_both_and_wait_for_one(clients: &mut [TcpStream]) {
    for client in clients.iter_mut() {
        client.write_all(b"x").unwrap();
    }
    let mut echo = [0; 1];
    clients[0].read_exact(&mut echo).unwrap();
}

/// `--offload` threads share their process's `--global-lock`: while one
/// computes its 200 ms, the other waits for the lock, so the two echoes
/// come back at least one job's CPU time apart (computing at once, on two
/// cores, they would come back together). Which job takes the lock first
/// is the threads' race: the test times both echoes, whichever is first.
#[test]
fn offload_threads_share_the_global_lock() {
    let server = start_two_pool_under_the_lock("async", "--offload");
    let clients = [connect(server.addr), connect(server.addr)];
    for mut client in &clients {
        client.write_all(b"x").unwrap();
    }
    let echoed_at = |mut client: &TcpStream| {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut echo = [0; 1];
        client.read_exact(&mut echo).unwrap();
        std::time::Instant::now()
    };
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| echoed_at(&clients[0]));
        let second = scope.spawn(|| echoed_at(&clients[1]));
        (first.join().unwrap(), second.join().unwrap())
    });
    let apart = first.max(second) - first.min(second);
    // One job's 200 ms of CPU needs 200 ms at least; a loaded machine can
    // only stretch it.
    assert!(
        apart >= Duration::from_millis(150),
        "the echoes came {apart:?} apart: the two jobs computed at once"
    );
}

/// `--offload-processes`: each job goes to a worker process of its own
/// pool thread, each process has its own lock, and so under
/// `--global-lock` the other worker computes while the first does (seen
/// in its CPU clock when the first echo is back). SIGTERM then ends the
/// server and its workers with it.
#[test]
fn offload_processes_compute_at_once_under_the_global_lock_and_end_with_the_server() {
    let server = start_two_pool_under_the_lock("selector", "--offload-processes");
    let pid = server.child.id();
    let mut clients = [connect(server.addr), connect(server.addr)];
    send_both_and_wait_for_one(&mut clients);
    let workers = offload_workers(pid);
    assert_eq!(workers.len(), 2, "a worker process per busy pool thread");
    let cpu = |pid: u32| echo_lab::sys::process_cpu_time(pid).unwrap_or_default();
    let computed: Vec<Duration> = workers.iter().map(|&w| cpu(w)).collect();
    assert!(
        computed.iter().all(|&c| c >= Duration::from_millis(50)),
        "each worker computed when the first echo came: {computed:?}"
    );
    let mut echo = [0; 1];
    clients[1].read_exact(&mut echo).unwrap();
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for worker in workers {
        assert!(!exists(worker), "worker {worker} outlived the server");
    }
}

/// A worker process killed outright takes nothing else with it: the job
/// it had is echoed (its work undone), a new process takes the next, and
/// the server says what happened.
#[test]
fn a_killed_offload_worker_is_replaced() {
    let server = BinaryServer::start(&[
        "--mode",
        "async",
        "--work",
        "cpu:1ms",
        "--offload-processes",
        "1",
        "--quiet",
    ]);
    let pid = server.child.id();
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"first");
    let first = offload_workers(pid);
    assert_eq!(first.len(), 1);
    echo_lab::sys::signal(first[0], libc::SIGKILL).unwrap();
    wait_until("the killed worker reaped or gone", || {
        std::fs::read_to_string(format!("/proc/{}/stat", first[0]))
            .map_or(true, |stat| stat.contains(") Z "))
    });
    for message in [&b"second"[..], b"third", b"fourth"] {
        assert_echo(&mut client, message);
    }
    let now = offload_workers(pid);
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a new worker process");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("offload worker process {} failed", first[0])),
        "{stderr}"
    );
}

/// Connects clients one after another, each echoed and closed, until
/// every one of `workers` has served one: a `sequential` worker serves the
/// next client only once the last has gone, so none is kept.
fn every_worker_serves(server: &BinaryServer, workers: &[u32]) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        if workers.iter().all(|w| seen.contains(w)) {
            return;
        }
        let mut client = connect(server.addr);
        assert_echo(&mut client, b"hello");
        seen.extend(owner(&client, workers));
    }
    panic!("200 clients and only {seen:?} of {workers:?} served");
}

/// SIGTERM to one worker of `mode` under `--processes 2` (the blocking
/// workers once woke their `accept()` by shutting the listener down, and
/// every worker after it found a dead socket): the worker stops as a
/// server does, the other goes on serving, the master starts another on
/// the same listener, and both serve new clients; the summary has every
/// count, and no worker failed.
fn sigterm_to_one_worker_stops_only_it(mode: Mode) {
    let server = BinaryServer::start(&["--mode", mode.name(), "--processes", "2", "--quiet"]);
    let master = server.child.id();
    wait_until("two workers", || children(master).len() == 2);
    let workers = children(master);
    every_worker_serves(&server, &workers);
    let (victim, survivor) = (workers[0], workers[1]);
    echo_lab::sys::signal(victim, libc::SIGTERM).unwrap();
    wait_until("the stopped worker replaced", || {
        let now = children(master);
        now.len() == 2 && !now.contains(&victim)
    });
    let workers = children(master);
    assert!(workers.contains(&survivor), "{workers:?}");
    every_worker_serves(&server, &workers);
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "(pid {victim}) exited with status 0; starting another"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("failed:"), "{stderr}");
    assert!(!stderr.contains("missing from the counts"), "{stderr}");
}

every_model!(processes: sigterm_to_one_worker_stops_only_it);

/// Twelve clients of a `threadpool --processes 3`, then SIGTERM to the
/// master: every worker stops cleanly (none reports a failed `accept()`),
/// and the summary counts every client and byte, with each worker's share.
#[test]
fn a_stopped_master_counts_every_workers_clients() {
    let server = BinaryServer::start(&["--mode", "threadpool", "--processes", "3", "--quiet"]);
    let master = server.child.id();
    wait_until("three workers", || children(master).len() == 3);
    let mut clients: Vec<TcpStream> = (0..12).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        assert_echo(client, b"hello");
    }
    let (status, _, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("failed:"), "{stderr}");
    assert!(
        stderr.contains("served 12 connections, echoed 60 bytes"),
        "{stderr}"
    );
    let per_worker = stderr
        .lines()
        .find_map(|line| line.strip_prefix("clients per worker: "))
        .unwrap_or_else(|| panic!("no clients per worker: {stderr}"));
    let shares: Vec<u64> = per_worker
        .split(", ")
        .map(|share| share.split(": ").nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(shares.len(), 3, "{per_worker}");
    assert_eq!(shares.iter().sum::<u64>(), 12, "{per_worker}");
}

/// Eight clients arriving at once on `threadpool --processes 2`: both
/// workers take some (each worker has a listener of its own, and the
/// kernel spreads the clients over them), where one shared listener let
/// the first worker's acceptor take all eight.
#[test]
fn workers_share_a_burst_of_clients() {
    let server = BinaryServer::start(&["--mode", "threadpool", "--processes", "2", "--quiet"]);
    let master = server.child.id();
    wait_until("two workers", || children(master).len() == 2);
    let workers = children(master);
    // Sixteen: the chance that a fair hash gives all to one is 2 in 65,536.
    let mut clients: Vec<TcpStream> = (0..16).map(|_| connect(server.addr)).collect();
    let mut held = [0; 2];
    for client in &mut clients {
        assert_echo(client, b"x");
        let owner = owner(client, &workers).expect("a worker holds the client");
        held[usize::from(owner == workers[1])] += 1;
    }
    assert!(held[0] > 0 && held[1] > 0, "clients per worker: {held:?}");
}

/// `kill -9` of a forking parent: its children die with it (Linux's
/// parent-death signal), so no process serves on under PID 1, and every
/// client sees its connection end.
#[test]
fn forking_children_die_with_a_killed_parent() {
    let server = BinaryServer::start(&["--mode", "forking", "--quiet"]);
    let pid = server.child.id();
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        assert_echo(client, b"here");
    }
    let kids = children(pid);
    assert_eq!(kids.len(), 3, "{kids:?}");
    let (status, _, stderr) = server.signal_and_wait(libc::SIGKILL, PATIENCE);
    assert_eq!(status.code(), None, "{stderr}");
    wait_until("every child gone", || kids.iter().all(|&kid| !exists(kid)));
    for client in &mut clients {
        assert!(!still_echoes(client));
    }
}

/// `kill -9` of a `--processes` master: every worker stops with it, and
/// none panics writing its counts to the master that is gone.
#[test]
fn workers_end_quietly_with_a_killed_master() {
    let server = BinaryServer::start(&["--mode", "selector", "--processes", "3"]);
    let master = server.child.id();
    wait_until("three workers", || children(master).len() == 3);
    let workers = children(master);
    let mut client = connect(server.addr);
    assert_echo(&mut client, b"hello");
    // The workers share the master's stderr: reading it to its end waits
    // for them too.
    let (_, _, stderr) = server.signal_and_wait(libc::SIGKILL, PATIENCE);
    wait_until("every worker gone", || workers.iter().all(|&w| !exists(w)));
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A SIGTERM while the master is still starting its workers stops the
/// start at once: the master exits 0 within the usual 2 s, having started
/// only some, and leaves none behind.
#[test]
fn a_stop_during_the_start_stops_it() {
    let many = echo_lab::serve::processes::max_processes()
        .min(100)
        .to_string();
    let server = BinaryServer::start(&["--mode", "selector", "--processes", &many]);
    let (status, took, stderr) = server.signal_and_wait(libc::SIGTERM, PATIENCE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(took < Duration::from_secs(2), "{took:?}: {stderr}");
    let started: Vec<u32> = stderr
        .lines()
        .filter_map(|line| {
            line.split("started (pid ")
                .nth(1)?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        started.len() < 100,
        "all {} started: {stderr}",
        started.len()
    );
    for worker in started {
        assert!(!exists(worker), "worker {worker} outlived the start");
    }
}

/// More workers than the machine can sensibly run are refused in one
/// line that says the limit.
#[test]
fn too_many_processes_are_refused() {
    let (code, _, stderr) =
        run_binary(&["serve", "--addr", "127.0.0.1:0", "--processes", "100000"]);
    assert_eq!(code, Some(1), "{stderr}");
    let most = echo_lab::serve::processes::max_processes();
    assert!(stderr.contains(&format!("at most {most}")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// One SIGTERM at a random moment of a server's life, from its first
/// instructions to well after it listens, must always stop it within 2 s
/// (twice, scripted runs seemed to need a second SIGTERM). Every model,
/// `--processes 2` and the thread chat, 200 starts in all, four at a
/// time; the moments come from a fixed seed, so a failure can be rerun.
/// A signal that lands before `main` holds it back (in the loader) kills
/// the process by the default action: also an end within the bound, and
/// counted apart.
///
/// The lost signal has not been reproduced here (nor in 25 scripted
/// tries). A candidate outside echo-lab, not proven: an interactive bash
/// ignores SIGTERM itself, and the child it forks for a job keeps that
/// disposition until it resets it just before `exec`; a `kill %1` sent in
/// that window is discarded before echo-lab exists.
#[test]
fn one_sigterm_at_any_moment_stops_every_server() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let mut configs: Vec<Vec<&str>> = Mode::ALL
        .iter()
        .filter(|&&mode| !unavailable(mode))
        .map(|mode| vec!["--mode", mode.name()])
        .collect();
    configs.push(vec!["--mode", "threadpool", "--processes", "2"]);
    configs.push(vec!["--mode", "threads", "--protocol", "chat"]);
    let runs: Vec<(usize, u64)> = (0..200u64)
        .map(|i| {
            // A fixed linear congruential sequence: 0 to 200 ms.
            let delay = i
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                >> 33;
            (i as usize % configs.len(), delay % 201)
        })
        .collect();
    let killed_early = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for share in runs.chunks(runs.len() / 4) {
            let (configs, killed_early) = (&configs, &killed_early);
            scope.spawn(move || {
                for &(config, delay) in share {
                    let args = &configs[config];
                    let mut child = Command::new(binary())
                        .args(["serve", "--addr", "127.0.0.1:0", "--quiet"])
                        .args(args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(delay));
                    echo_lab::sys::signal(child.id(), libc::SIGTERM).unwrap();
                    let mut status = None;
                    let stopped = poll_until(Duration::from_secs(2), || {
                        status = child.try_wait().unwrap();
                        status.is_some()
                    });
                    if !stopped {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    assert!(
                        stopped,
                        "{args:?}: still running 2 s after SIGTERM at {delay} ms"
                    );
                    let status = status.unwrap();
                    if status.signal() == Some(libc::SIGTERM) {
                        killed_early.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        assert_eq!(status.code(), Some(0), "{args:?} at {delay} ms");
                    }
                }
            });
        }
    });
    let early = killed_early.into_inner();
    assert!(
        early < 20,
        "{early} of 200 died before main held the signal"
    );
}
