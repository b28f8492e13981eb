//! Relaying an established TCP flow between client and destination.
//!
//! Promise: bytes move unmodified in both directions until both are done.
//! EOF on one side becomes `shutdown(SHUT_WR)` on the other (half-close is
//! preserved); an error on either side shuts both sockets down so neither
//! direction is left waiting. A direction starts with plain `read`/`write`;
//! once it has moved [`SPLICE_AFTER`] bytes it goes on through a pipe with
//! `splice(2)`, so bulk never enters user space while a short flow costs no
//! pipe. If the kernel refuses splice for these fds (`EINVAL`) the direction
//! stays with `read`/`write`.
//!
//! With an idle timeout, a flow in which neither direction moved a byte for
//! that long is closed (both sockets shut down): each socket's read and
//! write wait at most the timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`, honoured by
//! `splice` too), and a direction whose read timed out asks a counter shared
//! with the other direction whether anything moved since its last look. So
//! a one-way download is not idle, and a flow whose client went away
//! without a word frees its slot between one and two timeouts later.

use crate::pool;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Bytes a direction copies through user space before it sets up a pipe.
pub const SPLICE_AFTER: u64 = 64 * 1024;

/// Bytes moved client → destination (`sent`) and destination → client (`received`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub received: u64,
    /// The flow was closed by the idle timeout.
    pub idle: bool,
}

/// Relays until both directions have finished, or until neither moved a
/// byte for `idle` (when given). The client → destination direction runs on
/// the calling thread, the other on a pool thread.
pub fn relay(client: TcpStream, target: TcpStream, idle: Option<Duration>) -> io::Result<Counts> {
    if idle.is_some() {
        for s in [&client, &target] {
            s.set_read_timeout(idle)?;
            s.set_write_timeout(idle)?;
        }
    }
    let (client, target) = (Arc::new(client), Arc::new(target));
    let activity = Arc::new(Activity::default());
    let (c2, t2, a2) = (client.clone(), target.clone(), activity.clone());
    let (done, back) = mpsc::sync_channel(1);
    pool::run(move || {
        let _ = done.send(pump(&t2, &c2, &a2));
    })?;
    let (sent, idle_out) = pump(&client, &target, &activity);
    // A panicked helper drops `done` without sending: count nothing.
    let (received, idle_in) = back.recv().unwrap_or((0, false));
    Ok(Counts { sent, received, idle: idle_out || idle_in })
}

/// Chunks moved by either direction of one flow: how a direction whose read
/// timed out tells an idle flow from a one-way one.
#[derive(Default)]
struct Activity(AtomicU64);

impl Activity {
    fn moved(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Called when a read waited the whole timeout: whether either direction
    /// moved something since the previous call (`mark`), i.e. not idle yet.
    fn busy_since(&self, mark: &mut u64) -> bool {
        let now = self.0.load(Ordering::Relaxed);
        let busy = now != *mark;
        *mark = now;
        busy
    }
}

/// What a direction ends with when the flow went idle.
#[derive(Debug)]
struct IdleTimeout;

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("idle timeout")
    }
}

impl std::error::Error for IdleTimeout {}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, IdleTimeout)
}

/// A read that waited the whole `SO_RCVTIMEO`.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Moves `src` → `dst` until EOF or error; returns the bytes moved and
/// whether the flow was found idle.
fn pump(src: &TcpStream, dst: &TcpStream, activity: &Activity) -> (u64, bool) {
    let mut mark = activity.0.load(Ordering::Relaxed);
    // Every direction starts with a plain copy through a stack buffer, so a
    // short flow never pays for a pipe.
    let (moved, result) = match copy(src, dst, &mut [0u8; 16 * 1024], 0, SPLICE_AFTER, (activity, &mut mark)) {
        (n, Ok(true)) => match splice_all(src, dst, n, (activity, &mut mark)) {
            Splice::Done(n) => (n, Ok(())),
            Splice::Failed(n, e) => (n, Err(e)),
            // The portable fallback, with a bigger buffer for bulk.
            Splice::Unsupported => match copy(src, dst, &mut vec![0u8; 64 * 1024], n, u64::MAX, (activity, &mut mark)) {
                (n, Ok(_)) => (n, Ok(())),
                (n, Err(e)) => (n, Err(e)),
            },
        },
        (n, Ok(false)) => (n, Ok(())),
        (n, Err(e)) => (n, Err(e)),
    };
    let mut idle = false;
    match result {
        Ok(()) => {
            let _ = dst.shutdown(Shutdown::Write);
        }
        Err(e) => {
            idle = e.get_ref().is_some_and(|inner| inner.is::<IdleTimeout>());
            // Wake the other direction too: the flow is broken (or idle).
            let _ = src.shutdown(Shutdown::Both);
            let _ = dst.shutdown(Shutdown::Both);
        }
    }
    (moved, idle)
}

enum Splice {
    Done(u64),
    Failed(u64, io::Error),
    /// splice does not work on these fds; nothing was moved.
    Unsupported,
}

/// A pipe for splicing, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer syscalls per megabyte; failure is harmless.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    Ok((r, w))
}

const PIPE_SIZE: usize = 1 << 20;

/// `splice(2)` from `from` to `to`, retrying `EINTR`.
fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain fds, null offsets (sockets and pipes have none).
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Splices until EOF; `total` bytes were already moved before.
fn splice_all(src: &TcpStream, dst: &TcpStream, mut total: u64, (activity, mark): (&Activity, &mut u64)) -> Splice {
    let first = total;
    let (r, w) = match pipe() {
        Ok(p) => p,
        Err(_) => return Splice::Unsupported,
    };
    loop {
        let n = match splice(src.as_raw_fd(), w.as_raw_fd(), PIPE_SIZE) {
            Ok(0) => return Splice::Done(total),
            Ok(n) => n,
            Err(e) if timed_out(&e) => match activity.busy_since(mark) {
                true => continue,
                false => return Splice::Failed(total, idle_error()),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && total == first => return Splice::Unsupported,
            Err(e) => return Splice::Failed(total, e),
        };
        let mut left = n;
        while left > 0 {
            match splice(r.as_raw_fd(), dst.as_raw_fd(), left) {
                Ok(0) => return Splice::Failed(total, io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) => return Splice::Failed(total, e),
            }
        }
        total += n as u64;
        activity.moved();
    }
}

/// `read` then `write` through `buf` until EOF (`Ok(false)`) or until
/// `total` reaches `limit` (`Ok(true)`); `total` bytes were already moved.
/// Returns the bytes moved in all.
fn copy(
    mut src: &TcpStream,
    mut dst: &TcpStream,
    buf: &mut [u8],
    mut total: u64,
    limit: u64,
    (activity, mark): (&Activity, &mut u64),
) -> (u64, io::Result<bool>) {
    while total < limit {
        let n = match src.read(buf) {
            Ok(0) => return (total, Ok(false)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => match activity.busy_since(mark) {
                true => continue,
                false => return (total, Err(idle_error())),
            },
            Err(e) => return (total, Err(e)),
        };
        if let Err(e) = dst.write_all(&buf[..n]) {
            return (total, Err(e));
        }
        total += n as u64;
        activity.moved();
    }
    (total, Ok(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn relays_both_ways_and_half_closes() {
        let (mut client, server_side_client) = pair();
        let (server_side_target, mut target) = pair();
        let h = std::thread::spawn(move || relay(server_side_client, server_side_target, None).unwrap());
        let big = vec![7u8; 3 << 20];
        let writer = {
            let mut c = client.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || {
                c.write_all(&big).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut got = Vec::new();
        target.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), big.len());
        writer.join().unwrap();
        // The other direction still works after the client's half-close.
        target.write_all(b"reply").unwrap();
        target.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"reply");
        let counts = h.join().unwrap();
        assert_eq!((counts.sent, counts.received), (big.len() as u64, 5));
    }
}
