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

use crate::ffi::fail;
use crate::{fd_table, real};
use libc::{c_int, c_void, sockaddr, socklen_t};
use socksify_client::socket_kind;

/// Forgets stale state for a number the kernel just handed out.
#[inline(always)]
pub(super) fn fresh(fd: c_int) {
    if fd >= 0 && fd_table::kind(fd) != fd_table::kind::NONE {
        crate::sockets::forget_closed(fd);
    }
}

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if let Some(what) = socket_kind::hides_destination(domain, ty, protocol) {
        if let Err(errno) = blind(what) {
            return fail(errno);
        }
    }
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

/// A socket that carries its destination inside its packets
/// ([`crate::uncarried::blind`]): `Err(EPERM)` while anything is proxied.
#[cold]
#[inline(never)]
fn blind(what: &'static str) -> Result<(), c_int> {
    // A signal handler inside the shim: refused, unlogged (never unchecked).
    let Some(_inside) = crate::hooks::enter() else { return Err(libc::EPERM) };
    crate::ffi::catch(Err(libc::EPERM), libc::EPERM, || crate::uncarried::blind(what))
}

/// `setsockopt`: only `IP_HDRINCL`/`IPV6_HDRINCL` are ours (a raw socket
/// that writes its own IP header, destination included: refused while
/// anything is proxied); every other option is two comparisons, then
/// libc's own.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int {
    // SAFETY: the program's option value.
    if socket_kind::is_header_included(level, name) && unsafe { header_included_refused(value, len) } {
        return fail(libc::EPERM);
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::setsockopt(fd, level, name, value, len) }
}

/// `getsockopt`: only `SO_ERROR` of a socket whose non-blocking connect
/// went to the background is ours: 0 while under way (as the kernel's),
/// the connect's errno once after it failed.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int {
    // SAFETY: the program's arguments, passed on unchanged.
    let rc = unsafe { real::getsockopt(fd, level, name, value, len) };
    if rc != 0 || fd_table::kind(fd) != fd_table::kind::CONNECTING || level != libc::SOL_SOCKET || name != libc::SO_ERROR {
        return rc;
    }
    // SAFETY: the program's getsockopt buffers.
    unsafe { so_error_connecting(fd, value, len) }
}

/// # Safety
/// `value` and `len` are the program's `getsockopt` buffers.
#[cold]
#[inline(never)]
unsafe fn so_error_connecting(fd: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int {
    let Some(_inside) = crate::hooks::enter() else { return 0 };
    let failed = crate::ffi::catch(None, 0, || crate::connecting::take_failure(fd));
    match failed {
        // The kernel's call checked both pointers and wrote an int.
        // SAFETY: the program's buffers (this function's contract).
        Some(errno) => match unsafe { crate::user_mem::write_value(value as *mut c_int, errno) } {
            // SAFETY: as above.
            Ok(()) => unsafe { crate::user_mem::write_value(len, std::mem::size_of::<c_int>() as socklen_t) }.map_or_else(fail, |()| 0),
            Err(e) => fail(e),
        },
        None => 0,
    }
}

/// Whether a `setsockopt(IP_HDRINCL)` with this value must be refused: it
/// turns the option on (an int that is not zero; the kernel reads it
/// the same way, and a bad pointer is left to the kernel's EFAULT).
#[cold]
#[inline(never)]
///
/// # Safety
/// `value` is the program's `setsockopt` argument.
unsafe fn header_included_refused(value: *const c_void, len: socklen_t) -> bool {
    let mut on = [0u8; 4];
    let n = if len >= 4 { 4 } else { (len as usize).min(1) }; // an int, or one byte
    // SAFETY: the program's option value (this function's contract).
    if value.is_null() || n == 0 || unsafe { crate::user_mem::read(value, &mut on[..n]) }.is_err() {
        return false;
    }
    on != [0; 4] && blind("a raw socket with IP_HDRINCL").is_err()
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
