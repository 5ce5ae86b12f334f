//! Read buffers lent to client tasks only while they hold data.
//!
//! In the notes, `data = sock.recv(4096)` makes a fresh `bytes` object that
//! lives until `sock.sendall(data)` is done: a task waiting to *read* holds
//! no buffer at all. The statemachine and async models keep that shape.
//! Each event loop owns a [`BufferPool`]; a task borrows a buffer when its
//! socket is readable, reads into it, and gives it back as soon as every
//! byte has been written. A write the kernel takes whole (nearly all of
//! them, in an echo) means the same buffer serves the next client too.
//!
//! That is a question of memory, and so of speed. A thousand suspended
//! tasks each holding 4 KiB touch a thousand pages in turn; lending makes
//! the idle ones cost a few dozen bytes and keeps the one buffer in use
//! hot in cache (docs/performance.md has the numbers). The bound is the
//! same as before: a task holds at most one buffer, so a loop never has
//! more buffers lent than it has clients. The pool keeps what comes back,
//! so that a steady exchange allocates nothing, but at most
//! [`MAX_IDLE_BUFFERS`] of them: after a burst of stalled clients, memory
//! goes back to the allocator.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes a client task reads at once, as the notes' `sock.recv(4096)`.
pub const TASK_BUFFER_SIZE: usize = 4096;

/// Buffers a pool keeps for reuse (1 MiB). Only more clients than this
/// holding unsent data at once make a loop allocate.
pub const MAX_IDLE_BUFFERS: usize = 256;

/// One buffer: its size is in its type, so a pointer to it is one word
/// (a boxed slice carries its length beside the pointer).
type Buffer = [u8; TASK_BUFFER_SIZE];

/// The buffers of one event loop that no task holds right now.
#[derive(Default)]
pub struct BufferPool {
    free: RefCell<Vec<Box<Buffer>>>,
}

impl BufferPool {
    /// An empty pool: buffers are made the first time they are needed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lends a buffer of [`TASK_BUFFER_SIZE`] bytes until the [`Lease`] is
    /// dropped.
    pub fn lend(&self) -> Lease<'_> {
        let bytes = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Box::new([0; TASK_BUFFER_SIZE]));
        Lease {
            bytes: Some(bytes),
            len: TASK_BUFFER_SIZE,
            pool: self,
        }
    }

    /// Buffers waiting to be lent.
    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

/// A buffer lent by a [`BufferPool`], which it rejoins when dropped. It
/// dereferences to its first `len()` bytes: all of them when lent, the
/// bytes received after [`Lease::truncate`].
pub struct Lease<'p> {
    /// `None` only once `drop` has given it back.
    bytes: Option<Box<Buffer>>,
    len: usize,
    pool: &'p BufferPool,
}

impl Lease<'_> {
    /// Keeps only the first `len` bytes in view, e.g. those a read filled.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl std::fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Deref for Lease<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes.as_ref().map_or(&[], |bytes| &bytes[..self.len])
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
            .as_mut()
            .map_or(&mut [], |bytes| &mut bytes[..self.len])
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        if free.len() < MAX_IDLE_BUFFERS {
            free.extend(self.bytes.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_lent_again() {
        let pool = BufferPool::new();
        let first = pool.lend();
        assert_eq!(first.len(), TASK_BUFFER_SIZE);
        let address = first.as_ptr();
        drop(first);
        assert_eq!(pool.idle(), 1);
        let again = pool.lend();
        assert_eq!(again.as_ptr(), address);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn buffers_held_at_once_are_distinct_and_all_come_back() {
        let pool = BufferPool::new();
        let mut a = pool.lend();
        let mut b = pool.lend();
        a[0] = 1;
        b[0] = 2;
        assert_eq!((a[0], b[0]), (1, 2));
        drop((a, b));
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn the_pool_keeps_at_most_max_idle_buffers() {
        let pool = BufferPool::new();
        let burst: Vec<_> = (0..MAX_IDLE_BUFFERS + 10).map(|_| pool.lend()).collect();
        drop(burst);
        assert_eq!(pool.idle(), MAX_IDLE_BUFFERS);
    }

    #[test]
    fn truncate_narrows_the_view_and_never_widens_it() {
        let pool = BufferPool::new();
        let mut lease = pool.lend();
        lease[..3].copy_from_slice(b"abc");
        lease.truncate(3);
        assert_eq!(&lease[..], b"abc");
        lease.truncate(100);
        assert_eq!(lease.len(), 3);
        drop(lease);
        // The next borrower sees the whole buffer again.
        assert_eq!(pool.lend().len(), TASK_BUFFER_SIZE);
    }
}
