//! The sequential model: accept one client, echo until it leaves, accept the
//! next. The notes' first server (`run_server` + `handle_client`), and the
//! baseline every other model is measured against.
//!
//! Its trade-off is simplicity: one thread, no shared state, nothing to
//! synchronise. Its limit is plain to see: while one client is connected,
//! every other client waits in the kernel's backlog, and a client that stays
//! connected without sending anything blocks the whole server (only
//! `--idle-timeout` frees it). Shutdown wakes the wait for a client
//! (`poll(2)` on the listener and the shutdown's bell) or the blocked
//! `read()` (by shutting the client's socket down).
//!
//! The lab's part (`src/lab/`, skippable on a first read): a `--stats`
//! line (`with_stats`) with the client served and the kernel's accept
//! queue; `--work` and `--crash-on` happen inside `handle_client`.
//!
//! Next: [`super::threads`], a thread per client; then [`super::threadpool`],
//! which bounds the threads.
//!
//! Tutorial: `docs/tutorial/1-one-client-at-a-time.md`.

use std::io;
use std::net::TcpListener;

use super::{Clients, handle_client, with_stats};
use crate::lab::live::Line;
use crate::serve::Context;

/// Serves one client at a time until shutdown.
///
/// # Errors
/// If the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let mut clients = Clients::new(listener, ctx)?;
    let listener = clients.listener();
    // --stats: the one client served, and the others waiting in the
    // kernel's accept queue (which Linux can count).
    let stats = move |line: &mut Line| {
        ctx.traffic.fill(line, ctx.stats.active());
        line.gauge("serving", ctx.stats.active());
        if let Some(waiting) = crate::sys::accept_queue(&*listener) {
            line.gauge("accept_queue", u64::from(waiting));
        }
    };
    with_stats(ctx, "sequential", stats, || {
        // for client in clients: handle_client(client)
        for client in &mut clients {
            handle_client(client, ctx);
        }
    });
    clients.finish()
}
