//! `close`: forget our state for the fd, then close it.

use crate::{fd_table, real};
use libc::c_int;

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let kind = fd_table::kind(fd);
    // Ours (a UDP association's control connection): the program never
    // opened this fd, so it is not open as far as it knows. (A CONTROL kind
    // that is_control denies: our control fd was closed behind our back and
    // the number handed out again, a pipe, a file: the program's to close.)
    // The connect engine's own fds (OWN) likewise.
    if kind == fd_table::kind::CONTROL && crate::udp::is_control(fd) || kind == fd_table::kind::OWN {
        return crate::ffi::fail(libc::EBADF);
    }
    if kind != fd_table::kind::NONE {
        crate::sockets::forget_closed(fd);
    }
    // SAFETY: an fd number only.
    unsafe { real::close(fd) }
}

/// `fclose` closes its fd inside libc, where the `close` hook cannot see
/// it: forget a socket of ours that a program had wrapped in a `FILE`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fclose(stream: *mut libc::FILE) -> c_int {
    if !stream.is_null() {
        // SAFETY: fileno on the stream the program is about to close.
        let fd = unsafe { libc::fileno(stream) };
        if fd >= 0 && fd_table::kind(fd) != fd_table::kind::NONE {
            crate::sockets::forget_closed(fd);
        }
    }
    // SAFETY: the program's stream, passed on unchanged.
    unsafe { real::fclose(stream) }
}
