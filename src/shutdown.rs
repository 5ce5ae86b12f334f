//! The shutdown handle every model receives, and the signal thread that
//! pulls it.
//!
//! Triggering is a flag plus wake-ups: each model registers what must happen
//! to wake it from whatever it is blocked in. A readiness loop registers
//! `Poller::notify`; a blocking model registers `shutdown(2)` of its sockets,
//! which makes a thread blocked in `accept()`, `read()` or `write()` return
//! at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

type Hook = Box<dyn FnOnce() + Send>;

/// A cloneable handle that stops a server.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
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
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the server: sets the flag, runs every registered hook once, and
    /// wakes every [`Shutdown::sleep`]. Later calls do nothing.
    pub fn trigger(&self) {
        let hooks = {
            let mut state = self.inner.lock();
            if self.inner.triggered.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut state.hooks)
        };
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

/// Triggers `shutdown` on the first SIGINT or SIGTERM, from a thread of its
/// own (the signal handler itself only writes to a pipe). A second signal
/// ends the process at once, for a user who does not want to wait.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub fn trigger_on_signals(shutdown: &Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if signals.next().is_some() {
                shutdown.trigger();
            }
            if let Some(signal) = signals.next() {
                std::process::exit(128 + signal);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_once_and_late_hooks_run_at_once() {
        let shutdown = Shutdown::new();
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
        let shutdown = Shutdown::new();
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
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        let thread = std::thread::spawn(move || trigger.trigger());
        assert!(shutdown.sleep(Duration::from_secs(60)));
        thread.join().unwrap();
    }
}
