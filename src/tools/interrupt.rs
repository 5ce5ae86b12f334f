//! Ctrl-C for a tool that starts child processes.
//!
//! `compare` starts each server in a process group of its own, so a
//! terminal's Ctrl-C (SIGINT to the foreground group) reaches `compare`
//! and not the server. Dying of it would orphan the server. Instead the
//! handler only sets a flag; the tool sees it between two steps (a bench
//! run checks it at least every [`CHECK_INTERVAL`]), stops its children,
//! writes what it has measured, and exits as a shell expects of a process
//! ended by that signal: 130 for SIGINT, 143 for SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use signal_hook::consts::{SIGINT, SIGTERM};

/// How often a waiting loop looks at the flag, at most: prompt for a
/// person at a keyboard, and ten wake-ups a second cost nothing.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// SIGINT and SIGTERM, caught as a flag while this value lives.
pub struct Interrupt {
    /// Set by either signal: what loops check.
    requested: Arc<AtomicBool>,
    /// Which signal it was (0 before any).
    signal: Arc<AtomicUsize>,
    handlers: Vec<signal_hook::SigId>,
}

impl Interrupt {
    /// Catches SIGINT and SIGTERM until dropped.
    ///
    /// # Errors
    /// If the handlers cannot be installed.
    pub fn catch() -> anyhow::Result<Self> {
        let requested = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        let mut handlers = Vec::new();
        for sig in [SIGINT, SIGTERM] {
            let which = signal_hook::flag::register_usize(sig, signal.clone(), sig as usize);
            let flag = signal_hook::flag::register(sig, requested.clone());
            handlers.push(which.context("installing signal handlers")?);
            handlers.push(flag.context("installing signal handlers")?);
        }
        Ok(Interrupt {
            requested,
            signal,
            handlers,
        })
    }

    /// The flag that either signal sets.
    pub fn flag(&self) -> &AtomicBool {
        &self.requested
    }

    /// The exit code for the signal caught, if one was: 128 + its number.
    pub fn exit_code(&self) -> Option<u8> {
        match self.signal.load(Relaxed) {
            0 => None,
            sig => Some(128 + sig as u8),
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
