//! SOCKS5 messages of RFC 1928: the method greeting and selection (section
//! 3), the request (section 4) and the reply (section 6).

use super::{Error, TargetAddr};

pub const VERSION: u8 = 5;

/// Authentication methods (RFC 1928 section 3).
pub mod method {
    pub const NO_AUTH: u8 = 0x00;
    pub const GSSAPI: u8 = 0x01;
    pub const USER_PASS: u8 = 0x02;
    pub const NO_ACCEPTABLE: u8 = 0xff;
}

/// `VER NMETHODS METHODS...`: the client's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    pub fn parse(buf: &[u8]) -> Result<(Greeting, usize), Error> {
        let [ver, n, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("not SOCKS version 5"));
        }
        if n == 0 {
            return Err(Error::Malformed("no authentication methods offered"));
        }
        let end = 2 + n as usize;
        let methods = buf.get(2..end).ok_or(Error::Truncated)?;
        Ok((Greeting { methods: methods.to_vec() }, end))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        assert!(!self.methods.is_empty() && self.methods.len() <= 255);
        out.extend_from_slice(&[VERSION, self.methods.len() as u8]);
        out.extend_from_slice(&self.methods);
    }
}

/// `VER METHOD`: the server's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSelection {
    pub method: u8,
}

impl MethodSelection {
    pub const LEN: usize = 2;

    pub fn parse(buf: &[u8]) -> Result<(MethodSelection, usize), Error> {
        let [ver, method, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("method selection is not SOCKS version 5"));
        }
        Ok((MethodSelection { method }, Self::LEN))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.method]);
    }
}

/// Request commands (RFC 1928 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    pub fn code(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Command> {
        match code {
            1 => Some(Command::Connect),
            2 => Some(Command::Bind),
            3 => Some(Command::UdpAssociate),
            _ => None,
        }
    }
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT`.
///
/// The command is kept as its raw code so that a server can answer an
/// unknown one with "command not supported" instead of dropping the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: u8,
    pub dst: TargetAddr,
}

impl Request {
    pub fn new(command: Command, dst: TargetAddr) -> Request {
        Request { command: command.code(), dst }
    }

    pub fn parse(buf: &[u8]) -> Result<(Request, usize), Error> {
        let [ver, command, _rsv, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("request is not SOCKS version 5"));
        }
        let (dst, used) = TargetAddr::parse(&buf[3..])?;
        Ok((Request { command, dst }, 3 + used))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command, 0]);
        self.dst.emit(out);
    }
}

/// The `REP` field (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    Succeeded,
    GeneralFailure,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
    /// X'09' to X'FF', unassigned by the RFC.
    Unassigned(u8),
}

impl ReplyCode {
    pub fn code(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0,
            ReplyCode::GeneralFailure => 1,
            ReplyCode::NotAllowed => 2,
            ReplyCode::NetworkUnreachable => 3,
            ReplyCode::HostUnreachable => 4,
            ReplyCode::ConnectionRefused => 5,
            ReplyCode::TtlExpired => 6,
            ReplyCode::CommandNotSupported => 7,
            ReplyCode::AddressTypeNotSupported => 8,
            ReplyCode::Unassigned(code) => code,
        }
    }

    pub fn from_code(code: u8) -> ReplyCode {
        match code {
            0 => ReplyCode::Succeeded,
            1 => ReplyCode::GeneralFailure,
            2 => ReplyCode::NotAllowed,
            3 => ReplyCode::NetworkUnreachable,
            4 => ReplyCode::HostUnreachable,
            5 => ReplyCode::ConnectionRefused,
            6 => ReplyCode::TtlExpired,
            7 => ReplyCode::CommandNotSupported,
            8 => ReplyCode::AddressTypeNotSupported,
            other => ReplyCode::Unassigned(other),
        }
    }

    /// The RFC's wording, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
            ReplyCode::Unassigned(_) => "unassigned reply code",
        }
    }

    /// The errno a program expects from `connect` for this reply
    /// (SPEC.md, "Failure semantics").
    pub fn errno(self) -> i32 {
        // Values from Linux's errno.h; this crate stays free of libc.
        const ECONNREFUSED: i32 = 111;
        const ENETUNREACH: i32 = 101;
        const EHOSTUNREACH: i32 = 113;
        const ETIMEDOUT: i32 = 110;
        const EOPNOTSUPP: i32 = 95;
        const EAFNOSUPPORT: i32 = 97;
        const EACCES: i32 = 13;
        match self {
            ReplyCode::Succeeded => 0,
            ReplyCode::NotAllowed => EACCES,
            ReplyCode::NetworkUnreachable => ENETUNREACH,
            ReplyCode::HostUnreachable => EHOSTUNREACH,
            ReplyCode::ConnectionRefused => ECONNREFUSED,
            ReplyCode::TtlExpired => ETIMEDOUT,
            ReplyCode::CommandNotSupported => EOPNOTSUPP,
            ReplyCode::AddressTypeNotSupported => EAFNOSUPPORT,
            ReplyCode::GeneralFailure | ReplyCode::Unassigned(_) => ECONNREFUSED,
        }
    }
}

/// `VER REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bound: TargetAddr,
}

impl Reply {
    /// Bytes a reader can always take without reading past the reply:
    /// `VER REP RSV ATYP` plus the first address byte.
    pub const MIN_LEN: usize = 5;

    pub fn parse(buf: &[u8]) -> Result<(Reply, usize), Error> {
        let [ver, code, _rsv, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("reply is not SOCKS version 5"));
        }
        let (bound, used) = TargetAddr::parse(&buf[3..])?;
        Ok((Reply { code: ReplyCode::from_code(code), bound }, 3 + used))
    }

    /// Total length of the reply whose first [`MIN_LEN`](Self::MIN_LEN)
    /// bytes are `head`, so a reader never consumes bytes after it.
    pub fn total_len(head: &[u8]) -> Result<usize, Error> {
        let [_, _, _, kind, first, ..] = *head else { return Err(Error::Truncated) };
        match kind {
            super::atyp::IPV4 => Ok(4 + 4 + 2),
            super::atyp::IPV6 => Ok(4 + 16 + 2),
            super::atyp::DOMAIN if first > 0 => Ok(4 + 1 + first as usize + 2),
            super::atyp::DOMAIN => Err(Error::Malformed("empty domain name")),
            _ => Err(Error::Malformed("unknown address type")),
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.code.code(), 0]);
        self.bound.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_from_rfc() {
        let bytes = [5, 2, 0, 2];
        let (g, n) = Greeting::parse(&bytes).unwrap();
        assert_eq!((g.methods.as_slice(), n), (&[0u8, 2][..], 4));
        let mut out = Vec::new();
        g.emit(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(Greeting::parse(&[5, 2, 0]), Err(Error::Truncated));
        assert_eq!(Greeting::parse(&[4, 1, 0]), Err(Error::Malformed("not SOCKS version 5")));
        assert!(matches!(Greeting::parse(&[5, 0]), Err(Error::Malformed(_))));
    }

    #[test]
    fn connect_request_to_domain() {
        let bytes = [5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', b'g', 0x01, 0xbb];
        let (req, n) = Request::parse(&bytes).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(req, Request::new(Command::Connect, TargetAddr::domain("example.org", 443).unwrap()));
        let mut out = Vec::new();
        req.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn every_reply_code_maps_to_an_errno() {
        let expected = [(0, 0), (1, 111), (2, 13), (3, 101), (4, 113), (5, 111), (6, 110), (7, 95), (8, 97), (9, 111), (255, 111)];
        for (code, errno) in expected {
            let rc = ReplyCode::from_code(code);
            assert_eq!(rc.code(), code);
            assert_eq!(rc.errno(), errno, "reply {code}");
            let bytes = [5, code, 0, 1, 10, 0, 0, 1, 0x04, 0x38];
            let (reply, n) = Reply::parse(&bytes).unwrap();
            assert_eq!((reply.code, n), (rc, 10));
            assert_eq!(Reply::total_len(&bytes[..5]), Ok(10));
        }
    }

    #[test]
    fn reply_lengths_never_read_past_the_reply() {
        assert_eq!(Reply::total_len(&[5, 0, 0, 4, 0]), Ok(22));
        assert_eq!(Reply::total_len(&[5, 0, 0, 3, 3]), Ok(10));
        assert!(Reply::total_len(&[5, 0, 0, 3, 0]).is_err());
        assert!(Reply::total_len(&[5, 0, 0, 9, 0]).is_err());
        assert_eq!(Reply::total_len(&[5, 0, 0, 1]), Err(Error::Truncated));
        // Bytes after the reply belong to the program, not to the parser.
        let bytes = [5, 0, 0, 1, 127, 0, 0, 1, 0, 80, b'S', b'S', b'H'];
        assert_eq!(Reply::parse(&bytes).unwrap().1, 10);
    }

    #[test]
    fn oversized_and_wrong_version_replies() {
        assert!(matches!(Reply::parse(&[4, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Err(Error::Malformed(_))));
        assert_eq!(MethodSelection::parse(&[5]), Err(Error::Truncated));
        assert!(matches!(MethodSelection::parse(&[1, 0]), Err(Error::Malformed(_))));
    }
}
