//! `--work` on the selector, which the reader may skip on a first read: a
//! chunk waits out its work (a timer, or a thread of the `--offload` pool)
//! before it is echoed, and its client reads nothing meanwhile, so bytes
//! stay in order. The kit that keeps the jobs is the lab's
//! ([`Deferrals`]); this file is where the selector meets it.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::{Connection, Handler, Selector, Tally};
use crate::lab::defer::{Deferrals, Started};
use crate::lab::offload::{Finished, Offload};
use crate::poller::Poller;
use crate::serve::Context;
use crate::serve::readiness::Readiness;
use crate::stats::Ending;

/// `--work`, if given: clients are keyed by slot and id (never reused).
pub(super) type WorkPlan = Deferrals<(usize, u64)>;

/// `--work`'s plan, if it is given; with `--offload`, its pool rings the
/// poller when a job is done (a cross-thread wake-up).
pub(super) fn start_plan(ctx: &Context, poller: &Arc<Poller>) -> io::Result<Option<WorkPlan>> {
    let Some(work) = ctx.config.work else {
        return Ok(None);
    };
    let pool = match ctx.config.offload {
        0 => None,
        threads => Some((
            Offload::start(ctx, threads, "selector")?,
            Finished::new(poller.clone()),
        )),
    };
    Ok(Some(WorkPlan::new(work, pool)))
}

impl Connection<'_> {
    /// Gives `data` to its work; `true` if the echo must wait for it.
    pub(super) fn defer(
        &mut self,
        plan: &mut WorkPlan,
        key: usize,
        data: &[u8],
        now: Instant,
    ) -> bool {
        match plan.start((key, self.id), data, now) {
            Started::Done => false,
            Started::Held => {
                self.held.extend_from_slice(data);
                self.working = true;
                true
            }
            Started::Offloaded => {
                self.working = true;
                true
            }
        }
    }
}

impl Selector<'_> {
    /// Echoes the chunks whose offloaded work is done. The pool rang the
    /// poller for each, so the loop woke up for them.
    pub(super) fn finish_jobs(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_ref() else {
            return;
        };
        for ((key, id), data) in plan.finished() {
            self.resume(key, id, now, |conn, now, tally| {
                conn.echo(&data, now, tally)
            });
        }
    }

    /// Resumes client `(key, id)` after its work, if it is still there:
    /// echoes its chunk with `echo`, then lets it read again.
    fn resume(
        &mut self,
        key: usize,
        id: u64,
        now: Instant,
        echo: impl FnOnce(&mut Connection<'_>, Instant, &Tally<'_>) -> io::Result<()>,
    ) {
        let Some(Handler::Client(conn)) = self.handlers.get_mut(key) else {
            return; // Gone while it worked: its chunk is dropped.
        };
        if conn.id != id || !conn.working {
            return; // The key belongs to a newer client now.
        }
        conn.working = false;
        self.jobs_done += 1;
        let ending = match echo(conn, now, &self.tally) {
            Ok(()) => conn.settle(key, self.poller),
            Err(e) => Some(Ending::Failed(e)),
        };
        if let Some(ending) = ending {
            self.close(key, ending);
        }
    }

    /// Echoes the held chunks whose `wait` is over.
    pub(super) fn echo_held_chunks_due(&mut self, now: Instant) {
        while let Some((key, id)) = self.plan.as_mut().and_then(|plan| plan.due(now)) {
            self.resume(key, id, now, |conn, now, tally| {
                let held = std::mem::take(&mut conn.held);
                let echoed = conn.echo(&held, now, tally);
                conn.held = held;
                conn.held.clear();
                echoed
            });
        }
    }
}
