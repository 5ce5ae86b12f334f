//! The system calls echo-lab makes outside its poller, in one place: the
//! descriptor limit, CPU placement, CPU time, and signals to other
//! processes. Each `unsafe` block is a single call whose contract is stated
//! beside it, and each result is checked; the rest of the crate calls these
//! safe functions.
//!
//! The poller's own calls (`epoll_*`, the eventfd) live with it in
//! [`crate::poller`], because they are its lesson.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

/// Turns the `-1`-means-failure convention of libc into an `io::Result`.
fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The soft and hard limits on open descriptors of this process.
///
/// # Errors
/// As `getrlimit(2)`, which cannot fail for this resource in practice.
pub fn fd_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass, which
    // lives across the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    // `rlim_t` is unsigned on Linux and signed on the BSDs; infinity is
    // its largest value on both.
    #[allow(clippy::useless_conversion)]
    let wide = |r: libc::rlim_t| u64::try_from(r).unwrap_or(u64::MAX);
    Ok((wide(limit.rlim_cur), wide(limit.rlim_max)))
}

/// `limit` as the OS's `rlim_t`, saturating.
fn rlim(limit: u64) -> libc::rlim_t {
    libc::rlim_t::try_from(limit).unwrap_or(libc::rlim_t::MAX)
}

/// Raises the soft descriptor limit to the hard one, so that a client can
/// open thousands of connections.
///
/// # Errors
/// As `setrlimit(2)`. Not fatal to a caller: connects then fail, and are
/// counted.
pub fn raise_fd_limit() -> io::Result<()> {
    let (soft, hard) = fd_limits()?;
    if soft >= hard {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: rlim(hard),
        rlim_max: rlim(hard),
    };
    // SAFETY: setrlimit reads the struct we pass, which lives across the call.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) })
}

/// Makes `command`'s process start with at most `limit` descriptors (soft
/// and hard), as `prlimit --nofile=N:N` would.
pub fn limit_descriptors(command: &mut Command, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: rlim(limit),
        rlim_max: rlim(limit),
    };
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe calls are allowed; setrlimit is a plain system call
    // and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || check(libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit)));
    }
}

/// Runs the calling thread on CPU `cpu` only.
///
/// # Errors
/// As `sched_setaffinity(2)`: no such CPU, or not allowed to use it.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set = unsafe { std::mem::zeroed::<libc::cpu_set_t>() };
    // SAFETY: CPU_SET sets one bit inside the set we own; `cpu` was checked
    // to be within it.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the kernel reads `size_of` bytes
    // of the set we own.
    check(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) })
}

/// Runs the calling thread on CPU `cpu` only: Linux's `sched_setaffinity`;
/// elsewhere, an error that says so.
///
/// # Errors
/// Always, off Linux.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning to a CPU is implemented on Linux only",
    ))
}

/// Opens a TCP connection to `to` from the local address `from` (port
/// chosen by the kernel), within `timeout`. On Linux the port is chosen at
/// connect time, for the whole four-tuple (`IP_BIND_ADDRESS_NO_PORT`), so
/// each source address brings a port range of its own.
///
/// # Errors
/// As `socket(2)`, `bind(2)` and `connect(2)`.
pub fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let yes: libc::c_int = 1;
        // SAFETY: the option is an int, passed by pointer with its size.
        check(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const yes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    socket.bind(&std::net::SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Makes `command`'s process run on CPU `cpu` only.
pub fn pin_command(command: &mut Command, cpu: usize) {
    // SAFETY: between fork and exec only async-signal-safe calls are
    // allowed; `pin_current_thread` makes one system call and allocates
    // nothing on success (an error is an OS code, not a heap value).
    unsafe {
        command.pre_exec(move || pin_current_thread(cpu));
    }
}

/// What the kernel has counted of this process so far, all its threads.
fn own_usage() -> libc::rusage {
    // SAFETY: rusage is plain integers, valid when zeroed.
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF cannot
    // fail, and a failure would leave zeros, which is harmless here.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage
}

/// User plus system CPU time this process has used so far, all threads.
pub fn own_cpu_time() -> Duration {
    let usage = own_usage();
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Context switches of this process's threads so far: those where a
/// thread gave up its core to wait (voluntary), and those where the
/// kernel took it away (involuntary).
pub fn own_context_switches() -> u64 {
    let usage = own_usage();
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`):
/// it does not advance while the thread waits for a core, so work measured
/// by it takes the same CPU however busy the machine is.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass;
    // this clock exists on every Linux, and a failure would leave zeros.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// CPU time that process `pid` has used so far, in nanoseconds: its CPU
/// clock (`clock_getcpuclockid`), which counts every thread it ever had,
/// the ones that have ended included (summing `/proc/PID/task/*` would
/// lose those; `/proc/PID/stat` counts in ticks of 10 ms). `None` if the
/// process is gone.
#[cfg(target_os = "linux")]
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes one clock id into `clock`, which we own.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `now`, which we own.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Another process's CPU time: read here on Linux only.
#[cfg(not(target_os = "linux"))]
pub fn process_cpu_time(_pid: u32) -> Option<Duration> {
    None
}

/// The memory of a server made of processes, `pid` and every process it
/// started, and theirs: the resident bytes of each (what `ps` shows as
/// RSS), and their proportional share (PSS: a page shared by N processes
/// counts 1/N in each), whose sum is what the tree really holds, where
/// RSS would count a page a forked child still shares with its parent
/// twice. Also the processes and threads of the tree. Read from /proc
/// (Linux); `None` elsewhere, or once `pid` is gone.
pub fn tree_memory(pid: u32) -> Option<TreeMemory> {
    let mut tree = TreeMemory::default();
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
        let (Some(rollup), Some(status)) = (rollup, status) else {
            if tree.processes == 0 {
                return None; // The root itself is gone.
            }
            continue; // A child that ended meanwhile.
        };
        let field = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        tree.rss += field(&rollup, "Rss:") * 1024;
        tree.pss += field(&rollup, "Pss:") * 1024;
        tree.threads += field(&status, "Threads:");
        tree.processes += 1;
        pending.extend(children(pid));
    }
    Some(tree)
}

/// The processes `pid` has started that are still there (reaped or not),
/// from every one of its threads' `/proc/PID/task/TID/children`.
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            children
                .split_whitespace()
                .filter_map(|n| n.parse::<u32>().ok()),
        );
    }
    found
}

/// CPU time a server made of processes has used so far: `pid` and every
/// process below it, each by its CPU clock ([`process_cpu_time`]), plus
/// what the children each of them has reaped had used (`cutime` and
/// `cstime` of `/proc/PID/stat`, in clock ticks). A process per client
/// (forking) ends each child within the run: without the reaped children
/// its clients' work would not be counted at all. `None` once `pid` is
/// gone.
#[cfg(target_os = "linux")]
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0)?;
    let mut total = process_cpu_time(pid)? + reaped_cpu_time(pid, ticks);
    let mut pending = children(pid);
    while let Some(child) = pending.pop() {
        // A child that ended meanwhile is in its parent's reaped time, or
        // will be: it is skipped here.
        if let Some(own) = process_cpu_time(child) {
            total += own + reaped_cpu_time(child, ticks);
            pending.extend(children(child));
        }
    }
    Some(total)
}

/// The CPU time of the children `pid` has waited for: `cutime` and
/// `cstime`, the 16th and 17th fields of `/proc/PID/stat`.
#[cfg(target_os = "linux")]
fn reaped_cpu_time(pid: u32, ticks_per_second: u64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, field 2, is in parentheses and may hold spaces:
    // count from after its closing one, where field 3 starts.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let ticks = field(16) + field(17);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_second)
}

/// Another process tree's CPU time: read here on Linux only.
#[cfg(not(target_os = "linux"))]
pub fn tree_cpu_time(_pid: u32) -> Option<Duration> {
    None
}

/// What [`tree_memory`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeMemory {
    /// Resident bytes, each process's in full.
    pub rss: u64,
    /// Proportional bytes: shared pages divided among their sharers.
    pub pss: u64,
    /// Processes in the tree.
    pub processes: u64,
    /// Threads in all of them.
    pub threads: u64,
}

/// How many connections wait in a listening socket's accept queue:
/// Linux reports it as `tcpi_unacked` of `TCP_INFO` on a listener. `None`
/// elsewhere, or if the kernel will not say.
#[cfg(target_os = "linux")]
pub fn accept_queue(listener: &impl std::os::fd::AsRawFd) -> Option<u32> {
    // SAFETY: tcp_info is plain integers, valid when zeroed.
    let mut info = unsafe { std::mem::zeroed::<libc::tcp_info>() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which we
    // own, and updates `len`.
    let result = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (result == 0).then_some(info.tcpi_unacked)
}

/// How many connections wait in a listening socket's accept queue: only
/// Linux says.
#[cfg(not(target_os = "linux"))]
pub fn accept_queue(_listener: &impl std::os::fd::AsRawFd) -> Option<u32> {
    None
}

/// Makes `command`'s process inherit descriptor `fd` (a listener passed
/// down to a worker: every descriptor of ours is close-on-exec, so the
/// flag is cleared in the child alone), and, on Linux, receive SIGTERM if
/// this process dies first, so that a worker never outlives its master.
pub fn pass_down(command: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl and prctl are plain system
    // calls, and nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            check(flags)?;
            check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            #[cfg(target_os = "linux")]
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM))?;
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
    fn descriptor_limits_read_back() {
        let (soft, hard) = fd_limits().unwrap();
        assert!(soft > 0 && soft <= hard, "{soft} {hard}");
        raise_fd_limit().unwrap();
        assert_eq!(fd_limits().unwrap().0, hard);
    }

    #[test]
    fn our_cpu_time_is_readable_both_ways() {
        let spent = own_cpu_time();
        let pid = std::process::id();
        assert!(process_cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(spent <= own_cpu_time());
    }

    /// A thread that ended still counts: what `compare` measures of a
    /// server whose threads come and go (a thread per client) is all of it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_keeps_the_cpu_time_of_threads_that_ended() {
        let pid = std::process::id();
        let before = process_cpu_time(pid).unwrap();
        std::thread::spawn(|| crate::lab::work::burn_cpu(Duration::from_millis(50), b"x"))
            .join()
            .unwrap();
        let used = process_cpu_time(pid).unwrap() - before;
        assert!(used >= Duration::from_millis(50), "{used:?}");
    }

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
