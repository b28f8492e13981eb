//! Where a destination goes: direct, or through the proxy; and who answers
//! a name or address look-up. Pure decisions on the configuration and the
//! first hop's resolved addresses; the front ends add what only they know
//! (the shim: addresses its real resolver gave for bypassed names, the
//! `/etc/hosts` entry of a name) and do the side effects (handing out fake
//! addresses, remembering bypassed answers, logging).

use socksify_proto::config::{Config, DnsMode};
use socksify_proto::wire::canonical_ip;
use std::net::{IpAddr, SocketAddr};

/// Whether `ip` is in the fake pools (remote DNS only): such an address is
/// never bypassed and never connected to directly. A range check, no lock.
pub fn is_fake(config: &Config, ip: IpAddr) -> bool {
    config.dns == DnsMode::Remote && (config.fake_v4.contains(ip) || config.fake_v6.contains(ip))
}

/// Whether `addr` is one of the first hop's addresses: a program that
/// talks to the proxy itself (say, `curl --socks5`) goes there directly.
pub fn is_first_hop(first_hop: &[SocketAddr], addr: &SocketAddr) -> bool {
    let ip = canonical_ip(addr.ip());
    first_hop.iter().any(|p| p.port() == addr.port() && canonical_ip(p.ip()) == ip)
}

/// Whether traffic to `dst` goes direct: a `SOCKSIFY_NO_PROXY` rule covers
/// it, it is the proxy itself, or `resolved_for_bypassed_name` says a
/// bypassed name resolved to it (asked last, and only with name rules: it
/// may take a lock). Never for a fake address: the fake pool wins over any
/// rule that happens to cover it, so a name is never connected by its fake
/// address. The one routing decision of TCP and UDP alike.
pub fn goes_direct(
    config: &Config,
    first_hop: &[SocketAddr],
    dst: &SocketAddr,
    resolved_for_bypassed_name: impl FnOnce(IpAddr) -> bool,
) -> bool {
    direct_reason(config, first_hop, dst, resolved_for_bypassed_name).is_some()
}

/// Why traffic goes direct: what `-v` says for each direct connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// A `SOCKSIFY_NO_PROXY` rule, as written; `default`: the list is the
    /// default one (the user did not set it).
    Rule { rule: String, default: bool },
    /// The destination is the first proxy itself.
    Proxy,
    /// A name a rule bypasses resolved to this address.
    BypassedName,
}

impl std::fmt::Display for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Direct::Rule { rule, default: true } => {
                write!(f, "SOCKSIFY_NO_PROXY rule {rule} of the default list (-n '' or SOCKSIFY_NO_PROXY= proxies it)")
            }
            Direct::Rule { rule, default: false } => write!(f, "SOCKSIFY_NO_PROXY rule {rule}"),
            Direct::Proxy => write!(f, "it is the proxy itself"),
            Direct::BypassedName => write!(f, "a name SOCKSIFY_NO_PROXY bypasses resolved to it"),
        }
    }
}

/// [`goes_direct`], with the reason; `None`: proxied.
pub fn direct_reason(
    config: &Config,
    first_hop: &[SocketAddr],
    dst: &SocketAddr,
    resolved_for_bypassed_name: impl FnOnce(IpAddr) -> bool,
) -> Option<Direct> {
    if is_fake(config, dst.ip()) {
        return None;
    }
    if let Some(rule) = config.no_proxy.rule_for_addr(dst) {
        return Some(Direct::Rule { rule, default: config.no_proxy_is_default });
    }
    if is_first_hop(first_hop, dst) {
        return Some(Direct::Proxy);
    }
    (config.no_proxy.has_name_rules() && resolved_for_bypassed_name(dst.ip())).then_some(Direct::BypassedName)
}

/// Who answers a forward look-up of a host name (not an address: libc
/// answers those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameLookup<'a, H> {
    /// The real resolver: local DNS mode, or a name `SOCKSIFY_NO_PROXY`
    /// bypasses (`bypassed`: the caller remembers the addresses it gets, so
    /// that connections to them go direct too).
    Resolver { bypassed: bool },
    /// `/etc/hosts` lists it: the entry the caller's `hosts` gave.
    Hosts(H),
    /// The proxy resolves it: the caller hands out a fake address pair from
    /// this configuration's pools.
    Fake(&'a Config),
    /// No name can be this one (empty, or over 255 bytes).
    NotFound,
    /// The configuration is malformed: a name that would need the proxy
    /// fails rather than going to DNS.
    Refused,
}

/// Who answers a look-up of `name` (port `port`, 0 when the caller gives
/// none): the rules in order, first match wins. `config` is `None` when
/// the configuration is malformed; `hosts` looks the name up in
/// `/etc/hosts` and is asked only after the bypass and local-mode rules.
/// No DNS query may leave for a name the proxy should resolve.
pub fn name_lookup<'a, H>(config: Option<&'a Config>, name: &str, port: u16, hosts: impl FnOnce(&str) -> Option<H>) -> NameLookup<'a, H> {
    if let Some(config) = config {
        if config.no_proxy.bypasses_name(name, port) {
            return NameLookup::Resolver { bypassed: true };
        }
        if config.dns == DnsMode::Local {
            return NameLookup::Resolver { bypassed: false };
        }
    }
    if let Some(entry) = hosts(name) {
        return NameLookup::Hosts(entry);
    }
    let Some(config) = config else { return NameLookup::Refused };
    let key = socksify_proto::fake_dns::normalize(name);
    if key.is_empty() || key.len() > 255 {
        return NameLookup::NotFound;
    }
    NameLookup::Fake(config)
}

/// Who answers a reverse look-up of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrLookup<'a> {
    /// A fake address of this configuration's pools: the name the
    /// fake-address table holds for it, if any.
    FakeName(&'a Config),
    /// The real resolver: local DNS mode, or an address
    /// `SOCKSIFY_NO_PROXY` bypasses.
    Resolver,
    /// `/etc/hosts` only, else not found (or the numeric form): a PTR
    /// query would tell DNS which addresses the program talks to.
    HostsOnly,
}

/// Who answers a reverse look-up of `ip` (`port`: the caller's, else 0).
/// `config` is `None` when the configuration is malformed.
pub fn addr_lookup(config: Option<&Config>, ip: IpAddr, port: u16) -> AddrLookup<'_> {
    let Some(config) = config else { return AddrLookup::HostsOnly };
    if is_fake(config, ip) {
        return AddrLookup::FakeName(config);
    }
    if config.dns == DnsMode::Local || config.no_proxy.bypasses_addr(&SocketAddr::new(ip, port)) {
        return AddrLookup::Resolver;
    }
    AddrLookup::HostsOnly
}

/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// Whether `dst` is one of `nameservers` (resolv.conf's) on the DNS port.
pub fn is_nameserver(nameservers: &[IpAddr], dst: &SocketAddr) -> bool {
    let ip = canonical_ip(dst.ip());
    dst.port() == DNS_PORT && nameservers.iter().any(|ns| canonical_ip(*ns) == ip)
}

/// Whether DNS traffic to `dst` is answered in-process by the front end's
/// responder (remote DNS mode, a resolv.conf nameserver): a program with
/// its own resolver (dig, node, Go) then sends no query anywhere. Decided
/// before any bypass rule, which may well cover the nameserver.
pub fn answers_dns(config: &Config, nameservers: &[IpAddr], dst: &SocketAddr) -> bool {
    config.dns == DnsMode::Remote && is_nameserver(nameservers, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// The configuration these variables give (`SOCKSIFY_PROXY` is the
    /// default, socks5h on 127.0.0.1:1080: remote DNS).
    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        Config::from_lookup(|name| map.get(name).map(|v| v.to_string())).unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "192.0.2.100:1080";

    /// `goes_direct` with the first hop at [`PROXY`] and no bypassed name resolved.
    fn direct(config: &Config, dst: &str) -> bool {
        goes_direct(config, &[sa(PROXY)], &sa(dst), |_| false)
    }

    #[test]
    fn bypass_by_address_cidr_and_port() {
        let c = config(&[("SOCKSIFY_NO_PROXY", "10.0.0.0/8, fd00::/8, 192.0.2.5, 192.0.2.6:8080, [2001:db8::6]:53")]);
        assert!(direct(&c, "10.1.2.3:443") && direct(&c, "[::ffff:10.1.2.3]:443"), "a CIDR, v4-mapped too");
        assert!(!direct(&c, "11.0.0.1:443"));
        assert!(direct(&c, "[fd12::1]:22") && !direct(&c, "[fe80::1]:22"));
        assert!(direct(&c, "192.0.2.5:1") && direct(&c, "192.0.2.5:65535"), "an address without a port: every port");
        assert!(direct(&c, "192.0.2.6:8080") && !direct(&c, "192.0.2.6:8081"), "an address with a port: that port only");
        assert!(direct(&c, "[2001:db8::6]:53") && !direct(&c, "[2001:db8::6]:54"));
        assert!(!direct(&c, "127.0.0.1:80"), "a list without loopback proxies loopback");
    }

    #[test]
    fn the_default_list_is_loopback_and_star_is_everything() {
        let c = config(&[]);
        assert!(direct(&c, "127.0.0.1:80") && direct(&c, "127.9.9.9:80") && direct(&c, "[::1]:80"));
        assert!(!direct(&c, "192.0.2.1:80") && !direct(&c, "[2001:db8::1]:80"));
        let all = config(&[("SOCKSIFY_NO_PROXY", "*")]);
        assert!(direct(&all, "192.0.2.1:80") && direct(&all, "[2001:db8::1]:80"));
    }

    #[test]
    fn the_proxy_itself_goes_direct() {
        let c = config(&[("SOCKSIFY_NO_PROXY", "")]);
        assert!(direct(&c, PROXY) && direct(&c, "[::ffff:192.0.2.100]:1080"));
        assert!(!direct(&c, "192.0.2.100:1081"), "only the proxy's port");
        assert!(!goes_direct(&c, &[], &sa(PROXY), |_| false), "not without the first hop's addresses");
    }

    #[test]
    fn addresses_of_bypassed_names_are_asked_only_with_name_rules() {
        let named = config(&[("SOCKSIFY_NO_PROXY", ".corp.example")]);
        let asked = Cell::new(None);
        let resolved = |ip: IpAddr| {
            asked.set(Some(ip));
            ip == self::ip("192.0.2.7")
        };
        assert!(goes_direct(&named, &[], &sa("192.0.2.7:443"), resolved));
        assert_eq!(asked.take(), Some(ip("192.0.2.7")));
        assert!(!goes_direct(&named, &[], &sa("192.0.2.8:443"), resolved));
        assert_eq!(asked.take(), Some(ip("192.0.2.8")));
        let unnamed = config(&[("SOCKSIFY_NO_PROXY", "10.0.0.0/8")]);
        assert!(!goes_direct(&unnamed, &[], &sa("192.0.2.7:443"), resolved));
        assert_eq!(asked.take(), None, "no name rule: no bypassed name can have resolved to it");
    }

    #[test]
    fn fake_addresses_never_go_direct() {
        // Rules that cover the pools, the proxy at a fake address, and a
        // bypassed name said to have resolved there: still proxied.
        let c = config(&[("SOCKSIFY_NO_PROXY", "*,198.18.0.0/15,fd50:c5f1:f1ed::/64,.corp.example")]);
        for dst in ["198.18.0.5:443", "[::ffff:198.18.0.5]:443", "198.19.255.254:1", "[fd50:c5f1:f1ed::5]:443"] {
            assert!(is_fake(&c, sa(dst).ip()), "{dst}");
            assert!(!goes_direct(&c, &[sa(dst)], &sa(dst), |_| true), "{dst}");
        }
        assert!(direct(&c, "198.20.0.1:443"), "just past the IPv4 pool");
        // Local DNS hands out no fake addresses: the range is an ordinary one.
        let local = config(&[("SOCKSIFY_NO_PROXY", "198.18.0.0/15"), ("SOCKSIFY_DNS", "local")]);
        assert!(!is_fake(&local, ip("198.18.0.5")) && direct(&local, "198.18.0.5:443"));
        // SOCKSIFY_FAKE_NET moves the pools.
        let moved = config(&[("SOCKSIFY_FAKE_NET", "10.64.0.0/16"), ("SOCKSIFY_NO_PROXY", "10.0.0.0/8")]);
        assert!(is_fake(&moved, ip("10.64.1.1")) && !direct(&moved, "10.64.1.1:80") && direct(&moved, "10.65.1.1:80"));
        assert!(!is_fake(&moved, ip("198.18.0.5")));
    }

    /// `name_lookup` with `/etc/hosts` listing only `hosted.test`.
    fn lookup<'a>(config: Option<&'a Config>, name: &str, port: u16) -> NameLookup<'a, &'static str> {
        name_lookup(config, name, port, |n| (n == "hosted.test").then_some("hosts entry"))
    }

    #[test]
    fn names_bypassed_by_name_suffix_and_port_go_to_the_resolver() {
        let c = config(&[("SOCKSIFY_NO_PROXY", "intranet,.corp.example,db:5432,hosted.test")]);
        let resolver = NameLookup::Resolver { bypassed: true };
        for (name, port) in [("intranet", 0), ("a.intranet", 0), ("INTRANET.", 80), ("corp.example", 0), ("x.y.corp.example", 443), ("db", 5432)] {
            assert_eq!(lookup(Some(&c), name, port), resolver, "{name}:{port}");
        }
        assert_eq!(lookup(Some(&c), "hosted.test", 0), resolver, "a bypass rule wins over /etc/hosts");
        for (name, port) in [("db", 5433), ("db", 0), ("notcorp.example", 0), ("intranet.example", 0)] {
            assert_eq!(lookup(Some(&c), name, port), NameLookup::Fake(&c), "{name}:{port}: a port rule needs that port");
        }
    }

    #[test]
    fn remote_dns_fakes_what_hosts_does_not_list() {
        let c = config(&[]);
        assert_eq!(lookup(Some(&c), "example.org", 443), NameLookup::Fake(&c));
        assert_eq!(lookup(Some(&c), "hosted.test", 443), NameLookup::Hosts("hosts entry"));
        assert_eq!(lookup(Some(&c), "localhost", 0), NameLookup::Resolver { bypassed: true }, "the default list names localhost");
    }

    #[test]
    fn local_dns_gives_every_name_to_the_resolver() {
        for c in [config(&[("SOCKSIFY_DNS", "local")]), config(&[("SOCKSIFY_PROXY", "socks5://192.0.2.1:1080")])] {
            assert_eq!(c.dns, DnsMode::Local);
            assert_eq!(lookup(Some(&c), "example.org", 443), NameLookup::Resolver { bypassed: false });
            assert_eq!(lookup(Some(&c), "hosted.test", 0), NameLookup::Resolver { bypassed: false }, "libc reads /etc/hosts itself");
            assert_eq!(lookup(Some(&c), "", 0), NameLookup::Resolver { bypassed: false });
        }
    }

    #[test]
    fn names_that_cannot_exist_are_not_found() {
        let c = config(&[]);
        let longest = "a".repeat(255);
        assert_eq!(lookup(Some(&c), &longest, 0), NameLookup::Fake(&c));
        assert_eq!(lookup(Some(&c), &format!("{longest}."), 0), NameLookup::Fake(&c), "a trailing dot is not part of the name");
        for name in [String::new(), ".".into(), "a".repeat(256)] {
            assert_eq!(lookup(Some(&c), &name, 0), NameLookup::NotFound, "{} bytes", name.len());
        }
    }

    #[test]
    fn a_malformed_configuration_refuses_what_hosts_does_not_list() {
        assert_eq!(lookup(None, "example.org", 443), NameLookup::Refused, "never the resolver: the name may be secret");
        assert_eq!(lookup(None, "localhost", 0), NameLookup::Refused);
        assert_eq!(lookup(None, "hosted.test", 0), NameLookup::Hosts("hosts entry"));
        assert_eq!(addr_lookup(None, ip("127.0.0.1"), 0), AddrLookup::HostsOnly);
        assert_eq!(addr_lookup(None, ip("198.18.0.1"), 0), AddrLookup::HostsOnly);
    }

    #[test]
    fn reverse_look_ups_of_fake_bypassed_and_other_addresses() {
        let c = config(&[("SOCKSIFY_NO_PROXY", "127.0.0.0/8,198.18.0.0/15,192.0.2.6:8080")]);
        for fake in ["198.18.0.1", "::ffff:198.18.0.1", "fd50:c5f1:f1ed::1"] {
            assert_eq!(addr_lookup(Some(&c), ip(fake), 0), AddrLookup::FakeName(&c), "{fake}: even where a rule covers it");
        }
        assert_eq!(addr_lookup(Some(&c), ip("127.0.0.1"), 0), AddrLookup::Resolver);
        assert_eq!(addr_lookup(Some(&c), ip("192.0.2.6"), 8080), AddrLookup::Resolver);
        assert_eq!(addr_lookup(Some(&c), ip("192.0.2.6"), 0), AddrLookup::HostsOnly, "a port rule needs that port");
        assert_eq!(addr_lookup(Some(&c), ip("192.0.2.1"), 0), AddrLookup::HostsOnly);
        assert_eq!(addr_lookup(Some(&c), ip("2001:db8::1"), 0), AddrLookup::HostsOnly);
        let local = config(&[("SOCKSIFY_DNS", "local"), ("SOCKSIFY_NO_PROXY", "")]);
        assert_eq!(addr_lookup(Some(&local), ip("192.0.2.1"), 0), AddrLookup::Resolver);
        assert_eq!(addr_lookup(Some(&local), ip("198.18.0.1"), 0), AddrLookup::Resolver, "no fake addresses in local mode");
    }

    #[test]
    fn dns_to_a_resolv_conf_nameserver_is_answered_in_process_in_remote_mode_only() {
        let ns: Vec<IpAddr> = vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()];
        let remote = config(&[]);
        let local = config(&[("SOCKSIFY_DNS", "local")]);
        let at = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert!(answers_dns(&remote, &ns, &at("10.0.0.53:53")));
        assert!(answers_dns(&remote, &ns, &at("[::ffff:10.0.0.53]:53")), "a v4-mapped nameserver is the nameserver");
        assert!(answers_dns(&remote, &ns, &at("[fd00::53]:53")));
        assert!(!answers_dns(&remote, &ns, &at("10.0.0.53:5353")), "another port is not DNS");
        assert!(!answers_dns(&remote, &ns, &at("10.0.0.54:53")), "another server is not a nameserver of resolv.conf");
        assert!(!answers_dns(&local, &ns, &at("10.0.0.53:53")), "local DNS mode: the nameserver is asked");
        assert!(is_nameserver(&ns, &at("10.0.0.53:53")) && !is_nameserver(&[], &at("10.0.0.53:53")));
    }
}
