//! Address ranges: `10.0.0.0/8`, `fd00::/8`, `192.0.2.1` (one address).
//! One type for `SOCKSIFY_NO_PROXY`'s networks, the fake-address pools and
//! the bundled server's `--allow`/`--deny`/`--allow-client` rules.
//!
//! Promises:
//! * The network is kept masked: `10.1.2.3/8` is `10.0.0.0/8`, so equal
//!   ranges are equal values, and [`Cidr::parse`] of the `Display` form
//!   gives the same range back.
//! * An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4
//!   address it is, in [`Cidr::contains`] and as a network:
//!   `::ffff:10.0.0.0/104` is `10.0.0.0/8`. (A mapped network with a
//!   prefix under 96 also covers non-mapped addresses: it stays IPv6.)
//! * An IPv4 range never contains an IPv6 address, nor the other way round:
//!   `::/0` is every IPv6 address, not every address.
//!
//! `Cidr` is a range of either family; `Cidr<Ipv4Addr>` and
//! `Cidr<Ipv6Addr>` are ranges of one family (the fake pools).

use crate::wire::canonical_ip;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr<A = IpAddr> {
    addr: A,
    prefix: u8,
}

impl Cidr {
    /// Every IPv4 address, and every IPv6 address: all there is, as two ranges.
    pub const EVERY: [Cidr; 2] = [Cidr { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 0 }, Cidr { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix: 0 }];

    /// The range `addr/prefix`; `None` when the prefix is longer than the
    /// address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        match addr {
            IpAddr::V4(a) => (prefix <= 32).then(|| Cidr::v4(a, prefix).into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Cidr::new(v4.into(), prefix - 96),
                _ => (prefix <= 128).then(|| Cidr::v6(a, prefix).into()),
            },
        }
    }

    /// The range of the one address `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = canonical_ip(ip);
        Cidr { addr: ip, prefix: bits(ip) }
    }

    /// Parses `ADDR/PREFIX` or `ADDR` (one address); the error says which
    /// part is wrong, in one line.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let Some(prefix) = prefix else { return Ok(Cidr::host(ip)) };
        let max = bits(ip);
        prefix.parse::<u8>().ok().and_then(|p| if p <= max { Cidr::new(ip, p) } else { None }).ok_or_else(|| format!("prefix `{prefix}` is not 0..={max}"))
    }

    /// The range as IPv4, if it is one.
    pub fn to_v4(self) -> Option<Cidr<Ipv4Addr>> {
        match self.addr {
            IpAddr::V4(addr) => Some(Cidr { addr, prefix: self.prefix }),
            IpAddr::V6(_) => None,
        }
    }

    /// The range as IPv6, if it is one.
    pub fn to_v6(self) -> Option<Cidr<Ipv6Addr>> {
        match self.addr {
            IpAddr::V6(addr) => Some(Cidr { addr, prefix: self.prefix }),
            IpAddr::V4(_) => None,
        }
    }
}

impl Cidr<Ipv4Addr> {
    /// `addr/prefix`, masked. Panics (at compile time in a `const`) on a
    /// prefix over 32.
    pub const fn v4(addr: Ipv4Addr, prefix: u8) -> Cidr<Ipv4Addr> {
        assert!(prefix <= 32, "an IPv4 prefix is 0..=32");
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Cidr { addr: Ipv4Addr::from_bits(addr.to_bits() & mask), prefix }
    }
}

impl Cidr<Ipv6Addr> {
    /// `addr/prefix`, masked. Panics (at compile time in a `const`) on a
    /// prefix over 128. For an IPv4-mapped network use [`Cidr::new`].
    pub const fn v6(addr: Ipv6Addr, prefix: u8) -> Cidr<Ipv6Addr> {
        assert!(prefix <= 128, "an IPv6 prefix is 0..=128");
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        Cidr { addr: Ipv6Addr::from_bits(addr.to_bits() & mask), prefix }
    }
}

impl<A: Copy + Into<IpAddr>> Cidr<A> {
    /// The network address (masked).
    pub fn addr(&self) -> A {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range; a v4-mapped `ip` is judged as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr.into(), canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => ip.to_bits() & mask32(self.prefix) == net.to_bits(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => ip.to_bits() & mask128(self.prefix) == net.to_bits(),
            _ => false,
        }
    }
}

impl From<Cidr<Ipv4Addr>> for Cidr {
    fn from(c: Cidr<Ipv4Addr>) -> Cidr {
        Cidr { addr: c.addr.into(), prefix: c.prefix }
    }
}

impl From<Cidr<Ipv6Addr>> for Cidr {
    fn from(c: Cidr<Ipv6Addr>) -> Cidr {
        Cidr { addr: c.addr.into(), prefix: c.prefix }
    }
}

/// `ADDR/PREFIX`, always with the prefix.
impl<A: fmt::Display> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The address length of `ip`'s family, in bits.
fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn syntax() {
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"), "kept masked");
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.1").to_string(), "192.0.2.1/32");
        assert_eq!(cidr("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
        for (bad, why) in [
            ("10.0.0.0/33", "prefix `33` is not 0..=32"),
            ("::/129", "prefix `129` is not 0..=128"),
            ("10.0.0.0/", "prefix `` is not 0..=32"),
            ("10.0.0.0/x", "prefix `x` is not 0..=32"),
            ("10.0.0.0/-1", "prefix `-1` is not 0..=32"),
            ("x/8", "`x` is not an IP address"),
            ("", "`` is not an IP address"),
            ("[::1]/8", "`[::1]` is not an IP address"),
            ("10.0.0.0/8/8", "prefix `8/8` is not 0..=32"),
        ] {
            assert_eq!(Cidr::parse(bad), Err(why.to_string()), "{bad:?}");
        }
    }

    #[test]
    fn v4_mapped_is_ipv4() {
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:10.1.2.3"), cidr("10.1.2.3/32"));
        let net = cidr("::ffff:10.0.0.0/104");
        assert!(net.contains(ip("10.200.0.1")) && net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")), "a mapped /104 is 10/8, not every IPv4 address");
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        // Under /96 the network holds non-mapped addresses too: IPv6 it stays.
        let wide = cidr("::ffff:0.0.0.0/80");
        assert_eq!(wide, cidr("::/80"));
        assert!(wide.contains(ip("::1")) && !wide.contains(ip("::ffff:1.2.3.4")) && !wide.contains(ip("1.2.3.4")));
    }

    #[test]
    fn families_never_mix() {
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(!cidr("::/0").contains(ip("127.0.0.1")));
        assert!(!cidr("::/0").contains(ip("::ffff:127.0.0.1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("10.0.0.0/9").contains(ip("10.128.0.1")));
    }

    #[test]
    fn one_family_ranges() {
        const POOL: Cidr<Ipv4Addr> = Cidr::v4(Ipv4Addr::new(198, 18, 0, 0), 15);
        assert_eq!(Cidr::from(POOL), cidr("198.18.0.0/15"));
        assert_eq!(cidr("198.19.1.1/15").to_v4(), Some(POOL));
        assert_eq!(cidr("198.18.0.0/15").to_v6(), None);
        assert_eq!(cidr("fd00::/8").to_v6(), Some(Cidr::v6("fd00::".parse().unwrap(), 8)));
        assert_eq!(Cidr::v4(Ipv4Addr::new(10, 1, 2, 3), 0).addr(), Ipv4Addr::UNSPECIFIED);
        assert!(POOL.contains(ip("198.19.255.255")) && !POOL.contains(ip("198.20.0.0")));
    }

    /// The textbook definition: the first `prefix` bits are equal.
    fn naive_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
        let bits_of = |ip: IpAddr| -> Vec<bool> {
            let bytes = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            bytes.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1)).collect()
        };
        let (net, ip) = (bits_of(net), bits_of(ip));
        net.len() == ip.len() && (0..prefix as usize).all(|i| net[i] == ip[i])
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parse_of_display_round_trips(addr in any_ip(), prefix in 0u8..=128) {
            if let Some(c) = Cidr::new(addr, prefix) {
                prop_assert_eq!(Cidr::parse(&c.to_string()), Ok(c));
                // It holds the address it was made from, unless that is
                // v4-mapped and the range IPv6 (a mapped network under /96).
                prop_assert_eq!(c.contains(addr), c.addr().is_ipv4() == canonical_ip(addr).is_ipv4());
            }
        }

        #[test]
        fn prefix_bounds(addr in any_ip(), prefix in 0u16..=300) {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let parsed = Cidr::parse(&format!("{addr}/{prefix}"));
            prop_assert_eq!(parsed.is_ok(), prefix <= max, "{}/{} gave {:?}", addr, prefix, parsed);
            if let Ok(c) = parsed {
                let family_max = if c.addr().is_ipv4() { 32 } else { 128 };
                prop_assert!(c.prefix() <= family_max);
            }
        }

        #[test]
        fn contains_agrees_with_the_bitwise_definition(net in any_ip(), prefix in 0u8..=128, other in any_ip(), noise in any::<u128>(), near in any::<bool>()) {
            let Some(c) = Cidr::new(net, prefix) else { return Ok(()) };
            // Half the time an address sharing the network's leading bits
            // but the last one or two, sometimes written v4-mapped.
            let around = c.prefix().saturating_sub(1);
            let ip = match (near, c.addr()) {
                (false, _) => other,
                (true, IpAddr::V4(n)) => {
                    let a = Ipv4Addr::from_bits(n.to_bits() ^ (noise as u32 & !mask32(around)));
                    if noise >> 127 == 1 { IpAddr::V6(a.to_ipv6_mapped()) } else { IpAddr::V4(a) }
                }
                (true, IpAddr::V6(n)) => IpAddr::V6(Ipv6Addr::from_bits(n.to_bits() ^ (noise & !mask128(around)))),
            };
            prop_assert_eq!(c.contains(ip), naive_contains(c.addr(), c.prefix(), canonical_ip(ip)), "{} contains {}", c, ip);
        }
    }
}
