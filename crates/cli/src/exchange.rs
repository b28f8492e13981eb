//! SOCKS exchanges over a blocking TCP stream, for `check`: one message
//! out, then exactly the bytes of its answer in, before the next
//! (lock-step), unless the first flight was sent ahead as the library does
//! for a proxy with `?pipeline=1` ([`Conn::send_first_flight`]). Every
//! exchange is bounded by the configured timeout, so a proxy that stalls is
//! reported, never waited on forever.

use socksify_proto::wire::auth::{AuthReply, AuthRequest};
use socksify_proto::wire::socks4::{self, Reply4, Request4};
use socksify_proto::wire::socks5::{Command, Greeting, MethodSelection, Reply, Request};
use socksify_proto::wire::{self, TargetAddr};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why an exchange got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// The proxy closed the connection; the bytes it sent first.
    Closed(Vec<u8>),
    TimedOut(Duration),
    Io(io::Error),
    /// Bytes that are not the protocol, with the reason and the bytes.
    Garbage(wire::Error, Vec<u8>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Closed(got) if got.is_empty() => f.write_str("the proxy closed the connection without answering"),
            Failure::Closed(got) => write!(f, "the proxy closed the connection after {} byte(s) {}", got.len(), show_bytes(got)),
            Failure::TimedOut(t) => write!(f, "no answer within {} ms (SOCKSIFY_TIMEOUT_MS)", t.as_millis()),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Garbage(e, got) => {
                write!(f, "the answer is not SOCKS ({e}): {}", show_bytes(got))?;
                if got.starts_with(b"HT") {
                    f.write_str(", which looks like HTTP: is this an HTTP proxy?")?;
                }
                Ok(())
            }
        }
    }
}

/// `[05 ff]`-style hex of the first bytes.
fn show_bytes(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("[{}]", hex.join(" "))
}

/// A TCP connection to a proxy (possibly through earlier hops).
pub struct Conn {
    stream: TcpStream,
    timeout: Duration,
    /// Messages already sent ahead whose answers are still to be read.
    sent_ahead: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { stream, timeout, sent_ahead: 0 })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Pipelining: the greeting, the credentials (if any) and the request in
    /// one write; the exchanges that follow then only read their answers.
    pub fn send_first_flight(
        &mut self,
        methods: &[u8],
        creds: Option<(&[u8], &[u8])>,
        command: Command,
        dst: &TargetAddr,
    ) -> Result<(), Failure> {
        let mut out = Vec::new();
        Greeting { methods: methods.to_vec() }.emit(&mut out);
        if let Some((user, pass)) = creds {
            AuthRequest { user: user.to_vec(), pass: pass.to_vec() }.emit(&mut out);
        }
        Request::new(command, dst.clone()).emit(&mut out);
        self.stream.write_all(&out).map_err(|e| self.failure(e))?;
        self.sent_ahead = 2 + usize::from(creds.is_some());
        Ok(())
    }

    /// SOCKS5 greeting: our methods out, the server's choice in.
    pub fn greet(&mut self, methods: &[u8]) -> Result<MethodSelection, Failure> {
        self.send(|out| Greeting { methods: methods.to_vec() }.emit(out))?;
        let bytes = self.read_exactly(MethodSelection::LEN)?;
        parsed(MethodSelection::parse(&bytes), bytes)
    }

    /// RFC 1929 username/password.
    pub fn authenticate(&mut self, user: &[u8], pass: &[u8]) -> Result<AuthReply, Failure> {
        self.send(|out| AuthRequest { user: user.to_vec(), pass: pass.to_vec() }.emit(out))?;
        let bytes = self.read_exactly(AuthReply::LEN)?;
        parsed(AuthReply::parse(&bytes), bytes)
    }

    /// SOCKS5 request; reads the reply head, then exactly the rest of it.
    pub fn request(&mut self, command: Command, dst: &TargetAddr) -> Result<Reply, Failure> {
        self.send(|out| Request::new(command, dst.clone()).emit(out))?;
        let mut bytes = self.read_exactly(Reply::MIN_LEN)?;
        // An error in the head is reported by parse below, with the bytes.
        if let Ok(total) = Reply::total_len(&bytes) {
            bytes.extend(self.read_exactly(total - Reply::MIN_LEN)?);
        }
        parsed(Reply::parse(&bytes), bytes)
    }

    /// SOCKS4 (or 4a, for a name) CONNECT.
    pub fn request4(&mut self, user_id: &[u8], dst: &TargetAddr) -> Result<Reply4, Failure> {
        self.send(|out| Request4 { command: socks4::CONNECT, user_id: user_id.to_vec(), dst: dst.clone() }.emit(out))?;
        let bytes = self.read_exactly(Reply4::LEN)?;
        parsed(Reply4::parse(&bytes), bytes)
    }

    fn send(&mut self, emit: impl FnOnce(&mut Vec<u8>)) -> Result<(), Failure> {
        if self.sent_ahead > 0 {
            self.sent_ahead -= 1;
            return Ok(());
        }
        let mut out = Vec::new();
        emit(&mut out);
        self.stream.write_all(&out).map_err(|e| self.failure(e))
    }

    /// Exactly `n` bytes, within one timeout for the whole answer.
    fn read_exactly(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::TimedOut(self.timeout));
            }
            self.stream.set_read_timeout(Some(left)).map_err(Failure::Io)?;
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(Failure::Closed(buf[..got].to_vec())),
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failure(e)),
            }
        }
        Ok(buf)
    }

    fn failure(&self, e: io::Error) -> Failure {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::TimedOut(self.timeout),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Failure::Closed(Vec::new()),
            _ => Failure::Io(e),
        }
    }
}

fn parsed<T>(result: Result<(T, usize), wire::Error>, bytes: Vec<u8>) -> Result<T, Failure> {
    result.map(|(message, _)| message).map_err(|e| Failure::Garbage(e, bytes))
}
