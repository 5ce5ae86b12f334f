//! The system calls echo-lab makes outside its poller, in one place: the
//! descriptor limit, CPU placement, CPU time and memory here; processes
//! and signals in `process.rs`. Each `unsafe` block is a single call whose
//! contract is stated beside it, and each result is checked; the rest of
//! the crate calls these safe functions.
//!
//! The poller's own calls (`epoll_*`, the eventfd) live with it in
//! [`crate::poller`], because they are its lesson.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

mod process;

pub use process::*;

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
}
