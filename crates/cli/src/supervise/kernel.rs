//! The kernel interfaces of seccomp user notification, with the few
//! structures and numbers `libc` does not carry: the listener's ioctls,
//! reading the caller's memory, and taking a duplicate of its fd.

use libc::{c_int, c_ulong};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct seccomp_data`: the system call as the filter saw it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`: one call waiting for our answer. `pid` is the
/// calling thread's id in our pid namespace.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const IOCTL_NOTIF_RECV: c_ulong = 0xc050_2100; // _IOWR('!', 0, struct seccomp_notif)
const IOCTL_NOTIF_SEND: c_ulong = 0xc018_2101; // _IOWR('!', 1, struct seccomp_notif_resp)
const IOCTL_NOTIF_ID_VALID: c_ulong = 0x4008_2102; // _IOW('!', 2, __u64)
const IOCTL_NOTIF_ADDFD: c_ulong = 0x4018_2103; // _IOW('!', 3, struct seccomp_notif_addfd)
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
/// `SECCOMP_ADDFD_FLAG_SETFD`: at the fd number given (replacing what is there).
const ADDFD_FLAG_SETFD: u32 = 1;
/// `SECCOMP_ADDFD_FLAG_SEND` (Linux 5.14): and answer the call with that number.
const ADDFD_FLAG_SEND: u32 = 2;

/// `struct seccomp_notif_addfd`.
#[repr(C)]
struct NotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}
/// `pidfd_open` flag (Linux 6.9): a pidfd for this thread, not its process.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// How a notified call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The kernel runs the call as the program made it.
    Continue,
    /// The call returns this value (0 for a connect we made).
    Return(i64),
    /// The call fails with this errno.
    Fail(i32),
}

/// The seccomp listener: the fd the kernel queues notified calls on.
pub struct Listener(pub OwnedFd);

impl Listener {
    /// The next notified call; `None` when its caller went away before we
    /// could read it (ENOENT), or a signal interrupted the wait.
    pub fn recv(&self) -> io::Result<Option<Notif>> {
        let mut n = Notif::default(); // the kernel insists on a zeroed buffer
                                      // SAFETY: n is a seccomp_notif-sized, writable buffer.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_RECV, &mut n) } == 0 {
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }

    /// Whether call `id` still waits: its thread has not died, and so the
    /// pid and memory we read are still its own.
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64.
        unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_ID_VALID, &id) == 0 }
    }

    /// Answers call `id`. An error means the caller is gone (ENOENT):
    /// nothing to do about it.
    pub fn answer(&self, id: u64, answer: Answer) {
        let resp = match answer {
            Answer::Continue => NotifResp { id, val: 0, error: 0, flags: USER_NOTIF_FLAG_CONTINUE },
            Answer::Return(val) => NotifResp { id, val, error: 0, flags: 0 },
            Answer::Fail(errno) => NotifResp { id, val: 0, error: -errno, flags: 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp.
        unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_SEND, &resp) };
    }
}

impl Listener {
    /// Installs our `file` in the calling process of call `id` as fd
    /// `newfd` (replacing whatever that fd was: the caller checks it is
    /// free, or means to replace it), close-on-exec if `cloexec`; with
    /// `send`, the call returns `newfd` at once, in the same step.
    pub fn add_fd(&self, id: u64, file: &OwnedFd, newfd: u32, cloexec: bool, send: bool) -> io::Result<u32> {
        let addfd = NotifAddfd {
            id,
            flags: ADDFD_FLAG_SETFD | if send { ADDFD_FLAG_SEND } else { 0 },
            srcfd: file.as_raw_fd() as u32,
            newfd,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_ADDFD, &addfd) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as u32)
    }

    /// Installs our `file` in the calling process of call `id` at its
    /// lowest free fd, and answers the call with that number.
    pub fn add_fd_lowest(&self, id: u64, file: &OwnedFd, cloexec: bool) -> io::Result<u32> {
        let addfd = NotifAddfd {
            id,
            flags: ADDFD_FLAG_SEND,
            srcfd: file.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_ADDFD, &addfd) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as u32)
    }
}

/// Whether fd `fd` of thread `pid`'s process is close-on-exec.
pub fn fd_cloexec(pid: u32, fd: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("flags:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .is_some_and(|flags| flags & libc::O_CLOEXEC as u32 != 0)
}

/// Reads `len` bytes at `addr` in thread `pid`'s memory. The errno:
/// EFAULT when the range is not all readable there (the kernel would say
/// EFAULT to the call too), else why we may not read (EPERM, ESRCH).
pub fn read_memory(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: one local iovec over buf; the remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match n {
        n if n == len as isize => Ok(buf),
        n if n >= 0 => Err(libc::EFAULT), // a partial read: the end is unmapped
        _ => Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EFAULT)),
    }
}

/// Writes `bytes` at `addr` in thread `pid`'s memory; whether all went.
pub fn write_memory(pid: u32, addr: u64, bytes: &[u8]) -> bool {
    if addr == 0 {
        return bytes.is_empty();
    }
    let local = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: one local iovec over bytes (only read); the remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    n == bytes.len() as isize
}

/// The socket's identity across processes and duplicates: its inode.
pub fn socket_inode(fd: &OwnedFd) -> Option<u64> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd we own.
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// `pidfd_open(pid, flags)`.
fn pidfd_open(pid: libc::pid_t, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

/// A pidfd for thread `tid`: of the thread itself where the kernel can
/// (6.9+), else of its process (a thread's pidfd needs its thread group id).
pub fn pidfd_of_thread(tid: u32) -> io::Result<OwnedFd> {
    let open = pidfd_open;
    match open(tid as libc::pid_t, PIDFD_THREAD) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
            open(tgid, 0)
        }
        other => other,
    }
}

/// A duplicate of fd `fd` of the process behind `pidfd` (`pidfd_getfd`):
/// the same open socket, so what we do to it the program's fd sees.
pub fn take_fd(pidfd: &OwnedFd, fd: u64) -> io::Result<OwnedFd> {
    let Ok(fd) = c_int::try_from(fd) else { return Err(io::Error::from_raw_os_error(libc::EBADF)) };
    // SAFETY: pidfd_getfd(pidfd, targetfd, flags) returns a new fd.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as c_int) })
}

/// `getsockopt(SOL_SOCKET, opt)` for an int option; `None` if not a socket.
pub fn socket_int_option(fd: &OwnedFd, opt: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: these options read one int into value.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, &mut value as *mut _ as *mut libc::c_void, &mut len) };
    (rc == 0).then_some(value)
}

/// Reads the caller's memory, or says how the call ends if we cannot:
/// an address the kernel cannot read either (EFAULT) is the kernel's to
/// answer; memory we may not read fails the call, never runs it (that
/// could send a proxied destination direct).
pub(super) fn read_memory_or_answer(pid: u32, ptr: u64, len: usize) -> Result<Vec<u8>, Answer> {
    read_memory(pid, ptr, len).map_err(|errno| match errno {
        libc::EFAULT => Answer::Continue,
        e => {
            say!(
                super::Level::Warn,
                "cannot read the memory of thread {pid} ({}): the call fails with EACCES",
                std::io::Error::from_raw_os_error(e)
            );
            Answer::Fail(libc::EACCES)
        }
    })
}
