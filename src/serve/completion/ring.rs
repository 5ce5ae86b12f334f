//! The ring: every `unsafe` of the completion model, in one small place.
//!
//! Two things make io_uring unsafe to use. The kernel writes into and
//! reads from our memory *after* the call that asked it to has returned,
//! until the operation's completion comes back; and the memory of the
//! provided buffers is shared with the kernel for as long as the ring
//! lives. Rust's borrow checker cannot see either: a buffer handed to the
//! kernel is borrowed by nobody in the program, yet must not be freed,
//! reused or moved.
//!
//! This file turns both into ownership the compiler checks:
//! - A received buffer comes out of a completion as a [`Buf`], a handle
//!   that cannot be copied. The only way to give it back to the kernel is
//!   [`Ring::recycle`], which takes it by value; [`Ring::send`] takes it by
//!   value too and keeps it until the send's completion hands it back. So
//!   a buffer is in exactly one place: the kernel's ring, a send in flight,
//!   or the program's hands.
//! - Bytes a connection keeps in its own memory go out the same way: the
//!   `Vec` is moved into the ring with the send and moved back out with
//!   its completion; a `Vec`'s bytes do not move when the `Vec` does.
//! - The memory itself (the buffer slab and the ring of entries) belongs
//!   to [`Ring`] and is freed only when no operation is in flight; if one
//!   still is when the ring is dropped, the memory is leaked instead.
//!
//! What this file cannot prove is that a socket stays open while an
//! operation on it is in flight: its caller keeps that rule (see the
//! module above).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Bytes per provided buffer: the notes' `recv(4096)`.
pub const BUFFER_SIZE: usize = 4096;

/// Provided buffers per ring (a power of two): 4 MiB per loop, shared by
/// all its clients. The kernel takes them in ring order, so over time
/// every one of them is touched and resident: this, not the number of
/// clients, is the loop's read memory. A buffer is held only from a
/// receive to the end of its echo, so a few dozen cover even a thousand
/// busy clients; past that, receives wait for buffers (`ENOBUFS`).
pub const BUFFERS: u16 = 1024;

/// The buffer group our receives select from.
const GROUP: u16 = 0;

/// What an operation was for. With a connection's slot and generation it
/// makes the operation's `user_data`, which its completion carries back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The multishot accept on the listener.
    Accept = 1,
    /// The one-shot poll of the shutdown's bell.
    Bell = 2,
    /// A connection's multishot receive.
    Recv = 3,
    /// A connection's send.
    Send = 4,
    /// A cancellation request (its own completion says nothing we need).
    Cancel = 5,
    /// The one-shot poll of the offload pool's doorbell.
    Jobs = 6,
}

/// An operation's identity: what for, and for which connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// What for.
    pub kind: Kind,
    /// The connection's slot (0 for the listener and the bell).
    pub slot: u32,
    /// The slot's generation: a slot reused by a new connection has a new
    /// one, so a late completion for the old connection is recognised.
    pub generation: u32,
}

impl Token {
    fn pack(self) -> u64 {
        (self.kind as u64) << 56
            | u64::from(self.slot & 0x00ff_ffff) << 32
            | u64::from(self.generation)
    }

    fn unpack(data: u64) -> Token {
        let kind = match data >> 56 {
            1 => Kind::Accept,
            2 => Kind::Bell,
            3 => Kind::Recv,
            4 => Kind::Send,
            6 => Kind::Jobs,
            _ => Kind::Cancel,
        };
        Token {
            kind,
            slot: ((data >> 32) & 0x00ff_ffff) as u32,
            generation: data as u32,
        }
    }
}

/// A provided buffer the kernel filled and handed to us, with the bytes of
/// it still to send. Not `Clone`: see the file's first paragraph.
#[derive(Debug)]
pub struct Buf {
    bid: u16,
    start: u32,
    end: u32,
}

impl Buf {
    /// Bytes still to send.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether every byte is sent.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` more bytes sent (a short send leaves the rest).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n as u32).min(self.end);
    }
}

/// What a send sends: a pool buffer as it was received (no copy), or bytes
/// the connection keeps in memory of its own.
#[derive(Debug)]
pub enum Outgoing {
    /// A provided buffer: sent only if the socket takes it at once.
    Pool(Buf),
    /// The connection's own bytes: the send waits for room.
    Own(Vec<u8>),
}

impl Outgoing {
    /// Bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Pool(buf) => buf.len(),
            Outgoing::Own(bytes) => bytes.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One completion, decoded.
#[derive(Debug)]
pub struct Completion {
    /// Which operation.
    pub token: Token,
    /// Its result: a count or a descriptor when non-negative, `-errno`
    /// otherwise.
    pub result: i32,
    /// A multishot operation goes on (more completions will come).
    pub more: bool,
    /// A receive's data: the buffer it filled.
    pub received: Option<Buf>,
    /// A send's bytes, back from the kernel.
    pub sent: Option<Outgoing>,
    /// An accept's new client: the descriptor the kernel made for us,
    /// owned from here on (closed if nobody takes it).
    pub accepted: Option<TcpStream>,
}

/// One io_uring instance, its provided buffers, and the operations in
/// flight.
pub struct Ring {
    ring: IoUring,
    /// `BUFFERS` entries the kernel takes buffers from; page-aligned, as
    /// the kernel requires. Registered for the ring's whole life.
    entries: *mut types::BufRingEntry,
    entries_layout: Layout,
    /// The buffers themselves, `BUFFER_SIZE` bytes each, by id. Never
    /// resized or moved: the kernel holds their addresses.
    slab: Box<[u8]>,
    /// Our copy of the entries' tail (the kernel reads the shared one).
    tail: u16,
    /// Buffers in the kernel's ring now.
    free: usize,
    /// Sends in flight, with the bytes each holds, by the slot of their
    /// connection (which has at most one send in flight).
    sending: Vec<Option<Outgoing>>,
    /// Operations submitted whose last completion has not come.
    in_flight: usize,
    /// The ring's file table, by connection slot: the descriptor installed
    /// there, if any. A receive or send on an installed socket names its
    /// table index (`IOSQE_FIXED_FILE`), so the kernel skips looking the
    /// descriptor up in the process's table for every operation.
    installed: Vec<Option<RawFd>>,
}

/// Entries of the ring's file table, at most: connection slots past it
/// use plain descriptors.
const FILES: u32 = 1 << 14;

impl Ring {
    /// A ring with room for `entries` submissions at once, and its
    /// provided buffers registered.
    ///
    /// # Errors
    /// If the kernel refuses io_uring or the buffer ring (an old kernel,
    /// `kernel.io_uring_disabled`, a seccomp filter).
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 4)
            // One thread submits and reaps (one ring per loop): the kernel
            // may then run completion work only when we enter to wait,
            // batched, instead of interrupting the loop for each one.
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)?;
        let entries_layout = Layout::from_size_align(
            usize::from(BUFFERS) * size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries_ptr = unsafe { alloc_zeroed(entries_layout) }.cast::<types::BufRingEntry>();
        if entries_ptr.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // The ring hands its buffers out in turn, so a thousand receives
        // after starting, every page of the pool has been written and is
        // resident for good. Written here, that 4 MiB is what the loop
        // costs to start, not a jump in its memory in the middle of
        // serving, which `compare` would charge to the clients connected
        // at that moment. (A zero-filled allocation would stay unwritten:
        // the kernel maps its pages only at their first write.)
        let mut slab = vec![0; usize::from(BUFFERS) * BUFFER_SIZE].into_boxed_slice();
        slab.fill(0xff);
        let mut this = Ring {
            ring,
            entries: entries_ptr,
            entries_layout,
            slab,
            tail: 0,
            free: 0,
            sending: Vec::new(),
            in_flight: 0,
            installed: Vec::new(),
        };
        // A table of empty entries, filled per connection. Refused (a
        // lower descriptor limit, say), every operation names its
        // descriptor instead.
        let soft = crate::sys::fd_limits().map_or(0, |(soft, _)| soft);
        let files = FILES.min(u32::try_from(soft).unwrap_or(u32::MAX));
        if files > 0 && this.ring.submitter().register_files_sparse(files).is_ok() {
            this.installed = vec![None; files as usize];
        }
        // SAFETY: `entries` points to `BUFFERS` zeroed, page-aligned
        // entries that stay allocated until `Drop`, which unregisters
        // nothing but frees them only after the ring itself is closed.
        unsafe {
            this.ring.submitter().register_buf_ring_with_flags(
                this.entries as u64,
                BUFFERS,
                GROUP,
                0,
            )?;
        }
        for bid in 0..BUFFERS {
            this.provide(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Puts buffer `bid` in the next entry (published by `publish`).
    fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `index < BUFFERS`, inside the allocation; the kernel
        // reads an entry only between our published tail and its head, and
        // this one is past the published tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        let addr = self.slab[usize::from(bid) * BUFFER_SIZE..].as_ptr();
        entry.set_addr(addr as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
    }

    /// Makes the buffers provided so far visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail lives inside the first entry of our allocation,
        // and is only ever written by us; the kernel reads it.
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes of `buf` still to send.
    pub fn bytes(&self, buf: &Buf) -> &[u8] {
        let base = usize::from(buf.bid) * BUFFER_SIZE;
        &self.slab[base + buf.start as usize..base + buf.end as usize]
    }

    /// Gives a buffer back to the kernel, to be filled again.
    pub fn recycle(&mut self, buf: Buf) {
        self.provide(buf.bid);
        self.publish();
    }

    /// Lets go of what a send held: a pool buffer goes back to the kernel,
    /// bytes of the connection's own are dropped.
    pub fn release(&mut self, outgoing: Outgoing) {
        if let Outgoing::Pool(buf) = outgoing {
            self.recycle(buf);
        }
    }

    /// Buffers the kernel can fill now.
    pub fn free_buffers(&self) -> usize {
        self.free
    }

    /// Operations whose last completion has not come.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues an operation, submitting the queue first if it is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: each entry built in this file points only at memory
        // this `Ring` owns until the completion (a `Buf` or a `Vec` kept
        // in `sending`, the slab) or at nothing; descriptors are the
        // caller's rule (see the file's last paragraph).
        unsafe {
            if self.ring.submission().push(entry).is_err() {
                self.ring.submit()?;
                self.ring
                    .submission()
                    .push(entry)
                    .map_err(|_| io::Error::other("the submission queue stays full"))?;
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Installs `socket` in the file table at `slot`, its connection's
    /// slot, if the table has room there: one system call per connection,
    /// which every operation on it then saves a lookup.
    ///
    /// The table holds its own reference to the socket: [`Ring::uninstall`]
    /// it before closing, or it stays open.
    pub fn install(&mut self, slot: u32, socket: RawFd) {
        let Some(entry) = self.installed.get_mut(slot as usize) else {
            return;
        };
        if self
            .ring
            .submitter()
            .register_files_update(slot, &[socket])
            .is_ok()
        {
            *entry = Some(socket);
        }
    }

    /// Takes slot `slot` out of the file table, before its socket closes.
    pub fn uninstall(&mut self, slot: u32) {
        if let Some(entry) = self.installed.get_mut(slot as usize) {
            if entry.take().is_some() {
                let _ = self.ring.submitter().register_files_update(slot, &[-1]);
            }
        }
    }

    /// How an operation on `socket`, of the connection at `slot`, names it.
    fn target(&self, socket: RawFd, slot: u32) -> Target {
        match self.installed.get(slot as usize) {
            Some(&Some(fd)) if fd == socket => Target::Fixed(types::Fixed(slot)),
            _ => Target::Fd(types::Fd(socket)),
        }
    }

    /// Accepts every client of `listener` until cancelled or failed: one
    /// submission, a completion per client.
    pub fn accept(&mut self, listener: RawFd, token: Token) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(listener)).build();
        self.push(&entry.user_data(token.pack()))
    }

    /// Receives into provided buffers until the peer closes, an error, a
    /// cancel, or the buffers run out: one submission, a completion per
    /// arrival.
    pub fn receive(&mut self, socket: RawFd, token: Token) -> io::Result<()> {
        let entry = match self.target(socket, token.slot) {
            Target::Fixed(fixed) => opcode::RecvMulti::new(fixed, GROUP).build(),
            Target::Fd(fd) => opcode::RecvMulti::new(fd, GROUP).build(),
        };
        self.push(&entry.user_data(token.pack()))
    }

    /// Sends what is left of `outgoing`; the ring holds it until the
    /// completion gives it back in [`Completion::sent`].
    ///
    /// A pool buffer is sent with `MSG_DONTWAIT`: if the socket has no room
    /// the send completes at once with `-EAGAIN`, and the buffer comes back
    /// instead of waiting on a client that does not read. The pool is
    /// shared by every client; its buffers must never wait on one.
    pub fn send(&mut self, socket: RawFd, outgoing: Outgoing, token: Token) -> io::Result<()> {
        let (bytes, flags) = match &outgoing {
            Outgoing::Pool(buf) => (self.bytes(buf), libc::MSG_DONTWAIT),
            Outgoing::Own(bytes) => (&bytes[..], 0),
        };
        let (ptr, len) = (bytes.as_ptr(), bytes.len() as u32);
        let entry = match self.target(socket, token.slot) {
            Target::Fixed(fixed) => opcode::Send::new(fixed, ptr, len).flags(flags).build(),
            Target::Fd(fd) => opcode::Send::new(fd, ptr, len).flags(flags).build(),
        }
        .user_data(token.pack());
        match self.push(&entry) {
            Ok(()) => {
                let slot = token.slot as usize;
                if self.sending.len() <= slot {
                    self.sending.resize_with(slot + 1, || None);
                }
                debug_assert!(self.sending[slot].is_none(), "two sends in flight");
                self.sending[slot] = Some(outgoing);
                Ok(())
            }
            Err(e) => {
                // Never submitted: the buffer is still ours to give back.
                self.release(outgoing);
                Err(e)
            }
        }
    }

    /// Waits for `fd` to be readable, once.
    pub fn poll_readable(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
        self.push(&entry.user_data(token.pack()))
    }

    /// Asks the kernel to cancel the operation `target`; it completes with
    /// `-ECANCELED` (or with what it finished first).
    pub fn cancel(&mut self, target: Token) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target.pack()).build();
        let token = Token {
            kind: Kind::Cancel,
            ..target
        };
        self.push(&entry.user_data(token.pack()))
    }

    /// One turn's system call: submits everything queued and waits for at
    /// least one completion, or until `timeout`.
    ///
    /// # Errors
    /// As `io_uring_enter(2)`; a timeout or a signal is not an error.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let submitted = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match submitted {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// One round of waiting at shutdown, after every socket was shut
    /// down: the completions that came, or `None` once nothing is in
    /// flight any more, or `deadline` has passed.
    pub fn drain_round(&mut self, deadline: Instant) -> Option<Vec<Completion>> {
        if self.in_flight == 0 || Instant::now() >= deadline {
            return None;
        }
        self.submit_and_wait(Some(Duration::from_millis(100)))
            .ok()?;
        Some(std::iter::from_fn(|| self.next_completion()).collect())
    }

    /// The next completion, if one has come.
    pub fn next_completion(&mut self) -> Option<Completion> {
        let cqe = self.ring.completion().next()?;
        let (data, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        let token = Token::unpack(data);
        let more = cqueue::more(flags);
        if !more {
            self.in_flight -= 1;
        }
        let received = cqueue::buffer_select(flags).map(|bid| {
            self.free -= 1;
            Buf {
                bid,
                start: 0,
                end: result.max(0) as u32,
            }
        });
        let sent = match token.kind {
            Kind::Send => self
                .sending
                .get_mut(token.slot as usize)
                .and_then(Option::take),
            _ => None,
        };
        let accepted = (token.kind == Kind::Accept && result >= 0).then(|| {
            // SAFETY: an accept's non-negative result is a descriptor the
            // kernel has just created for this completion; nothing else
            // knows it, so the stream is its only owner.
            unsafe { TcpStream::from_raw_fd(result) }
        });
        Some(Completion {
            token,
            result,
            more,
            received,
            sent,
            accepted,
        })
    }
}

/// A socket as an operation names it.
enum Target {
    /// By its index in the ring's file table.
    Fixed(types::Fixed),
    /// By its descriptor.
    Fd(types::Fd),
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into the buffers: never free them.
            std::mem::forget(std::mem::take(&mut self.slab));
            return;
        }
        // SAFETY: nothing is in flight, so the kernel no longer reads the
        // entries; they were allocated with this layout.
        unsafe { dealloc(self.entries.cast(), self.entries_layout) };
    }
}
