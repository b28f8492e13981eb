//! The exported hooks, one file per family of calls (as torsocks does).
//! Each hook's first line is the fast path for calls that are not ours;
//! the slow path runs inside [`crate::guard`] and [`crate::ffi::catch`].

mod close;
mod connect;
mod dup;
mod listen;
pub(crate) mod resolve;
mod socket;
mod syscall;
mod udp;
