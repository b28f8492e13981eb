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
use socksify_proto::wire::socks5::{method, Command, Greeting, MethodSelection, Reply, ReplyCode, Request};
use socksify_proto::wire::auth::{AuthReply, AuthRequest};
use socksify_proto::wire::{self, atyp, TargetAddr};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
pub struct ClientConn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    deadline: Instant,
}

impl ClientConn {
    pub fn new(stream: TcpStream, timeout: Duration) -> ClientConn {
        let _ = stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
        ClientConn { stream, buf: Vec::with_capacity(512), deadline: Instant::now() + timeout }
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
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).map_err(HandshakeError::Io)?;
            let room = MAX_HANDSHAKE - self.buf.len();
            match self.stream.read(&mut chunk[..room.min(1024)]) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Err(HandshakeError::Timeout),
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The handshake is over: lift its deadlines for the data phase.
    pub fn end_handshake(&mut self) {
        let _ = self.stream.set_read_timeout(None);
        let _ = self.stream.set_write_timeout(None);
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
    conn.send(&out).map_err(HandshakeError::Io)?;
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
            let line = sess.log("handshake").kv("reply", "auth-failed").kv("error", format!("bad password for user {}", String::from_utf8_lossy(&auth.user)));
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
