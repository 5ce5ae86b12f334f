//! The reactor's timers, asyncio's `call_later` as futures: [`sleep`],
//! and [`timeout`], which races a future against one. They borrow the
//! reactor, whose timer table fires them in `dispatch`.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Reactor;

/// A future that completes at an instant: asyncio's `sleep`, built on the
/// reactor's timers (`call_later`). It borrows the reactor rather than
/// sharing it (one reference count fewer per sleep), and its timer id has
/// no zero, so that "no timer yet" costs no byte: a sleep is part of every
/// task waiting under a timeout.
pub struct Sleep<'r> {
    reactor: &'r Reactor,
    at: Instant,
    timer: Option<NonZeroU64>,
}

/// Completes after `duration`.
pub fn sleep(reactor: &Reactor, duration: Duration) -> Sleep<'_> {
    Sleep {
        reactor,
        at: Instant::now() + duration,
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
        if Instant::now() >= self.at {
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
/// two fields (40 bytes), where an `async fn` also kept its arguments
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
