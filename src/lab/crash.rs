//! `serve --crash-on WORD`: a handler that receives WORD aborts its whole
//! process, as a segfault in a C extension takes a Python process down:
//! every thread, every client of it. Under `threads` that is every client
//! of the server; under `--processes` only the clients of one worker, and
//! the master starts another (`docs/tutorial/10-threads-or-processes.md`).
//!
//! The word is process-wide, as the crash is: each model's read path calls
//! [`check`] on what it received, which costs one load and a branch when
//! the flag is off.

use std::sync::OnceLock;

static WORD: OnceLock<Box<[u8]>> = OnceLock::new();

/// From now on, a chunk holding `word` aborts this process. The first word
/// armed stands.
pub fn arm(word: &str) {
    let _ = WORD.set(word.as_bytes().into());
}

/// Aborts this process if `data`, one chunk a handler received, holds the
/// armed word.
#[inline]
pub fn check(data: &[u8]) {
    if let Some(word) = WORD.get() {
        if data.windows(word.len()).any(|w| w == &word[..]) {
            crash();
        }
    }
}

#[cold]
fn crash() -> ! {
    // Written with one system call and no lock: the handler may be a forked
    // child, where a lock another thread held at the fork stays held.
    crate::sys::write_stderr_raw(b"crash-on: a handler received the word: aborting its process\n");
    std::process::abort();
}
