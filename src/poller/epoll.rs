//! The readiness API every event loop here waits on: Linux epoll, in the
//! four calls a loop needs. This is what Python's `selectors.DefaultSelector`
//! is on Linux: register a socket under a key with the directions of
//! interest, then wait for a batch of `(key, readable, writable)`.
//!
//! [`Poller::add`] registers level-triggered: epoll reports a socket for as
//! long as it is ready, so a handler may read once per event and trust the
//! next wait to report whatever it left. That is what the selector and the
//! statemachine loop use. (Oneshot would cost an `epoll_ctl` to re-arm after
//! every event, one more syscall per message.) [`Poller::add_edge_triggered`]
//! reports changes only: cheaper for the kernel, but the caller must
//! remember what is ready until a call says `WouldBlock`; the async
//! reactor, like mio, does that bookkeeping.
//!
//! Why not the `polling` crate, which we began with: it is portable, and to
//! be so it arms a timerfd and re-arms its wake-up eventfd around every
//! wait, five system calls where epoll needs one. With ten clients on one
//! core that was a fifth of the server's system calls
//! (`docs/performance.md`). A wait here is one `epoll_pwait2` (epoll_wait
//! with a timeout in nanoseconds), and nothing else unless another thread
//! called [`Poller::notify`].
//!
//! The costs, stated once: `add`, `modify` and `delete` are one `epoll_ctl`
//! each, so loops call them only when a socket's interest changes, never per
//! message; `wait` is one system call for a whole batch of ready sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use super::{Event, Interest};

/// The epoll flags for `interest`: `EPOLLRDHUP` with reading, so that a
/// hang-up is reported (as [`Event::read_closed`]) even edge-triggered.
fn flags(interest: Interest) -> u32 {
    let mut flags = 0;
    if interest.read {
        flags |= libc::EPOLLIN | libc::EPOLLRDHUP;
    }
    if interest.write {
        flags |= libc::EPOLLOUT;
    }
    flags as u32
}

/// The key of the poller's own wake-up descriptor; never reported.
const WAKE_KEY: u64 = u64::MAX;

/// The most events one wait returns. More ready sockets than this wait for
/// the next call, which is at once (they are still queued in the kernel).
const EVENTS_PER_WAIT: usize = 1024;

/// An epoll instance and the eventfd that [`Poller::notify`] writes.
#[derive(Debug)]
pub struct Poller {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// `epoll_pwait2` exists (Linux 5.11 and later): timeouts in
    /// nanoseconds. Cleared the first time the call is refused as unknown.
    precise_timeouts: AtomicBool,
}

// The raw `epoll_pwait2` call passes `libc::timespec` as the kernel's own
// 64-bit `__kernel_timespec`.
const _: () = assert!(size_of::<libc::timespec>() == 16);

/// The buffer a wait fills. Allocated once; a loop keeps one for its life.
pub struct Events {
    list: Vec<libc::epoll_event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// Room for the 1,024 events one wait may report.
    pub fn new() -> Events {
        Events {
            list: Vec::with_capacity(EVENTS_PER_WAIT),
        }
    }

    /// The events of the last wait, in the order the kernel gave them.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().map(|event| {
            let flags = event.events as i32;
            let failed = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            Event {
                // Keys are stored as given to `add`, so they fit a usize.
                key: event.u64 as usize,
                readable: failed || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0,
                writable: failed || flags & libc::EPOLLOUT != 0,
                read_closed: failed || flags & libc::EPOLLRDHUP != 0,
            }
        })
    }
}

impl Poller {
    /// A new epoll instance, with its wake-up eventfd registered.
    ///
    /// # Errors
    /// If the kernel refuses either descriptor (out of descriptors, say).
    pub fn new() -> io::Result<Poller> {
        // SAFETY: a plain system call; its result is checked before it is
        // owned, and owned exactly once.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        // SAFETY: as above.
        let wake = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        let poller = Poller {
            epoll,
            wake,
            precise_timeouts: AtomicBool::new(true),
        };
        poller.control(
            libc::EPOLL_CTL_ADD,
            poller.wake.as_raw_fd(),
            WAKE_KEY,
            libc::EPOLLIN as u32,
        )?;
        Ok(poller)
    }

    /// Watches `source` for `interest`, reporting it under `key`.
    ///
    /// Delete a source before closing it: epoll forgets a descriptor only
    /// when every duplicate of it is closed, and until then its events would
    /// arrive under a key that may belong to somebody else by then.
    ///
    /// # Errors
    /// As `epoll_ctl(2)`: already registered, out of memory.
    pub fn add(&self, source: &impl AsFd, key: usize, interest: Interest) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd();
        self.control(libc::EPOLL_CTL_ADD, fd, checked_key(key)?, flags(interest))
    }

    /// Watches `source` for reading and writing, edge-triggered, reporting
    /// it under `key`: a wait reports each *change* to readable or writable
    /// once, instead of reporting the socket for as long as it is ready.
    /// This is mio's (and so tokio's) registration. The kernel no longer
    /// re-polls every socket it reported at the next wait, and the
    /// interest never needs an `epoll_ctl` again; in exchange the caller
    /// must remember readiness until a call says `WouldBlock`, and must
    /// remember [`Event::read_closed`]: a hang-up that arrived with the last
    /// data raises no edge of its own once that data is read.
    ///
    /// # Errors
    /// As [`Poller::add`].
    pub fn add_edge_triggered(&self, source: &impl AsFd, key: usize) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd();
        let flags = flags(Interest {
            read: true,
            write: true,
        }) | libc::EPOLLET as u32;
        self.control(libc::EPOLL_CTL_ADD, fd, checked_key(key)?, flags)
    }

    /// Changes what a registered `source` is watched for.
    ///
    /// # Errors
    /// As `epoll_ctl(2)`: not registered, say.
    pub fn modify(&self, source: &impl AsFd, key: usize, interest: Interest) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd();
        self.control(libc::EPOLL_CTL_MOD, fd, checked_key(key)?, flags(interest))
    }

    /// Stops watching `source`.
    ///
    /// # Errors
    /// As `epoll_ctl(2)`: not registered, say.
    pub fn delete(&self, source: &impl AsFd) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, source.as_fd().as_raw_fd(), 0, 0)
    }

    fn control(&self, op: libc::c_int, fd: libc::c_int, key: u64, flags: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: flags,
            u64: key,
        };
        // SAFETY: `event` outlives the call, which only reads it.
        let result = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until a watched socket is ready, `timeout` passes (`None`:
    /// never) or [`Poller::notify`] is called, and fills `events` with the
    /// ready sockets. Returns how many there are; 0 after a timeout, a
    /// notification or a signal (EINTR), so that the caller looks at its
    /// clock and its flags again.
    ///
    /// The timeout is exact to the microsecond (`epoll_pwait2`, Linux 5.11):
    /// `bench` sends open-loop messages when they are due, not up to a
    /// millisecond later. On an older kernel it falls back to `epoll_wait`,
    /// which counts in milliseconds; the timeout is then rounded up, so that
    /// a timer never fires early and a short timeout never becomes a busy poll.
    ///
    /// # Errors
    /// As `epoll_wait(2)`, except EINTR.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let list = &mut events.list;
        list.clear();
        let ready = self.wait_once(list, timeout);
        if ready < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        // SAFETY: the kernel wrote `ready` ≤ capacity events into the
        // vector's spare room.
        unsafe { list.set_len(ready as usize) };
        if let Some(at) = list.iter().position(|event| event.u64 == WAKE_KEY) {
            list.remove(at);
            self.drain_wake();
        }
        Ok(list.len())
    }

    /// The one system call of a wait. Returns what it returned: the number
    /// of events written into `list`'s spare room, or -1 and errno.
    fn wait_once(&self, list: &mut Vec<libc::epoll_event>, timeout: Option<Duration>) -> i64 {
        let epoll = self.epoll.as_raw_fd();
        let room = list.capacity() as libc::c_int;
        if self.precise_timeouts.load(Relaxed) {
            let timeout = timeout.map(|t| libc::timespec {
                tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: t.subsec_nanos().into(),
            });
            let timeout = timeout.as_ref().map_or(ptr::null(), ptr::from_ref);
            let no_sigmask: *const libc::sigset_t = ptr::null();
            // SAFETY: the kernel writes at most `room` events into the
            // vector's spare room and reads the timespec, which outlives the
            // call. (The raw call, not glibc's wrapper, which older glibcs
            // lack; on 64-bit Linux `timespec` is the kernel's layout.)
            let ready = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    epoll,
                    list.as_mut_ptr(),
                    room,
                    timeout,
                    no_sigmask,
                    0usize,
                )
            };
            // ENOSYS: a kernel before 5.11. EPERM: a seccomp filter older
            // than the call (container runtimes of 2020 and before).
            let unknown = ready < 0
                && matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM)
                );
            if !unknown {
                return ready;
            }
            self.precise_timeouts.store(false, Relaxed);
        }
        let timeout_ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: as above.
        unsafe { libc::epoll_wait(epoll, list.as_mut_ptr(), room, timeout_ms).into() }
    }

    /// Makes the current wait return at once, or the next one if no thread
    /// waits now. Any thread may call it; it is how a signal handler's
    /// thread stops a loop.
    ///
    /// # Errors
    /// As `write(2)` on an eventfd (never in practice).
    pub fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
        let written = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&raw const one).cast(),
                size_of::<u64>(),
            )
        };
        if written < 0 {
            let error = io::Error::last_os_error();
            // The counter is full: the poller is notified already.
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Resets the eventfd, or epoll (level-triggered) would report it forever.
    fn drain_wake(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64. WouldBlock (already reset)
        // is harmless, so the result is not needed.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                (&raw mut count).cast(),
                size_of::<u64>(),
            )
        };
    }
}

/// Takes ownership of a descriptor a system call returned, or its error.
///
/// # Safety
/// `fd` must be a fresh descriptor that nothing else owns, or negative.
unsafe fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `key` as epoll's `u64`; the largest key is the wake-up's own.
fn checked_key(key: usize) -> io::Result<u64> {
    super::checked_key(key)?;
    Ok(key as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn wait_for(poller: &Poller, timeout: Duration) -> Vec<Event> {
        let mut events = Events::new();
        poller.wait(&mut events, Some(timeout)).unwrap();
        events.iter().collect()
    }

    #[test]
    fn reports_a_readable_socket_under_its_key_until_it_is_read() {
        let poller = Poller::new().unwrap();
        let (mut client, server) = pair();
        poller.add(&server, 7, Interest::READ).unwrap();
        assert!(wait_for(&poller, Duration::ZERO).is_empty());

        client.write_all(b"x").unwrap();
        let ready = Event {
            key: 7,
            readable: true,
            writable: false,
            read_closed: false,
        };
        assert_eq!(wait_for(&poller, Duration::from_secs(10)), [ready]);
        // Level-triggered: still there, because nobody read it.
        assert_eq!(wait_for(&poller, Duration::ZERO), [ready]);
    }

    /// Edge-triggered: each change is reported once, and a hang-up is
    /// reported as `read_closed`, however much data is unread.
    #[test]
    fn edge_triggered_reports_changes_once_and_a_hang_up_with_its_data() {
        let poller = Poller::new().unwrap();
        let (mut client, server) = pair();
        poller.add_edge_triggered(&server, 5).unwrap();
        // Registering reports what is ready already: room to write.
        let events = wait_for(&poller, Duration::from_secs(10));
        assert_eq!(events.len(), 1);
        assert!(events[0].writable && !events[0].readable);
        assert!(wait_for(&poller, Duration::ZERO).is_empty());

        client.write_all(b"x").unwrap();
        let events = wait_for(&poller, Duration::from_secs(10));
        assert!(events[0].readable && !events[0].read_closed);
        // Nobody read it, yet it is not reported again: no new edge.
        assert!(wait_for(&poller, Duration::ZERO).is_empty());

        client.write_all(b"y").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        // The data and the FIN raise one edge or two; the last says both.
        let last = loop {
            let events = wait_for(&poller, Duration::from_secs(10));
            assert_eq!(events.len(), 1, "one socket, one report per wait");
            if events[0].read_closed {
                break events[0];
            }
        };
        assert!(last.readable);
    }

    #[test]
    fn modify_and_delete_change_what_is_reported() {
        let poller = Poller::new().unwrap();
        let (mut client, server) = pair();
        poller.add(&server, 3, Interest::WRITE).unwrap();
        let events = wait_for(&poller, Duration::from_secs(10));
        assert_eq!(events.len(), 1);
        assert!(events[0].writable && !events[0].readable);

        poller.modify(&server, 3, Interest::NONE).unwrap();
        client.write_all(b"x").unwrap();
        assert!(wait_for(&poller, Duration::from_millis(20)).is_empty());

        poller.modify(&server, 3, Interest::READ).unwrap();
        assert_eq!(wait_for(&poller, Duration::from_secs(10)).len(), 1);

        poller.delete(&server).unwrap();
        assert!(wait_for(&poller, Duration::ZERO).is_empty());
        assert!(poller.delete(&server).is_err(), "not registered any more");
    }

    #[test]
    fn a_hang_up_is_reported_even_with_no_interest() {
        let poller = Poller::new().unwrap();
        let (client, server) = pair();
        poller.add(&server, 1, Interest::NONE).unwrap();
        // A reset: SO_LINGER 0, then close.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let events = wait_for(&poller, Duration::from_secs(10));
        assert_eq!(events.len(), 1);
        assert!(events[0].readable && events[0].writable);
    }

    #[test]
    fn notify_ends_a_wait_from_another_thread_and_is_never_reported() {
        let poller = Arc::new(Poller::new().unwrap());
        let notifier = poller.clone();
        let long = Duration::from_secs(30);
        let started = Instant::now();
        let thread = std::thread::spawn(move || notifier.notify().unwrap());
        let mut events = Events::new();
        assert_eq!(poller.wait(&mut events, Some(long)).unwrap(), 0);
        assert!(started.elapsed() < long, "the wait ran to its timeout");
        thread.join().unwrap();

        // Notifications before a wait are kept, and many count as one: the
        // first wait returns at once, the next runs to its timeout.
        poller.notify().unwrap();
        poller.notify().unwrap();
        let started = Instant::now();
        assert_eq!(poller.wait(&mut events, Some(long)).unwrap(), 0);
        assert!(started.elapsed() < long, "the notification was lost");
        let short = Duration::from_millis(20);
        let started = Instant::now();
        assert_eq!(poller.wait(&mut events, Some(short)).unwrap(), 0);
        assert!(
            started.elapsed() >= short,
            "a consumed notification came back"
        );
    }

    #[test]
    fn a_timeout_is_never_cut_short_with_either_system_call() {
        let precise = Poller::new().unwrap();
        let old_kernel = Poller::new().unwrap();
        old_kernel.precise_timeouts.store(false, Relaxed);
        let mut events = Events::new();
        for poller in [precise, old_kernel] {
            for timeout in [Duration::from_micros(1), Duration::from_micros(1500)] {
                let started = Instant::now();
                assert_eq!(poller.wait(&mut events, Some(timeout)).unwrap(), 0);
                assert!(started.elapsed() >= timeout);
            }
        }
    }

    #[test]
    fn the_wake_key_is_refused() {
        let poller = Poller::new().unwrap();
        let (_client, server) = pair();
        let error = poller.add(&server, usize::MAX, Interest::READ).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
