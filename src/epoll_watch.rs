//! The program's epoll registrations, per fd: (epoll fd, events, data),
//! as its `epoll_ctl` calls made them (hooks/wait.rs records every one
//! that succeeded). A registration belongs to the socket, and two things
//! of ours must move it: a spent BIND listener whose number gets another
//! socket ([`crate::bind`]), and a non-blocking connect whose socket must
//! not show ready before the handshake is done ([`crate::connecting`]).
//! An entry may outlive its fd (a close we do not track): whoever moves
//! one first deletes it in the kernel, and only a registration the kernel
//! knew (the delete succeeded) is moved.
//!
//! Recording runs on every `epoll_ctl` of the program, which an event
//! loop may call for each event: the usual case, an fd below
//! [`SLOT_FDS`] in one epoll, is three atomic stores in per-fd slots, no
//! lock (measured: a lock and a map per call made `epoll_ctl` ×1.2). A
//! second epoll for the same fd, or a higher fd, goes to a locked map
//! ([`record`] says when).

use crate::fork_safe::ForkSafeMutex;
use libc::c_int;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

/// (epoll fd, events, data) of each registration of one fd.
pub type Watchers = Vec<(c_int, u32, u64)>;

/// Fds with a lock-free slot.
const SLOT_FDS: usize = 1 << 16;

/// Per fd: its epoll fd + 1 (0: none), and that registration's events
/// and data. The epoll fd is written last and cleared first, so a reader
/// that sees it set sees the rest (a program racing its own `epoll_ctl`
/// of one fd from two threads gets what the kernel keeps, at worst).
static SLOT_EPFD: [AtomicI32; SLOT_FDS] = [const { AtomicI32::new(0) }; SLOT_FDS];
static SLOT_EVENTS: [AtomicU32; SLOT_FDS] = [const { AtomicU32::new(0) }; SLOT_FDS];
static SLOT_DATA: [AtomicU64; SLOT_FDS] = [const { AtomicU64::new(0) }; SLOT_FDS];

/// The registrations the slots cannot hold; [`MAP_USED`] once it had any.
static WATCHERS: ForkSafeMutex<Option<HashMap<c_int, Watchers>>> = ForkSafeMutex::new(None);
static MAP_USED: AtomicBool = AtomicBool::new(false);

/// `epoll_ctl(epfd, op, fd, event)` succeeded: records it in `fd`'s slot
/// if it can, lock-free; false: the caller must call [`watched`] (it
/// locks, so a signal handler inside the shim must not).
#[inline]
pub fn record(fd: c_int, epfd: c_int, op: c_int, event: Option<(u32, u64)>) -> bool {
    let Some(slot) = SLOT_EPFD.get(fd as usize) else { return false };
    if MAP_USED.load(Ordering::Acquire) {
        return false;
    }
    let held = slot.load(Ordering::Acquire);
    if held != 0 && held != epfd + 1 {
        return false; // the fd is in another epoll too
    }
    match (op != libc::EPOLL_CTL_DEL, event) {
        (true, Some((events, data))) => {
            slot.store(0, Ordering::Release);
            SLOT_EVENTS[fd as usize].store(events, Ordering::Relaxed);
            SLOT_DATA[fd as usize].store(data, Ordering::Relaxed);
            slot.store(epfd + 1, Ordering::Release);
        }
        _ => slot.store(0, Ordering::Release),
    }
    true
}

/// [`record`], for what the slots cannot hold: the locked map.
pub fn watched(fd: c_int, epfd: c_int, op: c_int, event: Option<(u32, u64)>) {
    MAP_USED.store(true, Ordering::Release);
    let mut table = WATCHERS.lock();
    // The map is the truth for this fd and epfd from now on.
    if let Some(slot) = SLOT_EPFD.get(fd as usize) {
        let _ = slot.compare_exchange(epfd + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
    let map = table.get_or_insert_with(HashMap::new);
    let list = map.entry(fd).or_default();
    list.retain(|(e, ..)| *e != epfd);
    if let (true, Some((events, data))) = (op != libc::EPOLL_CTL_DEL, event) {
        list.push((epfd, events, data));
    }
    if list.is_empty() {
        map.remove(&fd);
    }
}

/// Takes the registrations of `fd` (they move with it).
pub fn take(fd: c_int) -> Watchers {
    let mut out = if MAP_USED.load(Ordering::Acquire) {
        WATCHERS.lock().as_mut().and_then(|w| w.remove(&fd)).unwrap_or_default()
    } else {
        Watchers::new()
    };
    if let Some(slot) = SLOT_EPFD.get(fd as usize) {
        let held = slot.swap(0, Ordering::AcqRel);
        if held != 0 && !out.iter().any(|(e, ..)| *e == held - 1) {
            out.push((held - 1, SLOT_EVENTS[fd as usize].load(Ordering::Relaxed), SLOT_DATA[fd as usize].load(Ordering::Relaxed)));
        }
    }
    out
}

/// Forgets the registrations of `fd` (closed: the kernel dropped them).
pub fn forget(fd: c_int) {
    drop(take(fd));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_epoll_per_fd_stays_in_the_slot_and_more_go_to_the_map() {
        // Fds of this test's own, far from any another test could use.
        let (a, b) = (40_001, 40_002);
        assert!(record(a, 7, libc::EPOLL_CTL_ADD, Some((1, 10))));
        assert!(record(a, 7, libc::EPOLL_CTL_MOD, Some((4, 11))));
        assert_eq!(take(a), [(7, 4, 11)]);
        assert_eq!(take(a), [], "taken");
        assert!(record(b, 7, libc::EPOLL_CTL_ADD, Some((1, 10))));
        assert!(record(b, 7, libc::EPOLL_CTL_DEL, None));
        assert_eq!(take(b), []);
        // A second epoll for the same fd: the map, for it and the first.
        assert!(record(a, 7, libc::EPOLL_CTL_ADD, Some((1, 12))));
        assert!(!record(a, 8, libc::EPOLL_CTL_ADD, Some((1, 13))));
        watched(a, 8, libc::EPOLL_CTL_ADD, Some((1, 13)));
        assert!(!record(a, 7, libc::EPOLL_CTL_MOD, Some((4, 14))), "the map is in use now");
        watched(a, 7, libc::EPOLL_CTL_MOD, Some((4, 14)));
        let mut all = take(a);
        all.sort();
        assert_eq!(all, [(7, 4, 14), (8, 1, 13)], "the newer events of epoll 7, once");
    }
}
