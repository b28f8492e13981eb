//! SOCKS wire formats.
//!
//! Contract, as in smoltcp's `wire`: **parsing never panics** on any input;
//! it returns [`Error::Truncated`] when more bytes are needed (a stream
//! reader may wait for them) and [`Error::Malformed`] when the bytes can
//! never become valid. `emit` writes into a `Vec` and cannot fail.

pub mod auth;
pub mod socks4;
pub mod socks5;
pub mod udp;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why bytes could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The input ends before the message does; more bytes may complete it.
    Truncated,
    /// The input can never be a valid message; the reason names the field.
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated message"),
            Error::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Address types of RFC 1928 section 5.
pub mod atyp {
    pub const IPV4: u8 = 1;
    pub const DOMAIN: u8 = 3;
    pub const IPV6: u8 = 4;
}

/// A destination as SOCKS5 carries it: an address or a host name, plus a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    /// A host name of 1..=255 bytes, resolved by the proxy (ATYP 3).
    Domain(String, u16),
}

impl TargetAddr {
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(sa) => sa.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }

    /// `0.0.0.0:0`, what a client sends when it does not know an address yet.
    pub fn unspecified() -> TargetAddr {
        TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }

    /// Bytes [`emit`](Self::emit) writes: ATYP, address, port.
    pub fn encoded_len(&self) -> usize {
        match self {
            TargetAddr::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            TargetAddr::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            TargetAddr::Domain(name, _) => 1 + 1 + name.len() + 2,
        }
    }

    /// Writes ATYP, address and port. A v4-mapped IPv6 address is written
    /// as IPv4, since that is the host it names.
    ///
    /// Panics if a domain name is empty or longer than 255 bytes; callers
    /// build names through [`TargetAddr::domain`], which checks.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            TargetAddr::Ip(sa) => {
                match canonical_ip(sa.ip()) {
                    IpAddr::V4(ip) => {
                        out.push(atyp::IPV4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(atyp::IPV6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&sa.port().to_be_bytes());
            }
            TargetAddr::Domain(name, port) => {
                assert!(!name.is_empty() && name.len() <= 255, "domain length checked at construction");
                out.push(atyp::DOMAIN);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
    }

    /// A domain target, or `None` if the name cannot be carried (empty or
    /// over 255 bytes).
    pub fn domain(name: &str, port: u16) -> Option<TargetAddr> {
        (!name.is_empty() && name.len() <= 255).then(|| TargetAddr::Domain(name.to_owned(), port))
    }

    /// Parses ATYP, address and port; returns the address and bytes used.
    pub fn parse(buf: &[u8]) -> Result<(TargetAddr, usize), Error> {
        let (&kind, rest) = buf.split_first().ok_or(Error::Truncated)?;
        let (addr_len, skip) = match kind {
            atyp::IPV4 => (4, 0),
            atyp::IPV6 => (16, 0),
            atyp::DOMAIN => {
                let len = *rest.first().ok_or(Error::Truncated)? as usize;
                if len == 0 {
                    return Err(Error::Malformed("empty domain name"));
                }
                (len, 1)
            }
            _ => return Err(Error::Malformed("unknown address type")),
        };
        let total = 1 + skip + addr_len + 2;
        if buf.len() < total {
            return Err(Error::Truncated);
        }
        let addr = &buf[1 + skip..1 + skip + addr_len];
        let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
        let target = match kind {
            atyp::IPV4 => {
                let octets: [u8; 4] = addr.try_into().map_err(|_| Error::Truncated)?;
                TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
            }
            atyp::IPV6 => {
                let octets: [u8; 16] = addr.try_into().map_err(|_| Error::Truncated)?;
                TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            _ => {
                let name = std::str::from_utf8(addr).map_err(|_| Error::Malformed("domain name is not UTF-8"))?;
                TargetAddr::Domain(name.to_owned(), port)
            }
        };
        Ok((target, total))
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(sa) => write!(f, "{sa}"),
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// The longest SOCKS5 message that ends in an address: a reply (`VER REP
/// RSV ATYP`) or a UDP request header (`RSV RSV FRAG ATYP`), 4 bytes, then
/// the longest address, a host name (a length byte and 255 bytes), then
/// the 2-byte port: 4 + 1 + 255 + 2 = 262. A SOCKS4 reply (8) is shorter.
pub const MAX_HEADER_LEN: usize = 4 + 1 + 255 + 2;

/// A v4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_target_round_trips() {
        let t = TargetAddr::Ip("192.0.2.1:80".parse().unwrap());
        let mut out = Vec::new();
        t.emit(&mut out);
        assert_eq!(out, [1, 192, 0, 2, 1, 0, 80]);
        assert_eq!(TargetAddr::parse(&out), Ok((t, 7)));
    }

    #[test]
    fn ipv6_and_domain_round_trip() {
        for t in [TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()), TargetAddr::domain("example.org", 8080).unwrap()] {
            let mut out = Vec::new();
            t.emit(&mut out);
            assert_eq!(out.len(), t.encoded_len());
            assert_eq!(TargetAddr::parse(&out), Ok((t.clone(), out.len())));
        }
    }

    #[test]
    fn max_header_len_is_the_longest_reply_and_udp_header() {
        let longest = TargetAddr::domain(&"a".repeat(255), 65535).unwrap();
        let (mut reply, mut header) = (Vec::new(), Vec::new());
        socks5::Reply { code: socks5::ReplyCode::Succeeded, bound: longest.clone() }.emit(&mut reply);
        udp::UdpHeader::new(longest).emit(&mut header);
        assert_eq!((reply.len(), header.len()), (MAX_HEADER_LEN, MAX_HEADER_LEN));
    }

    #[test]
    fn v4_mapped_is_sent_as_ipv4() {
        let t = TargetAddr::Ip("[::ffff:127.0.0.1]:22".parse().unwrap());
        let mut out = Vec::new();
        t.emit(&mut out);
        assert_eq!(out, [1, 127, 0, 0, 1, 0, 22]);
    }

    #[test]
    fn every_prefix_is_truncated_and_bad_types_are_malformed() {
        let bytes = [3, 3, b'a', b'b', b'c', 0, 1];
        for n in 0..bytes.len() {
            assert_eq!(TargetAddr::parse(&bytes[..n]), Err(Error::Truncated), "prefix {n}");
        }
        assert_eq!(TargetAddr::parse(&[2, 0, 0]), Err(Error::Malformed("unknown address type")));
        assert_eq!(TargetAddr::parse(&[3, 0, 0, 0]), Err(Error::Malformed("empty domain name")));
        assert!(TargetAddr::domain("", 1).is_none());
        assert!(TargetAddr::domain(&"a".repeat(256), 1).is_none());
    }
}
