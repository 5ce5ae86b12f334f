//! The completion model: one thread, one io_uring, and no readiness at all.
//!
//! Every other loop asks the kernel *"tell me when I can read"* and then
//! reads: readiness, two system calls per echoed message at best (a read
//! and a write, plus a share of the wait). This one says *"read into
//! buffers I gave you, and tell me when it is done"*: completion, the
//! design of Windows' IOCP behind asyncio's `ProactorEventLoop`, which the
//! notes name in passing. Linux has it as io_uring: two rings shared with
//! the kernel, one where we queue operations, one where the kernel posts
//! their completions. A turn of the loop is one `io_uring_enter`: it
//! submits everything queued and waits for at least one completion.
//!
//! What the kernel offers, and why each is here:
//! - **Multishot accept**: one submission accepts every client until it is
//!   cancelled; each client is a completion carrying its descriptor. No
//!   accept call per client, no listener readiness.
//! - **Multishot receive into a provided buffer ring**: one submission per
//!   connection receives every message. The kernel takes a buffer from a
//!   ring of [`ring::BUFFERS`] buffers we lent it only when data arrives,
//!   so an idle client holds no buffer (the notes' `recv(4096)` makes its
//!   bytes only when they come, too) and the receive is never re-armed.
//! - **Send from the same buffer**: the echo goes out of the buffer the
//!   data came in, with no copy, and the buffer goes back to the kernel as
//!   soon as the send completes.
//! - **Registered files**: each socket is installed in the ring's file
//!   table when its client is accepted (one system call per connection)
//!   and taken out before it closes, and every receive and send names it
//!   by its index there, so the kernel skips the descriptor lookup per
//!   operation: 1 to 3% of the CPU per message (`docs/performance.md`).
//! - **The pool never waits on a client**: that send is made with
//!   `MSG_DONTWAIT`, so it either goes at once or comes back with `EAGAIN`.
//!   Then, and for a short send, and for bytes that arrive while a send is
//!   in flight, the bytes are copied into the connection's own memory and
//!   the buffer returns to the pool; those bytes go out by sends that wait
//!   for room. Otherwise a client that does not read would keep a 4 KiB
//!   buffer per message it sent, and two of them sending small messages
//!   would hold the whole pool, starving everyone.
//! - **Back-pressure**: past [`MAX_HELD`] bytes of a client not yet echoed
//!   we cancel its receive, and submit it again once half is sent: a client
//!   that does not read stops being read, as in the other models, and
//!   holds at most that much memory.
//! - **Buffers running out** (`ENOBUFS`, more arrivals in one turn than
//!   there are buffers): the receives that found none end, and are
//!   submitted again as buffers come back.
//! - **Fairness**: a turn handles the completions already posted, each at
//!   most one 4 KiB buffer, then submits and waits again. A client that
//!   sends without pause adds completions to the queue as everyone else
//!   does, in the order the data arrived; it cannot keep the loop from the
//!   others' completions behind its own. (`tests/fairness.rs` holds every
//!   model to that.)
//! - Time: the turn's `io_uring_enter` takes a timeout (the next idle
//!   sweep, back-off, `--work wait` timer or `--stats` line); the
//!   shutdown's bell is one poll operation. `--threads N` runs N loops,
//!   one ring each.
//! - `--work` as in the readiness loops (chapter 7): `cpu` and `sleep` run
//!   on the loop and stall it, `wait` is a timer of the loop, and with
//!   `--offload N` a pool thread does the work and rings a doorbell the
//!   ring polls. Bytes that arrive while a chunk is with its work wait in
//!   the connection and become its next chunk, as the selector's next
//!   read would.
//!
//! **Who owns a buffer.** While an operation is in flight the kernel owns
//! its memory: it may write into a receive buffer, or read a send's bytes,
//! at any moment until the completion comes. Freeing, reusing or moving
//! that memory meanwhile is a use-after-free that no borrow checker sees,
//! because no Rust reference is held: the kernel holds a raw address.
//! (This is the hard part of every io_uring runtime: a future that owns a
//! buffer and is dropped mid-operation frees memory the kernel still
//! writes, the cancellation problems of tokio-uring and monoio.) Our rule:
//! memory handed to the kernel belongs to the [`ring::Ring`] until the
//! completion hands it back. A received buffer is a [`ring::Buf`] that
//! cannot be copied; `send` takes it by value and the completion returns
//! it; only `recycle` gives it back to the kernel. Bytes the connection
//! keeps itself are a `Vec` moved into the send and back out of its
//! completion, the same way. And a socket is closed only when it has no
//! operation in flight: closing a connection shuts its socket down (which
//! ends its receive and any blocked send at once), waits for those
//! completions, and only then drops it. At shutdown the loop waits the
//! same way for every operation before the ring and its memory go.
//!
//! Where it breaks: memory is pinned per loop (4 MiB of provided buffers,
//! whatever the clients do), and it needs Linux 6.1 or later with io_uring
//! allowed (`kernel.io_uring_disabled`, container seccomp profiles often
//! refuse it; then [`available`] says why and points to `--mode async`).
//! And a completion loop that computes stalls like any other: completion
//! changes how the loop waits, not what blocks it.
//!
//! Tutorial: `docs/tutorial/9-completion-instead-of-readiness.md`.

pub mod echo;
pub mod kit;
pub mod ring;

pub use echo::{MAX_HELD, run};

use std::io;

use ring::Ring;

/// The environment variable that makes io_uring unavailable, to try the
/// fallback message (and test it) on a machine that has io_uring.
pub const DISABLE_VAR: &str = "ECHO_LAB_NO_IO_URING";

/// Whether this machine lets us run the completion model, and if not, why,
/// in words for a one-line error.
///
/// # Errors
/// Why not: the variable above is set, the kernel is older than 6.1, or
/// it refuses io_uring or its buffer ring.
pub fn available() -> Result<(), String> {
    if std::env::var_os(DISABLE_VAR).is_some() {
        return Err(format!("{DISABLE_VAR} is set"));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    // Multishot receive came in 6.0; DEFER_TASKRUN, which the ring is set
    // up with, in 6.1 (on 6.0 the setup fails with a bare EINVAL).
    if version < (6, 1) {
        return Err(format!(
            "Linux {}.{} is older than 6.1, which the ring's deferred completion work (DEFER_TASKRUN) needs",
            version.0, version.1
        ));
    }
    Ring::new(8).map(drop).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => {
            "the kernel refused io_uring (kernel.io_uring_disabled, or a seccomp filter)".to_owned()
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring".to_owned(),
        Some(libc::EINVAL) => format!(
            "the kernel refused the ring's setup ({e}): it wants SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1) and a provided buffer ring"
        ),
        _ => format!("the kernel refused an io_uring: {e}"),
    })
}

/// The one-line error for a machine without io_uring.
pub fn unavailable(why: &str) -> io::Error {
    io::Error::other(format!(
        "io_uring is not available here: {why}; --mode async serves the same clients with readiness"
    ))
}
