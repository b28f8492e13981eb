//! The reserved fd range: where the program's IPv4/IPv6 datagram sockets
//! live, so that the filter notifies receives (`recvfrom` asking for the
//! source, `recvmsg`) on them only, and a receive on any other fd (TCP,
//! Unix, netlink, a file) stays in the kernel.
//!
//! A seccomp filter cannot change once installed and cannot tell one
//! socket from another, only one fd number from another. So the `socket`
//! call of an IPv4/IPv6 datagram socket is notified (rare), and the
//! supervisor opens the socket itself and installs it in the program at a
//! free fd of the range (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SETFD|SEND`:
//! the call returns that number), the highest free first. The range is the
//! top quarter of the fd limit the program starts with, below 1024 (fds
//! 768..1023 for the usual limit and any higher one): `select` cannot take
//! an fd from 1024 up (`FD_SETSIZE`), and fds the kernel hands out lowest
//! first rarely reach the range. A program that does has its receives
//! there notified too (slower, still correct: the supervisor lets the
//! kernel run a receive on a socket it does not carry); one that has
//! nearly all its fds open may see a file it opens at the very moment the
//! supervisor installs a socket at the same free fd replaced by it.
//!
//! The supervisor carries UDP (an association, its adapter, the DNS
//! responder) only for a socket used through an fd in the range that has
//! no copy below it, since a receive there would not be seen: the relay's
//! header would reach the program. Copies are watched: `dup`, `dup2`,
//! `dup3` and `fcntl(F_DUPFD*)` from the range or into it are notified; a
//! `dup` or `F_DUPFD` of a socket in the range gets its copy in the range
//! too, and a copy below it (an explicit `dup2`/`dup3`, an `F_DUPFD` with
//! no room left, a socket passed with `SCM_RIGHTS` or taken with
//! `pidfd_getfd`) *pins* the socket: it goes on working, but UDP to a
//! proxied destination on it is refused with EPERM (one log line). Such a
//! copy of a socket that already carries an association is refused
//! (EPERM): a receive on it would show the program the relay's datagrams.
//!
//! The socket is the supervisor's: opened in its network namespace (one
//! of a program that moved to another is left to the kernel, below the
//! range, and so not carried), with its credentials and cgroup.

use super::kernel::{self, Answer, Notif};
use super::{Level, Supervisor};
use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

/// The range and the sockets pinned out of it.
pub struct Reserved {
    /// The first fd of the range (the filter's bound).
    pub from: u32,
    /// One past the last.
    pub to: u32,
    /// Our network namespace, by inode.
    netns: Option<u64>,
    /// UDP sockets (inodes) that have, or may have, an fd below the range.
    pinned: Mutex<HashSet<u64>>,
}

/// How many sockets may be pinned; past that, a copy out of the range
/// fails (`EMFILE`) rather than let a socket be pinned unrecorded.
const MAX_PINNED: usize = 65536;

impl Reserved {
    /// The range for a program started with this process's fd limit.
    pub fn for_this_process() -> Reserved {
        // SAFETY: getrlimit fills one rlimit.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
        let to = soft.min(libc::FD_SETSIZE as u64) as u32;
        Reserved { from: to - to / 4, to, netns: netns_of("self"), pinned: Mutex::default() }
    }

    /// No range: the program's UDP sockets are never the supervisor's.
    pub fn none() -> Reserved {
        Reserved { from: u32::MAX, to: u32::MAX, netns: None, pinned: Mutex::default() }
    }

    /// The bound the filter checks, `None` without a range.
    pub fn filter_bound(&self) -> Option<u32> {
        (self.from != u32::MAX).then_some(self.from)
    }

    pub fn in_range(&self, fd: u64) -> bool {
        // The kernel reads an fd argument as an int.
        let fd = fd as u32 as i32;
        fd >= 0 && fd as u32 >= self.from && self.from != u32::MAX
    }

    fn pinned(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pins `inode`; false when the set is full.
    fn pin(&self, inode: u64) -> bool {
        let mut set = self.pinned();
        if set.len() >= MAX_PINNED && !set.contains(&inode) {
            return false;
        }
        set.insert(inode);
        true
    }

    /// A free fd of the range in the process behind `pidfd`, below its
    /// current fd limit; the highest first.
    fn free_slot(&self, pidfd: &OwnedFd, pid: u32) -> Option<u32> {
        let mut lim: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit reads the process's limit into lim.
        let limit = if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) } == 0 {
            lim.rlim_cur.min(u64::from(self.to)) as u32
        } else {
            self.to
        };
        (self.from..limit).rev().find_map(|fd| match kernel::take_fd(pidfd, u64::from(fd)) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Some(Some(fd)),
            Ok(_) => None,
            Err(_) => Some(None),
        })?
    }
}

/// The inode of `/proc/PID/ns/net`.
fn netns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// Whether `sock` is an IPv4/IPv6 datagram socket.
fn is_inet_dgram(sock: &OwnedFd) -> bool {
    let domain = kernel::socket_int_option(sock, libc::SO_DOMAIN);
    matches!(domain, Some(libc::AF_INET | libc::AF_INET6)) && kernel::socket_int_option(sock, libc::SO_TYPE) == Some(libc::SOCK_DGRAM)
}

/// `socket(AF_INET/AF_INET6, SOCK_DGRAM, 0 or IPPROTO_UDP)`: opened here
/// and installed in the range. `None`: answered by the install. Anything
/// else, or no room, or another network namespace: the kernel's call.
pub fn on_socket(sv: &Supervisor, n: &Notif) -> Option<Answer> {
    let [domain, ty, proto, ..] = n.data.args.map(|a| a as u32 as i32);
    if proto != 0 && proto != libc::IPPROTO_UDP {
        return Some(Answer::Continue);
    }
    if sv.reserved.netns.is_none() || netns_of(&n.pid.to_string()) != sv.reserved.netns {
        say!(Level::Debug, "socket of thread {} left to the kernel: another network namespace", n.pid);
        return Some(Answer::Continue);
    }
    // SAFETY: socket(2); the fd is ours (close-on-exec here, whatever the program asked).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Some(Answer::Fail(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL)));
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    install(sv, n, &sock, ty & libc::SOCK_CLOEXEC != 0).unwrap_or(Some(Answer::Continue))
}

/// Installs `sock` at a free fd of the range as the answer to call `n`:
/// `Some(None)` when answered, `Some(Some(answer))` to answer with,
/// `None` when there is no room (the caller decides).
fn install(sv: &Supervisor, n: &Notif, sock: &OwnedFd, cloexec: bool) -> Option<Option<Answer>> {
    let pidfd = kernel::pidfd_of_thread(n.pid).ok()?;
    let Some(slot) = sv.reserved.free_slot(&pidfd, n.pid) else {
        say!(Level::Info, "no free fd in {}..{} for a UDP socket of thread {}: UDP to proxied destinations on it will be refused", sv.reserved.from, sv.reserved.to, n.pid);
        return None;
    };
    if !sv.listener.id_valid(n.id) {
        return Some(None);
    }
    match sv.listener.add_fd(n.id, sock, slot, cloexec, true) {
        Ok(_) => Some(None),
        // Before Linux 5.14 (no SEND): installed, then answered.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match sv.listener.add_fd(n.id, sock, slot, cloexec, false) {
            Ok(fd) => Some(Some(Answer::Return(i64::from(fd)))),
            Err(_) => None,
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Some(None), // the caller is gone
        Err(e) => {
            say!(Level::Debug, "installing a socket at fd {slot} of thread {}: {e}", n.pid);
            None
        }
    }
}

/// `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)` from the range or into it.
pub fn on_dup(sv: &Supervisor, n: &Notif) -> Option<Answer> {
    let args = n.data.args;
    let old = args[0];
    // The new fd: exactly this one, or the lowest free from this one.
    let (exact, min, cloexec) = match i64::from(n.data.nr) {
        libc::SYS_dup => (None, 0, false),
        libc::SYS_dup3 => (Some(args[1]), 0, false),
        libc::SYS_fcntl => match args[1] as u32 as i32 {
            libc::F_DUPFD => (None, args[2], false),
            libc::F_DUPFD_CLOEXEC => (None, args[2], true),
            _ => return Some(Answer::Continue),
        },
        _ => (Some(args[1]), 0, false), // dup2
    };
    let Ok(pidfd) = kernel::pidfd_of_thread(n.pid) else { return Some(Answer::Continue) };
    let Ok(sock) = kernel::take_fd(&pidfd, old) else { return Some(Answer::Continue) };
    if !is_inet_dgram(&sock) {
        return Some(Answer::Continue);
    }
    let Some(inode) = kernel::socket_inode(&sock) else { return Some(Answer::Continue) };
    let r = &sv.reserved;
    let old_in = r.in_range(old);
    let new_in = match exact {
        Some(new) if new == old => return Some(Answer::Continue),
        Some(new) => r.in_range(new),
        None if r.in_range(min) => true,
        // A copy of a socket in the range stays in it.
        None if old_in => match install(sv, n, &sock, cloexec) {
            Some(answered) => return answered,
            None => false,
        },
        None => false,
    };
    if old_in == new_in {
        return Some(Answer::Continue);
    }
    Some(pin_copy(sv, inode, "a copy of it outside the supervisor's fd range"))
}

/// A copy of socket `inode` out of the range (or into it from below) is
/// about to be made: refused if the socket carries an association,
/// else the socket is pinned and the kernel makes the copy.
fn pin_copy(sv: &Supervisor, inode: u64, what: &str) -> Answer {
    if sv.udp.carries(inode) {
        say!(Level::Warn, "{what} of a UDP socket with a proxied association refused (EPERM): receives there would not be seen");
        return Answer::Fail(libc::EPERM);
    }
    if !sv.reserved.pin(inode) {
        return Answer::Fail(libc::EMFILE);
    }
    Answer::Continue
}

/// `pidfd_getfd(pidfd, fd, flags)` by the program: a copy of a socket of
/// the range lands below it.
pub fn on_pidfd_getfd(sv: &Supervisor, n: &Notif) -> Answer {
    let [their_pidfd, fd, ..] = n.data.args;
    if !sv.reserved.in_range(fd) {
        return Answer::Continue;
    }
    let Ok(pidfd) = kernel::pidfd_of_thread(n.pid) else { return Answer::Continue };
    let Ok(theirs) = kernel::take_fd(&pidfd, their_pidfd) else { return Answer::Continue };
    let Ok(sock) = kernel::take_fd(&theirs, fd) else { return Answer::Continue };
    match kernel::socket_inode(&sock) {
        Some(inode) if is_inet_dgram(&sock) => pin_copy(sv, inode, "pidfd_getfd"),
        _ => Answer::Continue,
    }
}

/// The fds a `sendmsg` passes (`SCM_RIGHTS` in `hdr`'s control data): a
/// UDP socket among them is pinned (the receiver gets it below the
/// range). `Some`: the call's answer (refused).
pub fn passed_fds(sv: &Supervisor, n: &Notif, hdr: &libc::msghdr) -> Option<Answer> {
    let len = hdr.msg_controllen.min(1 << 16);
    if len == 0 || hdr.msg_control.is_null() {
        return None;
    }
    let Ok(control) = kernel::read_memory(n.pid, hdr.msg_control as u64, len) else { return None };
    let pidfd = kernel::pidfd_of_thread(n.pid).ok()?;
    let head = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while at + head <= control.len() {
        // SAFETY: control holds a cmsghdr at `at`; read_unaligned copes with the Vec's alignment.
        let c = unsafe { std::ptr::read_unaligned(control.as_ptr().add(at) as *const libc::cmsghdr) };
        if c.cmsg_len < head {
            break;
        }
        let end = (at + c.cmsg_len).min(control.len());
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            for fd in control[at + head..end].chunks_exact(4) {
                let fd = i32::from_ne_bytes([fd[0], fd[1], fd[2], fd[3]]);
                let Ok(sock) = kernel::take_fd(&pidfd, fd as u32 as u64) else { continue };
                if let Some(inode) = kernel::socket_inode(&sock).filter(|_| is_inet_dgram(&sock)) {
                    let answer = pin_copy(sv, inode, "passing (SCM_RIGHTS)");
                    if answer != Answer::Continue {
                        return Some(answer);
                    }
                }
            }
        }
        at += (c.cmsg_len + 7) & !7; // CMSG_ALIGN
    }
    None
}

/// Whether the supervisor may carry UDP on the program's socket `sock`,
/// used through fd `fd`: in the range, with no copy below it. Else the
/// answer: EPERM, said once as a warning.
pub fn may_carry(sv: &Supervisor, fd: u64, sock: &OwnedFd, dst: std::net::SocketAddr) -> Result<(), Answer> {
    let inode = kernel::socket_inode(sock).unwrap_or(0);
    let r = &sv.reserved;
    if r.in_range(fd) && !r.pinned().contains(&inode) {
        return Ok(());
    }
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let level = if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) { Level::Info } else { Level::Warn };
    say!(
        level,
        "udp to {dst} refused (EPERM): the socket (fd {}) was not opened in the supervisor's fd range {}..{} or has a copy below it, where its receives are not seen",
        fd as i32,
        r.from,
        r.to
    );
    Err(Answer::Fail(libc::EPERM))
}
