//! The thread-per-client model: every accepted client gets a thread of its
//! own, which runs the notes' blocking `handle_client` until the client
//! leaves. Python's `socketserver.ThreadingTCPServer`, the classic Apache
//! model, and the step between the sequential server and the pool in the
//! code behind the notes' first article.
//!
//! Nothing is bounded but `--max-connections`: a thousand clients are a
//! thousand threads, each with a stack (`--stack-size`, [`DEFAULT_STACK_SIZE`](crate::serve::DEFAULT_STACK_SIZE)
//! by default: the memory is reserved at once and touched as it is used)
//! and a kernel task the scheduler must switch between. That cost is what
//! this model is here to show; the pool bounds it, the loops avoid it.
//!
//! Shutdown shuts every client's socket down (its hook wakes the blocked
//! thread), stops accepting, and waits for every client thread to end.
//!
//! The lab's part (`src/lab/`, skippable on a first read): a `--stats`
//! line (`with_stats`) counting the threads serving; `--work` and
//! `--crash-on` happen inside `handle_client`.
//!
//! Next: `threadpool`, which caps the threads and queues the rest.
//!
//! Tutorial: `docs/tutorial/2-a-pool-of-threads.md`.

use std::io;
use std::net::TcpListener;
use std::thread;

use super::{Clients, handle_client, spawn_client, with_stats};
use crate::lab::live::Line;
use crate::serve::Context;

/// Serves every client on a thread of its own until shutdown.
///
/// # Errors
/// If the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let mut clients = Clients::new(listener, ctx)?;
    // --stats: the clients served right now are the threads serving (each
    // line also counts the process's threads and its memory).
    let stats = |line: &mut Line| ctx.traffic.fill(line, ctx.stats.active());
    with_stats(ctx, "threads", stats, || {
        thread::scope(|scope| {
            for client in &mut clients {
                spawn_client(scope, ctx, "client".into(), client, |client| {
                    handle_client(client, ctx)
                });
            }
        });
    });
    clients.finish()
}
