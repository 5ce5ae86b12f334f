//! Zero heap allocations per echoed message in steady state, for every
//! model. A counting global allocator sees every allocation of this test
//! process, server threads included; the client side below allocates
//! nothing while it measures, so any count is the server's.

// This test counts every allocation of its process, so it is a binary of its
// own, apart from the other tests (`tests/tests.rs`), and borrows only a few
// of their helpers.
#[path = "common.rs"]
#[allow(dead_code, unused_macros)]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use echo_lab::serve::Mode;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; counting
// is a relaxed atomic increment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: our caller's contract for `alloc` is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the rest is the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Echoes 4,000 messages of 512 bytes after a warm-up and counts the
/// allocations made meanwhile. One test, models in turn: tests running in
/// parallel would allocate into the same counter.
#[test]
fn no_allocation_per_echoed_message() {
    for mode in Mode::ALL {
        if unavailable(mode) {
            continue; // It said why.
        }
        // One worker for the thread pool: idle workers still starting up
        // (thread-locals, a channel's first blocking recv) would allocate
        // during the window, and that is not per-message work.
        let server = start_with(mode, pool_of(1));
        let mut client = connect(server.addr());
        let message = [0x42; 512];
        let mut echo = [0; 512];
        let mut exchange = |count: usize| {
            for _ in 0..count {
                client.write_all(&message).unwrap();
                client.read_exact(&mut echo).unwrap();
            }
        };
        exchange(500);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        exchange(4000);
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(echo, message);
        assert_eq!(
            allocated, 0,
            "{mode}: {allocated} allocations over 4,000 echoed messages"
        );
    }
}
