//! The client side of a SOCKS handshake, sans I/O.
//!
//! RFC 1928 is a lock-step exchange, and that is the default here: the
//! greeting goes out alone, and each later message (RFC 1929 credentials,
//! the request) is sent only once the server has answered the one before.
//! Servers that read "one message per `recv`" (microsocks, and many small
//! ones) drop bytes that arrive ahead of their turn and then wait forever.
//!
//! [`Dialect::Socks5`]'s `pipeline` flag is the opt-in for servers known to
//! cope (Dante, Tor, OpenSSH, our own server): greeting, credentials and
//! request then go out in one flight, because with exactly one method
//! offered the server's answer is known in advance, and a no-auth CONNECT
//! costs one round trip.
//!
//! The driver sends what [`ClientHandshake::start`] returns, then reads at
//! most [`wanted`](ClientHandshake::wanted) bytes at a time and
//! [`feed`](ClientHandshake::feed)s them in; `feed` says whether to read
//! more, send the next message, or stop. `wanted` never reaches past the
//! end of the current server message (nor, pipelined, past the end of the
//! handshake), so bytes the destination sends right after the reply (an SSH
//! or SMTP banner) stay in the socket for the program.

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

/// The shortest well-formed SOCKS5 reply: a one-byte name (an IPv4 reply
/// is 10 bytes). Asking for this much never reads past a reply, and takes
/// all but the last two bytes of the usual IPv4 reply in one read.
const SHORTEST_REPLY: usize = 4 + 1 + 1 + 2;

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

/// What the driver does after [`ClientHandshake::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Read more, at most [`ClientHandshake::wanted`] bytes.
    NeedMore,
    /// Send these bytes (the next message of the exchange), then read.
    Send(Vec<u8>),
    /// The handshake succeeded; the proxy's bound address (BND.ADDR/PORT).
    Done(TargetAddr),
}

/// Which server message a handshake is reading, for a driver that reports
/// each step (`socksify --check`): after a failed [`ClientHandshake::feed`],
/// the one that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The SOCKS5 method selection, the answer to the greeting.
    MethodSelection,
    /// The RFC 1929 status.
    AuthReply,
    /// The reply to the request (SOCKS5 or SOCKS4).
    Reply,
    /// Nothing: the handshake succeeded.
    Nothing,
}

const OFFER_NO_AUTH: &[u8] = &[method::NO_AUTH];
const OFFER_USER_PASS: &[u8] = &[method::USER_PASS];
const OFFER_BOTH: &[u8] = &[method::NO_AUTH, method::USER_PASS];

/// A client handshake in progress.
#[derive(Debug)]
pub struct ClientHandshake {
    stage: Stage,
    credentials: Option<Credentials>,
    /// The methods of the greeting (none for SOCKS4).
    offered: &'static [u8],
    /// The server's choice, once its method selection was read.
    chosen: Option<u8>,
    /// The request, held back until the server has chosen a method (and
    /// accepted the credentials). Empty when it went out with the greeting.
    request: Vec<u8>,
    pipelined: bool,
    input: Vec<u8>,
}

/// Which protocol to speak to one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    Socks5 {
        credentials: Option<Credentials>,
        /// Send greeting, credentials and request in one flight (opt-in:
        /// see the module comment).
        pipeline: bool,
    },
    /// SOCKS4, or SOCKS4a when the destination is a name.
    Socks4 { user_id: Vec<u8> },
}

impl ClientHandshake {
    /// Starts a handshake; returns the state machine and the bytes to send
    /// first: the greeting alone, or (pipelined) the whole first flight.
    pub fn start(dialect: &Dialect, command: Command, dst: &TargetAddr) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let mut out = Vec::with_capacity(64);
        match dialect {
            Dialect::Socks5 { credentials, pipeline } => {
                // Lock-step, credentials offer both methods, as curl does, and
                // the server's choice is followed; pipelined, the answer must
                // be known in advance, so exactly one method is offered.
                let offered = match (credentials.is_some(), pipeline) {
                    (false, _) => OFFER_NO_AUTH,
                    (true, true) => OFFER_USER_PASS,
                    (true, false) => OFFER_BOTH,
                };
                Greeting { methods: offered.to_vec() }.emit(&mut out);
                let mut request = Vec::with_capacity(32);
                Request::new(command, dst.clone()).emit(&mut request);
                if *pipeline {
                    if let Some(c) = credentials {
                        AuthRequest { user: c.user.clone(), pass: c.pass.clone() }.emit(&mut out);
                    }
                    out.append(&mut request);
                }
                let hs = ClientHandshake {
                    stage: Stage::MethodSelection,
                    credentials: credentials.clone(),
                    offered,
                    chosen: None,
                    request,
                    pipelined: *pipeline,
                    input: Vec::with_capacity(wire::MAX_HEADER_LEN),
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
                let hs = ClientHandshake {
                    stage: Stage::Reply4,
                    credentials: None,
                    offered: &[],
                    chosen: None,
                    request: Vec::new(),
                    pipelined: false,
                    input: Vec::with_capacity(Reply4::LEN),
                };
                Ok((hs, out))
            }
        }
    }

    /// How many bytes to read next; 0 once done. Never past the server's
    /// current message (pipelined: never past the handshake).
    pub fn wanted(&self) -> usize {
        let ahead = match self.stage {
            // Pipelined, the proxy's answers to the first flight arrive back
            // to back, and a successful handshake has at least the method
            // selection, the auth reply (with credentials) and a reply: so
            // much can be asked for in one read. A failing proxy sends less
            // and hangs up; what did arrive is still judged.
            Stage::MethodSelection if self.pipelined => {
                MethodSelection::LEN + if self.credentials.is_some() { AuthReply::LEN } else { 0 } + SHORTEST_REPLY
            }
            Stage::AuthReply if self.pipelined => AuthReply::LEN + SHORTEST_REPLY,
            Stage::MethodSelection => MethodSelection::LEN,
            Stage::AuthReply => AuthReply::LEN,
            Stage::ReplyHead => SHORTEST_REPLY,
            Stage::ReplyRest(total) => total,
            Stage::Reply4 => Reply4::LEN,
            Stage::Done => return 0,
        };
        ahead.saturating_sub(self.input.len())
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

    /// The server message being read (after a failed `feed`, the one that
    /// failed). For reports only: the driver needs [`wanted`](Self::wanted).
    pub fn awaiting(&self) -> Awaiting {
        match self.stage {
            Stage::MethodSelection => Awaiting::MethodSelection,
            Stage::AuthReply => Awaiting::AuthReply,
            Stage::ReplyHead | Stage::ReplyRest(_) | Stage::Reply4 => Awaiting::Reply,
            Stage::Done => Awaiting::Nothing,
        }
    }

    /// The methods the greeting offered (none for SOCKS4).
    pub fn offered(&self) -> &'static [u8] {
        self.offered
    }

    /// The method the server chose, once its selection was read (also when
    /// the choice failed the handshake).
    pub fn chosen(&self) -> Option<u8> {
        self.chosen
    }

    /// The bytes read and not yet accepted: after a failed `feed`, the
    /// server message that failed it (with, pipelined, what followed).
    pub fn received(&self) -> &[u8] {
        &self.input
    }

    /// Takes bytes read from the proxy (at most [`wanted`](Self::wanted))
    /// and says what to do next.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, HandshakeError> {
        assert!(bytes.len() <= self.wanted(), "driver read past the server's message");
        self.input.extend_from_slice(bytes);
        while self.stage != Stage::Done && self.input.len() >= self.stage_len() {
            match self.judge()? {
                Progress::NeedMore => {}
                done_or_send => return Ok(done_or_send),
            }
        }
        Ok(Progress::NeedMore)
    }

    /// The held-back message to send now, or nothing when it already went
    /// out with the first flight.
    fn next_message(&mut self, message: Vec<u8>) -> Progress {
        if self.pipelined {
            Progress::NeedMore
        } else {
            Progress::Send(message)
        }
    }

    /// Judges the current stage, whose bytes start `self.input`; later
    /// stages' bytes (pipelined) stay there.
    fn judge(&mut self) -> Result<Progress, HandshakeError> {
        let len = self.stage_len();
        let input = &self.input[..len];
        let mut consumed = len;
        let mut progress = Progress::NeedMore;
        match self.stage {
            Stage::MethodSelection => {
                let (sel, _) = MethodSelection::parse(input)?;
                self.chosen = Some(sel.method);
                let with_auth = self.credentials.is_some();
                match sel.method {
                    method::USER_PASS if with_auth => {
                        let c = self.credentials.as_ref().expect("with_auth");
                        let mut auth = Vec::with_capacity(3 + c.user.len() + c.pass.len());
                        AuthRequest { user: c.user.clone(), pass: c.pass.clone() }.emit(&mut auth);
                        progress = self.next_message(auth);
                        self.stage = Stage::AuthReply;
                    }
                    // Pipelined with credentials, no-auth was not offered.
                    method::NO_AUTH if !(with_auth && self.pipelined) => {
                        let request = std::mem::take(&mut self.request);
                        progress = self.next_message(request);
                        self.stage = Stage::ReplyHead;
                    }
                    method::NO_ACCEPTABLE => return Err(HandshakeError::NoAcceptableMethod),
                    other => return Err(HandshakeError::UnexpectedMethod(other)),
                }
            }
            Stage::AuthReply => {
                let (reply, _) = AuthReply::parse(input)?;
                if !reply.succeeded() {
                    return Err(HandshakeError::AuthFailed(reply.status));
                }
                let request = std::mem::take(&mut self.request);
                progress = self.next_message(request);
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
                return Ok(Progress::Done(reply.bound));
            }
            Stage::Reply4 => {
                let (reply, _) = Reply4::parse(input)?;
                if reply.code != socks4::GRANTED {
                    return Err(HandshakeError::Rejected4(reply.code));
                }
                self.stage = Stage::Done;
                return Ok(Progress::Done(TargetAddr::Ip((reply.ip, reply.port).into())));
            }
            Stage::Done => {}
        }
        self.input.drain(..consumed);
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::socks5::method;

    fn connect_to(dst: &str) -> TargetAddr {
        TargetAddr::Ip(dst.parse().unwrap())
    }

    fn socks5(credentials: Option<Credentials>, pipeline: bool) -> Dialect {
        Dialect::Socks5 { credentials, pipeline }
    }

    fn alice() -> Option<Credentials> {
        Some(Credentials { user: b"alice".to_vec(), pass: b"pw".to_vec() })
    }

    /// A lock-step server in a test: each entry is what the server expects
    /// to have read (all of it, nothing more) before it answers with the
    /// second half. Drives the handshake as the shim does (reads of at most
    /// `wanted()`), and returns the outcome, every message the client sent,
    /// and how many answer bytes it consumed.
    fn converse(
        hs_start: (ClientHandshake, Vec<u8>),
        script: &[(&[u8], &[u8])],
    ) -> (Result<Option<TargetAddr>, HandshakeError>, Vec<Vec<u8>>, usize) {
        let (mut hs, first) = hs_start;
        let mut sent = vec![first];
        let mut consumed = 0;
        for (expect, answer) in script {
            assert_eq!(sent.last().unwrap().as_slice(), *expect, "the client sent something else than the server waits for");
            let mut at = 0;
            loop {
                let n = hs.wanted().min(answer.len() - at);
                if n == 0 {
                    // The client wants more than this answer has: a server in
                    // lock-step would now wait forever, so that is a failure
                    // unless the answer is all there is.
                    consumed += at;
                    break;
                }
                match hs.feed(&answer[at..at + n]) {
                    Ok(Progress::NeedMore) => at += n,
                    Ok(Progress::Send(bytes)) => {
                        at += n;
                        assert_eq!(at, answer.len(), "the client answered before reading the whole message");
                        consumed += at;
                        sent.push(bytes);
                        break;
                    }
                    Ok(Progress::Done(bound)) => return (Ok(Some(bound)), sent, consumed + at + n),
                    Err(e) => return (Err(e), sent, consumed + at + n),
                }
            }
        }
        (Ok(None), sent, consumed)
    }

    #[test]
    fn no_auth_connect_is_lock_step() {
        let dst = connect_to("192.0.2.7:80");
        let start = ClientHandshake::start(&socks5(None, false), Command::Connect, &dst).unwrap();
        assert_eq!(start.1, [5, 1, 0], "the greeting goes out alone");
        let reply = [5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'b', b'a', b'n', b'n', b'e', b'r'];
        let (res, sent, used) = converse(start, &[(&[5, 1, 0], &[5, 0]), (&[5, 1, 0, 1, 192, 0, 2, 7, 0, 80], &reply)]);
        assert_eq!(res, Ok(Some(connect_to("10.0.0.1:8080"))));
        assert_eq!(sent.len(), 2);
        assert_eq!(used, 2 + 10, "the banner after the reply is left for the program");
    }

    #[test]
    fn the_request_waits_for_the_method_selection() {
        let (mut hs, _) = ClientHandshake::start(&socks5(None, false), Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        assert_eq!(hs.wanted(), 2, "exactly the method selection");
        assert_eq!(hs.feed(&[5]), Ok(Progress::NeedMore));
        assert_eq!(hs.wanted(), 1);
        assert!(matches!(hs.feed(&[0]), Ok(Progress::Send(_))));
        assert_eq!(hs.wanted(), SHORTEST_REPLY, "the reply is read no further than its shortest form");
    }

    #[test]
    fn auth_is_lock_step_and_checked() {
        let dst = TargetAddr::domain("intranet.example", 443).unwrap();
        let start = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        assert_eq!(start.1, [5, 2, method::NO_AUTH, method::USER_PASS], "both methods offered; the server chooses");
        let mut ok = vec![5, 0, 0, 4];
        ok.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        ok.extend_from_slice(&[0, 1]);
        let mut request = vec![5, 1, 0, 3, 16];
        request.extend_from_slice(b"intranet.example");
        request.extend_from_slice(&[1, 187]);
        let creds: &[u8] = &[1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'];
        let (res, sent, _) = converse(start, &[(&[5, 2, 0, 2], &[5, 2]), (creds, &[1, 0]), (&request, &ok)]);
        assert_eq!(res, Ok(Some(connect_to("[::1]:1"))));
        assert_eq!(sent.len(), 3);

        // A server that needs no authentication picks no-auth: no credentials sent.
        let start = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        let (res, sent, _) = converse(start, &[(&[5, 2, 0, 2], &[5, 0]), (&request, &ok)]);
        assert_eq!((res.is_ok(), sent.len()), (true, 2));

        let start = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        assert_eq!(converse(start, &[(&[5, 2, 0, 2], &[5, 2]), (creds, &[1, 1])]).0, Err(HandshakeError::AuthFailed(1)));
        let start = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        assert_eq!(converse(start, &[(&[5, 2, 0, 2], &[5, 0xff])]).0, Err(HandshakeError::NoAcceptableMethod));
        let start = ClientHandshake::start(&socks5(None, false), Command::Connect, &dst).unwrap();
        assert_eq!(converse(start, &[(&[5, 1, 0], &[5, 2])]).0, Err(HandshakeError::UnexpectedMethod(2)));
    }

    #[test]
    fn a_domain_reply_is_read_to_its_end_and_no_further() {
        for name_len in [1usize, 2, 3, 9, 255] {
            let start = ClientHandshake::start(&socks5(None, false), Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
            let mut reply = vec![5, 0, 0, 3, name_len as u8];
            reply.extend(std::iter::repeat_n(b'n', name_len));
            reply.extend_from_slice(&[0, 7]);
            let total = reply.len();
            reply.extend_from_slice(b"SSH-2.0-banner\r\n");
            let (res, _, used) = converse(start, &[(&[5, 1, 0], &[5, 0]), (&[5, 1, 0, 1, 192, 0, 2, 7, 0, 80], &reply)]);
            let name = "n".repeat(name_len);
            assert_eq!(res, Ok(Some(TargetAddr::Domain(name, 7))));
            assert_eq!(used, 2 + total, "name of {name_len}: the banner stays in the socket");
        }
    }

    #[test]
    fn pipelined_no_auth_connect_is_one_flight() {
        let dst = connect_to("192.0.2.7:80");
        let (mut hs, out) = ClientHandshake::start(&socks5(None, true), Command::Connect, &dst).unwrap();
        assert_eq!(out, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0, 80]);
        assert_eq!(hs.wanted(), 2 + SHORTEST_REPLY, "method selection and most of the reply in one read");
        let server = [5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'b', b'a', b'n', b'n', b'e', b'r'];
        assert_eq!(hs.feed(&server[..10]), Ok(Progress::NeedMore));
        assert_eq!(hs.wanted(), 2, "then the rest of an IPv4 reply");
        assert_eq!(hs.feed(&server[10..12]), Ok(Progress::Done(connect_to("10.0.0.1:8080"))));
        assert!(hs.is_done());
        assert_eq!(hs.wanted(), 0);
    }

    #[test]
    fn pipelined_auth_offers_one_method_and_sends_everything_at_once() {
        let dst = TargetAddr::domain("intranet.example", 443).unwrap();
        let (mut hs, out) = ClientHandshake::start(&socks5(alice(), true), Command::Connect, &dst).unwrap();
        assert_eq!(&out[..3], &[5, 1, method::USER_PASS]);
        assert_eq!(&out[3..13], &[1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w']);
        assert_eq!(&out[13..17], &[5, 1, 0, 3]);
        let mut ok = vec![5, 2, 1, 0, 5, 0, 0, 4];
        ok.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        ok.extend_from_slice(&[0, 1]);
        let mut at = 0;
        let res = loop {
            let n = hs.wanted();
            match hs.feed(&ok[at..at + n]).unwrap() {
                Progress::NeedMore => at += n,
                Progress::Done(b) => break b,
                Progress::Send(_) => panic!("pipelined: nothing is held back"),
            }
        };
        assert_eq!(res, connect_to("[::1]:1"));
        let (mut hs, _) = ClientHandshake::start(&socks5(alice(), true), Command::Connect, &dst).unwrap();
        assert_eq!(hs.feed(&[5, 0]), Err(HandshakeError::UnexpectedMethod(0)), "no-auth was not offered");
    }

    #[test]
    fn every_failure_reply_is_reported_with_its_errno() {
        for code in 1..=255u8 {
            let start = ClientHandshake::start(&socks5(None, false), Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
            let (res, _, used) =
                converse(start, &[(&[5, 1, 0], &[5, 0]), (&[5, 1, 0, 1, 192, 0, 2, 7, 0, 80], &[5, code, 0, 1, 0, 0, 0, 0, 0, 0])]);
            let err = res.unwrap_err();
            assert_eq!(err, HandshakeError::Rejected(ReplyCode::from_code(code)));
            assert_eq!(err.errno(), ReplyCode::from_code(code).errno());
            assert_eq!(used, 2 + SHORTEST_REPLY, "a failed reply is not read further");
        }
    }

    #[test]
    fn garbage_is_eproto() {
        let (mut hs, _) = ClientHandshake::start(&socks5(None, false), Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        let err = hs.feed(b"HT").unwrap_err();
        assert_eq!(err.errno(), 71);
        let start = ClientHandshake::start(&socks5(None, false), Command::Connect, &connect_to("192.0.2.7:80")).unwrap();
        let res = converse(start, &[(&[5, 1, 0], &[5, 0]), (&[5, 1, 0, 1, 192, 0, 2, 7, 0, 80], &[5, 0, 0, 9, 0, 0, 0, 0])]).0;
        assert!(matches!(res, Err(HandshakeError::Garbage(_))), "{res:?}");
    }

    #[test]
    fn each_step_can_be_reported() {
        let dst = connect_to("192.0.2.7:80");
        let (mut hs, _) = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        assert_eq!((hs.offered(), hs.chosen(), hs.awaiting()), (&[0u8, 2][..], None, Awaiting::MethodSelection));
        assert!(matches!(hs.feed(&[5, 2]), Ok(Progress::Send(_))));
        assert_eq!((hs.chosen(), hs.awaiting()), (Some(method::USER_PASS), Awaiting::AuthReply));
        assert_eq!(hs.feed(&[1, 1]), Err(HandshakeError::AuthFailed(1)));
        assert_eq!((hs.awaiting(), hs.received()), (Awaiting::AuthReply, &[1u8, 1][..]), "the failed step and its bytes");

        // The server picks no-auth: the credentials are skipped.
        let (mut hs, _) = ClientHandshake::start(&socks5(alice(), false), Command::Connect, &dst).unwrap();
        assert!(matches!(hs.feed(&[5, 0]), Ok(Progress::Send(_))));
        assert_eq!((hs.chosen(), hs.awaiting()), (Some(method::NO_AUTH), Awaiting::Reply));
        assert_eq!(hs.feed(&[5, 0, 0, 1, 10, 0, 0, 1]), Ok(Progress::NeedMore));
        assert_eq!(hs.feed(&[0, 1]), Ok(Progress::Done(connect_to("10.0.0.1:1"))));
        assert_eq!(hs.awaiting(), Awaiting::Nothing);

        // Not SOCKS: what came is kept for the report.
        let (mut hs, _) = ClientHandshake::start(&socks5(None, false), Command::Connect, &dst).unwrap();
        assert!(matches!(hs.feed(b"SS"), Err(HandshakeError::Garbage(_))));
        assert_eq!((hs.chosen(), hs.awaiting(), hs.received()), (None, Awaiting::MethodSelection, &b"SS"[..]));

        let (hs, _) = ClientHandshake::start(&Dialect::Socks4 { user_id: vec![] }, Command::Connect, &dst).unwrap();
        assert_eq!((hs.offered(), hs.awaiting()), (&[][..], Awaiting::Reply));
    }

    #[test]
    fn socks4a_sends_the_name() {
        let dialect = Dialect::Socks4 { user_id: b"u".to_vec() };
        let (mut hs, out) = ClientHandshake::start(&dialect, Command::Connect, &TargetAddr::domain("h", 80).unwrap()).unwrap();
        assert_eq!(out, [4, 1, 0, 80, 0, 0, 0, 1, b'u', 0, b'h', 0]);
        assert_eq!(hs.wanted(), 8);
        assert_eq!(hs.feed(&[0, 90, 0, 0, 0, 0, 0, 0]), Ok(Progress::Done(connect_to("0.0.0.0:0"))));
        let (mut hs, _) = ClientHandshake::start(&dialect, Command::Connect, &connect_to("1.2.3.4:5")).unwrap();
        assert_eq!(hs.feed(&[0, 91, 0, 0, 0, 0, 0, 0]), Err(HandshakeError::Rejected4(91)));
        assert!(ClientHandshake::start(&dialect, Command::Connect, &connect_to("[2001:db8::1]:5")).is_err());
    }
}
