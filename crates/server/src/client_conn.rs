//! What a session and its commands share: the session's facts
//! ([`Session`]), the client connection read under the handshake deadline
//! ([`ClientConn`]), and the SOCKS5 reply ([`reply5`]). Its own file so the
//! commands (`connect`, `bind`, `udp_relay`, `socks4`) and `session`, which
//! calls them, do not use each other.
//!
//! Bytes are read into one buffer and parsed from it, so a pipelined client
//! (everything in one segment, even payload after the request) loses nothing
//! between stages. Network input is never trusted.

use crate::cli::Config;
use crate::log::LogLine;
use socksify_proto::wire::socks5::{Reply, ReplyCode};
use socksify_proto::wire::{self, TargetAddr};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most handshake bytes we buffer: a SOCKS4a request with two 255-byte
/// fields is the largest legal message, so anything bigger is hostile.
const MAX_HANDSHAKE: usize = 1024;

/// What every command needs to know about the session it serves.
pub struct Session {
    pub cfg: Arc<Config>,
    pub client: SocketAddr,
    pub started: Instant,
    pub user: Option<String>,
}

impl Session {
    /// A log line with the keys every request has: `client=` and `cmd=`.
    pub fn log(&self, cmd: &str) -> LogLine {
        if self.cfg.quiet {
            return LogLine::off();
        }
        LogLine::new().kv("client", self.client).kv("cmd", cmd)
    }

    /// Milliseconds since the client connected.
    pub fn ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// Appends `ms=` and the optional `user=` and writes the line.
    pub fn finish(&self, line: LogLine) {
        let mut line = line.kv("ms", self.ms());
        if let Some(user) = &self.user {
            line = line.kv("user", user);
        }
        line.emit(self.cfg.quiet);
    }
}

/// Why a handshake ended without a request.
#[derive(Debug)]
pub enum HandshakeError {
    Closed,
    Timeout,
    TooLong,
    Garbage(&'static str),
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("client closed during handshake"),
            HandshakeError::Timeout => f.write_str("handshake deadline passed"),
            HandshakeError::TooLong => f.write_str("handshake message too long"),
            HandshakeError::Garbage(why) => write!(f, "garbage: {why}"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The client's socket plus the bytes read from it but not yet consumed.
///
/// The socket stays blocking and carries no socket timeouts: during the
/// handshake every read and write first tries without waiting and then
/// waits in `poll` for what is left of the deadline; after
/// [`ClientConn::end_handshake`] writes wait as long as they need.
pub struct ClientConn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    deadline: Instant,
    /// The handshake timeout, also the longest a handshake write may wait.
    timeout: Duration,
    handshaking: bool,
    /// Reply bytes held back to go out with the next [`ClientConn::send`]
    /// (a pipelining client's method selection and reply in one segment).
    pending: Vec<u8>,
}

impl ClientConn {
    pub fn new(stream: TcpStream, timeout: Duration) -> ClientConn {
        ClientConn {
            stream,
            buf: Vec::with_capacity(512),
            deadline: Instant::now() + timeout,
            timeout,
            handshaking: true,
            pending: Vec::new(),
        }
    }

    /// Parses the next message from the buffer, reading more under the
    /// deadline while the parser says `Truncated`. Consumes what it parsed.
    pub fn read_msg<T>(&mut self, parse: impl Fn(&[u8]) -> Result<(T, usize), wire::Error>) -> Result<T, HandshakeError> {
        loop {
            match parse(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.drain(..used.min(self.buf.len()));
                    return Ok(msg);
                }
                Err(wire::Error::Malformed(why)) => return Err(HandshakeError::Garbage(why)),
                Err(wire::Error::Truncated) => self.fill()?,
            }
        }
    }

    /// Reads at least one more byte before the deadline.
    fn fill(&mut self) -> Result<(), HandshakeError> {
        if self.buf.len() >= MAX_HANDSHAKE {
            return Err(HandshakeError::TooLong);
        }
        let mut chunk = [0u8; 1024];
        let room = (MAX_HANDSHAKE - self.buf.len()).min(chunk.len());
        loop {
            // SAFETY: recv into a live buffer of at least `room` bytes.
            let n = unsafe { libc::recv(self.stream.as_raw_fd(), chunk.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
            if n > 0 {
                self.buf.extend_from_slice(&chunk[..n as usize]);
                return Ok(());
            }
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => self.wait(libc::POLLIN, self.deadline)?,
                _ => return Err(HandshakeError::Io(e)),
            }
        }
    }

    /// Waits until the socket is ready for `events`; during the handshake
    /// at most until `deadline`.
    fn wait(&self, events: libc::c_short, deadline: Instant) -> Result<(), HandshakeError> {
        loop {
            let timeout = if self.handshaking {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HandshakeError::Timeout);
                }
                // Round up, so the wait never ends before the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            } else {
                -1
            };
            let mut pfd = libc::pollfd { fd: self.stream.as_raw_fd(), events, revents: 0 };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(HandshakeError::Io(e));
                }
            }
        }
    }

    /// Holds `bytes` back to go out in front of the next [`ClientConn::send`].
    pub fn send_later(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Writes what was held back, then `bytes`, in one write when it fits;
    /// during the handshake a write that cannot finish within the handshake
    /// timeout fails (a client that does not read).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let joined;
        let mut out = bytes;
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(bytes);
            joined = std::mem::take(&mut self.pending);
            out = &joined;
        }
        while !out.is_empty() {
            // SAFETY: send from a live buffer of out.len() bytes.
            let n = unsafe { libc::send(self.stream.as_raw_fd(), out.as_ptr().cast(), out.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n > 0 {
                out = &out[n as usize..];
                continue;
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLOUT, Instant::now() + self.timeout.max(Duration::from_millis(1))).map_err(|e| match e {
                        HandshakeError::Timeout => io::Error::new(io::ErrorKind::TimedOut, "client does not read"),
                        HandshakeError::Io(e) => e,
                        other => io::Error::other(other.to_string()),
                    })?
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// The handshake is over: lift its deadline for the data phase.
    pub fn end_handshake(&mut self) {
        self.handshaking = false;
    }
}

/// A SOCKS5 reply with `code` and the bound address (or `0.0.0.0:0`).
pub fn reply5(code: ReplyCode, bound: Option<SocketAddr>) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    Reply { code, bound: bound.map_or_else(TargetAddr::unspecified, TargetAddr::Ip) }.emit(&mut out);
    out
}

