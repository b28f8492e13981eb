//! The client side of a SOCKS handshake, sans I/O.
//!
//! [`ClientHandshake::start`] returns the whole first flight: for SOCKS5 the
//! greeting, the RFC 1929 credentials when we have them, and the request,
//! pipelined, because we offer exactly one method and so know the server's
//! answer in advance. A no-auth CONNECT therefore costs one round trip.
//!
//! The driver then reads at most [`wanted`](ClientHandshake::wanted) bytes
//! at a time and [`feed`](ClientHandshake::feed)s them in. `wanted` never
//! reaches past the end of the handshake, so bytes the destination sends
//! right after the reply (an SSH or SMTP banner) stay in the socket for the
//! program.

use crate::wire::auth::{AuthReply, AuthRequest};
use crate::wire::socks4::{self, Reply4, Request4};
use crate::wire::socks5::{method, Command, Greeting, MethodSelection, Reply, ReplyCode, Request};
use crate::wire::{self, TargetAddr};
use std::fmt;

/// Username and password for RFC 1929.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub pass: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <password>)", String::from_utf8_lossy(&self.user))
    }
}

/// Why a handshake failed. Each maps to the errno the program sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The proxy answered with bytes that are not the protocol.
    Garbage(wire::Error),
    /// The proxy accepts none of the methods we offered.
    NoAcceptableMethod,
    /// The proxy picked a method we did not offer.
    UnexpectedMethod(u8),
    /// Username/password rejected (RFC 1929 status).
    AuthFailed(u8),
    /// The request was refused with this SOCKS5 reply code.
    Rejected(ReplyCode),
    /// SOCKS4 request rejected with this code (91..=93).
    Rejected4(u8),
    /// The destination cannot be expressed in this protocol (IPv6 over SOCKS4).
    Unsupported(&'static str),
}

impl HandshakeError {
    pub fn errno(&self) -> i32 {
        const ECONNREFUSED: i32 = 111;
        const EACCES: i32 = 13;
        const EPROTO: i32 = 71;
        const EAFNOSUPPORT: i32 = 97;
        match self {
            HandshakeError::Garbage(_) | HandshakeError::UnexpectedMethod(_) => EPROTO,
            HandshakeError::NoAcceptableMethod | HandshakeError::AuthFailed(_) => EACCES,
            HandshakeError::Rejected(code) => code.errno(),
            HandshakeError::Rejected4(_) => ECONNREFUSED,
            HandshakeError::Unsupported(_) => EAFNOSUPPORT,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Garbage(e) => write!(f, "proxy sent a {e}"),
            HandshakeError::NoAcceptableMethod => f.write_str("proxy accepts none of our authentication methods"),
            HandshakeError::UnexpectedMethod(m) => write!(f, "proxy chose method {m:#04x}, which we did not offer"),
            HandshakeError::AuthFailed(s) => write!(f, "proxy rejected the username/password (status {s})"),
            HandshakeError::Rejected(code) => write!(f, "proxy replied: {} ({})", code.describe(), code.code()),
            HandshakeError::Rejected4(code) => write!(f, "SOCKS4 request rejected (code {code})"),
            HandshakeError::Unsupported(why) => f.write_str(why),
        }
    }
}

impl From<wire::Error> for HandshakeError {
    fn from(e: wire::Error) -> Self {
        HandshakeError::Garbage(e)
    }
}

/// The longest server answer buffered at once: a reply with a 255-byte
/// name (the method selection and auth reply are consumed before it).
const MAX_REPLY: usize = 4 + 1 + 255 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    MethodSelection,
    AuthReply,
    /// The fixed head of the reply, then the rest once its length is known.
    ReplyHead,
    ReplyRest(usize),
    Reply4,
    Done,
}

/// A client handshake in progress.
#[derive(Debug)]
pub struct ClientHandshake {
    stage: Stage,
    with_auth: bool,
    input: Vec<u8>,
}

/// Which protocol to speak to one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    Socks5 {
        credentials: Option<Credentials>,
    },
    /// SOCKS4, or SOCKS4a when the destination is a name.
    Socks4 {
        user_id: Vec<u8>,
    },
}

impl ClientHandshake {
    /// Starts a handshake; returns the state machine and the bytes to send.
    pub fn start(dialect: &Dialect, command: Command, dst: &TargetAddr) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let mut out = Vec::with_capacity(64);
        match dialect {
            Dialect::Socks5 { credentials } => {
                let offered = if credentials.is_some() { method::USER_PASS } else { method::NO_AUTH };
                Greeting { methods: vec![offered] }.emit(&mut out);
                if let Some(c) = credentials {
                    AuthRequest { user: c.user.clone(), pass: c.pass.clone() }.emit(&mut out);
                }
                Request::new(command, dst.clone()).emit(&mut out);
                let hs = ClientHandshake {
                    stage: Stage::MethodSelection,
                    with_auth: credentials.is_some(),
                    input: Vec::with_capacity(MAX_REPLY),
                };
                Ok((hs, out))
            }
            Dialect::Socks4 { user_id } => {
                let code = match command {
                    Command::Connect => socks4::CONNECT,
                    Command::Bind => socks4::BIND,
                    Command::UdpAssociate => return Err(HandshakeError::Unsupported("SOCKS4 has no UDP")),
                };
                let dst = match dst {
                    TargetAddr::Ip(sa) => match wire::canonical_ip(sa.ip()) {
                        std::net::IpAddr::V4(ip) => TargetAddr::Ip((ip, sa.port()).into()),
                        std::net::IpAddr::V6(_) => return Err(HandshakeError::Unsupported("SOCKS4 cannot reach an IPv6 address")),
                    },
                    name => name.clone(),
                };
                Request4 { command: code, user_id: user_id.clone(), dst }.emit(&mut out);
                Ok((ClientHandshake { stage: Stage::Reply4, with_auth: false, input: Vec::with_capacity(MAX_REPLY) }, out))
            }
        }
    }

    /// How many bytes to read next; 0 once done. Never past the handshake.
    ///
    /// Because the first flight was pipelined, the proxy's answers to it
    /// arrive back to back, and a successful handshake is at least the
    /// method selection, the auth reply (with credentials) and a reply
    /// head: so that much can be asked for in one read. A failing proxy
    /// sends less and hangs up; what did arrive is still judged.
    pub fn wanted(&self) -> usize {
        let ahead = match self.stage {
            Stage::MethodSelection => MethodSelection::LEN + if self.with_auth { AuthReply::LEN } else { 0 } + Reply::MIN_LEN,
            Stage::AuthReply => AuthReply::LEN + Reply::MIN_LEN,
            Stage::ReplyHead => Reply::MIN_LEN,
            Stage::ReplyRest(total) => total,
            Stage::Reply4 => Reply4::LEN,
            Stage::Done => return 0,
        };
        ahead - self.input.len()
    }

    /// Bytes the current stage needs in `self.input` before it can be judged.
    fn stage_len(&self) -> usize {
        match self.stage {
            Stage::MethodSelection => MethodSelection::LEN,
            Stage::AuthReply => AuthReply::LEN,
            Stage::ReplyHead => Reply::MIN_LEN,
            Stage::ReplyRest(total) => total,
            Stage::Reply4 => Reply4::LEN,
            Stage::Done => 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes bytes read from the proxy (at most [`wanted`](Self::wanted)).
    /// Returns the server's bound address once the handshake succeeded,
    /// `None` while more bytes are needed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<TargetAddr>, HandshakeError> {
        assert!(bytes.len() <= self.wanted(), "driver read past the handshake");
        self.input.extend_from_slice(bytes);
        while self.stage != Stage::Done && self.input.len() >= self.stage_len() {
            if let Some(bound) = self.step()? {
                return Ok(Some(bound));
            }
        }
        Ok(None)
    }

    /// Judges the current stage, whose bytes start `self.input`; later
    /// stages' bytes stay there.
    fn step(&mut self) -> Result<Option<TargetAddr>, HandshakeError> {
        let len = self.stage_len();
        let input = &self.input[..len];
        let mut consumed = len;
        match self.stage {
            Stage::MethodSelection => {
                let (sel, _) = MethodSelection::parse(input)?;
                let offered = if self.with_auth { method::USER_PASS } else { method::NO_AUTH };
                self.stage = match sel.method {
                    m if m == offered && self.with_auth => Stage::AuthReply,
                    m if m == offered => Stage::ReplyHead,
                    method::NO_ACCEPTABLE => return Err(HandshakeError::NoAcceptableMethod),
                    other => return Err(HandshakeError::UnexpectedMethod(other)),
                };
            }
            Stage::AuthReply => {
                let (reply, _) = AuthReply::parse(input)?;
                if !reply.succeeded() {
                    return Err(HandshakeError::AuthFailed(reply.status));
                }
                self.stage = Stage::ReplyHead;
            }
            Stage::ReplyHead => {
                // Check version and code before trusting the length field.
                if input[0] != crate::wire::socks5::VERSION {
                    return Err(wire::Error::Malformed("reply is not SOCKS version 5").into());
                }
                let code = ReplyCode::from_code(input[1]);
                if code != ReplyCode::Succeeded {
                    return Err(HandshakeError::Rejected(code));
                }
                self.stage = Stage::ReplyRest(Reply::total_len(input)?);
                consumed = 0; // the whole reply is parsed at once, head included
            }
            Stage::ReplyRest(_) => {
                let (reply, _) = Reply::parse(input)?;
                self.stage = Stage::Done;
                return Ok(Some(reply.bound));
            }
            Stage::Reply4 => {
                let (reply, _) = Reply4::parse(input)?;
                if reply.code != socks4::GRANTED {
                    return Err(HandshakeError::Rejected4(reply.code));
                }
                self.stage = Stage::Done;
                return Ok(Some(TargetAddr::Ip((reply.ip, reply.port).into())));
            }
            Stage::Done => {}
        }
        self.input.drain(..consumed);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::socks5::method;

    fn connect_to(dst: &str) -> TargetAddr {
        TargetAddr::Ip(dst.parse().unwrap())
    }

    /// Feeds `server` bytes in chunks of `wanted()`, as the shim's driver does.
    fn drive(hs: &mut ClientHandshake, server: &[u8]) -> (Result<Option<TargetAddr>, HandshakeError>, usize) {
        let mut at = 0;
        loop {
            let n = hs.wanted().min(server.len() - at);
            if n == 0 {
                return (Ok(None), at);
            }
            match hs.feed(&server[at..at + n]) {
                Ok(None) => at += n,
                other => return (other, at + n),
            }
        }
    }

    #[test]
    fn no_auth_connect_is_one_flight() {
        let (mut hs, out) =
            ClientHandshake::start(&Dialect::Socks5 { credentials: None }, Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        assert_eq!(out, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0, 80]);
        let server = [5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'b', b'a', b'n', b'n', b'e', b'r'];
        let (res, used) = drive(&mut hs, &server);
        assert_eq!(res, Ok(Some(connect_to("10.0.0.1:8080"))));
        assert_eq!(used, 12, "the banner after the reply is left for the program");
        assert!(hs.is_done());
        assert_eq!(hs.wanted(), 0);
        let (mut hs, _) =
            ClientHandshake::start(&Dialect::Socks5 { credentials: None }, Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        assert_eq!(hs.wanted(), 7, "method selection and reply head in one read");
        assert_eq!(hs.feed(&server[..7]), Ok(None));
        assert_eq!(hs.wanted(), 5, "then the rest of an IPv4 reply");
    }

    #[test]
    fn auth_is_pipelined_and_checked() {
        let creds = Credentials { user: b"alice".to_vec(), pass: b"pw".to_vec() };
        let dialect = Dialect::Socks5 { credentials: Some(creds) };
        let dst = TargetAddr::domain("intranet.example", 443).unwrap();
        let (mut hs, out) = ClientHandshake::start(&dialect, Command::Connect, &dst).unwrap();
        assert_eq!(&out[..3], &[5, 1, method::USER_PASS]);
        assert_eq!(&out[3..13], &[1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w']);
        assert_eq!(&out[13..17], &[5, 1, 0, 3]);
        let mut ok = vec![5, 2, 1, 0, 5, 0, 0, 4];
        ok.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        ok.extend_from_slice(&[0, 1]);
        assert_eq!(drive(&mut hs, &ok).0, Ok(Some(connect_to("[::1]:1"))));

        let (mut hs, _) = ClientHandshake::start(&dialect, Command::Connect, &dst).unwrap();
        assert_eq!(drive(&mut hs, &[5, 2, 1, 1]).0, Err(HandshakeError::AuthFailed(1)));
        let (mut hs, _) = ClientHandshake::start(&dialect, Command::Connect, &dst).unwrap();
        assert_eq!(drive(&mut hs, &[5, 0xff]).0, Err(HandshakeError::NoAcceptableMethod));
        let (mut hs, _) = ClientHandshake::start(&dialect, Command::Connect, &dst).unwrap();
        assert_eq!(drive(&mut hs, &[5, 0]).0, Err(HandshakeError::UnexpectedMethod(0)));
    }

    #[test]
    fn every_failure_reply_is_reported_with_its_errno() {
        for code in 1..=255u8 {
            let (mut hs, _) =
                ClientHandshake::start(&Dialect::Socks5 { credentials: None }, Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
            let (res, used) = drive(&mut hs, &[5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
            let err = res.unwrap_err();
            assert_eq!(err, HandshakeError::Rejected(ReplyCode::from_code(code)));
            assert_eq!(err.errno(), ReplyCode::from_code(code).errno());
            assert_eq!(used, 7, "a failed reply is not read further");
        }
    }

    #[test]
    fn garbage_is_eproto() {
        let (mut hs, _) =
            ClientHandshake::start(&Dialect::Socks5 { credentials: None }, Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        let err = drive(&mut hs, b"HTTP/1.1 400 Bad Request\r\n").0.unwrap_err();
        assert_eq!(err.errno(), 71);
        let (mut hs, _) =
            ClientHandshake::start(&Dialect::Socks5 { credentials: None }, Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        assert!(matches!(drive(&mut hs, &[5, 0, 5, 0, 0, 9, 0]).0, Err(HandshakeError::Garbage(_))));
    }

    #[test]
    fn socks4a_sends_the_name() {
        let dialect = Dialect::Socks4 { user_id: b"u".to_vec() };
        let (mut hs, out) = ClientHandshake::start(&dialect, Command::Connect, &TargetAddr::domain("h", 80).unwrap()).unwrap();
        assert_eq!(out, [4, 1, 0, 80, 0, 0, 0, 1, b'u', 0, b'h', 0]);
        assert_eq!(drive(&mut hs, &[0, 90, 0, 0, 0, 0, 0, 0]).0, Ok(Some(connect_to("0.0.0.0:0"))));
        let (mut hs, _) = ClientHandshake::start(&dialect, Command::Connect, &connect_to("1.2.3.4:5")).unwrap();
        assert_eq!(drive(&mut hs, &[0, 91, 0, 0, 0, 0, 0, 0]).0, Err(HandshakeError::Rejected4(91)));
        assert!(ClientHandshake::start(&dialect, Command::Connect, &connect_to("[2001:db8::1]:5")).is_err());
    }
}
