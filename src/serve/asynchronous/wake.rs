//! How a task of the [executor](super::executor) is woken: the
//! performance part of the runtime, which a first reading can take on
//! trust ("a waker puts its task's id on the ready queue, once").
//!
//! A waker is two numbers and nothing else: the executor's and the task's,
//! packed in the one word a [`RawWaker`] carries. Making, cloning and
//! dropping one allocates nothing and counts no reference, so a task costs
//! its future and no more (tokio's and async-task's wakers point at the
//! task's own allocation instead, which takes reference counts and more
//! `unsafe`; `std::task::Wake`, the safe way, wants an `Arc` per task).
//! Waking looks the numbers up: on the executor's own thread, while it
//! runs, the task id goes straight into its `ReadyQueue`; from any other
//! thread (an offload pool's), into the executor's `Inbox`, found by its
//! number in a global table (`INBOXES`), and `Poller::notify()`
//! interrupts the wait. A waker that outlives its task wakes whatever task
//! has its number next, or none: a spurious wake, which every future must
//! take in its stride.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{RawWaker, RawWakerVTable, Waker};

use slab::Slab;

use super::executor::MAIN;

/// Task ids to be polled, in the order they were woken, each at most once.
/// Only the executor's thread touches it, so it needs no lock.
#[derive(Default)]
pub(super) struct ReadyQueue {
    pub(super) ids: VecDeque<usize>,
    /// By task id: already in `ids`, so waking it again changes nothing.
    queued: Vec<bool>,
    /// The same, for [`MAIN`].
    main_queued: bool,
}

impl ReadyQueue {
    fn queued(&mut self, id: usize) -> &mut bool {
        if id == MAIN {
            return &mut self.main_queued;
        }
        if id >= self.queued.len() {
            self.queued.resize(id + 1, false);
        }
        &mut self.queued[id]
    }

    pub(super) fn push(&mut self, id: usize) {
        let queued = self.queued(id);
        if !*queued {
            *queued = true;
            self.ids.push_back(id);
        }
    }

    /// The task is about to be polled: a wake from now on queues it again.
    pub(super) fn unqueue(&mut self, id: usize) {
        *self.queued(id) = false;
    }
}

/// Task ids woken from other threads, until the executor moves them into
/// its ready queue at its next tick.
pub(super) struct Inbox {
    pub(super) ids: Mutex<Vec<usize>>,
    /// Set while the executor blocks in the reactor: only then must a wake
    /// interrupt it.
    pub(super) sleeping: AtomicBool,
    pub(super) reactor_poller: Arc<crate::poller::Poller>,
    /// Wakes that had to interrupt the wait, for `--stats`.
    pub(super) notified: AtomicU64,
}

impl Inbox {
    pub(super) fn push(&self, id: usize) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        if self.sleeping.load(Ordering::SeqCst) {
            self.notified.fetch_add(1, Ordering::Relaxed);
            let _ = self.reactor_poller.notify();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// Every executor's inbox, by executor number: how a waker used on another
/// thread finds where to go.
pub(super) static INBOXES: Mutex<Slab<Arc<Inbox>>> = Mutex::new(Slab::new());

thread_local! {
    /// The executor running `block_on` on this thread, if any: its number
    /// and its ready queue.
    static RUNNING: RefCell<Option<(u32, Rc<RefCell<ReadyQueue>>)>> =
        const { RefCell::new(None) };
}

// A waker's word holds two 32-bit numbers.
const _: () = assert!(usize::BITS == 64, "wakers pack two u32s in a usize");

/// The waker of task `id` (or [`MAIN`]) of executor `number`.
pub(super) fn task_waker(number: u32, id: usize) -> Waker {
    let word = (number as usize) << 32 | id;
    // SAFETY: the functions of `VTABLE` treat the pointer as a number and
    // never dereference it, so every copy is valid on any thread, for ever.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(word), &VTABLE)) }
}

/// What our wakers do: cloning copies the word, waking queues the task
/// (by value or by reference alike), dropping has nothing to release.
static VTABLE: RawWakerVTable =
    RawWakerVTable::new(|word| RawWaker::new(word, &VTABLE), wake, wake, |_| {});

/// Queues the task a waker's word names, wherever its executor is.
fn wake(word: *const ()) {
    let word = word.addr();
    let (number, id) = ((word >> 32) as u32, word & 0xffff_ffff);
    if !wake_here(number, id) {
        let inbox = INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(number as usize)
            .cloned();
        // None: the executor is gone, and its tasks with it.
        if let Some(inbox) = inbox {
            inbox.push(id);
        }
    }
}

/// Queues task `id` if executor `number` is running on this thread (and
/// not using its queue at this instant); returns whether it did.
fn wake_here(number: u32, id: usize) -> bool {
    let queue = |running: &Option<(u32, Rc<RefCell<ReadyQueue>>)>| match running {
        Some((running, ready)) if *running == number => ready
            .try_borrow_mut()
            .map(|mut ready| ready.push(id))
            .is_ok(),
        _ => false,
    };
    RUNNING
        .try_with(|running| queue(&running.borrow()))
        .unwrap_or(false)
}

/// Makes an executor the one running on this thread, until dropped.
pub(super) struct Running {
    before: Option<(u32, Rc<RefCell<ReadyQueue>>)>,
}

impl Running {
    pub(super) fn start(number: u32, ready: &Rc<RefCell<ReadyQueue>>) -> Running {
        let before = RUNNING.replace(Some((number, ready.clone())));
        Running { before }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(self.before.take());
    }
}
