//! Waiting on fds: `poll`, `ppoll` (and glibc's fortified `__poll_chk`,
//! `__ppoll_chk`), `select`, `pselect`, and `epoll_ctl`.
//!
//! A socket whose non-blocking connect is under way
//! ([`crate::connecting`]) must not show ready before its handshake is
//! done, and the kernel would show it writable as soon as TCP to the proxy
//! is up. So, while any fd is CONNECTING, the waits look at a copy of the
//! program's set in which each such fd is replaced by its completion
//! eventfd, and map the answer back: done and connected → what the socket
//! shows now (`POLLOUT`); failed → `POLLOUT|POLLERR|POLLHUP` (and
//! `POLLIN` if asked), as the kernel reports a failed connect. `select`
//! and `pselect` become the same wait on a `pollfd` array. With no
//! CONNECTING fd in the process (the usual case) each wait hook is one
//! atomic load, then libc's own.
//!
//! `epoll_ctl` records every registration ([`crate::epoll_watch`]): a
//! socket registered before its connect, and a spent BIND listener, have
//! theirs moved. Of a CONNECTING fd, the registration is made on its
//! eventfd and moved to the socket by the engine when it is done, so
//! `epoll_wait` needs no hook.

use crate::connecting::{self, State};
use crate::fd_table::{self, kind};
use crate::ffi::{self, fail};
use crate::{real, user_mem};
use libc::{c_int, c_void, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};
use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, POLLRDBAND, POLLRDHUP, POLLRDNORM, POLLWRBAND, POLLWRNORM};
use std::time::{Duration, Instant};

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if !fd_table::any_connecting() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::poll(fds, n, timeout) };
    }
    let limit = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    // SAFETY: the program's arguments, passed on unchanged.
    poll_ours(fds, n, limit, std::ptr::null(), &mut || unsafe { real::poll(fds, n, timeout) })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, sigmask: *const sigset_t) -> c_int {
    if !fd_table::any_connecting() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::ppoll(fds, n, timeout, sigmask) };
    }
    // A bad timeout pointer: the kernel says EFAULT.
    // SAFETY: the program's arguments, passed on unchanged.
    let Ok(limit) = limit_of(timeout) else { return unsafe { real::ppoll(fds, n, timeout, sigmask) } };
    // SAFETY: the program's arguments, passed on unchanged.
    poll_ours(fds, n, limit, sigmask, &mut || unsafe { real::ppoll(fds, n, timeout, sigmask) })
}

/// glibc's `poll` for a program built with `_FORTIFY_SOURCE` (it checks
/// the array's size, then polls inside libc, where our `poll` is not seen).
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    if !fd_table::any_connecting() || fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: the program's arguments, passed on unchanged (an overflow: glibc aborts, as it would).
        return unsafe { real::__poll_chk(fds, n, timeout, fdslen) };
    }
    // SAFETY: the program's arguments, checked as glibc would.
    unsafe { poll(fds, n, timeout) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    sigmask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    if !fd_table::any_connecting() || fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: the program's arguments, passed on unchanged (an overflow: glibc aborts, as it would).
        return unsafe { real::__ppoll_chk(fds, n, timeout, sigmask, fdslen) };
    }
    // SAFETY: the program's arguments, checked as glibc would.
    unsafe { ppoll(fds, n, timeout, sigmask) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int {
    if !fd_table::any_connecting() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::select(n, r, w, e, timeout) };
    }
    let limit = if timeout.is_null() {
        Ok(None)
    } else {
        // SAFETY: the program's timeout argument.
        unsafe { user_mem::read_value(timeout) }
            .map(|tv| Some(Instant::now() + Duration::from_micros(tv.tv_sec.max(0) as u64 * 1_000_000 + tv.tv_usec.max(0) as u64)))
    };
    // A bad timeout pointer: the kernel says EFAULT.
    // SAFETY: the program's arguments, passed on unchanged.
    let Ok(limit) = limit else { return unsafe { real::select(n, r, w, e, timeout) } };
    // SAFETY: the program's arguments, passed on unchanged.
    let rc = select_ours(n, [r, w, e], limit, std::ptr::null(), &mut || unsafe { real::select(n, r, w, e, timeout) });
    if rc >= 0 && !timeout.is_null() {
        // Linux's select says how much of the timeout is left.
        let left = limit.map_or(Duration::ZERO, |l| l.saturating_duration_since(Instant::now()));
        let tv = timeval { tv_sec: left.as_secs() as libc::time_t, tv_usec: left.subsec_micros() as libc::suseconds_t };
        // SAFETY: the program's timeout argument, which Linux's select updates.
        let _ = unsafe { user_mem::write_value(timeout, tv) };
    }
    rc
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    if !fd_table::any_connecting() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::pselect(n, r, w, e, timeout, sigmask) };
    }
    // A bad timeout pointer: the kernel says EFAULT.
    // SAFETY: the program's arguments, passed on unchanged.
    let Ok(limit) = limit_of(timeout) else { return unsafe { real::pselect(n, r, w, e, timeout, sigmask) } };
    // SAFETY: the program's arguments, passed on unchanged.
    select_ours(n, [r, w, e], limit, sigmask, &mut || unsafe { real::pselect(n, r, w, e, timeout, sigmask) })
}

/// A `timespec` timeout as a deadline (`None`: forever); `Err`: a bad pointer.
fn limit_of(timeout: *const timespec) -> Result<Option<Instant>, i32> {
    if timeout.is_null() {
        return Ok(None);
    }
    // SAFETY: the program's timeout argument.
    let ts = unsafe { user_mem::read_value(timeout) }?;
    Ok(Some(Instant::now() + Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)))
}

/// What a failed connect shows: as the kernel's (`POLLIN` and `POLLOUT`
/// as asked, `POLLERR` and `POLLHUP` always).
fn failed_revents(events: i16) -> i16 {
    events & (POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM | POLLRDHUP) | POLLERR | POLLHUP
}

/// `poll`/`ppoll` of the program's array, which may hold CONNECTING fds:
/// copied, waited on (`wait_on`), its `revents` written back. `as_asked`:
/// the program's call unchanged (no such fd in it, a bad pointer: the
/// kernel answers).
fn poll_ours(fds: *mut pollfd, n: nfds_t, limit: Option<Instant>, sigmask: *const sigset_t, as_asked: &mut dyn FnMut() -> c_int) -> c_int {
    let count = n as usize;
    if fds.is_null() || count == 0 || count > fd_table::SLOTS {
        return as_asked();
    }
    let mut set = vec![pollfd { fd: -1, events: 0, revents: 0 }; count];
    // SAFETY: the slice covers exactly the vector's bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(set.as_mut_ptr() as *mut u8, count * std::mem::size_of::<pollfd>()) };
    // SAFETY: the program's pollfd array.
    if unsafe { user_mem::read(fds as *const c_void, bytes) }.is_err() || !set.iter().any(|p| fd_table::kind(p.fd) == kind::CONNECTING) {
        return as_asked();
    }
    let rc = wait_on(&mut set, limit, sigmask);
    if rc >= 0 {
        // SAFETY: the slice covers exactly the vector's bytes.
        let bytes = unsafe { std::slice::from_raw_parts(set.as_ptr() as *const u8, count * std::mem::size_of::<pollfd>()) };
        // SAFETY: the program's pollfd array.
        if let Err(errno) = unsafe { user_mem::write(fds as *mut c_void, bytes) } {
            return fail(errno);
        }
    }
    rc
}

/// Waits on `set` (our copy) as `ppoll` would, each CONNECTING fd
/// answered by its connect's state; fills in `revents`, returns the count
/// of ready entries (or -1 with errno).
fn wait_on(set: &mut [pollfd], limit: Option<Instant>, sigmask: *const sigset_t) -> c_int {
    loop {
        // What each CONNECTING fd is now (looked up inside the shim; the
        // wait itself is the program's, outside it).
        let views: Vec<(usize, connecting::View)> = {
            let Some(_inside) = crate::hooks::enter() else { return fail(libc::EINTR) };
            ffi::catch(Vec::new(), 0, || {
                set.iter()
                    .enumerate()
                    .filter(|(_, p)| fd_table::kind(p.fd) == kind::CONNECTING)
                    .filter_map(|(i, p)| Some((i, connecting::table::view(p.fd)?)))
                    .collect()
            })
        };
        let mut copy: Vec<pollfd> = set.iter().map(|p| pollfd { fd: p.fd, events: p.events, revents: 0 }).collect();
        let mut any_failed = false;
        for (i, view) in &views {
            match view.state {
                State::Pending => copy[*i] = pollfd { fd: view.done.0, events: POLLIN, revents: 0 },
                State::Failed(_) => any_failed = true,
            }
        }
        let left = if any_failed { Some(Duration::ZERO) } else { limit.map(|l| l.saturating_duration_since(Instant::now())) };
        let ts = left.map(|d| timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const timespec);
        // SAFETY: our own array and timespec; the program's signal mask (or null).
        let rc = unsafe { real::ppoll(copy.as_mut_ptr(), copy.len() as nfds_t, ts_ptr, sigmask) };
        if rc < 0 {
            return rc;
        }
        for (i, view) in &views {
            let asked = set[*i].events;
            copy[*i].fd = set[*i].fd;
            copy[*i].revents = match view.state {
                State::Failed(_) => failed_revents(asked),
                State::Pending if copy[*i].revents & POLLIN != 0 => after_done(set[*i].fd, asked),
                State::Pending => 0,
            };
        }
        let ready = copy.iter().filter(|p| p.revents != 0).count();
        let over = limit.is_some_and(|l| Instant::now() >= l);
        if ready > 0 || rc == 0 || over {
            for (p, c) in set.iter_mut().zip(&copy) {
                p.revents = c.revents;
            }
            return ready as c_int;
        }
        // Only our eventfds fired, and the sockets show nothing the
        // program asked for (it asked for POLLIN alone): wait on.
    }
}

/// What connected-or-failed `fd` shows now that its connect is over.
fn after_done(fd: c_int, asked: i16) -> i16 {
    if fd_table::kind(fd) == kind::CONNECTING {
        return failed_revents(asked); // failed (a success changes the kind first)
    }
    let mut p = pollfd { fd, events: asked, revents: 0 };
    // SAFETY: one pollfd of ours; no wait.
    unsafe { real::poll(&mut p, 1, 0) };
    p.revents
}

const SELECT_IN: i16 = POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR;
const SELECT_OUT: i16 = POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR;
const WORD: usize = 8 * std::mem::size_of::<u64>();

/// `select`/`pselect` with CONNECTING fds in its sets: the same wait as
/// [`wait_on`], on a `pollfd` array built from the sets, whose answer is
/// written back into them (as the kernel's select maps poll's).
fn select_ours(
    n: c_int,
    sets: [*mut fd_set; 3],
    limit: Option<Instant>,
    sigmask: *const sigset_t,
    as_asked: &mut dyn FnMut() -> c_int,
) -> c_int {
    let n = n.clamp(0, libc::FD_SETSIZE as c_int) as usize;
    let words = n.div_ceil(WORD);
    let mut bits = [vec![0u64; words], vec![0u64; words], vec![0u64; words]];
    for (set, out) in sets.iter().zip(bits.iter_mut()) {
        if set.is_null() || words == 0 {
            continue;
        }
        // SAFETY: the slice covers exactly the vector's bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, words * 8) };
        // SAFETY: the program's fd_set.
        if unsafe { user_mem::read(*set as *const c_void, bytes) }.is_err() {
            return as_asked(); // the kernel says EFAULT
        }
    }
    let has = |b: &Vec<u64>, fd: usize| b[fd / WORD] >> (fd % WORD) & 1 != 0;
    let mut list: Vec<pollfd> = Vec::new();
    for fd in 0..n {
        let (r, w, e) = (has(&bits[0], fd), has(&bits[1], fd), has(&bits[2], fd));
        if r || w || e {
            let events = if r { POLLIN | POLLRDNORM | POLLRDBAND } else { 0 }
                | if w { POLLOUT | POLLWRNORM | POLLWRBAND } else { 0 }
                | if e { POLLPRI } else { 0 };
            list.push(pollfd { fd: fd as c_int, events, revents: 0 });
        }
    }
    if !list.iter().any(|p| fd_table::kind(p.fd) == kind::CONNECTING) {
        return as_asked();
    }
    let rc = wait_on(&mut list, limit, sigmask);
    if rc < 0 {
        return rc;
    }
    if list.iter().any(|p| p.revents & POLLNVAL != 0) {
        return fail(libc::EBADF);
    }
    let mut out = [vec![0u64; words], vec![0u64; words], vec![0u64; words]];
    let mut count = 0;
    for p in &list {
        let fd = p.fd as usize;
        for (k, mask) in [(0, SELECT_IN), (1, SELECT_OUT), (2, POLLPRI)] {
            if has(&bits[k], fd) && p.revents & mask != 0 {
                out[k][fd / WORD] |= 1 << (fd % WORD);
                count += 1;
            }
        }
    }
    for (set, bits) in sets.iter().zip(out.iter()) {
        if set.is_null() || words == 0 {
            continue;
        }
        // SAFETY: the slice covers exactly the vector's bytes.
        let bytes = unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const u8, words * 8) };
        // SAFETY: the program's fd_set.
        if let Err(errno) = unsafe { user_mem::write(*set as *mut c_void, bytes) } {
            return fail(errno);
        }
    }
    count
}

/// `epoll_ctl`: every registration that succeeds is recorded (see the
/// module doc); one of a CONNECTING fd is made on its eventfd.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int {
    if fd_table::kind(fd) == kind::CONNECTING {
        if let Some(rc) = epoll_ctl_connecting(epfd, op, fd, event) {
            return rc;
        }
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let rc = unsafe { real::epoll_ctl(epfd, op, fd, event) };
    if rc == 0 {
        // SAFETY: the kernel just read it (for an op that has one); packed, so read unaligned.
        let ev = (op != libc::EPOLL_CTL_DEL && !event.is_null()).then(|| unsafe { std::ptr::read_unaligned(event) });
        let ev = ev.map(|e| (e.events, e.u64));
        if !crate::epoll_watch::record(fd, epfd, op, ev) {
            if let Some(_inside) = crate::hooks::enter() {
                ffi::catch((), 0, || crate::epoll_watch::watched(fd, epfd, op, ev));
            }
        }
    }
    rc
}

#[cold]
#[inline(never)]
fn epoll_ctl_connecting(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> Option<c_int> {
    let ev = if op == libc::EPOLL_CTL_DEL {
        None
    } else {
        // SAFETY: the program's epoll_event argument.
        match unsafe { user_mem::read_value(event as *const libc::epoll_event) } {
            Ok(e) => Some((e.events, e.u64)),
            Err(errno) => return Some(fail(errno)),
        }
    };
    let _inside = crate::hooks::enter()?;
    ffi::catch(None, 0, || connecting::table::epoll_ctl(epfd, op, fd, ev)).map(|rc| if rc == 0 { 0 } else { -1 })
}
