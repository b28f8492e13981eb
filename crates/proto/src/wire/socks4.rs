//! SOCKS4 and SOCKS4a: `VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL]`,
//! replies `VN(0) CD DSTPORT DSTIP`.

use super::{Error, TargetAddr};
use std::net::{Ipv4Addr, SocketAddr};

pub const VERSION: u8 = 4;
pub const CONNECT: u8 = 1;
pub const BIND: u8 = 2;
/// Reply codes.
pub const GRANTED: u8 = 90;
pub const REJECTED: u8 = 91;

/// Longest user id or host name we accept, so a client cannot make a
/// server buffer without bound while it waits for the NUL.
pub const MAX_FIELD: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request4 {
    pub command: u8,
    pub user_id: Vec<u8>,
    /// The IP address, or for SOCKS4a (`0.0.0.x`, x ≠ 0) the host name.
    pub dst: TargetAddr,
}

impl Request4 {
    pub fn parse(buf: &[u8]) -> Result<(Request4, usize), Error> {
        let [ver, command, p0, p1, a, b, c, d, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("not SOCKS version 4"));
        }
        let port = u16::from_be_bytes([p0, p1]);
        let (user_id, mut used) = nul_terminated(&buf[8..])?;
        used += 8;
        let ip = Ipv4Addr::new(a, b, c, d);
        let dst = if a == 0 && b == 0 && c == 0 && d != 0 {
            let (name, n) = nul_terminated(&buf[used..])?;
            used += n;
            let name = std::str::from_utf8(name).map_err(|_| Error::Malformed("host name is not UTF-8"))?;
            TargetAddr::domain(name, port).ok_or(Error::Malformed("empty host name"))?
        } else {
            TargetAddr::Ip(SocketAddr::new(ip.into(), port))
        };
        Ok((Request4 { command, user_id: user_id.to_vec(), dst }, used))
    }

    /// Panics on a destination SOCKS4 cannot carry (an IPv6 address).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command]);
        out.extend_from_slice(&self.dst.port().to_be_bytes());
        match &self.dst {
            TargetAddr::Ip(SocketAddr::V4(sa)) => out.extend_from_slice(&sa.ip().octets()),
            TargetAddr::Domain(..) => out.extend_from_slice(&[0, 0, 0, 1]),
            TargetAddr::Ip(SocketAddr::V6(_)) => panic!("SOCKS4 cannot carry IPv6"),
        }
        out.extend_from_slice(&self.user_id);
        out.push(0);
        if let TargetAddr::Domain(name, _) = &self.dst {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
    }
}

fn nul_terminated(buf: &[u8]) -> Result<(&[u8], usize), Error> {
    match buf.iter().take(MAX_FIELD + 1).position(|&b| b == 0) {
        Some(end) => Ok((&buf[..end], end + 1)),
        None if buf.len() > MAX_FIELD => Err(Error::Malformed("field longer than 255 bytes")),
        None => Err(Error::Truncated),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply4 {
    pub code: u8,
    pub port: u16,
    pub ip: Ipv4Addr,
}

impl Reply4 {
    pub const LEN: usize = 8;

    pub fn parse(buf: &[u8]) -> Result<(Reply4, usize), Error> {
        let [ver, code, p0, p1, a, b, c, d, ..] = *buf else { return Err(Error::Truncated) };
        if ver != 0 {
            return Err(Error::Malformed("SOCKS4 reply version is not 0"));
        }
        Ok((Reply4 { code, port: u16::from_be_bytes([p0, p1]), ip: Ipv4Addr::new(a, b, c, d) }, Self::LEN))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, self.code]);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks4_and_4a_requests() {
        let v4 = [4, 1, 0, 80, 192, 0, 2, 1, b'b', b'o', b'b', 0];
        let (r, n) = Request4::parse(&v4).unwrap();
        assert_eq!((r.dst, n), (TargetAddr::Ip("192.0.2.1:80".parse().unwrap()), 12));
        let v4a = [4, 1, 0, 80, 0, 0, 0, 7, 0, b'h', b'o', b's', b't', 0];
        let (r, n) = Request4::parse(&v4a).unwrap();
        assert_eq!((r.dst.clone(), n), (TargetAddr::domain("host", 80).unwrap(), 14));
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(Request4::parse(&out).unwrap().0, r);
        for k in 0..v4a.len() {
            assert_eq!(Request4::parse(&v4a[..k]), Err(Error::Truncated));
        }
        let long = [&[4u8, 1, 0, 80, 1, 2, 3, 4][..], &[b'x'; 300]].concat();
        assert!(matches!(Request4::parse(&long), Err(Error::Malformed(_))));
    }

    #[test]
    fn reply() {
        let (r, _) = Reply4::parse(&[0, 90, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(r.code, GRANTED);
        assert!(Reply4::parse(&[4, 90, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
