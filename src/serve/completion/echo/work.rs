//! `--work` on the completion loop, which the reader may skip on a first
//! read: a chunk is held (or sent to the `--offload` pool) until its work
//! is done, then echoed; the pool rings a doorbell the ring polls.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::super::kit::token;
use super::super::ring::{Kind, Ring};
use super::{Conn, Proactor};
use crate::lab::defer::{Deferrals, Started};
use crate::lab::offload::{Finished, Offload};
use crate::lab::work::Work;
use crate::serve::Context;

/// `--work`, if given: clients are keyed by slot and generation.
pub(super) type WorkPlan = Deferrals<(u32, u32)>;

/// Starts `--work`'s plan; with `--offload`, its pool rings a doorbell
/// when a job is done, which the ring polls (returned with the plan).
pub(super) fn start_plan(
    work: Work,
    ctx: &Context,
    ring: &mut Ring,
) -> io::Result<(WorkPlan, Option<UnixStream>)> {
    if ctx.config.offload == 0 {
        return Ok((WorkPlan::new(work, None), None));
    }
    let (doorbell, ringer) = UnixStream::pair()?;
    doorbell.set_nonblocking(true)?;
    // A full doorbell is already ringing: never block a job.
    ringer.set_nonblocking(true)?;
    let finished = Finished::ringing(move || {
        let _ = (&ringer).write(&[1]);
    });
    let offload = Offload::start(ctx, ctx.config.offload, "completion")?;
    ring.poll_readable(doorbell.as_raw_fd(), token(Kind::Jobs, 0, 0))?;
    Ok((
        WorkPlan::new(work, Some((offload, finished))),
        Some(doorbell),
    ))
}

impl Conn<'_> {
    /// Gives `chunk` to its work, which lets the loop go on (`plan`
    /// defers): held here until due, or with the pool.
    pub(super) fn defer(
        &mut self,
        plan: &mut WorkPlan,
        key: (u32, u32),
        chunk: &[u8],
        now: Instant,
    ) {
        self.working = true;
        if plan.start(key, chunk, now) == Started::Held {
            self.waiting = chunk.to_vec();
        }
    }
}

impl Proactor<'_> {
    /// A chunk of client `(slot, generation)` is through its work: it is
    /// echoed, and the bytes that came meanwhile go to theirs.
    pub(super) fn worked(
        &mut self,
        slot: u32,
        generation: u32,
        chunk: Vec<u8>,
        now: Instant,
    ) -> io::Result<()> {
        let token = token(Kind::Recv, slot, generation);
        let Some(conn) = self.conns.live(token) else {
            return Ok(()); // Gone while it worked: its chunk is dropped.
        };
        if !conn.working {
            return Ok(());
        }
        conn.working = false;
        if conn.unsent.is_empty() {
            conn.unsent.push_back(chunk); // No copy.
        } else {
            conn.keep(&chunk);
        }
        if !conn.unworked.is_empty() {
            let next = std::mem::take(&mut conn.unworked);
            if let Some(plan) = &mut self.plan {
                conn.defer(plan, (slot, generation), &next, now);
            }
        }
        self.settle(token)
    }

    /// The pool rang its doorbell: echoes the chunks whose work is done,
    /// and listens for the bell again.
    pub(super) fn finish_jobs(&mut self, now: Instant) -> io::Result<()> {
        let (Some(plan), Some(doorbell)) = (&self.plan, &mut self.doorbell) else {
            return Ok(());
        };
        // Silence the bell before taking the jobs: a job that finishes
        // after this rings it again, and is taken on the next turn.
        let mut rings = [0; 64];
        while matches!(doorbell.read(&mut rings), Ok(n) if n > 0) {}
        let done = plan.finished();
        let fd = doorbell.as_raw_fd();
        if !self.ctx.shutdown.is_triggered() {
            self.ring.poll_readable(fd, token(Kind::Jobs, 0, 0))?;
        }
        for ((slot, generation), chunk) in done {
            self.jobs_done += 1;
            self.worked(slot, generation, chunk, now)?;
        }
        Ok(())
    }
}
