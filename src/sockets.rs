//! The program's sockets we track, across kinds: the one place that
//! forgets an fd (a close, a `dup2` over it, a number found reused) and
//! dispatches to the table of its kind, the same for a copy (`dup`), and
//! what concerns every table at once (`close_range`, the addresses open
//! sockets use).
//!
//! It sits above [`fd_table`] (the kind of each fd) and the per-kind
//! tables ([`crate::udp::table`], [`crate::bind::table`],
//! [`crate::connecting::table`]), which
//! never call back up; the hooks and the engines call it.

use crate::bind::table as bind_table;
use crate::connecting::table as connecting_table;
use crate::fd_table::{self, kind};
use crate::fork_safe::is_vfork_child;
use crate::udp::table as udp_table;
use crate::{guard, real};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Forgets everything about `fd` (it was closed, or found reused); a UDP
/// socket's association ends with its last fd. Takes locks: never from a
/// signal handler that interrupted the shim ([`forget_closed`]).
pub fn forget(fd: i32) {
    if let Some(old) = fd_table::clear(fd) {
        release(fd, old);
    }
}

/// Drops the details of `fd`, which was of kind `old`: one table each.
fn release(fd: i32, old: u8) {
    match old {
        kind::PROXIED_TCP => {
            fd_table::drop_proxied_tcp(fd);
            // A background connect that just ended on this fd may still be
            // moving its registrations: wait for it (its lock), so the
            // number is not closed and handed out again under it.
            connecting_table::forget(fd);
        }
        kind::UDP => udp_table::forget(fd),
        kind::CONTROL => udp_table::control_lost(fd),
        kind::BIND => bind_table::forget(fd),
        kind::CONNECTING => connecting_table::forget(fd),
        _ => {}
    }
}

/// [`forget`] for a hook that is handed an fd to close: now, or, if this
/// thread is already inside the shim, later. That happens when a signal
/// handler interrupted the shim and calls `close` (which is
/// async-signal-safe): the interrupted code may hold the very lock
/// `forget` needs, so waiting for it would hang the thread forever.
pub fn forget_closed(fd: i32) {
    match guard::enter() {
        Some(_inside) => forget(fd),
        None => forget_later(fd),
    }
}

/// Fds whose details wait to be dropped ([`forget_later`]), as fd + 1
/// with the old kind in the high byte; 0 is a free slot. Lock-free, so a
/// signal handler can add to it.
const PENDING_SLOTS: usize = 64;
static PENDING: [AtomicU64; PENDING_SLOTS] = [const { AtomicU64::new(0) }; PENDING_SLOTS];
static PENDING_ANY: AtomicBool = AtomicBool::new(false);

/// Marks `fd` not ours at once (no lock) and leaves dropping its details
/// to the next slow path ([`release_pending`]).
fn forget_later(fd: i32) {
    let Some(old) = fd_table::clear(fd) else { return };
    let entry = (old as u64) << 56 | (fd as u64 + 1);
    if PENDING.iter().any(|p| p.compare_exchange(0, entry, Ordering::AcqRel, Ordering::Relaxed).is_ok()) {
        PENDING_ANY.store(true, Ordering::Release);
    }
    // All slots taken (64 closes from signal handlers before any slow path
    // ran): the details stay until the number is reused, which replaces
    // them; the fd is not ours either way.
}

/// Drops the details [`forget_later`] left. Every hook's slow path runs it
/// first, before any table is read or written (`hooks::enter`), so a
/// reused number is never confused with the socket that held it. One
/// atomic load when there is nothing to do.
pub fn release_pending() {
    if !PENDING_ANY.load(Ordering::Acquire) || is_vfork_child() {
        return;
    }
    PENDING_ANY.store(false, Ordering::Release);
    for slot in &PENDING {
        let entry = slot.swap(0, Ordering::AcqRel);
        if entry != 0 {
            release(((entry & 0xffff_ffff) - 1) as i32, (entry >> 56) as u8);
        }
    }
}

/// `new` was made a copy of `old` (`dup`, `dup2`, `dup3`, `F_DUPFD`): the
/// same socket, so the same details (a UDP socket shares its association).
pub fn copied(old: i32, new: i32) {
    match fd_table::kind(old) {
        kind::PROXIED_TCP => {
            if let Some(details) = fd_table::proxied_tcp(old) {
                fd_table::set_proxied_tcp(new, details);
            }
        }
        kind::UDP => udp_table::dup(old, new),
        kind::BIND => bind_table::dup(old, new),
        kind::CONNECTING => connecting_table::dup(old, new),
        _ => {}
    }
}

/// `close_range(first, last, flags)` (without `CLOSE_RANGE_CLOEXEC`): our
/// fds in the range are forgotten, and the range is closed around our own
/// control connections, which the program never saw. What the last
/// `close_range` returns (-1 with errno on the first failure).
pub fn close_range(first: u32, last: u32, flags: i32) -> i32 {
    for fd in tracked_in(first, last) {
        forget(fd);
    }
    let mut keep: Vec<u32> = udp_table::control_fds().into_iter().map(|fd| fd as u32).filter(|fd| (first..=last).contains(fd)).collect();
    // The connect engine's own fds (its epoll, eventfds, copies of sockets).
    keep.extend(fd_table::own_fds(first, last).into_iter().map(|fd| fd as u32));
    keep.sort_unstable();
    let mut from = first;
    for k in keep {
        if k > from {
            // SAFETY: fd numbers and flags only; no memory is passed.
            let rc = unsafe { real::close_range(from, k - 1, flags) };
            if rc != 0 {
                return rc;
            }
        }
        match k.checked_add(1) {
            Some(next) => from = next,
            None => return 0,
        }
    }
    if from <= last {
        // SAFETY: fd numbers and flags only; no memory is passed.
        unsafe { real::close_range(from, last, flags) }
    } else {
        0
    }
}

/// Our fds in `first..=last` (for `close_range`): TCP, UDP and BIND.
fn tracked_in(first: u32, last: u32) -> Vec<i32> {
    let in_range = |fd: &i32| (first..=last).contains(&(*fd as u32));
    let mut fds = fd_table::proxied_tcp_in(first, last);
    fds.extend(udp_table::tracked_fds().into_iter().filter(in_range));
    fds.extend(bind_table::tracked_fds().into_iter().filter(in_range));
    fds.extend(connecting_table::fds_in(first, last));
    fds
}

/// The destination addresses open sockets use (the fake-address table
/// never gives one of these to another name).
pub fn addrs_in_use() -> HashSet<IpAddr> {
    let mut held: HashSet<IpAddr> = fd_table::tcp_peers().into_iter().map(|a| a.ip()).collect();
    held.extend(udp_table::destinations().into_iter().map(|a| a.ip()));
    held
}
