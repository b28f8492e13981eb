//! The program's epoll registrations, per fd: (epoll fd, events, data),
//! as its `epoll_ctl` calls made them (hooks/wait.rs records every one
//! that succeeded; `epoll_ctl` is no hot path). A registration belongs to
//! the socket, and two things of ours must move it: a spent BIND listener
//! whose number gets another socket ([`crate::bind`]), and a non-blocking
//! connect whose socket must not show ready before the handshake is done
//! ([`crate::connecting`]). An entry may outlive its fd (a close we do not
//! track): whoever moves one first deletes it in the kernel, and only a
//! registration the kernel knew (the delete succeeded) is moved.

use crate::fork_safe::ForkSafeMutex;
use libc::c_int;
use std::collections::HashMap;

/// (epoll fd, events, data) of each registration of one fd.
pub type Watchers = Vec<(c_int, u32, u64)>;

static WATCHERS: ForkSafeMutex<Option<HashMap<c_int, Watchers>>> = ForkSafeMutex::new(None);

/// `epoll_ctl(epfd, op, fd, event)` succeeded.
pub fn watched(fd: c_int, epfd: c_int, op: c_int, event: Option<(u32, u64)>) {
    let mut table = WATCHERS.lock();
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
    WATCHERS.lock().as_mut().and_then(|w| w.remove(&fd)).unwrap_or_default()
}

/// Forgets the registrations of `fd` (closed: the kernel dropped them).
pub fn forget(fd: c_int) {
    if let Some(w) = WATCHERS.lock().as_mut() {
        w.remove(&fd);
    }
}
