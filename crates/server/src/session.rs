//! One client connection: detect the SOCKS version, run the handshake under
//! the deadline, then hand the request to its command.
//!
//! Promise: the whole handshake (greeting, authentication, request) must
//! arrive within `--handshake-timeout-ms`, else the connection is closed.
//! Bytes are read into one buffer and parsed from it, so a pipelined client
//! (everything in one segment, even payload after the request) loses nothing
//! between stages. Network input is never trusted: every parse error ends the
//! session with the reply the protocol defines, or a plain close.

use crate::cli::Config;
use crate::log::{reply_name, LogLine};
use crate::{bind, connect, socks4, udp_relay};
use socksify_proto::wire::auth::{AuthReply, AuthRequest};
use socksify_proto::wire::socks5::{method, Command, Greeting, MethodSelection, Reply, ReplyCode, Request};
use socksify_proto::wire::{self, atyp, TargetAddr};
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

/// Serves one accepted client to the end.
pub fn serve(stream: TcpStream, cfg: Arc<Config>, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut sess = Session { cfg, client, started: Instant::now(), user: None };
    let mut conn = ClientConn::new(stream, sess.cfg.handshake_timeout);
    let version = conn.read_msg(|b| b.first().map(|&v| (v, 0)).ok_or(wire::Error::Truncated));
    let result = match version {
        Ok(5) => socks5(&mut sess, conn),
        Ok(4) => socks4::serve(&sess, conn),
        Ok(_) => Err(HandshakeError::Garbage("not SOCKS version 4 or 5")),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        sess.finish(sess.log("handshake").kv("reply", "closed").kv("error", e));
    }
}

/// Method negotiation, RFC 1929 authentication and the request.
fn socks5(sess: &mut Session, mut conn: ClientConn) -> Result<(), HandshakeError> {
    let greeting = conn.read_msg(Greeting::parse)?;
    let wanted = if sess.cfg.users.is_empty() { method::NO_AUTH } else { method::USER_PASS };
    let chosen = if greeting.methods.contains(&wanted) { wanted } else { method::NO_ACCEPTABLE };
    let mut out = Vec::new();
    MethodSelection { method: chosen }.emit(&mut out);
    if chosen == method::NO_AUTH && Request::parse(&conn.buf).is_ok() {
        // The client pipelined its request: the method selection can wait
        // for the reply and share its segment.
        conn.send_later(&out);
    } else {
        conn.send(&out).map_err(HandshakeError::Io)?;
    }
    if chosen == method::NO_ACCEPTABLE {
        sess.finish(sess.log("handshake").kv("reply", "no-acceptable-method"));
        return Ok(());
    }
    if chosen == method::USER_PASS {
        let auth = conn.read_msg(AuthRequest::parse)?;
        let ok = sess.cfg.users.iter().any(|(u, p)| constant_time_eq(u, &auth.user) & constant_time_eq(p, &auth.pass));
        let mut out = Vec::new();
        AuthReply { status: if ok { 0 } else { 1 } }.emit(&mut out);
        conn.send(&out).map_err(HandshakeError::Io)?;
        if !ok {
            let line = sess
                .log("handshake")
                .kv("reply", "auth-failed")
                .kv("error", format!("bad password for user {}", String::from_utf8_lossy(&auth.user)));
            sess.finish(line);
            return Ok(());
        }
        sess.user = Some(String::from_utf8_lossy(&auth.user).into_owned());
    }
    let request = match conn.read_msg(Request::parse) {
        Ok(r) => r,
        Err(HandshakeError::Garbage(why)) => {
            // Answer what RFC 1928 lets us answer: an unknown ATYP is reply 8.
            let bad_atyp = conn.buf.len() >= 4 && conn.buf[0] == 5 && ![atyp::IPV4, atyp::DOMAIN, atyp::IPV6].contains(&conn.buf[3]);
            let code = if bad_atyp { ReplyCode::AddressTypeNotSupported } else { ReplyCode::GeneralFailure };
            let _ = conn.send(&reply5(code, None));
            let line = sess.log("request").kv("dst", "-").kv("reply", reply_name(code)).kv("error", why);
            sess.finish(line);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match Command::from_code(request.command) {
        Some(Command::Connect) => connect::serve(sess, conn, connect::Version::Five, request.dst),
        Some(Command::UdpAssociate) => udp_relay::serve(sess, conn, request.dst),
        Some(Command::Bind) => bind::serve(sess, conn, request.dst),
        None => {
            let code = ReplyCode::CommandNotSupported;
            let _ = conn.send(&reply5(code, None));
            let line = sess.log(&format!("unknown-{}", request.command)).kv("dst", &request.dst).kv("reply", reply_name(code));
            sess.finish(line);
        }
    }
    Ok(())
}

/// Compares without an early exit, so timing does not reveal a password prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
