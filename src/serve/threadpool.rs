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
//! Next: `selector`, which serves every client from one thread.
//!
//! Tutorial: `docs/tutorial/2-a-pool-of-threads.md`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use crossbeam_channel::Receiver;

use super::Context;
use super::blocking::{Clients, handle_client};
use crate::stats::Ending;

/// Serves up to `--workers` clients at once until shutdown.
///
/// # Errors
/// If the listener breaks or a worker thread cannot be started.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    thread::scope(|scope| {
        // Created inside the scope so that an early return drops the sender
        // and lets the workers already started finish.
        let (queue, jobs) = crossbeam_channel::bounded(ctx.config.queue);
        for id in 0..ctx.config.workers.get() {
            let jobs = jobs.clone();
            thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn_scoped(scope, move || worker(jobs, ctx))?;
        }
        let mut clients = Clients::new(listener, ctx);
        for client in &mut clients {
            // Blocks while the queue is full: this is the back-pressure.
            if queue.send(client).is_err() {
                break;
            }
        }
        // Dropping the sender ends every worker's loop once the queue is
        // empty; the scope then joins them.
        drop(queue);
        clients.finish()
    })
}

/// One worker: take a client from the queue, serve it to the end, repeat.
fn worker(jobs: Receiver<(TcpStream, SocketAddr)>, ctx: &Context) {
    for (stream, peer) in jobs {
        if ctx.shutdown.is_triggered() {
            // Still queued at shutdown: close without serving.
            ctx.stats.disconnected(peer, 0, Ending::Shutdown);
            continue;
        }
        handle_client(stream, peer, ctx);
    }
}
