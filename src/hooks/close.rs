//! `close`: forget our state for the fd, then close it.

use crate::{fd_table, real};
use libc::c_int;

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fd_table::kind(fd) != fd_table::kind::NONE {
        // No guard or catch needed: forget() takes a lock and cannot fail.
        fd_table::forget(fd);
    }
    unsafe { real::close(fd) }
}
