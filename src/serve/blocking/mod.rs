//! What the four blocking models (and the thread chat) share: the accept
//! loop, the `--stats` reporter, and the notes' `handle_client` (written
//! in [`sequential`], the first model, and run by all four), one thread
//! blocked on one socket at a time.
//!
//! A thread blocked in `read()` or `write()` cannot check a flag, so
//! shutdown reaches it through the kernel: `shutdown(2)` on the client's
//! socket makes the call return at once (`read()` with 0, `write()` with
//! EPIPE). The accept loop cannot be woken that way: `shutdown(2)` acts on
//! the socket, not on one process's descriptor of it, and under
//! `--processes` a worker's listener is also its successor's (the master
//! keeps it for the next worker of that seat). So the accept loop waits in
//! `poll(2)` for either the listener or the shutdown's bell, and only then
//! calls `accept()`, on a non-blocking listener: a client another thread
//! or process took first means "wait again", never a blocked `accept()`.

pub mod forking;
pub mod sequential;
pub mod threadpool;
pub mod threads;

// The notes' `handle_client` is the first model's, in its file; every
// blocking model runs it, through this kit.
pub use sequential::handle_client;
pub(super) use sequential::{Echoed, echo};

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::lab::live::{Line, Reporter};
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::serve::Context;
use crate::serve::accept::{Accepted, Visit, accept};
use crate::stats::Ending;
use std::time::Instant;

/// The clients a listener accepts, one after another, until shutdown.
///
/// Each client comes through the one accept step ([`crate::serve::accept`]); what
/// is left here is the blocking way of waiting: `poll(2)` on the listener
/// and the shutdown's bell, running out of descriptors sleeps for
/// [`ACCEPT_BACKOFF`], and a broken listener ends the iteration (see
/// [`Clients::finish`]).
pub struct Clients<'a> {
    /// Non-blocking: the wait is in `poll(2)`, never in `accept()`.
    listener: Arc<TcpListener>,
    /// Readable once the shutdown is triggered (or a signal asks for it).
    bell: UnixStream,
    ctx: &'a Context,
    fatal: Option<io::Error>,
}

impl<'a> Clients<'a> {
    /// Starts accepting on `listener`.
    ///
    /// # Errors
    /// The listener cannot be made non-blocking, or the bell duplicated
    /// (out of descriptors).
    pub fn new(listener: TcpListener, ctx: &'a Context) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Clients {
            listener: Arc::new(listener),
            bell: ctx.shutdown.bell()?,
            ctx,
            fatal: None,
        })
    }

    /// The listener, for a `--stats` reporter to look at its queue.
    pub fn listener(&self) -> Arc<TcpListener> {
        self.listener.clone()
    }

    /// How accepting ended: `Ok` on shutdown, the error if the listener broke.
    ///
    /// # Errors
    /// The `accept()` error that ended the iteration.
    pub fn finish(self) -> io::Result<()> {
        self.fatal.map_or(Ok(()), Err)
    }

    /// Stops the whole server because the listener broke, waking every
    /// thread blocked on a client, and keeps the error for `finish`.
    fn fail(&mut self, e: io::Error) {
        self.fatal = Some(e);
        self.ctx.shutdown.trigger();
    }
}

/// A client of a blocking model: its socket, and its account, counted in.
pub type Client<'a> = (TcpStream, Visit<'a, AtomicU64>);

impl<'a> Iterator for Clients<'a> {
    type Item = Client<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ctx.shutdown.is_triggered() {
            match accept(&self.listener, &self.ctx.stats, Blocking::Yes) {
                Accepted::Client(stream, peer) => {
                    let visit = Visit::new(peer, &self.ctx.traffic, &self.ctx.stats);
                    return Some((stream, visit));
                }
                Accepted::Fatal(e) => {
                    self.fail(e);
                    break;
                }
                Accepted::BackOff => {
                    self.ctx.shutdown.sleep(ACCEPT_BACKOFF);
                }
                // Nobody waiting: sleep until a client comes or the bell
                // rings. A signal's bell is heard here as well; the
                // signal watcher triggers the shutdown itself.
                Accepted::Empty => {
                    match crate::sys::wait_readable(self.listener.as_fd(), self.bell.as_fd()) {
                        Ok([_, true]) => self.ctx.shutdown.trigger(),
                        Ok(_) => {}
                        Err(e) => {
                            self.fail(e);
                            break;
                        }
                    }
                }
            }
        }
        None
    }
}

/// Serves `client` with `serve` on a thread of its own in `scope`, named
/// `name`, with the `--stack-size` stack. With no thread to be had (out of
/// memory, or of the kernel's task limit) the client is closed, and the
/// caller goes on to the next.
pub fn spawn_client<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    ctx: &Context,
    name: String,
    mut client: Client<'env>,
    serve: impl FnOnce(Client<'env>) + Send + 'scope,
) {
    // Said in advance: a thread that cannot start drops the closure, and
    // the client's account with it, so this is how that client ended. A
    // thread that starts says how its client really ended.
    client
        .1
        .ends(Ending::Dropped(&"no thread could be started for it"));
    let _ = std::thread::Builder::new()
        .name(name)
        .stack_size(ctx.config.stack_size)
        .spawn_scoped(scope, move || serve(client));
}

/// Runs `serve` (a model's accept loop) with `--stats` beside it: `fill`
/// makes a line every interval on a thread of its own (the blocking
/// models' threads block and cannot), and the final line is written once
/// `serve` has returned, so it counts every thread of the model. Nothing
/// but `serve` without `--stats`.
pub fn with_stats<R>(
    ctx: &Context,
    name: &str,
    fill: impl FnMut(&mut Line) + Send,
    serve: impl FnOnce() -> R,
) -> R {
    std::thread::scope(|scope| {
        let report = report_every(scope, ctx, name, fill);
        let result = serve();
        if let Some(report) = report {
            report.finish();
        }
        result
    })
}

/// Runs `fill` into a `--stats` line every interval on a thread of its own
/// (the blocking models' threads block and cannot) until the shutdown.
/// [`Report::finish`] writes the final line once the model's own threads
/// are done. Nothing without `--stats`.
pub fn report_every<'scope, F>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    ctx: &'scope Context,
    name: &str,
    mut fill: F,
) -> Option<Report<'scope, F>>
where
    F: FnMut(&mut Line) + Send + 'scope,
{
    let interval = ctx.config.stats?;
    let mut reporter = ctx.reporter(name)?;
    let handle = scope.spawn(move || {
        while !ctx.shutdown.sleep(interval) {
            reporter.report(Instant::now(), false, &mut fill);
        }
        (reporter, fill)
    });
    Some(Report(handle))
}

/// The reporter thread of a blocking model.
pub struct Report<'scope, F>(std::thread::ScopedJoinHandle<'scope, (Reporter, F)>);

impl<F: FnMut(&mut Line)> Report<'_, F> {
    /// Waits for the reporter (the shutdown has been triggered) and writes
    /// the final line.
    pub fn finish(self) {
        if let Ok((mut reporter, mut fill)) = self.0.join() {
            reporter.report(Instant::now(), true, &mut fill);
        }
    }
}
