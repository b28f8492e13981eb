//! The FFI boundary: errno, and the panic catcher every hook runs its slow
//! path in.

use std::panic::{catch_unwind, AssertUnwindSafe};

pub fn set_errno(value: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = value }
}

pub fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// `-1` with errno set: the C convention for a failed call.
pub fn fail<T: From<i8>>(errno: i32) -> T {
    set_errno(errno);
    T::from(-1)
}

/// Runs a hook's slow path. A panic is caught here, logged, and reported as
/// `on_panic` with errno `panic_errno`: never unwound into the host
/// program, and never answered by calling the real function (for a proxied
/// destination that would be a leak).
pub fn catch<R>(on_panic: R, panic_errno: i32, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            log::error!("internal error (panic) in a hook; the call fails with errno {panic_errno}");
            set_errno(panic_errno);
            on_panic
        }
    }
}
