//! `sendfile`, `splice`, `pwritev2`, `preadv2` (and their 64-bit-offset
//! names): data calls the shim has no business with, except on a socket
//! whose non-blocking connect is under way ([`crate::connecting`]). That
//! socket is connected in the kernel to the proxy mid-handshake: a write
//! would reach the proxy inside the SOCKS exchange, a read would take the
//! proxy's reply from the engine. So they answer as `write` and `read` do
//! there (`EAGAIN`, or the failure once: [`super::udp::connecting_io`]);
//! `sendfile` only reads from a file, so only its `out_fd` is looked at.
//! Any other fd: one atomic load per fd, then libc's own. (A `pwritev2` or
//! `preadv2` with an offset is the kernel's `ESPIPE` on any socket: passed
//! on.)

use super::udp::connecting_io;
use crate::fd_table::{self, kind};
use crate::real;
use libc::{c_int, c_uint, iovec, loff_t, off64_t, off_t, size_t, ssize_t};

/// The answer for a call on `fds` when one is CONNECTING, or `None`.
fn connecting(fds: &[c_int]) -> Option<ssize_t> {
    fds.iter().find(|fd| fd_table::kind(**fd) == kind::CONNECTING).and_then(|fd| connecting_io(*fd))
}

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    if let Some(rc) = connecting(&[out_fd]) {
        return rc;
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::sendfile(out_fd, in_fd, offset, count) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off64_t, count: size_t) -> ssize_t {
    if let Some(rc) = connecting(&[out_fd]) {
        return rc;
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::sendfile64(out_fd, in_fd, offset, count) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn splice(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t, flags: c_uint) -> ssize_t {
    if let Some(rc) = connecting(&[fd_in, fd_out]) {
        return rc;
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::splice(fd_in, off_in, fd_out, off_out, len, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pwritev2(fd: c_int, iov: *const iovec, n: c_int, offset: off_t, flags: c_int) -> ssize_t {
    if offset == -1 {
        if let Some(rc) = connecting(&[fd]) {
            return rc;
        }
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::pwritev2(fd, iov, n, offset, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pwritev64v2(fd: c_int, iov: *const iovec, n: c_int, offset: off64_t, flags: c_int) -> ssize_t {
    if offset == -1 {
        if let Some(rc) = connecting(&[fd]) {
            return rc;
        }
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::pwritev64v2(fd, iov, n, offset, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn preadv2(fd: c_int, iov: *const iovec, n: c_int, offset: off_t, flags: c_int) -> ssize_t {
    if offset == -1 {
        if let Some(rc) = connecting(&[fd]) {
            return rc;
        }
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::preadv2(fd, iov, n, offset, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn preadv64v2(fd: c_int, iov: *const iovec, n: c_int, offset: off64_t, flags: c_int) -> ssize_t {
    if offset == -1 {
        if let Some(rc) = connecting(&[fd]) {
            return rc;
        }
    }
    // SAFETY: the program's arguments, passed on unchanged.
    unsafe { real::preadv64v2(fd, iov, n, offset, flags) }
}
