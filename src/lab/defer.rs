//! `--work` on a loop that must not block for it: the selector's and the
//! completion loop's. A chunk's work is one of three things:
//!
//! - held under a deadline (`wait`, the notes' `asyncio.sleep`): the loop
//!   keeps the chunk, and echoes it once [`Deferrals::due`] says its time
//!   has come;
//! - handed to the offload pool (`cpu` or `sleep` with `--offload`, the
//!   notes' `run_in_executor`): the pool has the chunk, and gives it back
//!   through [`Deferrals::finished`];
//! - done here, on the loop's own thread (`cpu` or `sleep` without
//!   `--offload`): every other client waits, which is the lesson.
//!
//! A client is named by a key that is never reused (a slot and its
//! generation, or a slot and a client id): a chunk that comes back for a
//! key whose client has gone meanwhile finds no one, and is dropped, never
//! echoed to the next client of that slot. (The statemachine and async
//! runtimes need none of this: their tasks wait on the runtime's own
//! timers and jobs, as any other wait.)

use std::collections::BTreeSet;
use std::time::Instant;

use super::offload::{Finished, Job, Offload};
use super::work::{Work, WorkKind};

/// The work of one loop, the chunks it holds under deadlines, and its pool.
pub struct Deferrals<K> {
    work: Work,
    /// With `--offload`: the pool, and where it says a job is done.
    pool: Option<(Offload, Finished<K>)>,
    /// Chunks held out `wait` work: (deadline, client).
    timers: BTreeSet<(Instant, K)>,
}

/// What became of a chunk given to [`Deferrals::start`].
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// Its work is a wait: the caller holds the chunk until it is due.
    Held,
    /// The pool has it; it comes back through `finished`.
    Offloaded,
    /// Its work is done, here, on the loop's thread: echo it now.
    Done,
}

impl<K: Ord + Copy + Send + 'static> Deferrals<K> {
    /// `work`, done with `pool` if there is one.
    pub fn new(work: Work, pool: Option<(Offload, Finished<K>)>) -> Self {
        Deferrals {
            work,
            pool,
            timers: BTreeSet::new(),
        }
    }

    /// Starts the work on `data`, just read from client `key`.
    pub fn start(&mut self, key: K, data: &[u8], now: Instant) -> Started {
        match (self.work.kind, &self.pool) {
            (WorkKind::Wait, _) => {
                self.timers.insert((now + self.work.duration, key));
                Started::Held
            }
            (_, Some((pool, finished))) => {
                pool.submit(Job {
                    work: self.work,
                    data: data.to_vec(),
                    done: finished.notifier(key),
                });
                Started::Offloaded
            }
            (_, None) => {
                self.work.block(data, None);
                Started::Done
            }
        }
    }

    /// Whether a chunk's work lets the loop go on (a timer, the pool),
    /// rather than being done on the loop's thread.
    pub fn defers(&self) -> bool {
        self.work.kind == WorkKind::Wait || self.pool.is_some()
    }

    /// The earliest deadline of a held chunk.
    pub fn deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next client whose held chunk is due at `now`, taken off the
    /// timers.
    pub fn due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.timers.first()?;
        (at <= now).then(|| {
            self.timers.pop_first();
            key
        })
    }

    /// The chunks the pool has finished, with their clients.
    pub fn finished(&self) -> Vec<(K, Vec<u8>)> {
        self.pool
            .as_ref()
            .map(|(_, finished)| finished.take().collect())
            .unwrap_or_default()
    }

    /// Chunks held under a deadline now, for `--stats`.
    pub fn held(&self) -> usize {
        self.timers.len()
    }

    /// Whether it hands work to a pool.
    pub fn has_pool(&self) -> bool {
        self.pool.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiting(ms: u64) -> Deferrals<(usize, u64)> {
        Deferrals::new(
            Work {
                kind: WorkKind::Wait,
                duration: Duration::from_millis(ms),
            },
            None,
        )
    }

    /// A held chunk comes due at its deadline, not before, and once.
    #[test]
    fn a_held_chunk_is_due_once_at_its_deadline() {
        let mut plan = waiting(10);
        let now = Instant::now();
        assert_eq!(plan.start((3, 7), b"x", now), Started::Held);
        assert_eq!(plan.deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(plan.due(now), None);
        assert_eq!(plan.due(now + Duration::from_millis(10)), Some((3, 7)));
        assert_eq!(plan.due(now + Duration::from_secs(1)), None);
        assert_eq!(plan.held(), 0);
    }

    /// Work without a pool is done at once, on the caller's thread.
    #[test]
    fn work_without_a_pool_is_done_here() {
        let mut plan: Deferrals<u32> = Deferrals::new(
            Work {
                kind: WorkKind::Sleep,
                duration: Duration::from_millis(1),
            },
            None,
        );
        assert!(!plan.defers());
        assert_eq!(plan.start(1, b"x", Instant::now()), Started::Done);
        assert!(plan.finished().is_empty());
    }
}
