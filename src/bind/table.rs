//! The BIND sockets' table: per fd, its [`State`] and the family the
//! program made it with (the epoll registrations that must follow a spent
//! listener's number are in [`crate::epoll_watch`]). Data only: the BIND itself is in
//! [`crate::bind`]; `crate::sockets` drops an fd's entry when it is closed.

use crate::fd_table;
use crate::fork_safe::ForkSafeMutex;
use libc::c_int;
use std::collections::HashMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy)]
pub enum State {
    /// Bound by the program; the BIND starts at `listen` or `getsockname`.
    /// `related`: the far end of the connection it belongs to, as the
    /// program named it (a fake address stays fake).
    Candidate { related: Option<SocketAddr> },
    /// Connected to the proxy, which listens on `bound`: the peer may come.
    Waiting { bound: SocketAddr, proxy: SocketAddr, socks4: bool },
    /// The connection was handed out; the fd is a listener no one reaches.
    Spent { bound: SocketAddr },
    /// The proxy refused the peer or gave up: every `accept` fails so.
    Failed { bound: SocketAddr, errno: c_int },
    /// The BIND itself failed: `listen` fails so, without asking again (a
    /// finalizer's `getsockname` must not send another request).
    Refused { errno: c_int },
}

/// A BIND fd: its state, and the address family the program made its
/// socket with (the kernel's may differ: `family_swap` may have put a
/// socket of the proxy's family in its place), in which every address is
/// reported to it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    family: c_int,
    state: State,
}

static TABLE: ForkSafeMutex<Option<HashMap<c_int, Entry>>> = ForkSafeMutex::new(None);

fn entry(fd: c_int) -> Option<Entry> {
    TABLE.lock().as_ref().and_then(|t| t.get(&fd).copied())
}

pub fn state(fd: c_int) -> Option<State> {
    entry(fd).map(|e| e.state)
}

/// The family the program made `fd` with (see [`Entry`]).
pub fn program_family(fd: c_int) -> Option<c_int> {
    entry(fd).map(|e| e.family)
}

pub fn set_state(fd: c_int, state: State) {
    if let Some(e) = TABLE.lock().as_mut().and_then(|t| t.get_mut(&fd)) {
        e.state = state;
    }
}

pub fn forget(fd: c_int) {
    if let Some(t) = TABLE.lock().as_mut() {
        t.remove(&fd);
    }
    crate::epoll_watch::forget(fd);
}

/// `new` is a copy of `old` (dup): the same socket, the same BIND.
pub fn dup(old: c_int, new: c_int) {
    if let Some(e) = entry(old) {
        if fd_table::set_bind(new) {
            TABLE.lock().get_or_insert_with(HashMap::new).insert(new, e);
        }
    }
}

pub fn tracked_fds() -> Vec<c_int> {
    TABLE.lock().as_ref().map_or_else(Vec::new, |t| t.keys().copied().collect())
}

/// `fd` becomes a BIND candidate the program made with `family`.
pub fn insert(fd: c_int, family: c_int, state: State) {
    TABLE.lock().get_or_insert_with(HashMap::new).insert(fd, Entry { family, state });
}

/// Takes the epoll registrations of `fd` (they move with its number).
pub fn take_watchers(fd: c_int) -> crate::epoll_watch::Watchers {
    crate::epoll_watch::take(fd)
}
