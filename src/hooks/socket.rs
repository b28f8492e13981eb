//! `socket`, `socketpair`, `accept`, `accept4`: a new fd (`accept` on a
//! SOCKS BIND: see [`crate::bind`]). (`dup`,
//! `fcntl(F_DUPFD)` and descriptors received with `SCM_RIGHTS` are checked
//! the same way in hooks/dup.rs and hooks/udp.rs; fds of other kinds, made
//! by calls we do not hook (`pipe`, `open`, `eventfd`...), reach only our
//! `read`/`write` hooks, which check the inode, and `close`, see
//! hooks/close.rs.)
//!
//! The kernel hands out a number only once the old holder of it is closed.
//! If the fd table still knows that number, it was closed behind our back
//! (a raw syscall), and what the table says belongs to the old socket: it
//! is forgotten before the program uses the new one, so a TCP stream never
//! gets a UDP header or loses bytes to a stale association.

use crate::{fd_table, real};
use libc::{c_int, sockaddr, socklen_t};

/// Forgets stale state for a number the kernel just handed out.
#[inline(always)]
pub(super) fn fresh(fd: c_int) {
    if fd >= 0 && fd_table::kind(fd) != fd_table::kind::NONE {
        crate::sockets::forget_closed(fd);
    }
}

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: integers only; no memory is passed.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    fresh(fd);
    fd
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int {
    // SAFETY: the program's arguments, passed on unchanged.
    let rc = unsafe { real::socketpair(domain, ty, protocol, sv) };
    if rc == 0 {
        // SAFETY: the kernel just wrote both numbers there.
        unsafe {
            fresh(*sv);
            fresh(*sv.add(1));
        }
    }
    rc
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if fd_table::kind(fd) == fd_table::kind::BIND {
        // SAFETY: the program's arguments, as accept's contract gives them.
        return unsafe { accept_bind(fd, addr, len, 0) };
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let new = unsafe { real::accept(fd, addr, len) };
    fresh(new);
    new
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    if fd_table::kind(fd) == fd_table::kind::BIND {
        // SAFETY: the program's arguments, as accept4's contract gives them.
        return unsafe { accept_bind(fd, addr, len, flags) };
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let new = unsafe { real::accept4(fd, addr, len, flags) };
    fresh(new);
    new
}

/// `accept` on a SOCKS BIND fd ([`crate::bind`]): the wait for the peer is
/// the program's own (outside the guard), the rest is the shim's.
unsafe fn accept_bind(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    let waiting = {
        let Some(_inside) = crate::hooks::enter() else { return crate::ffi::fail(libc::EINTR) };
        crate::ffi::catch(false, 0, || crate::bind::is_waiting(fd))
    };
    if let Err(rc) = crate::bind::wait_for_peer(fd, waiting) {
        return rc;
    }
    let Some(_inside) = crate::hooks::enter() else { return crate::ffi::fail(libc::EINTR) };
    // SAFETY: the program's arguments, as accept's contract gives them.
    crate::ffi::catch(-1, libc::ECONNABORTED, || unsafe { crate::bind::accept(fd, addr, len, flags) })
}
