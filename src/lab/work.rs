//! `--work KIND:DURATION`: what a handler does with each chunk it reads
//! before it echoes it, so that a reader can watch a model stall, or not.
//!
//! - `cpu`: computes (a hash over the chunk, again and again) until the
//!   handling thread has used that much CPU time. The thread's own CPU
//!   clock decides, not the wall clock, so a busy machine makes the work
//!   take longer, never shorter; the hash is passed through `black_box`, so
//!   the compiler cannot drop it.
//! - `sleep`: a blocking call, `std::thread::sleep`: the notes' `time.sleep`
//!   inside a coroutine. Whatever thread runs it is stuck for its duration.
//! - `wait`: the model's own way of waiting without blocking: a timer the
//!   selector's loop fires, a deadline the statemachine task yields, an
//!   `.await` on the async reactor's timer (the notes' `asyncio.sleep`). In
//!   the blocking models a thread that waits *is* a blocking sleep: there,
//!   `wait` and `sleep` are the same thing.
//!
//! With `--offload N`, a one-thread loop hands `cpu` and `sleep` work to a
//! pool of N threads ([`super::offload`]) and goes on serving the others.
//!
//! Tutorial: `docs/tutorial/7-when-the-loop-stalls.md`.

use std::fmt;
use std::hint::black_box;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::parse::parse_positive_duration;
use crate::sys;

/// What kind of work a handler does per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkKind {
    /// Compute until the thread has used the duration in CPU time.
    Cpu,
    /// Block the thread in `sleep` for the duration.
    Sleep,
    /// Wait the model's own non-blocking way (a blocking sleep in the
    /// blocking models).
    Wait,
}

/// `--work KIND:DURATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// What to do.
    pub kind: WorkKind,
    /// For how long.
    pub duration: Duration,
}

/// The accepted forms, for error messages and `--help`.
pub const WORK_FORMS: &str = "expected cpu:DURATION, sleep:DURATION or wait:DURATION, e.g. cpu:2ms";

/// Parses `KIND:DURATION`.
///
/// # Errors
/// An unknown kind, a missing colon, or a bad or zero duration; the
/// message names the accepted forms.
pub fn parse_work(text: &str) -> Result<Work, String> {
    let (kind, duration) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}': {WORK_FORMS}"))?;
    let kind = match kind {
        "cpu" => WorkKind::Cpu,
        "sleep" => WorkKind::Sleep,
        "wait" => WorkKind::Wait,
        _ => return Err(format!("unknown kind '{kind}': {WORK_FORMS}")),
    };
    let duration =
        // The kind was right: say only what is wrong with the duration.
        parse_positive_duration(duration).map_err(|e| format!("'{text}': the duration {e}"))?;
    Ok(Work { kind, duration })
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WorkKind::Cpu => "cpu",
            WorkKind::Sleep => "sleep",
            WorkKind::Wait => "wait",
        };
        // In milliseconds, which `parse_work` reads back.
        write!(f, "{kind}:{}ms", self.duration.as_secs_f64() * 1000.0)
    }
}

impl Work {
    /// Whether the work holds the thread that runs it (`cpu`, `sleep`), as
    /// opposed to a `wait` a loop can keep without blocking.
    pub fn blocks(self) -> bool {
        self.kind != WorkKind::Wait
    }

    /// Does the work on this thread, blocking it for the duration: `cpu`
    /// computes over `data`, `sleep` and `wait` sleep.
    ///
    /// `lock` is the thread pool's `--global-lock`, our stand-in for
    /// CPython's GIL: computing holds it, as Python bytecode holds the GIL;
    /// sleeping does not, as `time.sleep` releases the GIL while it blocks.
    pub fn block(self, data: &[u8], lock: Option<&Mutex<()>>) {
        match self.kind {
            WorkKind::Cpu => {
                let _held = lock.map(|l| l.lock().unwrap_or_else(PoisonError::into_inner));
                burn_cpu(self.duration, data);
            }
            WorkKind::Sleep | WorkKind::Wait => std::thread::sleep(self.duration),
        }
    }
}

/// Hashes `data` over and over (FNV-1a) until this thread has used
/// `duration` of CPU time, and returns the hash. The clock is read after
/// every 4 KiB or so hashed, a few microseconds apart.
pub fn burn_cpu(duration: Duration, data: &[u8]) -> u64 {
    const CHECK_EVERY: usize = 4096;
    let until = sys::thread_cpu_time() + duration;
    let data = if data.is_empty() { &[0u8][..] } else { data };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    loop {
        let mut hashed = 0;
        while hashed < CHECK_EVERY {
            for &byte in black_box(data) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            hashed += data.len();
        }
        hash = black_box(hash);
        if sys::thread_cpu_time() >= until {
            return hash;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_in_every_accepted_form() {
        let work = parse_work("cpu:2ms").unwrap();
        assert_eq!(work.kind, WorkKind::Cpu);
        assert_eq!(work.duration, Duration::from_millis(2));
        assert_eq!(parse_work("sleep:1s").unwrap().kind, WorkKind::Sleep);
        assert_eq!(parse_work("wait:250ms").unwrap().kind, WorkKind::Wait);
    }

    #[test]
    fn specs_print_as_they_parse() {
        for spec in ["cpu:2ms", "sleep:1500ms", "wait:0.25ms"] {
            let work = parse_work(spec).unwrap();
            assert_eq!(work.to_string(), spec);
            assert_eq!(parse_work(&work.to_string()), Ok(work));
        }
    }

    /// A wrong kind names the accepted forms; a right kind with a wrong
    /// duration says what is wrong with the duration, and only that.
    #[test]
    fn bad_specs_name_the_accepted_forms() {
        for bad in ["", "cpu", "io:2ms", ":2ms", "☃:1s"] {
            let e = parse_work(bad).unwrap_err();
            assert!(e.contains("cpu:DURATION"), "{bad:?}: {e}");
        }
        for bad in ["cpu:", "cpu:0s", "cpu:2", "cpu:2ms:3"] {
            let e = parse_work(bad).unwrap_err();
            assert!(e.contains("the duration"), "{bad:?}: {e}");
            assert!(e.matches("expected").count() <= 1, "{e}");
        }
    }

    /// The work takes the CPU time asked, measured on the thread's clock.
    #[test]
    fn cpu_work_uses_the_cpu_time_asked() {
        let before = sys::thread_cpu_time();
        burn_cpu(Duration::from_millis(20), b"some bytes");
        let used = sys::thread_cpu_time() - before;
        assert!(used >= Duration::from_millis(20), "{used:?}");
    }
}
