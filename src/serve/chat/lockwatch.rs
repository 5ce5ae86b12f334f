//! A deadlock detector for the thread chat's two kinds of lock, the
//! registry and each client's outbox: who holds which, who waits for
//! which, and a watcher that looks for a cycle in that "waits for" graph
//! and names it. On only with `--lock-order-bug`, which makes the cycle
//! happen (see [`super::threads`]).
//!
//! `parking_lot`'s `deadlock_detection` feature is the well-kept general
//! tool, and we leave it aside on purpose: it is a build-time switch that
//! tracks every `parking_lot` lock in the binary, all the time, and it
//! reports the threads of a cycle with their stack traces, not the locks by
//! name. The chapter wants the sentence "this thread holds the outbox of
//! bob and waits for the registry; that one holds the registry and waits
//! for the outbox of bob", and only in the run that asks for it.
//!
//! Tutorial: `docs/tutorial/8-shared-state-a-chat-server.md`.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::shutdown::Shutdown;

/// Which lock, by a name a reader knows.
pub type LockName = String;

/// The locks held and waited for, by thread.
#[derive(Default)]
pub struct LockWatch {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Which thread holds each lock.
    holders: HashMap<LockName, ThreadId>,
    /// Which lock each blocked thread waits for, and the thread's name.
    waiting: HashMap<ThreadId, (LockName, String)>,
    /// The names of threads holding locks.
    names: HashMap<ThreadId, String>,
}

/// A lock held under the watch; letting go of it is recorded.
pub struct Watched<'a, T> {
    guard: MutexGuard<'a, T>,
    /// The watch and the lock's name, when watched.
    release: Option<(&'a LockWatch, LockName)>,
}

impl<T> Deref for Watched<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Watched<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Watched<'_, T> {
    fn drop(&mut self) {
        if let Some((watch, name)) = self.release.take() {
            watch.state().holders.remove(&name);
        }
    }
}

/// Locks `mutex`, named `name` for the watch if there is one: the wait
/// and the hold are recorded, so that a cycle can be found and named.
pub fn lock<'a, T>(
    mutex: &'a Mutex<T>,
    watch: Option<&'a LockWatch>,
    name: impl FnOnce() -> LockName,
) -> Watched<'a, T> {
    let Some(watch) = watch else {
        let guard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
        return Watched {
            guard,
            release: None,
        };
    };
    let name = name();
    let me = thread::current();
    let thread_name = me.name().unwrap_or("a thread").to_owned();
    watch
        .state()
        .waiting
        .insert(me.id(), (name.clone(), thread_name.clone()));
    let guard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
    {
        let mut state = watch.state();
        state.waiting.remove(&me.id());
        state.holders.insert(name.clone(), me.id());
        state.names.insert(me.id(), thread_name);
    }
    Watched {
        guard,
        release: Some((watch, name)),
    }
}

impl LockWatch {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cycle of threads each waiting for a lock the next one holds, told
    /// as sentences, if there is one now.
    pub fn cycle(&self) -> Option<Vec<String>> {
        let state = self.state();
        for &start in state.waiting.keys() {
            let mut told = Vec::new();
            let mut thread = start;
            while let Some((lock, name)) = state.waiting.get(&thread) {
                let Some(&holder) = state.holders.get(lock) else {
                    break;
                };
                told.push(format!("{name} waits for {lock}, which {} holds", {
                    state
                        .names
                        .get(&holder)
                        .map_or("another thread", String::as_str)
                }));
                if holder == start {
                    return Some(told);
                }
                if told.len() > state.waiting.len() {
                    break;
                }
                thread = holder;
            }
        }
        None
    }

    /// Looks for a cycle every `every` until one is found, and returns it,
    /// or until the shutdown (`None`). Runs on a thread of its own.
    pub fn watch(&self, every: Duration, shutdown: &Shutdown) -> Option<Vec<String>> {
        while !shutdown.sleep(every) {
            if let Some(cycle) = self.cycle() {
                return Some(cycle);
            }
        }
        None
    }
}
