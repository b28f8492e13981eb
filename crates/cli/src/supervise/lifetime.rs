//! How long the supervisor lives: until the last process under the filter
//! has exited, not only the program it started. A child the program leaves
//! running (a shell's `cmd &`, a daemon's double fork) goes on making
//! notified calls; with no supervisor they would fail with ENOSYS.
//!
//! So `socksify-cli supervise` splits in two before it starts anything
//! (`split`, while it has one thread). The process the caller started, the
//! *waiter*, only passes signals on and waits for the program's status,
//! then exits with it: the caller gets the program's own status as soon as
//! the program exits, whatever its children do. Its child, the
//! *supervisor*, starts the program, answers its calls, and reaps it and
//! every orphan of its tree (`reap`: it is their subreaper, so none is left
//! a zombie nobody reaps, which would keep the filter in use), until no
//! process holds the filter. It goes on in the background, in the same
//! process group, and exits by itself.
//!
//! While the program runs the two die together: the waiter's death is the
//! supervisor's SIGKILL (`PR_SET_PDEATHSIG`), so killing
//! `socksify-cli supervise` still leaves the program's notified calls
//! failing with ENOSYS, never running unsupervised. The supervisor drops
//! that link when it reports the status.

use super::{Level, CHILD};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

/// Which half this process is after `split`.
pub enum Role {
    /// The waiter: the program's wait status (or the supervisor's, if it
    /// ended first: it could not start the program, or was killed).
    Waiter(i32),
    /// The supervisor, with the way to report the program's status.
    Supervisor(Report),
}

/// The supervisor's end of the pipe to the waiter.
pub struct Report(OwnedFd);

impl Report {
    /// Tells the waiter the program's wait status; from now on the
    /// supervisor outlives the waiter. On the thread that called `split`:
    /// the parent-death signal is that thread's.
    pub fn send(self, status: i32) {
        // SAFETY: prctl with integer arguments; write(2) of a local.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, 0);
            libc::write(self.0.as_raw_fd(), status.to_ne_bytes().as_ptr() as *const libc::c_void, 4);
        }
    }
}

/// Forks the supervisor off this process. Call it before any thread
/// starts: the child is a copy of the calling thread alone.
pub fn split() -> std::io::Result<Role> {
    // SAFETY: getpid(2).
    let waiter = unsafe { libc::getpid() };
    let (status_r, status_w) = super::pipe()?;
    // SAFETY: single-threaded here (see above): the child may run anything.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(status_w);
        return Ok(Role::Waiter(wait_for_status(pid, status_r)));
    }
    drop(status_r);
    // SAFETY: prctl with integer arguments, getppid(2), _exit(2).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != waiter {
            libc::_exit(1); // the waiter died before we asked to follow it
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) != 0 {
            say!(Level::Warn, "cannot reap the program's orphans ({}): the supervisor may outlive them", std::io::Error::last_os_error());
        }
    }
    Ok(Role::Supervisor(Report(status_w)))
}

/// The waiter: signals go to the supervisor (which passes them to the
/// program); returns the status the supervisor reports, or its own.
fn wait_for_status(supervisor: libc::pid_t, report: OwnedFd) -> i32 {
    CHILD.store(supervisor, Ordering::Relaxed);
    super::forward_signals();
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read(2) into the rest of a local buffer.
        let n = unsafe { libc::read(report.as_raw_fd(), buf[got..].as_mut_ptr() as *mut libc::c_void, buf.len() - got) };
        match n {
            n if n > 0 => got += n as usize,
            n if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break, // the supervisor ended without a word
        }
    }
    if got == buf.len() {
        return i32::from_ne_bytes(buf);
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for the child we forked.
        if unsafe { libc::waitpid(supervisor, &mut status, 0) } >= 0 {
            return status;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1 << 8; // exit status 1
        }
    }
}

/// The supervisor: reaps the program (`main`) and every orphan handed to
/// us until there are no children left (then returns), writing the
/// program's wait status to `exited` as soon as it exits.
pub fn reap(main: libc::pid_t, exited: OwnedFd) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own children, of any kind (__WALL).
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // ECHILD: no process of the tree is left
        }
        if pid == main {
            program_exited();
            say!(Level::Debug, "the program exited (wait status {status:#x}); serving its children until the last exits");
            // SAFETY: write(2) of a local.
            unsafe { libc::write(exited.as_raw_fd(), status.to_ne_bytes().as_ptr() as *const libc::c_void, 4) };
        }
    }
}

/// Once the program has exited there is no one to pass signals to: a
/// SIGTERM ends the supervisor (its remaining children's calls then fail
/// with ENOSYS), a hangup does not (it outlives the terminal, as a daemon
/// does).
fn program_exited() {
    CHILD.store(0, Ordering::Relaxed);
    // SAFETY: setting dispositions to SIG_DFL / SIG_IGN.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}
