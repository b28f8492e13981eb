//! Allow/deny rules on destinations (address range and port range) and on
//! clients (address range).
//!
//! Promise: [`Rules::allows`] is the first matching rule's verdict, in the
//! order the rules were given, and "allowed" when none matches. IPv4-mapped
//! IPv6 addresses are judged as the IPv4 address they are. [`reached`] is
//! the one spelling of a destination that is judged and then connected to.

use socksify_proto::cidr::Cidr;
use socksify_proto::wire::canonical_ip;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address a connection or datagram to `ip` actually reaches, so that
/// a rule means the same for every spelling of it: an IPv4-mapped IPv6
/// address is its IPv4 address, and the unspecified address of either
/// family (`0.0.0.0`, `::`, `::ffff:0.0.0.0`) is that family's loopback,
/// where Linux sends it (`connect`/`sendto` to "any" go to loopback).
/// Destinations are judged in this form and then connected to in this
/// form, so the address judged is the address reached.
pub fn reached(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// [`reached`] with the port.
pub fn reached_addr(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(reached(sa.ip()), sa.port())
}

/// The addresses a rule names: `*` (every address of both families) or a
/// [`Cidr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrRange {
    Any,
    Net(Cidr),
}

impl AddrRange {
    /// Parses `ADDR`, `ADDR/PREFIX` or `*` (brackets around IPv6 allowed:
    /// `[::1]`, `[::1]/64`, `[::1/64]`).
    pub fn parse(s: &str) -> Result<AddrRange, String> {
        if s == "*" {
            return Ok(AddrRange::Any);
        }
        let unbracketed = match s.split_once('/') {
            Some((a, p)) => format!("{}/{}", a.trim_start_matches('[').trim_end_matches(']'), p.trim_end_matches(']')),
            None => s.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        Cidr::parse(&unbracketed).map(AddrRange::Net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            AddrRange::Any => true,
            AddrRange::Net(net) => net.contains(ip),
        }
    }
}

/// One `--allow` or `--deny` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub net: AddrRange,
    /// Inclusive port range; `None` matches every port.
    pub ports: Option<(u16, u16)>,
}

impl Rule {
    /// Parses `ADDR[/PREFIX][:PORT[-PORT]]`, IPv6 in brackets when a port follows.
    pub fn parse(s: &str, allow: bool) -> Result<Rule, String> {
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            // `[v6]/len:port`, `[v6/len]:port` or `[v6]`.
            let close = rest.find(']').ok_or("missing `]`")?;
            let (inside, after) = (&rest[..close], &rest[close + 1..]);
            let (prefix, port) = match after.split_once(':') {
                Some((p, port)) => (p, Some(port)),
                None => (after, None),
            };
            (format!("{inside}{prefix}"), port)
        } else if s.matches(':').count() == 1 {
            let (net, port) = s.split_once(':').ok_or("unreachable")?;
            (net.to_owned(), Some(port))
        } else {
            (s.to_owned(), None)
        };
        let net = AddrRange::parse(&net)?;
        let ports = match ports {
            None => None,
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let lo: u16 = lo.parse().map_err(|_| format!("`{p}` is not a port or PORT-PORT"))?;
                let hi: u16 = hi.parse().map_err(|_| format!("`{p}` is not a port or PORT-PORT"))?;
                if lo > hi {
                    return Err(format!("port range `{p}` is empty"));
                }
                Some((lo, hi))
            }
        };
        Ok(Rule { allow, net, ports })
    }

    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(ip) && self.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// The ordered destination rules.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn push(&mut self, rule: Rule) {
        self.0.push(rule);
    }

    /// The first matching rule's verdict; allowed when none matches.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        self.verdict(ip, port).unwrap_or(true)
    }

    /// The first matching rule's verdict, if a rule matches.
    pub fn verdict(&self, ip: IpAddr, port: u16) -> Option<bool> {
        self.0.iter().find(|r| r.matches(ip, port)).map(|r| r.allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> AddrRange {
        AddrRange::Net(Cidr::parse(s).unwrap())
    }

    #[test]
    fn rule_syntax() {
        let r = Rule::parse("127.0.0.3/32", false).unwrap();
        assert_eq!((r.net, r.ports), (net("127.0.0.3/32"), None));
        assert_eq!(Rule::parse("0.0.0.0/0:25", false).unwrap().ports, Some((25, 25)));
        assert_eq!(Rule::parse("10.0.0.0/8:80-443", true).unwrap().ports, Some((80, 443)));
        assert_eq!(Rule::parse("[::1]:22", false).unwrap().net, net("::1/128"));
        assert_eq!(Rule::parse("[2001:db8::]/32:443", false).unwrap().net, net("2001:db8::/32"));
        assert_eq!(Rule::parse("[2001:db8::/32]:443", false).unwrap().ports, Some((443, 443)));
        assert_eq!(Rule::parse("2001:db8::/32", false).unwrap().ports, None);
        assert_eq!(Rule::parse("*:25", false).unwrap().net, AddrRange::Any);
        for bad in ["1.2.3.4/33", "x", "1.2.3.4:99999", "1.2.3.4:9-1", "[::1", "::1/129"] {
            assert!(Rule::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_match_wins_default_allow() {
        let mut rules = Rules::default();
        rules.push(Rule::parse("127.0.0.1/32:80", true).unwrap());
        rules.push(Rule::parse("127.0.0.0/8", false).unwrap());
        rules.push(Rule::parse("*:25", false).unwrap());
        assert!(rules.allows(ip("127.0.0.1"), 80));
        assert!(!rules.allows(ip("127.0.0.1"), 81));
        assert!(!rules.allows(ip("::ffff:127.0.0.9"), 80));
        assert!(!rules.allows(ip("::1"), 25));
        assert!(rules.allows(ip("::1"), 26));
        assert!(rules.allows(ip("192.0.2.1"), 80));
    }

    #[test]
    fn address_ranges() {
        let any4 = AddrRange::parse("0.0.0.0/0").unwrap();
        assert!(any4.contains(ip("255.255.255.255")) && !any4.contains(ip("::1")));
        assert!(AddrRange::parse("::/0").unwrap().contains(ip("::1")));
        assert!(!AddrRange::parse("10.0.0.0/9").unwrap().contains(ip("10.128.0.1")));
        assert!(AddrRange::parse("*").unwrap().contains(ip("::1")) && AddrRange::parse("*").unwrap().contains(ip("10.0.0.1")));
        for (text, want) in [("[::1]", "::1/128"), ("[2001:db8::]/32", "2001:db8::/32"), ("[2001:db8::/32]", "2001:db8::/32"), ("127.0.0.1", "127.0.0.1/32")] {
            assert_eq!(AddrRange::parse(text), Ok(net(want)), "{text}");
        }
        assert_eq!(AddrRange::parse("10.0.0.0/33"), Err("prefix `33` is not 0..=32".into()));
        assert_eq!(AddrRange::parse("[x]"), Err("`x` is not an IP address".into()));
    }

    /// Any spelling of a loopback address, or of "any" (which the kernel
    /// connects to loopback): plain, v4-mapped, unspecified.
    fn loopback_spelling() -> impl Strategy<Value = IpAddr> {
        let in_127 = any::<u32>().prop_map(|n| Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff)));
        prop_oneof![
            in_127.clone().prop_map(IpAddr::V4),
            in_127.prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
            Just(ip("0.0.0.0")),
            Just(ip("::")),
            Just(ip("::ffff:0.0.0.0")),
            Just(ip("::1")),
        ]
    }

    fn loopback_denied() -> Rules {
        let mut rules = Rules::default();
        rules.push(Rule::parse("127.0.0.0/8", false).unwrap());
        rules.push(Rule::parse("::1", false).unwrap());
        rules
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn every_spelling_of_loopback_is_denied_by_the_loopback_rules(spelling in loopback_spelling(), port in any::<u16>()) {
            let to = reached(spelling);
            prop_assert!(to.is_loopback(), "{} reaches {}", spelling, to);
            prop_assert!(!loopback_denied().allows(to, port), "{} (reaching {}) is denied", spelling, to);
        }

        #[test]
        fn other_addresses_reach_themselves(v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), port in any::<u16>()) {
            // Everything but "any" is itself (v4-mapped as IPv4), and the
            // loopback rules judge it as they did: allowed unless loopback.
            let (v4, v6) = (Ipv4Addr::from(v4), Ipv6Addr::from(v6));
            for spelling in [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped()), IpAddr::V6(v6)] {
                let plain = canonical_ip(spelling);
                if plain.is_unspecified() {
                    continue;
                }
                prop_assert_eq!(reached(spelling), plain);
                prop_assert_eq!(loopback_denied().allows(reached(spelling), port), !plain.is_loopback());
            }
        }
    }

    #[test]
    fn the_unspecified_addresses_reach_loopback_and_an_allow_opens_them() {
        for (spelling, to) in [("0.0.0.0", "127.0.0.1"), ("::ffff:0.0.0.0", "127.0.0.1"), ("::", "::1")] {
            assert_eq!(reached(ip(spelling)), ip(to), "{spelling}");
        }
        for same in ["0.1.2.3", "192.0.2.1", "::2", "::127.0.0.1", "fe80::1", "2001:db8::1"] {
            assert_eq!(reached(ip(same)), ip(same), "{same}");
        }
        assert_eq!(reached_addr("[::ffff:0.0.0.0]:53".parse().unwrap()), "127.0.0.1:53".parse().unwrap());
        let mut open = Rules::default();
        open.push(Rule::parse("127.0.0.1/32", true).unwrap());
        open.push(Rule::parse("::1", true).unwrap());
        open.push(Rule::parse("*", false).unwrap());
        for spelling in ["0.0.0.0", "::", "::ffff:0.0.0.0", "::ffff:127.0.0.1"] {
            assert!(open.allows(reached(ip(spelling)), 80), "{spelling}");
        }
    }

    #[test]
    fn a_v4_mapped_network_is_its_ipv4_network() {
        // Was every IPv4 address (a mask shifted out of range) and a panic
        // in a debug build; ::ffff:10.0.0.0/104 is 10.0.0.0/8.
        let mut rules = Rules::default();
        rules.push(Rule::parse("[::ffff:10.0.0.0]/104", false).unwrap());
        assert!(!rules.allows(ip("10.1.2.3"), 80));
        assert!(!rules.allows(ip("::ffff:10.1.2.3"), 80));
        assert!(rules.allows(ip("11.0.0.1"), 80));
    }
}
