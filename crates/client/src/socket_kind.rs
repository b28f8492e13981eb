//! Which sockets the proxy can carry, as pure functions of what `socket(2)`
//! was given (or `SO_TYPE`/`SO_PROTOCOL` report): SOCKS carries TCP
//! (CONNECT) and UDP (UDP ASSOCIATE), nothing else. Every other IPv4/IPv6
//! socket (raw, ICMP "ping" sockets, UDP-Lite, SCTP, ...) is refused for a
//! destination that is not bypassed, as torsocks does; and a socket whose
//! packets carry their destination inside the payload (`AF_PACKET`,
//! `SOCK_PACKET`, raw `IPPROTO_RAW`, `IP_HDRINCL`/`IPV6_HDRINCL`), where no
//! hook can read it, is refused outright while anything is proxied.

use libc::c_int;

/// `SOCK_PACKET`, the obsolete packet socket of any domain (deprecated in
/// the libc crate, still made by the kernel).
pub const SOCK_PACKET_OBSOLETE: c_int = 10;

/// What the proxy does with an IPv4/IPv6 socket of this type and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A stream: TCP through CONNECT (the kernel refuses a stream socket
    /// of another protocol to a SOCKS server's TCP port by itself).
    Stream,
    /// UDP through UDP ASSOCIATE.
    Udp,
    /// Nothing can carry it: to a destination that is not bypassed, the
    /// call fails with `EPERM`. The name says what it is, for the log.
    No(&'static str),
}

/// What becomes of a socket of type `ty` (`SO_TYPE`, no flags) and
/// protocol `protocol` (`SO_PROTOCOL`: the kernel reports 17 for a UDP
/// socket made with protocol 0).
pub fn carried(ty: c_int, protocol: c_int) -> Carried {
    match ty {
        libc::SOCK_STREAM => Carried::Stream,
        libc::SOCK_DGRAM => match protocol {
            libc::IPPROTO_UDP | 0 => Carried::Udp,
            libc::IPPROTO_UDPLITE => Carried::No("a UDP-Lite socket"),
            libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6 => Carried::No("an ICMP (ping) socket"),
            _ => Carried::No("a datagram socket of another protocol"),
        },
        libc::SOCK_RAW => Carried::No("a raw socket"),
        libc::SOCK_SEQPACKET => Carried::No("a SOCK_SEQPACKET socket (SCTP)"),
        _ => Carried::No("a socket of another type"),
    }
}

/// Why a socket made with `socket(domain, ty, protocol)` (`ty` may carry
/// `SOCK_NONBLOCK`/`SOCK_CLOEXEC`) carries its destination inside its
/// payload, where the shim cannot see it: `None` for every other socket.
#[inline(always)]
pub fn hides_destination(domain: c_int, ty: c_int, protocol: c_int) -> Option<&'static str> {
    let ty = ty & 0xf;
    if domain == libc::AF_PACKET || ty == SOCK_PACKET_OBSOLETE {
        return Some("a packet socket (AF_PACKET)");
    }
    if ty == libc::SOCK_RAW && protocol == libc::IPPROTO_RAW && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        return Some("a raw IPPROTO_RAW socket (it writes its own IP header)");
    }
    None
}

/// Whether `setsockopt(level, name)` is `IP_HDRINCL`/`IPV6_HDRINCL`: with
/// it set, a raw socket writes its own IP header, destination included.
#[inline(always)]
pub fn is_header_included(level: c_int, name: c_int) -> bool {
    (level == libc::IPPROTO_IP && name == libc::IP_HDRINCL) || (level == libc::IPPROTO_IPV6 && name == libc::IPV6_HDRINCL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::*;

    #[test]
    fn tcp_and_udp_are_carried() {
        assert_eq!(carried(SOCK_STREAM, IPPROTO_TCP), Carried::Stream);
        assert_eq!(carried(SOCK_STREAM, IPPROTO_MPTCP), Carried::Stream);
        assert_eq!(carried(SOCK_DGRAM, IPPROTO_UDP), Carried::Udp);
        assert_eq!(carried(SOCK_DGRAM, 0), Carried::Udp);
    }

    #[test]
    fn every_other_socket_is_not() {
        for (ty, protocol) in [
            (SOCK_DGRAM, IPPROTO_UDPLITE),
            (SOCK_DGRAM, IPPROTO_ICMP),
            (SOCK_DGRAM, IPPROTO_ICMPV6),
            (SOCK_DGRAM, 115), // L2TP over IP
            (SOCK_RAW, IPPROTO_ICMP),
            (SOCK_RAW, IPPROTO_ICMPV6),
            (SOCK_RAW, IPPROTO_UDP),
            (SOCK_SEQPACKET, IPPROTO_SCTP),
            (SOCK_RDM, 0),
        ] {
            assert!(matches!(carried(ty, protocol), Carried::No(_)), "{ty} {protocol}");
        }
    }

    #[test]
    fn packet_sockets_and_ipproto_raw_hide_their_destination() {
        assert!(hides_destination(AF_PACKET, SOCK_RAW, 0x0300).is_some());
        assert!(hides_destination(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 8).is_some());
        assert!(hides_destination(AF_INET, SOCK_PACKET_OBSOLETE, 0x0300).is_some());
        assert!(hides_destination(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_RAW).is_some());
        assert!(hides_destination(AF_INET6, SOCK_RAW, IPPROTO_RAW).is_some());
        // Raw ICMP names its destination in the address: routed, not refused here.
        assert!(hides_destination(AF_INET, SOCK_RAW, IPPROTO_ICMP).is_none());
        assert!(hides_destination(AF_INET, SOCK_DGRAM, 0).is_none());
        assert!(hides_destination(AF_UNIX, SOCK_RAW, IPPROTO_RAW).is_none());
        assert!(hides_destination(AF_NETLINK, SOCK_RAW, 0).is_none());
    }

    #[test]
    fn header_included_options() {
        assert!(is_header_included(IPPROTO_IP, IP_HDRINCL));
        assert!(is_header_included(IPPROTO_IPV6, IPV6_HDRINCL));
        assert!(!is_header_included(IPPROTO_IPV6, IP_HDRINCL));
        assert!(!is_header_included(SOL_SOCKET, IP_HDRINCL));
        assert!(!is_header_included(IPPROTO_IP, IP_TOS));
    }
}
