//! Processes: passing a listener down to a worker, forking, reaping,
//! signalling, and the descriptors and signal masks around them. The
//! `--processes` supervisor and the forking model call these; each
//! `unsafe` block is one call whose contract is stated beside it.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use super::check;

/// Makes `command`'s process inherit descriptor `fd` (a listener passed
/// down to a worker: every descriptor of ours is close-on-exec, so the
/// flag is cleared in the child alone), and, on Linux, receive SIGTERM if
/// this process dies first, so that a worker never outlives its master.
/// A master that dies between the fork and that request sends nothing:
/// the child sees it has another parent already, and does not start.
pub fn pass_down(command: &mut Command, fd: std::os::fd::RawFd) {
    #[cfg(target_os = "linux")]
    let master = std::process::id();
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl, prctl and getppid are
    // plain system calls, and nothing is allocated (an error is made of a
    // number).
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            check(flags)?;
            check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            #[cfg(target_os = "linux")]
            {
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM))?;
                if libc::getppid() as u32 != master {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        });
    }
}

/// Takes ownership of descriptor `fd`, inherited from the master, as the
/// listener it is; close-on-exec again.
///
/// # Errors
/// `fd` is not an open listening socket of ours.
pub fn adopt_listener(fd: std::os::fd::RawFd) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let mut listening: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`, which
    // lives across the call; on a descriptor that is not a socket it fails
    // and touches nothing.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut listening).cast(),
            &mut len,
        )
    })?;
    if listening == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the inherited descriptor is not a listening socket",
        ));
    }
    // SAFETY: fcntl on a descriptor checked above to be an open socket.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the master passed this descriptor down to this process
    // alone, and nothing else here knows it: the listener is its only
    // owner.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) })
}

/// Waits, with no time limit, until `first` or `second` is readable
/// (a listener with a client waiting, a bell that rang), and says which
/// are: `poll(2)` on two descriptors. A signal that interrupts the wait
/// returns `[false, false]`.
///
/// # Errors
/// As `poll(2)`: out of memory.
pub fn wait_readable(
    first: std::os::fd::BorrowedFd<'_>,
    second: std::os::fd::BorrowedFd<'_>,
) -> io::Result<[bool; 2]> {
    use std::os::fd::AsRawFd;
    let watch = |fd: std::os::fd::BorrowedFd<'_>| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [watch(first), watch(second)];
    // SAFETY: poll(2) reads and writes the two pollfd of `fds`, which lives
    // across the call; the descriptors are borrowed, so open.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) }) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok([false, false]),
        Err(e) => Err(e),
        // An error or hang-up counts as readable: the next call says what.
        Ok(()) => Ok(fds.map(|fd| fd.revents != 0)),
    }
}

/// Makes this process receive SIGTERM when its parent dies, however it
/// dies (Linux's `PR_SET_PDEATHSIG`; elsewhere nothing). `parent` is the
/// pid it had before the fork: if the parent died before the request was
/// made, the process exits at once. Two system calls, safe in a forked
/// child.
pub fn die_with_parent(parent: u32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
        // touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        // SAFETY: getppid(2) cannot fail and touches no memory.
        if unsafe { libc::getppid() } as u32 != parent {
            exit_now(0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
}

/// A self-pipe that SIGCHLD rings: readable (in a poller) once a child of
/// this process has ended. Both process models wait on one, the master for
/// its workers and `forking`'s parent for its children. The handler goes
/// when it is dropped.
pub struct ChildBell {
    bell: std::os::unix::net::UnixStream,
    handler: signal_hook::SigId,
}

impl ChildBell {
    /// Installs the SIGCHLD handler that rings it.
    ///
    /// # Errors
    /// Out of descriptors, or the handler cannot be installed.
    pub fn new() -> io::Result<ChildBell> {
        let (bell, ringer) = std::os::unix::net::UnixStream::pair()?;
        for end in [&bell, &ringer] {
            end.set_nonblocking(true)?;
        }
        let handler = signal_hook::low_level::pipe::register(libc::SIGCHLD, ringer)?;
        Ok(ChildBell { bell, handler })
    }

    /// Empties it after a wait, so that it rings again at the next end.
    pub fn drain(&self) {
        let mut bytes = [0; 64];
        while matches!(std::io::Read::read(&mut &self.bell, &mut bytes), Ok(n) if n > 0) {}
    }
}

impl std::os::fd::AsFd for ChildBell {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.bell.as_fd()
    }
}

impl Drop for ChildBell {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.handler);
    }
}

/// Makes `signal` end the process at once (status 128 + `signal`) when it
/// is not the first stop signal: `seen` is shared by the handlers of every
/// signal so registered, and the first to arrive only marks it. One atomic
/// swap decides which is the first, even when two arrive at once and two
/// threads run their handlers side by side (a check and a separate set
/// would let both pass as first).
///
/// # Errors
/// The handler cannot be installed.
pub fn exit_on_second(
    signal: libc::c_int,
    seen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> io::Result<signal_hook::SigId> {
    let first_or_exit = move || {
        if seen.swap(true, std::sync::atomic::Ordering::SeqCst) {
            signal_hook::low_level::exit(128 + signal);
        }
    };
    // SAFETY: the handler does only async-signal-safe things: an atomic
    // swap, and `_exit`.
    unsafe { signal_hook::low_level::register(signal, first_or_exit) }
}

/// Closes every descriptor of this process from 3 up but `keep`: what a
/// forked child does first, so that it holds its own client's socket and
/// nothing else of its parent's (another client's socket held here would
/// keep that connection open after its own child closed it, and a test's
/// client sockets, forked along, would never see their server close). No
/// allocation: safe in a forked child. `close_range(2)` on Linux, a loop
/// up to the descriptor limit elsewhere or where the kernel lacks it.
pub fn close_other_descriptors(mut keep: [std::os::fd::RawFd; 2]) {
    keep.sort_unstable();
    let mut from: libc::c_int = 3;
    for fd in keep.into_iter().chain([libc::c_int::MAX]) {
        if fd > from {
            close_between(from, fd - 1);
        }
        from = from.max(fd.saturating_add(1));
    }
}

/// Closes descriptors `first` to `last`, both included.
fn close_between(first: libc::c_int, last: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range(2) takes two numbers and flags, and closes
        // descriptors of this process only; it touches no memory.
        let closed = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0,
            )
        };
        if closed == 0 {
            return;
        }
    }
    // SAFETY: getdtablesize(3) takes nothing and returns the limit.
    let limit = unsafe { libc::getdtablesize() };
    for fd in first..=last.min(limit - 1) {
        // SAFETY: close(2) on a number: at worst EBADF, nothing touched.
        unsafe { libc::close(fd) };
    }
}

/// Forks this process: `Some(pid)` in the parent, `None` in the child.
///
/// In the child only the calling thread exists, and every lock another
/// thread held at the fork stays held: the child must make only system
/// calls (no allocation, no `println!`) until it exits with [`exit_now`].
///
/// # Errors
/// As `fork(2)`: out of memory or over the process limit.
pub fn fork() -> io::Result<Option<u32>> {
    // SAFETY: fork(2) duplicates the process; what the child may do after
    // it is the caller's contract, stated above.
    let pid = unsafe { libc::fork() };
    check(pid)?;
    Ok((pid > 0).then_some(pid as u32))
}

/// Ends this process at once with `code`: no destructors, no exit
/// handlers, no flushing of buffers the parent also holds (`_exit(2)`,
/// what a forked child must use).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no memory of ours and does not return.
    unsafe { libc::_exit(code) }
}

/// Gives SIGINT and SIGTERM their default action again (termination):
/// a forked child must not run the handlers it inherited, which ring its
/// parent's shutdown bell.
pub fn default_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: signal(2) with SIG_DFL installs no code of ours.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Writes `message` to stderr with one system call, taking no lock: for
/// a forked child, or a process about to abort.
pub fn write_stderr_raw(message: &[u8]) {
    // SAFETY: write(2) reads `message.len()` bytes of a slice we borrow.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len()) };
}

/// Reaps child `pid` if it has ended, without waiting: its wait status.
pub fn reap(pid: u32) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut status = 0;
    // SAFETY: waitpid writes one int into `status`, which lives across the
    // call.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (reaped == pid).then(|| std::process::ExitStatus::from_raw(status))
}

/// Sends `signal` to process `pid`.
///
/// # Errors
/// As `kill(2)`: no such process (it has exited), or not ours.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: kill(2) touches no memory of ours.
    check(unsafe { libc::kill(pid, signal) })
}

/// Sends `signal` to every process of the group led by `leader` (a child
/// started with `process_group(0)`).
///
/// # Errors
/// As `kill(2)`: the group is gone, or not ours.
pub fn signal_group(leader: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(leader).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: kill(2) with a negative pid signals that process group; it
    // touches no memory of ours.
    check(unsafe { libc::kill(-pid, signal) })
}

/// Holds SIGINT and SIGTERM back on this thread: one that arrives stays
/// pending, neither handled nor acted on by default, until
/// [`release_stop_signals`]. `main` calls it first of all, so that a
/// server stopped at any moment of its start is stopped by its own
/// handlers (with a summary and exit 0), never killed by the default
/// action before they exist. Threads started meanwhile inherit the mask.
///
/// # Errors
/// As `pthread_sigmask(3)`.
pub fn hold_stop_signals() -> io::Result<()> {
    stop_signals_mask(libc::SIG_BLOCK)
}

/// Lets SIGINT and SIGTERM through again on this thread; one that arrived
/// while they were held is delivered now.
///
/// # Errors
/// As `pthread_sigmask(3)`.
pub fn release_stop_signals() -> io::Result<()> {
    stop_signals_mask(libc::SIG_UNBLOCK)
}

fn stop_signals_mask(how: libc::c_int) -> io::Result<()> {
    // SAFETY: `set` is a local sigset_t that sigemptyset initialises before
    // anything reads it; pthread_sigmask only reads it, and we pass no
    // old-set pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        match libc::pthread_sigmask(how, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            error => Err(io::Error::from_raw_os_error(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalling_a_process_that_is_gone_fails() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(
            signal(pid, 0).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
    }
}
