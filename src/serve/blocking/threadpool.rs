//! The thread-pool model: a fixed pool of `--workers` threads, each serving
//! one client at a time with blocking calls, fed through a bounded queue.
//! The notes' `ThreadPoolExecutor(max_workers=20)` server.
//!
//! The acceptor hands each client to the queue; a free worker takes it and
//! runs the same `handle_client` as the sequential model. The queue is
//! bounded: when every worker is busy and the queue is full, the acceptor
//! blocks in `send`, stops accepting, and new clients wait in the kernel's
//! backlog instead of piling up in our memory.
//!
//! Its limit is the notes' long-running client: a client that stays
//! connected holds a worker for as long as it likes, so `--workers` idle
//! clients starve everyone else (`--idle-timeout` is one remedy). Each
//! worker also costs a thread: a stack, a kernel task, context switches.
//!
//! Shutdown shuts every socket down (waking blocked workers), drops the
//! queue's sender, and joins every worker.
//!
//! The lab's part (`src/lab/`, skippable on a first read): a `--stats`
//! line with the workers busy, the clients queued and the longest wait;
//! `--work` and `--crash-on` happen inside `handle_client`.
//!
//! Next: `selector`, which serves every client from one thread.
//!
//! Tutorial: `docs/tutorial/2-a-pool-of-threads.md`.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::{Client, Clients, handle_client, report_every};
use crate::serve::Context;

/// Serves up to `--workers` clients at once until shutdown.
///
/// # Errors
/// If the listener breaks or a worker thread cannot be started.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let pool = Pool::default();
    thread::scope(|scope| {
        // Created inside the scope so that an early return drops the sender
        // and lets the workers already started finish.
        let (queue, jobs) = crossbeam_channel::bounded(ctx.config.queue);
        let mut workers = Vec::new();
        for id in 0..ctx.config.workers.get() {
            let (jobs, pool) = (jobs.clone(), &pool);
            workers.push(
                thread::Builder::new()
                    .name(format!("worker-{id}"))
                    .spawn_scoped(scope, move || worker(jobs, ctx, pool))?,
            );
        }
        // --stats: the notes' long-running clients, visible as they hold
        // every worker and the others queue.
        let (waiting, pool) = (jobs.clone(), &pool);
        let report = report_every(scope, ctx, "threadpool", move |line| {
            ctx.traffic.fill(line, ctx.stats.active());
            line.gauge("workers", ctx.config.workers.get() as u64)
                .gauge("busy", pool.busy.load(Relaxed))
                .gauge("queued", waiting.len() as u64)
                .max(
                    "longest_wait_ms",
                    pool.longest_wait_us.swap(0, Relaxed) as f64 / 1000.0,
                    1,
                );
        });
        let mut clients = Clients::new(listener, ctx)?;
        for client in &mut clients {
            // Blocks while the queue is full: this is the back-pressure.
            if queue.send((client, Instant::now())).is_err() {
                break;
            }
        }
        // Dropping the sender ends every worker's loop once the queue is
        // empty.
        drop(queue);
        for worker in workers {
            let _ = worker.join();
        }
        if let Some(report) = report {
            report.finish();
        }
        clients.finish()
    })
}

/// What the workers share for `--stats`: relaxed atomics, touched once per
/// client, not per message.
#[derive(Default)]
struct Pool {
    /// Workers serving a client now.
    busy: AtomicU64,
    /// The longest a client waited in the queue for a worker, since the
    /// last line, in microseconds.
    longest_wait_us: AtomicU64,
}

/// One worker: take a client from the queue, serve it to the end, repeat.
fn worker(jobs: Receiver<(Client<'_>, Instant)>, ctx: &Context, pool: &Pool) {
    for (client, queued) in jobs {
        if ctx.shutdown.is_triggered() {
            // Still queued at shutdown: dropped, it is closed and logged
            // as ended by the shutdown, without being served.
            continue;
        }
        let waited = u64::try_from(queued.elapsed().as_micros()).unwrap_or(u64::MAX);
        pool.longest_wait_us.fetch_max(waited, Relaxed);
        pool.busy.fetch_add(1, Relaxed);
        handle_client(client, ctx);
        pool.busy.fetch_sub(1, Relaxed);
    }
}
