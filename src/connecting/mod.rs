//! A non-blocking `connect` to a proxied destination: it returns
//! `EINPROGRESS` at once, as a kernel connect does, and the handshake
//! goes on in the background ([`engine`]) on the program's own socket.
//!
//! The program's fd is connected to the first hop at once (non-blocking)
//! and marked CONNECTING ([`crate::fd_table::kind::CONNECTING`]), with a
//! completion eventfd ([`table`]). The kernel would show the socket
//! writable once TCP to the proxy is up and readable when the proxy's
//! reply comes, both before the program may use it, so until the engine
//! is done the wait hooks (hooks/wait.rs) wait on the eventfd instead
//! (`poll`, `select`), and the program's epoll registrations sit on the
//! eventfd, moved to the socket when it is done; `send`/`recv` answer
//! `EAGAIN`, `getpeername` `ENOTCONN`, a second `connect` `EALREADY`,
//! `SO_ERROR` 0. Done: the fd is proxied TCP (as after a blocking
//! connect), or, failed, its socket dissolved (`connect(AF_UNSPEC)`) and
//! the errno kept for `SO_ERROR` (or a second `connect`, a read, a write),
//! reported once.

pub mod engine;
pub mod table;

use crate::fd_table::{self, ProxiedTcp};
use crate::ffi::fail;
use crate::{real, runtime, tcp};
use engine::Job;
use libc::c_int;
use socksify_client::tcp::{ConnectError, Driver, Step};
use socksify_proto::config::Config;
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::TargetAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::OwnedFd;

pub use table::{State, View};

/// Starts the connect of non-blocking TCP socket `fd` (of `family`) to
/// `target` (`dst` as the program named it). Returns what `connect`
/// returns: -1 with `EINPROGRESS`, or the error of a connect that failed
/// at once; `None` where no engine may run (a vfork child): the caller
/// connects in the call.
pub fn start(fd: c_int, family: c_int, config: &'static Config, target: &TargetAddr, dst: SocketAddr) -> Option<c_int> {
    if crate::fork_safe::is_vfork_child() {
        return None;
    }
    let deadline = Instant::now() + config.timeout.max(Duration::from_millis(1));
    let family = match tcp::reachable_family(fd, family, config) {
        Ok(f) => f,
        Err(e) => return Some(failed_now(fd, target, config, e)),
    };
    let mut driver = Driver::new(config, runtime::proxy_addrs(config, 0), family, Command::Connect, target);
    let (events, what) = match driver.step(&tcp::RealIo, fd, 0) {
        Ok(Step::Wait { events, what }) => (events, what),
        // The handshake always waits for the proxy's answer.
        Ok(Step::Done) => {
            return Some(failed_now(fd, target, config, ConnectError::Io("the handshake ended before any reply", libc::EPROTO)))
        }
        Err(e) => return Some(failed_now(fd, target, config, e)),
    };
    let copies = own_copy(fd).and_then(|sock| Ok((sock, completion_fd()?)));
    let (sock, done) = match copies {
        Ok(c) => c,
        Err(e) => return Some(failed_now(fd, target, config, ConnectError::Io("starting a background connect", e))),
    };
    let engine_fd = sock.0;
    let id = table::insert(fd, Arc::new(done), engine_fd);
    fd_table::set_connecting(fd);
    // Registrations the program made before the connect move to the
    // eventfd with the rest (only those the kernel had: the delete says).
    let before: Vec<_> = crate::epoll_watch::take(fd)
        .into_iter()
        // SAFETY: fd numbers only (a DEL passes no event).
        .filter(|(epfd, ..)| unsafe { real::epoll_ctl(*epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } == 0)
        .collect();
    table::adopt_watchers(fd, before);
    let job = Box::new(Job { id, fd, sock, driver, deadline, events, what, target: target.clone(), dst, config });
    if let Err((job, why)) = engine::submit(job) {
        log::error!("tcp fd {fd} -> {target}: {why}; connecting in the call instead");
        return Some(in_the_call(job));
    }
    log::debug!("tcp fd {fd} -> {target}: connecting in the background");
    Some(fail(libc::EINPROGRESS))
}

/// A copy of the program's socket for the engine (the same open file, so
/// the program's `close` alone does not close it under the engine).
fn own_copy(fd: c_int) -> Result<OwnedFd, i32> {
    // SAFETY: an F_DUPFD command: fd numbers only.
    let copy = unsafe { real::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(crate::ffi::errno());
    }
    OwnedFd::mark(copy).ok_or(libc::EMFILE)
}

fn completion_fd() -> Result<OwnedFd, i32> {
    // SAFETY: plain eventfd(2).
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(crate::ffi::errno());
    }
    OwnedFd::mark(efd).ok_or(libc::EMFILE)
}

/// No engine could start: the connect is driven here, to the end, as a
/// blocking one would be, and its outcome recorded as the engine would.
fn in_the_call(mut job: Box<Job>) -> c_int {
    let mut revents = 0;
    let outcome = loop {
        match job.driver.step(&tcp::RealIo, job.sock.0, revents) {
            Ok(Step::Done) => break Ok(job.driver.result().expect("done")),
            Ok(Step::Wait { events, what }) => match socksify_client::tcp::poll_until(&tcp::RealIo, job.sock.0, events, job.deadline) {
                Ok(r) => revents = r,
                Err(socksify_client::tcp::WaitError::TimedOut) => break Err(ConnectError::Timeout(what)),
                Err(socksify_client::tcp::WaitError::Errno(e)) => break Err(ConnectError::Io(what, e)),
            },
            Err(e) => break Err(e),
        }
    };
    let failed = outcome.is_err();
    let fd = job.fd;
    done(job, outcome);
    match failed.then(|| take_failure(fd)).flatten() {
        Some(errno) => fail(errno),
        None => 0,
    }
}

/// A connect that failed before it went to the background: as a blocking
/// one reports it (one log line, the socket dissolved, the errno).
fn failed_now(fd: c_int, target: &TargetAddr, config: &Config, e: ConnectError) -> c_int {
    log::debug!("tcp fd {fd} -> {target}: failed");
    crate::log_once::log_once(format!("tcp -> {target} via {}: {e}", config.chain[0]));
    tcp::dissolve(fd);
    fail(e.errno())
}

/// The engine is done with `job`: the program's fds become proxied TCP,
/// or, failed, keep the errno for the program; their epoll registrations
/// move to the socket, and the waiters are woken.
///
/// The engine's copy of the socket is closed first, before the program
/// can learn the outcome: an epoll registration goes only when the last
/// fd of its file closes, so a copy of ours alive when the program closes
/// its fd would leave the program's registration in place, and its next
/// socket, given the same number and the same `epoll_data`, would get the
/// old socket's events.
pub(crate) fn done(job: Box<Job>, outcome: Result<(SocketAddr, TargetAddr), ConnectError>) {
    let Job { id, fd, sock, target, dst, config, .. } = *job;
    match outcome {
        Ok((proxy, bound)) => {
            drop(sock);
            log::info!("tcp fd {fd} -> {target} via {}: connected (proxy bound {bound})", config.chain[0]);
            let details = ProxiedTcp { peer: dst, proxy, bound: crate::bind::reported_addr(&bound), opened: fd_table::next_opened() };
            table::finish(id, None, &mut |fd| fd_table::connected(fd, details));
        }
        Err(e) => {
            // Once per destination and reason, as for a blocking connect.
            log::debug!("tcp fd {fd} -> {target}: failed");
            crate::log_once::log_once(format!("tcp -> {target} via {}: {e}", config.chain[0]));
            // Left as a failed connect leaves it: connected to nothing,
            // free to connect again, and no error of our dissolving
            // pending (the program's SO_ERROR is ours).
            tcp::dissolve(sock.0);
            let _ = socksify_client::tcp::SocketIo::so_error(&tcp::RealIo, sock.0);
            drop(sock);
            table::finish(id, Some(e.errno()), &mut |fd| fd_table::kind(fd) == fd_table::kind::CONNECTING);
        }
    }
}

/// The failure of connect-in-progress `fd` to report (`SO_ERROR`, a
/// second `connect`, a read or a write): the errno, once; the fd is then
/// an ordinary socket again. `None`: still under way (or not ours).
pub fn take_failure(fd: c_int) -> Option<c_int> {
    let State::Failed(errno) = table::view(fd)?.state else { return None };
    crate::sockets::forget(fd);
    Some(errno)
}
