//! The sequential model: accept one client, echo until it leaves, accept the
//! next. The notes' first server (`run_server` + `handle_client`, both
//! here; the other blocking models run this `handle_client` too), and the
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

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::sync::Arc;

use super::{Client, Clients, with_stats};
use crate::lab::live::Line;
use crate::net::interrupted;
use crate::serve::{Context, READ_BUFFER_SIZE};
use crate::stats::Ending;

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

/// Echoes everything `stream` sends until it closes, then logs how it ended:
/// the notes' `handle_client`.
pub fn handle_client((stream, mut visit): Client<'_>, ctx: &Context) {
    let stream = Arc::new(stream);
    let waker = stream.clone();
    let wake = ctx.shutdown.on_trigger(move || {
        let _ = waker.shutdown(Direction::Both);
    });
    let mut echoed = Echoed::default();
    let served = echo(&stream, ctx, &mut echoed);
    visit.bytes = echoed.bytes;
    let ending = match served {
        _ if ctx.shutdown.is_triggered() => Ending::Shutdown,
        Ok(()) => Ending::Closed,
        Err(ending) => ending,
    };
    drop(wake);
    drop(stream);
    visit.end(ending);
}

/// The echo loop. `write_all` keeps writing until every byte is taken: a
/// blocking write may take fewer bytes than offered (a partial write), and
/// the kernel parks the thread until the peer makes room.
///
/// Half-close needs no special case: everything read has been written back
/// by the time `read()` reports the end of the stream with 0.
pub(crate) fn echo(
    mut stream: &TcpStream,
    ctx: &Context,
    echoed: &mut Echoed,
) -> Result<(), Ending> {
    // With an idle timeout, a read (or a write to a client that stopped
    // reading) that waits longer fails with WouldBlock: we disconnect.
    stream
        .set_read_timeout(ctx.config.idle_timeout)
        .and_then(|()| stream.set_write_timeout(ctx.config.idle_timeout))
        .map_err(Ending::Failed)?;
    let mut buffer = [0; READ_BUFFER_SIZE];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if interrupted(&e) => continue,
            // Nothing is held here: whatever came before was echoed.
            Err(e) => return Err(Ending::from_read_error(e)),
        };
        // Shared by every worker: counted only when someone reads it.
        crate::lab::crash::check(&buffer[..n]);
        let counting = ctx.config.stats.is_some();
        if counting {
            ctx.traffic.read(n);
        }
        if let Some(work) = ctx.config.work {
            // A thread that waits is blocked, whatever the kind: the
            // thread pool's other workers go on; sequential's clients wait.
            work.block(&buffer[..n], ctx.work_lock());
        }
        stream.write_all(&buffer[..n]).map_err(Ending::from_error)?;
        if counting {
            ctx.traffic.wrote(n);
        }
        echoed.reads += 1;
        echoed.bytes += n as u64;
    }
}

/// What [`echo`] has done for one client so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Echoed {
    /// Reads that brought bytes: messages, as `--stats` counts them.
    pub reads: u64,
    /// Bytes read and written back.
    pub bytes: u64,
}
