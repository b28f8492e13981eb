//! A socket of the shim's own, made and closed with the real functions
//! (never our hooks), closed when dropped.

use crate::real;
use libc::c_int;

pub struct OwnFd(pub c_int);

impl Drop for OwnFd {
    fn drop(&mut self) {
        // SAFETY: an fd this module opened, still open and held by nobody else.
        unsafe { real::close(self.0) };
    }
}

/// `socket(family, ty | SOCK_CLOEXEC, protocol)`; the errno on failure.
pub fn socket(family: c_int, ty: c_int, protocol: c_int) -> Result<OwnFd, c_int> {
    // SAFETY: plain socket(2), through the real function.
    let fd = unsafe { real::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(crate::ffi::errno());
    }
    Ok(OwnFd(fd))
}
