//! The sockets whose non-blocking connect is under way (or failed and not
//! yet reported): per connect, its completion eventfd, the engine's copy
//! of the socket and its state; per program fd, which connect it is and
//! the epoll registrations the program made of it meanwhile (they sit on
//! the eventfd, which never fires, until the engine moves them to the
//! socket: [`move_watchers`]). Data, and the few `epoll_ctl`s that keep
//! registrations and state in step; the engine is in
//! [`crate::connecting`]. `crate::sockets` drops an fd's entry when it is
//! closed ([`forget`]), which cancels a connect no fd holds any more.

use crate::epoll_watch::Watchers;
use crate::fd_table;
use crate::fork_safe::ForkSafeMutex;
use crate::real;
use libc::c_int;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

/// An fd of the shim's own (marked [`fd_table::kind::OWN`]), closed when
/// dropped, unless it was closed behind our back and its number reused.
pub struct OwnedFd(pub c_int);

impl OwnedFd {
    /// Marks `fd` ours; `None` (and closed) if the table cannot hold it.
    pub fn mark(fd: c_int) -> Option<OwnedFd> {
        if fd_table::set_own(fd) {
            Some(OwnedFd(fd))
        } else {
            // SAFETY: an fd we just opened and hold alone.
            unsafe { real::close(fd) };
            None
        }
    }
}

impl Drop for OwnedFd {
    fn drop(&mut self) {
        if fd_table::clear_own(self.0) {
            // SAFETY: still ours (the mark was there): nobody else holds this number.
            unsafe { real::close(self.0) };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The engine is driving the handshake.
    Pending,
    /// It failed with this errno; `SO_ERROR`, a second `connect`, a read
    /// or a write reports it once.
    Failed(c_int),
}

/// One connect under way: one socket, which one or more program fds
/// (`dup`) refer to.
struct Conn {
    /// Signalled (readable) when the connect is over.
    done: Arc<OwnedFd>,
    /// The engine's copy of the socket (closed by the engine); kept here
    /// for a fork child, which has no engine and closes its copy.
    engine_fd: c_int,
    state: State,
    /// The process that started it; a fork child's copy is not driven.
    pid: libc::pid_t,
    fds: Vec<c_int>,
}

struct Table {
    conns: HashMap<u64, Conn>,
    /// Program fd → (connect, its epoll registrations, on the eventfd).
    fds: HashMap<c_int, (u64, Watchers)>,
    /// The process these entries are driven in (see [`adopt_after_fork`]).
    pid: libc::pid_t,
}

static TABLE: ForkSafeMutex<Option<Table>> = ForkSafeMutex::new(None);

/// Serializes the `epoll_ctl`s of a connecting fd: the program's (on the
/// eventfd) against the engine's move of them to the socket. Held across
/// those calls, which never block.
static EPOLL: ForkSafeMutex<()> = ForkSafeMutex::new(());

/// Connects no fd holds any more, for the engine to drop (with its copy
/// of the socket, which closes the proxy connection); and the engine's
/// wake-up eventfd (-1: no engine).
static CANCELLED: ForkSafeMutex<Vec<u64>> = ForkSafeMutex::new(Vec::new());
pub static WAKE: AtomicI32 = AtomicI32::new(-1);

fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The table, as this process's: a fork child's first look finds its
/// parent's connects, which the parent's engine drives on the same
/// sockets. The child does not: each becomes `Failed(ECONNABORTED)` in
/// the child (the socket itself is left alone, it is the parent's too),
/// and the child's copies of the engine's fds are closed.
fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut guard = TABLE.lock();
    let me = pid();
    let table = guard.get_or_insert_with(|| Table { conns: HashMap::new(), fds: HashMap::new(), pid: me });
    let mut orphans = Vec::new();
    if table.pid != me {
        table.pid = me;
        for conn in table.conns.values_mut() {
            if conn.state == State::Pending {
                conn.state = State::Failed(libc::ECONNABORTED);
                orphans.push(conn.engine_fd);
            }
        }
    }
    let r = f(table);
    drop(guard);
    for fd in orphans {
        drop(OwnedFd(fd)); // the child's copy of the engine's socket
    }
    r
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new connect on program fd `fd` (marked CONNECTING by the caller),
/// driven by the engine on `engine_fd`; returns its id.
pub fn insert(fd: c_int, done: Arc<OwnedFd>, engine_fd: c_int) -> u64 {
    // Serialised with `finish`: a connect that ended on this fd number
    // (its fd closed and the number handed out again) must be done with
    // its entries before this one's are made.
    let _serial = EPOLL.lock();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    with(|t| {
        t.conns.insert(id, Conn { done, engine_fd, state: State::Pending, pid: t.pid, fds: vec![fd] });
        t.fds.insert(fd, (id, Watchers::new()));
    });
    id
}

/// What a wait hook or a call on `fd` needs to know.
#[derive(Clone)]
pub struct View {
    pub state: State,
    pub done: Arc<OwnedFd>,
}

pub fn view(fd: c_int) -> Option<View> {
    with(|t| {
        let (id, _) = t.fds.get(&fd)?;
        let conn = t.conns.get(id)?;
        Some(View { state: conn.state, done: conn.done.clone() })
    })
}

/// `new` is a copy (`dup`) of connecting fd `old`: the same connect.
pub fn dup(old: c_int, new: c_int) {
    let _serial = EPOLL.lock();
    let copied = with(|t| {
        let (id, _) = *t.fds.get(&old)?;
        t.conns.get_mut(&id)?.fds.push(new);
        t.fds.insert(new, (id, Watchers::new()));
        Some(())
    });
    if copied.is_some() {
        fd_table::set_connecting(new);
    }
}

/// The event bits an eventfd registration keeps: the flags, no event, so
/// it never fires; the program's events go to the socket when it is done.
const FLAGS: u32 = (libc::EPOLLET | libc::EPOLLONESHOT | libc::EPOLLWAKEUP | libc::EPOLLEXCLUSIVE) as u32;

/// The program's `epoll_ctl(epfd, op, fd, event)` on a connecting `fd`:
/// while the connect is under way it is made on the completion eventfd
/// (so the kernel checks it as it would for the socket, and it never
/// fires), and remembered for the move; once failed, on the socket.
/// `None`: `fd` is no longer connecting (the caller makes the call).
pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: Option<(u32, u64)>) -> Option<c_int> {
    let _serial = EPOLL.lock();
    let view = view(fd)?;
    if view.state != State::Pending {
        return None;
    }
    let mut ev = event.map(|(events, data)| libc::epoll_event { events: events & FLAGS, u64: data });
    let ptr = ev.as_mut().map_or(std::ptr::null_mut(), |e| e as *mut libc::epoll_event);
    // SAFETY: our own epoll_event (or null for a DEL), the program's epoll fd.
    let rc = unsafe { real::epoll_ctl(epfd, op, view.done.0, ptr) };
    if rc == 0 {
        with(|t| {
            if let Some((_, list)) = t.fds.get_mut(&fd) {
                list.retain(|(e, ..)| *e != epfd);
                if let (true, Some((events, data))) = (op != libc::EPOLL_CTL_DEL, event) {
                    list.push((epfd, events, data));
                }
            }
        });
    }
    Some(rc)
}

/// Moves the program's registrations of `fd` made before its connect
/// (`watchers`, deleted from the socket by the caller) onto the eventfd.
pub fn adopt_watchers(fd: c_int, watchers: Watchers) {
    let _serial = EPOLL.lock();
    let Some(view) = view(fd) else { return };
    let mut kept = Watchers::new();
    for (epfd, events, data) in watchers {
        let mut ev = libc::epoll_event { events: events & FLAGS, u64: data };
        // SAFETY: our own epoll_event, the program's epoll fd.
        if unsafe { real::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, view.done.0, &mut ev) } == 0 {
            kept.push((epfd, events, data));
        }
    }
    with(|t| {
        if let Some((_, list)) = t.fds.get_mut(&fd) {
            list.extend(kept);
        }
    });
}

/// Connect `id` is over: for each of its fds, `promote(fd)` (the kind
/// changes; false: the fd was closed meanwhile) and its registrations
/// move from the eventfd to the socket (a fresh ADD reports the socket's
/// readiness as it is now, so edge-triggered and one-shot registrations
/// fire). Then the eventfd is signalled for `poll`/`select` waiters.
/// `failed`: the errno to keep for the program, or `None` (success: the
/// entries go).
pub fn finish(id: u64, failed: Option<c_int>, promote: &mut dyn FnMut(c_int) -> bool) {
    let _serial = EPOLL.lock();
    let Some((done, fds)) = with(|t| {
        let conn = t.conns.get_mut(&id)?;
        Some((conn.done.clone(), conn.fds.clone()))
    }) else {
        return; // every fd closed: cancelled
    };
    for fd in fds {
        // Only an fd still of this connect (its number may have been
        // closed and reused; every change of these entries takes EPOLL).
        if with(|t| t.fds.get(&fd).map(|(i, _)| *i)) != Some(id) || !promote(fd) {
            continue;
        }
        let watchers = with(|t| t.fds.get_mut(&fd).map(|(_, w)| std::mem::take(w)).unwrap_or_default());
        move_watchers(done.0, fd, watchers);
    }
    with(|t| match failed {
        Some(errno) => {
            if let Some(conn) = t.conns.get_mut(&id) {
                conn.state = State::Failed(errno);
            }
        }
        None => {
            if let Some(conn) = t.conns.remove(&id) {
                for fd in conn.fds {
                    if t.fds.get(&fd).is_some_and(|(i, _)| *i == id) {
                        t.fds.remove(&fd);
                    }
                }
            }
        }
    });
    let one: u64 = 1;
    // SAFETY: an 8-byte write to our own eventfd (still open: `done` holds it).
    unsafe { real::write(done.0, &one as *const u64 as *const libc::c_void, 8) };
}

fn move_watchers(done: c_int, fd: c_int, watchers: Watchers) {
    for (epfd, events, data) in watchers {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: fd numbers, and our own epoll_event.
        unsafe {
            real::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, done, std::ptr::null_mut());
            if real::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) == 0
                && !crate::epoll_watch::record(fd, epfd, libc::EPOLL_CTL_ADD, Some((events, data)))
            {
                crate::epoll_watch::watched(fd, epfd, libc::EPOLL_CTL_ADD, Some((events, data)));
            }
        }
    }
}

/// Program fd `fd` (of kind CONNECTING, already cleared) is gone (closed,
/// or its failure reported): its entry goes, its registrations on the
/// eventfd are deleted (the eventfd outlives it), and a connect no fd
/// holds any more is dropped, and cancelled if under way.
pub fn forget(fd: c_int) {
    let _serial = EPOLL.lock();
    let me = pid();
    let gone = with(|t| {
        let (id, watchers) = t.fds.remove(&fd)?;
        let conn = t.conns.get_mut(&id)?;
        conn.fds.retain(|f| *f != fd);
        let done = conn.done.clone();
        let mut cancel = false;
        if conn.fds.is_empty() {
            let conn = t.conns.remove(&id).expect("present");
            cancel = conn.state == State::Pending && conn.pid == me;
        }
        Some((done, watchers, cancel.then_some(id)))
    });
    let Some((done, watchers, cancel)) = gone else { return };
    for (epfd, ..) in watchers {
        // SAFETY: fd numbers only (a DEL passes no event).
        unsafe { real::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, done.0, std::ptr::null_mut()) };
    }
    if let Some(id) = cancel {
        CANCELLED.lock().push(id);
        let wake = WAKE.load(Ordering::Acquire);
        if wake >= 0 {
            let one: u64 = 1;
            // SAFETY: an 8-byte write to the engine's eventfd.
            unsafe { real::write(wake, &one as *const u64 as *const libc::c_void, 8) };
        }
    }
}

/// The connects cancelled since the last call (for the engine).
pub fn take_cancelled() -> Vec<u64> {
    std::mem::take(&mut *CANCELLED.lock())
}

/// The program fds of kind CONNECTING in `first..=last` (`close_range`).
pub fn fds_in(first: u32, last: u32) -> Vec<c_int> {
    with(|t| t.fds.keys().copied().filter(|fd| (first..=last).contains(&(*fd as u32))).collect())
}
