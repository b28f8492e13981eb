//! SOCKS BIND, the pure parts: which of a program's listening sockets
//! become a BIND ([`decide`]), what the BIND request names as the expected
//! peer ([`expected_peer`]), the second reply, which names the peer that
//! connected ([`second_reply`]), and how an address is told to a socket of
//! a given family ([`in_family`], [`reported`]).
//!
//! The rule, for `SOCKSIFY_BIND=auto`: a TCP socket bound to port 0 becomes
//! a BIND when the process has a TCP connection through the proxy whose
//! local address is the bound address (the kernel's address, or the one
//! `getsockname` reports for it, the proxy's), or when the bound address is
//! the wildcard and such a connection exists. That is what a program does
//! to be called back on a connection it already has (active FTP binds the
//! control connection's address). A fixed port is a local server: it stays
//! a local listener. `always` makes every bound TCP socket a BIND; `off`
//! none.

use crate::config::BindMode;
use crate::handshake::HandshakeError;
use crate::wire::socks4::{self, Reply4};
use crate::wire::socks5::{self, Reply, ReplyCode};
use crate::wire::{canonical_ip, TargetAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address family a program made its socket with. `getsockname`,
/// `getpeername` and `accept` answer it in that family only, whatever the
/// family of the socket the shim connected to the proxy, and of the
/// proxy's own side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// `addr` as a socket of `family` can be told it: an IPv4 address to an
/// IPv6 socket v4-mapped (as the kernel reports IPv4 peers of a dual-stack
/// socket), a v4-mapped address to an IPv4 socket unmapped, an unspecified
/// address as the family's own. `None`: an IPv6 address, which no IPv4
/// address stands for.
pub fn in_family(addr: SocketAddr, family: Family) -> Option<SocketAddr> {
    let ip = canonical_ip(addr.ip());
    let ip: IpAddr = match (ip, family) {
        (IpAddr::V4(v4), Family::V4) => v4.into(),
        (IpAddr::V4(v4), Family::V6) if v4.is_unspecified() => Ipv6Addr::UNSPECIFIED.into(),
        (IpAddr::V4(v4), Family::V6) => v4.to_ipv6_mapped().into(),
        (IpAddr::V6(v6), Family::V4) if v6.is_unspecified() => Ipv4Addr::UNSPECIFIED.into(),
        (IpAddr::V6(_), Family::V4) => return None,
        (IpAddr::V6(_), Family::V6) => return Some(addr), // scope and flow kept
    };
    Some(SocketAddr::new(ip, addr.port()))
}

/// What a socket of `family` is told for `addr` (its own side or its
/// peer): [`in_family`], or, for an IPv6 address and an IPv4 socket,
/// 0.0.0.0 with `addr`'s port. That happens when the proxy reaches a
/// name over IPv6 for a program that connected to its fake IPv4 address:
/// no IPv4 address names the proxy's side then, and the socket's own
/// address (this machine's, behind the proxy) would be a wrong one for
/// the program to hand out, and a leak.
pub fn reported(addr: SocketAddr, family: Family) -> SocketAddr {
    in_family(addr, family).unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
}

/// A TCP connection the program made through the proxy, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedConn {
    /// The kernel's local address of the connection (to the proxy).
    pub local: SocketAddr,
    /// The local address the shim reports for it: the proxy's BND.ADDR.
    pub reported: Option<SocketAddr>,
}

/// What a `bind` of a TCP socket turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A plain local socket.
    Local,
    /// A SOCKS BIND; `related` indexes the connection it belongs to (its
    /// far end is the expected peer), `None` for any peer.
    Bind { related: Option<usize> },
}

/// The rule of the module doc. `conns` are oldest first; the newest match
/// wins, since a program calls back on the connection it is working on.
pub fn decide(mode: BindMode, requested: SocketAddr, conns: &[ProxiedConn]) -> Decision {
    let ip = canonical_ip(requested.ip());
    let from_here =
        |c: &ProxiedConn| ip.is_unspecified() || canonical_ip(c.local.ip()) == ip || c.reported.is_some_and(|r| canonical_ip(r.ip()) == ip);
    let newest_match = conns.iter().rposition(from_here);
    match mode {
        BindMode::Off => Decision::Local,
        BindMode::Always => Decision::Bind { related: newest_match.or(conns.len().checked_sub(1)) },
        BindMode::Auto if requested.port() != 0 => Decision::Local,
        BindMode::Auto => match newest_match {
            Some(i) => Decision::Bind { related: Some(i) },
            None => Decision::Local,
        },
    }
}

/// Whether the program's bind address can be bound on this machine as it
/// is (the wildcard, or a kernel address of a related connection), rather
/// than being the proxy's address that `getsockname` reported.
pub fn is_local(requested: IpAddr, conns: &[ProxiedConn]) -> bool {
    let ip = canonical_ip(requested);
    ip.is_unspecified() || conns.iter().any(|c| canonical_ip(c.local.ip()) == ip)
}

/// The DST of the BIND request: the far end of the related connection (a
/// name when the program reached it by a fake address) with port 0, since
/// the peer's port is not known in advance; any peer when there is none.
pub fn expected_peer(related: Option<TargetAddr>) -> TargetAddr {
    match related {
        Some(TargetAddr::Ip(sa)) => TargetAddr::Ip(SocketAddr::new(canonical_ip(sa.ip()), 0)),
        Some(TargetAddr::Domain(name, _)) => TargetAddr::Domain(name, 0),
        None => any_peer(),
    }
}

/// "Any peer" in a BIND request: 0.0.0.0, port 0.
pub fn any_peer() -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))
}

/// The second reply as far as it has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondReply {
    /// Not all of it yet.
    Incomplete,
    /// The peer that connected, and the reply's length: bytes after it are
    /// the peer's data.
    Peer(SocketAddr, usize),
}

/// Judges the bytes at the head of a BIND connection after the first reply
/// (`socks4`: the last hop speaks SOCKS4). Never looks past the reply.
pub fn second_reply(socks4: bool, buf: &[u8]) -> Result<SecondReply, HandshakeError> {
    if socks4 {
        if buf.len() < Reply4::LEN {
            return Ok(SecondReply::Incomplete);
        }
        let (reply, used) = Reply4::parse(&buf[..Reply4::LEN])?;
        if reply.code != socks4::GRANTED {
            return Err(HandshakeError::Rejected4(reply.code));
        }
        return Ok(SecondReply::Peer(SocketAddr::new(reply.ip.into(), reply.port), used));
    }
    if let [ver, code, ..] = *buf {
        // Version and code first: a refusal may be followed by nothing.
        if ver != socks5::VERSION {
            return Err(crate::wire::Error::Malformed("reply is not SOCKS version 5").into());
        }
        if code != 0 {
            return Err(HandshakeError::Rejected(ReplyCode::from_code(code)));
        }
    }
    if buf.len() < Reply::MIN_LEN {
        return Ok(SecondReply::Incomplete);
    }
    let total = Reply::total_len(&buf[..Reply::MIN_LEN])?;
    if buf.len() < total {
        return Ok(SecondReply::Incomplete);
    }
    match Reply::parse(&buf[..total])? {
        (Reply { bound: TargetAddr::Ip(peer), .. }, used) => {
            Ok(SecondReply::Peer(SocketAddr::new(canonical_ip(peer.ip()), peer.port()), used))
        }
        _ => Err(crate::wire::Error::Malformed("the BIND peer is a name, not an address").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(local: &str, reported: Option<&str>) -> ProxiedConn {
        ProxiedConn { local: local.parse().unwrap(), reported: reported.map(|r| r.parse().unwrap()) }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn auto_binds_port_zero_on_a_proxied_connections_address() {
        let conns = [conn("10.0.0.5:40000", Some("192.0.2.9:5555")), conn("10.0.0.6:40001", None)];
        let bind = |addr: &str| decide(BindMode::Auto, sa(addr), &conns);
        assert_eq!(bind("10.0.0.5:0"), Decision::Bind { related: Some(0) }, "the kernel's local address");
        assert_eq!(bind("192.0.2.9:0"), Decision::Bind { related: Some(0) }, "the address getsockname reported");
        assert_eq!(bind("[::ffff:10.0.0.6]:0"), Decision::Bind { related: Some(1) }, "v4-mapped on a dual-stack socket");
        assert_eq!(bind("0.0.0.0:0"), Decision::Bind { related: Some(1) }, "wildcard: the newest connection");
        assert_eq!(bind("[::]:0"), Decision::Bind { related: Some(1) });
        assert_eq!(bind("10.0.0.5:2121"), Decision::Local, "a fixed port is a local server");
        assert_eq!(bind("0.0.0.0:8080"), Decision::Local);
        assert_eq!(bind("127.0.0.1:0"), Decision::Local, "an address no proxied connection uses");
        assert_eq!(decide(BindMode::Auto, sa("0.0.0.0:0"), &[]), Decision::Local, "no proxied connection at all");
    }

    #[test]
    fn always_and_off() {
        let conns = [conn("10.0.0.5:40000", None), conn("10.0.0.6:40001", None)];
        assert_eq!(decide(BindMode::Always, sa("10.0.0.5:8080"), &conns), Decision::Bind { related: Some(0) });
        assert_eq!(decide(BindMode::Always, sa("127.0.0.1:8080"), &conns), Decision::Bind { related: Some(1) });
        assert_eq!(decide(BindMode::Always, sa("127.0.0.1:0"), &[]), Decision::Bind { related: None });
        assert_eq!(decide(BindMode::Off, sa("10.0.0.5:0"), &conns), Decision::Local);
    }

    #[test]
    fn only_kernel_addresses_are_bound_locally() {
        let conns = [conn("10.0.0.5:40000", Some("192.0.2.9:5555"))];
        assert!(is_local("10.0.0.5".parse().unwrap(), &conns));
        assert!(is_local("::".parse().unwrap(), &conns));
        assert!(!is_local("192.0.2.9".parse().unwrap(), &conns), "the proxy's address is not ours to bind");
    }

    #[test]
    fn expected_peer_drops_the_port_and_keeps_names() {
        assert_eq!(expected_peer(Some(TargetAddr::Ip(sa("[::ffff:192.0.2.7]:21")))), TargetAddr::Ip(sa("192.0.2.7:0")));
        assert_eq!(expected_peer(TargetAddr::domain("ftp.test", 21)), TargetAddr::domain("ftp.test", 0).unwrap());
        assert_eq!(expected_peer(None), TargetAddr::Ip(sa("0.0.0.0:0")));
    }

    #[test]
    fn addresses_are_told_in_the_sockets_family() {
        use Family::{V4, V6};
        // The proxy's side is IPv4: an IPv6 socket (connected to a fake
        // IPv6 address) gets it v4-mapped.
        assert_eq!(in_family(sa("127.0.0.2:4000"), V6), Some(sa("[::ffff:127.0.0.2]:4000")));
        assert_eq!(in_family(sa("127.0.0.2:4000"), V4), Some(sa("127.0.0.2:4000")));
        assert_eq!(in_family(sa("[::ffff:127.0.0.2]:4000"), V4), Some(sa("127.0.0.2:4000")));
        assert_eq!(in_family(sa("[::ffff:127.0.0.2]:4000"), V6), Some(sa("[::ffff:127.0.0.2]:4000")));
        // The proxy's side is IPv6: an IPv6 socket gets it as it is, scope
        // included; an IPv4 socket cannot be told it.
        let scoped = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 21, 0, 3).into();
        assert_eq!(in_family(scoped, V6), Some(scoped));
        assert_eq!(in_family(sa("[::1]:4000"), V4), None);
        assert_eq!(reported(sa("[::1]:4000"), V4), sa("0.0.0.0:4000"), "no IPv4 address names it: never the socket's own");
        assert_eq!(reported(sa("[2001:db8::7]:21"), V4), sa("0.0.0.0:21"));
        // The unspecified address stays unspecified, never ::ffff:0.0.0.0.
        assert_eq!(in_family(sa("0.0.0.0:0"), V6), Some(sa("[::]:0")));
        assert_eq!(in_family(sa("[::]:5"), V4), Some(sa("0.0.0.0:5")));
        for (addr, family) in [("192.0.2.1:1", V4), ("192.0.2.1:1", V6), ("[2001:db8::1]:1", V6), ("[::1]:9", V4)] {
            let told = reported(sa(addr), family);
            assert_eq!(told.is_ipv6(), family == V6, "{addr} told to a {family:?} socket as {told}");
        }
    }

    #[test]
    fn second_reply_is_read_exactly() {
        let ok = [5, 0, 0, 1, 192, 0, 2, 7, 0, 20, b'd', b'a', b't', b'a'];
        for n in 0..10 {
            assert_eq!(second_reply(false, &ok[..n]), Ok(SecondReply::Incomplete), "{n} bytes");
        }
        assert_eq!(second_reply(false, &ok), Ok(SecondReply::Peer(sa("192.0.2.7:20"), 10)), "the peer's data is left alone");
        assert_eq!(second_reply(false, &[5, 2]), Err(HandshakeError::Rejected(ReplyCode::NotAllowed)));
        assert!(matches!(second_reply(false, b"HTTP"), Err(HandshakeError::Garbage(_))));
        let name = [5, 0, 0, 3, 1, b'x', 0, 20];
        assert!(matches!(second_reply(false, &name), Err(HandshakeError::Garbage(_))));
        assert_eq!(second_reply(true, &[0, 90, 0, 20, 192, 0, 2, 7]), Ok(SecondReply::Peer(sa("192.0.2.7:20"), 8)));
        assert_eq!(second_reply(true, &[0, 91, 0, 0, 0, 0, 0, 0]), Err(HandshakeError::Rejected4(91)));
        assert_eq!(second_reply(true, &[0, 90, 0]), Ok(SecondReply::Incomplete));
    }
}
