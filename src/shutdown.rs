//! The shutdown handle every model receives, and how signals reach it.
//!
//! Triggering sets a flag, rings a bell and runs wake-up hooks. The bell is
//! the self-pipe trick: one end of a socket pair that becomes readable when
//! the shutdown is asked for and stays readable, because nobody reads it.
//! An event loop watches it like any other socket; a signal handler can
//! ring it (writing a byte is one of the few things a handler may do), and
//! the loop that hears it calls [`Shutdown::trigger`] from ordinary code.
//! That is how asyncio's `add_signal_handler` wakes its loop too, and it
//! keeps a server of one event loop one thread, as tokio's current-thread
//! runtime is.
//!
//! A blocking model has no loop to watch the bell with. It registers hooks
//! instead: `shutdown(2)` of its client sockets, which makes a thread
//! blocked in `read()` or `write()` return at once (its accept loop waits in
//! `poll(2)` on the listener and this bell); and when signals are
//! in play, one thread waits for the bell on its behalf.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

use crate::poller::{Backend, Events, Interest, Poller};

type Hook = Box<dyn FnOnce() + Send>;

/// A cloneable handle that stops a server.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    /// The end of the bell that pollers watch (through duplicates).
    bell: UnixStream,
    /// The end that rings it: one byte, written by `trigger` or a signal
    /// handler.
    ringer: UnixStream,
}

#[derive(Default)]
struct State {
    next_id: u64,
    hooks: BTreeMap<u64, Hook>,
}

/// Keeps a wake-up hook registered; dropping it removes the hook.
///
/// Because removal and triggering take the same lock, a hook never runs
/// after its guard is dropped: it may safely refer to a socket that the
/// guard's owner closes right after.
#[must_use = "the hook is removed when the guard is dropped"]
pub struct HookGuard {
    inner: Arc<Inner>,
    id: Option<u64>,
}

impl Shutdown {
    /// A handle that has not been triggered.
    ///
    /// # Errors
    /// If the bell's socket pair cannot be made (out of descriptors).
    pub fn new() -> io::Result<Self> {
        let (bell, ringer) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        // A full bell is already ringing: a write must never block.
        ringer.set_nonblocking(true)?;
        Ok(Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                state: Mutex::default(),
                changed: Condvar::new(),
                bell,
                ringer,
            }),
        })
    }

    /// A descriptor for a poller to watch: readable from the moment the
    /// shutdown is triggered or a signal asks for it, and from then on.
    /// Never read from it (the byte in it is every watcher's), and delete it
    /// from the poller before dropping it: epoll forgets a descriptor only
    /// when every duplicate of it is closed.
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub fn bell(&self) -> io::Result<UnixStream> {
        self.inner.bell.try_clone()
    }

    /// Stops the server: sets the flag, rings the bell, runs every
    /// registered hook once, and wakes every [`Shutdown::sleep`]. Later
    /// calls do nothing.
    pub fn trigger(&self) {
        let hooks = {
            let mut state = self.inner.lock();
            if self.inner.triggered.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut state.hooks)
        };
        // After the flag: a loop that hears the bell sees the flag set. A
        // failed write means the bell is full, so already ringing.
        let _ = (&self.inner.ringer).write(&[1]);
        self.inner.changed.notify_all();
        for hook in hooks.into_values() {
            hook();
        }
    }

    /// Whether [`Shutdown::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Registers `hook` to run when the shutdown is triggered, or runs it at
    /// once if it already was.
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) -> HookGuard {
        let mut state = self.inner.lock();
        if self.is_triggered() {
            drop(state);
            hook();
            return HookGuard {
                inner: self.inner.clone(),
                id: None,
            };
        }
        let id = state.next_id;
        state.next_id += 1;
        state.hooks.insert(id, Box::new(hook));
        HookGuard {
            inner: self.inner.clone(),
            id: Some(id),
        }
    }

    /// Sleeps for `duration` or until the shutdown is triggered, whichever
    /// comes first. Returns whether it was triggered.
    pub fn sleep(&self, duration: Duration) -> bool {
        let state = self.inner.lock();
        let (_state, _) = self
            .inner
            .changed
            .wait_timeout_while(state, duration, |_| !self.is_triggered())
            .unwrap_or_else(PoisonError::into_inner);
        self.is_triggered()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A hook that panicked cannot leave the map half-changed: recover.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.lock().hooks.remove(&id);
        }
    }
}

/// Rings `shutdown`'s bell on SIGINT and SIGTERM; a second signal ends the
/// process at once, for a user who does not want to wait.
///
/// The handler only writes a byte. Event loops hear the bell themselves and
/// call [`Shutdown::trigger`]. The blocking models cannot: pass
/// `watcher: true` for them, and a thread of its own waits for the bell and
/// triggers the shutdown.
///
/// # Errors
/// If the handlers cannot be installed or the thread cannot start.
pub fn trigger_on_signals(shutdown: &Shutdown, watcher: bool) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::low_level::pipe;
    let signalled = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The bell first: a signal that arrives between the two
        // registrations must ring it. (The other way round, it was
        // recorded as the first and rang nothing, and the server ran on
        // until a second signal.)
        pipe::register(signal, shutdown.inner.ringer.try_clone()?)
            .and_then(|_| crate::sys::exit_on_second(signal, signalled.clone()))
            .context("installing signal handlers")?;
    }
    if watcher {
        let bell = shutdown.bell().context("starting the signal watcher")?;
        let poller = Poller::new(Backend::default()).context("starting the signal watcher")?;
        let shutdown = shutdown.clone();
        // The thread registers the bell (the guard lives with the poller
        // it borrows) and says whether it could before it waits.
        let (started, start) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let _watched = match poller.register(&bell, 0, Interest::READ) {
                    Ok(watched) => watched,
                    Err(e) => return drop(started.send(Err(e))),
                };
                let _ = started.send(Ok(()));
                let mut events = Events::new();
                loop {
                    match poller.wait(&mut events, None) {
                        // Interrupted (by a signal, which rings the bell).
                        Ok(0) => {}
                        Ok(_) => break shutdown.trigger(),
                        Err(e) => break eprintln!("echo-lab: the signal watcher failed: {e}"),
                    }
                }
            })
            .context("starting the signal watcher")?;
        start
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the signal watcher ended at once")))
            .context("starting the signal watcher")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Events a fresh poller reports for `bell` without waiting.
    fn rings(bell: &UnixStream) -> usize {
        let poller = Poller::new(Backend::default()).unwrap();
        let _watched = poller.register(bell, 0, Interest::READ).unwrap();
        let mut events = Events::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap()
    }

    /// The bell is silent until the trigger, then readable for every
    /// watcher, however many look and however often.
    #[test]
    fn the_bell_rings_on_trigger_and_keeps_ringing() {
        let shutdown = Shutdown::new().unwrap();
        let (first, second) = (shutdown.bell().unwrap(), shutdown.bell().unwrap());
        assert_eq!(rings(&first), 0);
        shutdown.trigger();
        shutdown.trigger();
        for _ in 0..2 {
            assert_eq!(rings(&first), 1);
            assert_eq!(rings(&second), 1);
        }
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn hooks_run_once_and_late_hooks_run_at_once() {
        let shutdown = Shutdown::new().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let _guard = shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        shutdown.trigger();
        shutdown.trigger();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let counter = runs.clone();
        let _late = shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_dropped_guard_removes_its_hook() {
        let shutdown = Shutdown::new().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        drop(shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        shutdown.trigger();
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn sleep_ends_early_when_triggered() {
        let shutdown = Shutdown::new().unwrap();
        let trigger = shutdown.clone();
        let thread = std::thread::spawn(move || trigger.trigger());
        assert!(shutdown.sleep(Duration::from_secs(60)));
        thread.join().unwrap();
    }
}
