//! `SOCKSIFY_NO_PROXY`: destinations that go direct.
//!
//! Rules, comma-separated: `*`; an IP (`10.0.0.1`, `::1`), optionally with a
//! port (`10.0.0.1:8080`, `[::1]:53`); a CIDR (`10.0.0.0/8`, `fd00::/8`); a
//! host name (`intranet`, which also covers `a.intranet`); a `.suffix`
//! (`.corp.example`, which covers `corp.example` and everything under it).
//! Host names may carry a port too (`db.corp:5432`).

use crate::cidr::Cidr;
use std::net::{IpAddr, SocketAddr};

pub const DEFAULT: &str = "localhost,127.0.0.0/8,::1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    All,
    Net {
        net: Cidr,
        port: Option<u16>,
    },
    /// Lowercase, without a leading dot; matches the name and its subdomains.
    Domain {
        suffix: String,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BypassList {
    rules: Vec<Rule>,
}

impl BypassList {
    pub fn parse(text: &str) -> Result<BypassList, String> {
        let mut rules = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            rules.push(parse_rule(item).map_err(|e| format!("{item:?}: {e}"))?);
        }
        Ok(BypassList { rules })
    }

    /// Whether a connection to `dst` goes direct.
    pub fn bypasses_addr(&self, dst: &SocketAddr) -> bool {
        self.rule_for_addr(dst).is_some()
    }

    /// The first rule that sends `dst` direct, as it would be written
    /// (`127.0.0.0/8`, `[::1]:53`, `*`): for a log line saying why.
    pub fn rule_for_addr(&self, dst: &SocketAddr) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::All => Some("*".to_owned()),
            Rule::Net { net, port } if port.is_none_or(|p| p == dst.port()) && net.contains(dst.ip()) => Some(match port {
                None => net.to_string(),
                Some(p) => SocketAddr::new(net.addr(), *p).to_string(),
            }),
            Rule::Net { .. } | Rule::Domain { .. } => None,
        })
    }

    /// Whether host `name` (port `port`, 0 if not known yet) is resolved and
    /// reached directly. A rule with a port only matches that port, so a
    /// look-up that does not know the port yet (0) is not bypassed by it.
    pub fn bypasses_name(&self, name: &str, port: u16) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.bypasses_addr(&SocketAddr::new(ip, port));
        }
        self.rules.iter().any(|rule| match rule {
            Rule::All => true,
            Rule::Net { .. } => false,
            Rule::Domain { suffix, port: rule_port } => {
                rule_port.is_none_or(|p| p == port)
                    && (name == *suffix || (name.ends_with(suffix.as_str()) && name[..name.len() - suffix.len()].ends_with('.')))
            }
        })
    }

    /// Whether any rule names hosts (`intranet`, `.corp.example`): only then
    /// can an address be bypassed because of the name it was looked up by.
    pub fn has_name_rules(&self) -> bool {
        self.rules.iter().any(|rule| matches!(rule, Rule::Domain { .. }))
    }

    /// The address rules as (network, port): what a socket filter must let
    /// in from sources the program talks to directly. `*` is both whole
    /// address families ([`Cidr::EVERY`]).
    pub fn addr_rules(&self) -> Vec<(Cidr, Option<u16>)> {
        let mut out = Vec::new();
        for rule in &self.rules {
            match rule {
                Rule::All => out.extend(Cidr::EVERY.map(|net| (net, None))),
                Rule::Net { net, port } => out.push((*net, *port)),
                Rule::Domain { .. } => {}
            }
        }
        out
    }

    /// Whether every destination bypasses the proxy (`*`).
    pub fn bypasses_everything(&self) -> bool {
        self.rules.contains(&Rule::All)
    }
}

fn parse_rule(item: &str) -> Result<Rule, String> {
    if item == "*" {
        return Ok(Rule::All);
    }
    if item.contains('/') {
        return Ok(Rule::Net { net: Cidr::parse(item)?, port: None });
    }
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Ok(Rule::Net { net: Cidr::host(ip), port: None });
    }
    if let Ok(sa) = item.parse::<SocketAddr>() {
        return Ok(Rule::Net { net: Cidr::host(sa.ip()), port: Some(sa.port()) });
    }
    let (name, port) = match item.rsplit_once(':') {
        Some((n, p)) => (n, Some(p.parse::<u16>().map_err(|_| "bad port")?)),
        None => (item, None),
    };
    let suffix = name.strip_prefix("*.").or_else(|| name.strip_prefix('.')).unwrap_or(name);
    let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
    if !super::proxy_url::is_host_name(&suffix) {
        return Err("not an IP, CIDR, host name or .suffix".into());
    }
    Ok(Rule::Domain { suffix, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_list_covers_loopback_only() {
        let l = BypassList::parse(DEFAULT).unwrap();
        assert!(l.bypasses_addr(&sa("127.0.0.1:80")));
        assert!(l.bypasses_addr(&sa("127.255.0.9:80")));
        assert!(l.bypasses_addr(&sa("[::1]:80")));
        assert!(l.bypasses_addr(&sa("[::ffff:127.0.0.1]:80")), "v4-mapped loopback is loopback");
        assert!(!l.bypasses_addr(&sa("192.0.2.1:80")));
        assert!(!l.bypasses_addr(&sa("[2001:db8::1]:80")));
        assert!(l.bypasses_name("localhost", 0));
        assert!(l.bypasses_name("LOCALHOST.", 0));
        assert!(!l.bypasses_name("example.org", 0));
        assert!(l.has_name_rules(), "localhost is a name rule");
        assert!(!BypassList::parse("127.0.0.0/8,::1").unwrap().has_name_rules());
    }

    #[test]
    fn cidrs_ports_and_names() {
        let l = BypassList::parse("10.0.0.0/8, fd00::/8, 192.0.2.5:8080, [2001:db8::5]:53, .corp.example, db:5432").unwrap();
        assert!(l.bypasses_addr(&sa("10.200.1.1:1")));
        assert!(l.bypasses_addr(&sa("[fd12::1]:1")));
        assert!(l.bypasses_addr(&sa("192.0.2.5:8080")));
        assert!(!l.bypasses_addr(&sa("192.0.2.5:8081")));
        assert!(l.bypasses_addr(&sa("[2001:db8::5]:53")));
        assert!(l.bypasses_name("corp.example", 0));
        assert!(l.bypasses_name("a.b.corp.example", 443));
        assert!(!l.bypasses_name("notcorp.example", 443));
        assert!(l.bypasses_name("db", 5432));
        assert!(!l.bypasses_name("db", 5433));
        assert!(l.bypasses_name("10.1.1.1", 80), "numeric names follow the address rules");
    }

    #[test]
    fn the_rule_that_matched_is_named() {
        let l = BypassList::parse("10.0.0.0/8, 192.0.2.5:8080, [2001:db8::5]:53, ::1, .corp").unwrap();
        assert_eq!(l.rule_for_addr(&sa("10.1.1.1:80")).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(l.rule_for_addr(&sa("192.0.2.5:8080")).as_deref(), Some("192.0.2.5:8080"));
        assert_eq!(l.rule_for_addr(&sa("[2001:db8::5]:53")).as_deref(), Some("[2001:db8::5]:53"));
        assert_eq!(l.rule_for_addr(&sa("[::1]:1")).as_deref(), Some("::1/128"));
        assert_eq!(l.rule_for_addr(&sa("192.0.2.5:8081")), None);
        assert_eq!(BypassList::parse("*").unwrap().rule_for_addr(&sa("192.0.2.1:1")).as_deref(), Some("*"));
    }

    #[test]
    fn star_and_empty() {
        assert!(BypassList::parse("*").unwrap().bypasses_addr(&sa("192.0.2.1:1")));
        let empty = BypassList::parse("").unwrap();
        assert!(!empty.bypasses_addr(&sa("127.0.0.1:1")), "an empty list proxies even loopback");
        assert!(BypassList::parse("0.0.0.0/0").unwrap().bypasses_addr(&sa("[::ffff:1.2.3.4]:1")));
    }

    #[test]
    fn malformed_rules() {
        for bad in ["10.0.0.0/33", "::/129", "x/8", "a..b", "host:port", "[::1]:x", "bad host", "10.0.0.0/8:80", "[::1]/8"] {
            assert!(BypassList::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(BypassList::parse("a, 10.0.0.0/33"), Err("\"10.0.0.0/33\": prefix `33` is not 0..=32".into()));
    }

    #[test]
    fn a_v4_mapped_network_is_its_ipv4_network() {
        // Was every IPv4 address (a mask shifted out of range) and a panic
        // in a debug build; ::ffff:10.0.0.0/104 is 10.0.0.0/8.
        let l = BypassList::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(l.bypasses_addr(&sa("10.1.2.3:80")));
        assert!(!l.bypasses_addr(&sa("11.0.0.1:80")));
        assert_eq!(l.addr_rules(), [(Cidr::parse("10.0.0.0/8").unwrap(), None)]);
    }
}
