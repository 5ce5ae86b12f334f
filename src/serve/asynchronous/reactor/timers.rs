//! The reactor's timers, asyncio's `call_later` as futures: [`sleep`],
//! and [`timeout`], which races a future against one. They borrow the
//! reactor, whose timer table fires them in `dispatch`.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Reactor;

/// An instant, as nanoseconds since its reactor was made: 8 bytes where an
/// `Instant` is 16, and every task waiting under a timeout holds one.
/// (It runs out after 584 years.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct At(u64);

impl At {
    /// `duration` later.
    fn after(self, duration: Duration) -> At {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        At(self.0.saturating_add(nanos))
    }

    /// How long from `now` until this instant (zero if it has passed).
    pub(super) fn from(self, now: At) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(now.0))
    }
}

impl Reactor {
    /// The instant now.
    pub(super) fn now(&self) -> At {
        let since = Instant::now().saturating_duration_since(self.epoch);
        At(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A future that completes at an instant: asyncio's `sleep`, built on the
/// reactor's timers (`call_later`). It borrows the reactor rather than
/// sharing it (one reference count fewer per sleep), and its timer id has
/// no zero, so that "no timer yet" costs no byte: a sleep is part of every
/// task waiting under a timeout.
pub struct Sleep<'r> {
    reactor: &'r Reactor,
    at: At,
    timer: Option<NonZeroU64>,
}

/// Completes after `duration`.
pub fn sleep(reactor: &Reactor, duration: Duration) -> Sleep<'_> {
    Sleep {
        reactor,
        at: reactor.now().after(duration),
        timer: None,
    }
}

impl Sleep<'_> {
    fn cancel(&mut self) {
        if let Some(id) = self.timer.take() {
            self.reactor.timers.borrow_mut().remove(&(self.at, id));
        }
    }
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.reactor.now() >= self.at {
            self.cancel();
            return Poll::Ready(());
        }
        if let Some(id) = self.timer {
            // Already registered: only a new waker needs recording.
            if let Some(waker) = self.reactor.timers.borrow_mut().get_mut(&(self.at, id)) {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                return Poll::Pending;
            }
        }
        let id = self.reactor.add_timer(self.at, cx.waker().clone());
        self.timer = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The error of a [`timeout`] that expired.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedOut;

/// Runs `future` for at most `limit`, if there is one: asyncio's
/// `wait_for`.
///
/// The future is pinned by the caller (`pin!(...)` in its own frame) and
/// lent here, so a task suspended in a timeout holds it once, in its own
/// state. Written as a struct rather than an `async fn` for the same
/// reason: it is part of every idle task, and a struct holds only these
/// two fields (32 bytes), where an `async fn` also kept its arguments
/// twice and a closure's references (104).
///
/// # Errors
/// [`TimedOut`] if the limit passed first; the future is left unfinished.
pub fn timeout<'f, F: Future>(
    reactor: &'f Reactor,
    limit: Option<Duration>,
    future: Pin<&'f mut F>,
) -> Timeout<'f, F> {
    Timeout {
        future,
        timer: limit.map(|limit| sleep(reactor, limit)),
    }
}

/// The future [`timeout`] returns.
pub struct Timeout<'f, F> {
    future: Pin<&'f mut F>,
    timer: Option<Sleep<'f>>,
}

impl<F: Future> Future for Timeout<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both fields are `Unpin` (a pinned reference, a `Sleep`).
        let this = &mut *self;
        if let Poll::Ready(output) = this.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match &mut this.timer {
            Some(timer) => Pin::new(timer).poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    }
}
