//! Allow/deny rules on destinations (address range and port range) and on
//! clients (address range).
//!
//! Promise: [`Rules::allows`] is the first matching rule's verdict, in the
//! order the rules were given, and "allowed" when none matches. IPv4-mapped
//! IPv6 addresses are judged as the IPv4 address they are.

use socksify_proto::wire::canonical_ip;
use std::net::IpAddr;

/// An address range: `ADDR/PREFIX`, or every address of both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    Any,
    Net { addr: IpAddr, prefix: u8 },
}

impl Cidr {
    /// Parses `ADDR`, `ADDR/PREFIX` or `*` (brackets around IPv6 allowed).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        if s == "*" {
            return Ok(Cidr::Any);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr =
            addr.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.trim_end_matches(']').parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("prefix `{p}` is not 0..={max}"))?
            }
            None => max,
        };
        Ok(Cidr::Net { addr: canonical_ip(addr), prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, prefix) = match *self {
            Cidr::Any => return true,
            Cidr::Net { addr, prefix } => (addr, prefix),
        };
        match (net, canonical_ip(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One `--allow` or `--deny` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub net: Cidr,
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
        let net = Cidr::parse(&net)?;
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rule_syntax() {
        let r = Rule::parse("127.0.0.3/32", false).unwrap();
        assert_eq!((r.net, r.ports), (Cidr::Net { addr: ip("127.0.0.3"), prefix: 32 }, None));
        assert_eq!(Rule::parse("0.0.0.0/0:25", false).unwrap().ports, Some((25, 25)));
        assert_eq!(Rule::parse("10.0.0.0/8:80-443", true).unwrap().ports, Some((80, 443)));
        assert_eq!(Rule::parse("[::1]:22", false).unwrap().net, Cidr::Net { addr: ip("::1"), prefix: 128 });
        assert_eq!(Rule::parse("[2001:db8::]/32:443", false).unwrap().net, Cidr::Net { addr: ip("2001:db8::"), prefix: 32 });
        assert_eq!(Rule::parse("[2001:db8::/32]:443", false).unwrap().ports, Some((443, 443)));
        assert_eq!(Rule::parse("2001:db8::/32", false).unwrap().ports, None);
        assert_eq!(Rule::parse("*:25", false).unwrap().net, Cidr::Any);
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
    fn cidr_edges() {
        let any4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any4.contains(ip("255.255.255.255")) && !any4.contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("10.0.0.0/9").unwrap().contains(ip("10.128.0.1")));
    }
}
