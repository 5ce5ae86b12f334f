//! The `polling` backend: the portable poller (epoll on Linux, kqueue on
//! macOS and the BSDs, IOCP on Windows), adapted to [`super::Poller`]'s
//! interface.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use polling::{Event as RawEvent, PollMode};

use super::{Event, Interest};

/// A `polling::Poller`.
#[derive(Debug)]
pub(super) struct Poller {
    inner: polling::Poller,
}

/// The crate's event for `interest` under `key`.
fn raw(key: usize, interest: Interest) -> RawEvent {
    match (interest.read, interest.write) {
        (true, true) => RawEvent::all(key),
        (true, false) => RawEvent::readable(key),
        (false, true) => RawEvent::writable(key),
        (false, false) => RawEvent::none(key),
    }
}

impl Poller {
    pub(super) fn new() -> io::Result<Self> {
        Ok(Poller {
            inner: polling::Poller::new()?,
        })
    }

    /// # Safety
    /// `source` is deleted before it is closed.
    pub(super) unsafe fn add(
        &self,
        source: &impl AsFd,
        key: usize,
        interest: Interest,
        edge: bool,
    ) -> io::Result<()> {
        let mode = if edge {
            PollMode::Edge
        } else {
            PollMode::Level
        };
        // SAFETY: the caller deletes `source` before closing it, which is
        // what the crate asks of `add`.
        unsafe {
            self.inner
                .add_with_mode(source.as_fd().as_raw_fd(), raw(key, interest), mode)
        }
    }

    pub(super) fn modify(
        &self,
        source: &impl AsFd,
        key: usize,
        interest: Interest,
    ) -> io::Result<()> {
        self.inner
            .modify_with_mode(source.as_fd(), raw(key, interest), PollMode::Level)
    }

    pub(super) fn delete(&self, source: &impl AsFd) -> io::Result<()> {
        self.inner.delete(source.as_fd())
    }

    /// Waits, and appends what it saw to `list` in our form.
    pub(super) fn wait(
        &self,
        raw: &mut polling::Events,
        timeout: Option<Duration>,
        list: &mut Vec<Event>,
    ) -> io::Result<()> {
        raw.clear();
        self.inner.wait(raw, timeout)?;
        list.extend(raw.iter().map(|event| {
            // An error or hang-up comes as readable and writable, as from
            // every backend (the crate reports the flags as they are), and
            // as read-closed: reads never block again. (A half-close, the
            // peer's FIN alone, is not reported: the crate does not ask
            // for EPOLLRDHUP.)
            let failed = event.is_err().unwrap_or(false) || event.is_interrupt();
            Event {
                key: event.key,
                readable: event.readable || failed,
                writable: event.writable || failed,
                read_closed: failed,
            }
        }));
        Ok(())
    }

    pub(super) fn notify(&self) -> io::Result<()> {
        self.inner.notify()
    }
}
