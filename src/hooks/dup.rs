//! `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `close_range`, `closefrom`:
//! keeping the fd table right when fds are copied or closed in bulk.
//!
//! A copy of one of our fds is ours too (same socket: a proxied TCP
//! connection keeps its `getpeername`, a UDP socket shares its
//! association). An fd replaced by `dup2`/`dup3` is forgotten. Bulk
//! closes forget what they close and leave our own control connections
//! open (the program never saw them).

use crate::fd_table::{self, kind};
use crate::{real, sockets};
use libc::{c_int, c_uint, c_ulong};

/// `new` now refers to what `old` refers to.
fn copied(old: c_int, new: c_int) {
    if crate::fork_safe::is_vfork_child() {
        return; // the tables are the parent's (fork_safe.rs)
    }
    let Some(_inside) = crate::hooks::enter() else { return };
    crate::ffi::catch((), 0, || sockets::copied(old, new));
}

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: fds only; no memory is passed.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        replaced(fd, new);
    }
    new
}

/// `new` was just handed out as a copy of `old`: whatever the table knew
/// about the number `new` (closed behind our back) is gone, and a copy of
/// one of our fds is ours.
fn replaced(old: c_int, new: c_int) {
    super::socket::fresh(new);
    if fd_table::kind(old) != kind::NONE {
        copied(old, new);
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if fd_table::kind(old) == kind::NONE && fd_table::kind(new) == kind::NONE {
        // SAFETY: fds only; no memory is passed.
        return unsafe { real::dup2(old, new) };
    }
    // SAFETY: fds only; no memory is passed.
    let rc = unsafe { real::dup2(old, new) };
    if rc >= 0 && old != new {
        sockets::forget_closed(new);
        copied(old, new);
    }
    rc
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if fd_table::kind(old) == kind::NONE && fd_table::kind(new) == kind::NONE {
        // SAFETY: fds and flags only; no memory is passed.
        return unsafe { real::dup3(old, new, flags) };
    }
    // SAFETY: fds and flags only; no memory is passed.
    let rc = unsafe { real::dup3(old, new, flags) };
    if rc >= 0 {
        sockets::forget_closed(new);
        copied(old, new);
    }
    rc
}

/// `fcntl` is variadic in C; every command's argument (an int, a flag
/// word or a pointer) travels in one integer register, read here as
/// `c_ulong` and passed on unchanged.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if !is_dupfd(cmd) {
        // SAFETY: the program's arguments, passed on unchanged (src/real.rs: one integer register each).
        return unsafe { real::fcntl(fd, cmd, arg) };
    }
    // SAFETY: an F_DUPFD command: its argument is an fd number, no memory.
    let new = unsafe { real::fcntl(fd, cmd, arg) };
    if new >= 0 {
        replaced(fd, new);
    }
    new
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if !is_dupfd(cmd) {
        // SAFETY: the program's arguments, passed on unchanged (src/real.rs: one integer register each).
        return unsafe { real::fcntl64(fd, cmd, arg) };
    }
    // SAFETY: an F_DUPFD command: its argument is an fd number, no memory.
    let new = unsafe { real::fcntl64(fd, cmd, arg) };
    if new >= 0 {
        replaced(fd, new);
    }
    new
}

fn is_dupfd(cmd: c_int) -> bool {
    cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) != 0 || first > last {
        // SAFETY: fd numbers and flags only; no memory is passed.
        return unsafe { real::close_range(first, last, flags) }; // closes nothing now
    }
    if crate::fork_safe::is_vfork_child() {
        // Its own copies of the fds, ours included; the tables and the
        // parent's sockets stay as they are (fork_safe.rs).
        // SAFETY: fd numbers and flags only; no memory is passed.
        return unsafe { real::close_range(first, last, flags) };
    }
    // SAFETY: fd numbers and flags only; no memory is passed.
    let Some(_inside) = crate::hooks::enter() else { return unsafe { real::close_range(first, last, flags) } };
    crate::ffi::catch(-1, libc::EINVAL, || sockets::close_range(first, last, flags))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn closefrom(first: c_int) {
    // glibc's closefrom is close_range(first, ~0U, 0) with a fallback;
    // ours closes around our control fds the same way.
    let first = first.max(0) as c_uint;
    // SAFETY: our close_range hook: fd numbers only.
    if unsafe { close_range(first, c_uint::MAX, 0) } != 0 {
        // SAFETY: an fd number only.
        unsafe { real::closefrom(first as c_int) };
    }
}
