//! The exported hooks, one file per family of calls (as torsocks does).
//! Each hook's first line is the fast path for calls that are not ours;
//! the slow path runs inside [`crate::guard`] and [`crate::ffi::catch`].

mod close;
mod connect;
mod connecting_io;
mod dup;
mod exec;
mod listen;
pub(crate) mod resolve;
mod socket;
mod syscall;
mod udp;
mod wait;

use crate::guard::{self, Inside, InsideResolver};

/// Enters a hook's slow path: [`guard::enter`], then the closes a signal
/// handler could not finish ([`crate::sockets::release_pending`]), before
/// any table is read. `None`: this thread is already inside the shim.
pub(crate) fn enter() -> Option<Inside> {
    let inside = guard::enter()?;
    crate::sockets::release_pending();
    Some(inside)
}

/// [`enter`] for the resolver hooks ([`guard::enter_resolver`]).
pub(crate) fn enter_resolver() -> Option<InsideResolver> {
    let inside = guard::enter_resolver()?;
    crate::sockets::release_pending();
    Some(inside)
}
