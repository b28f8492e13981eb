//! Which addresses a `getaddrinfo` answer holds, and in which order, for a
//! name whose addresses a front end knows itself (fake addresses, an
//! `/etc/hosts` entry): the caller's hints narrow them as glibc does
//! ([`narrow`], with `AI_ADDRCONFIG` by [`addrconfig_family`]), and
//! [`order`] sorts them by the rules of RFC 6724's destination address
//! selection that need no source address (6 and 10). Pure: the caller
//! asks the machine which families it has ([`Configured`]).
//!
//! What glibc decides from the service and the rest of the hints (socket
//! types, protocols, ports, flag errors) is not here: the shim asks glibc
//! itself, with a numeric host.

use libc::{c_int, AF_INET, AF_INET6, AF_UNSPEC, AI_ADDRCONFIG, AI_ALL, AI_V4MAPPED};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// glibc's flags when the caller passes no hints (`AI_DEFAULT`).
pub const DEFAULT_FLAGS: c_int = AI_V4MAPPED | AI_ADDRCONFIG;

/// The fields of the caller's `hints` that shape the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub flags: c_int,
    pub family: c_int,
    pub socktype: c_int,
    pub protocol: c_int,
}

impl Hints {
    /// What glibc assumes for a null `hints` pointer.
    pub const DEFAULT: Hints = Hints { flags: DEFAULT_FLAGS, family: AF_UNSPEC, socktype: 0, protocol: 0 };
}

/// Which families the machine has an address of, as `AI_ADDRCONFIG` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    pub v4: bool,
    pub v6: bool,
}

impl Configured {
    /// When the machine's addresses cannot be listed: narrow nothing (as glibc).
    pub const UNKNOWN: Configured = Configured { v4: true, v6: true };

    /// From the machine's interface addresses, counted as glibc's
    /// `__check_pf` counts them: the loopback address of a family does not
    /// make that family configured.
    pub fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> Configured {
        let mut seen = Configured { v4: false, v6: false };
        for ip in addrs {
            match ip {
                IpAddr::V4(ip) if ip != Ipv4Addr::LOCALHOST => seen.v4 = true,
                IpAddr::V6(ip) if ip != Ipv6Addr::LOCALHOST => seen.v6 = true,
                _ => {}
            }
        }
        seen
    }
}

/// No address is left for the request: the caller's `EAI_NONAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoAddress;

/// The family `AI_ADDRCONFIG` leaves of a request for `family`: an
/// unspecified family becomes the only one configured (neither or both:
/// unchanged, so a machine with only loopback still gets both); a family
/// that is not configured has no answer.
pub fn addrconfig_family(family: c_int, configured: Configured) -> Result<c_int, NoAddress> {
    match family {
        AF_UNSPEC if configured.v4 && !configured.v6 => Ok(AF_INET),
        AF_UNSPEC if configured.v6 && !configured.v4 => Ok(AF_INET6),
        AF_INET if !configured.v4 => Err(NoAddress),
        AF_INET6 if !configured.v6 => Err(NoAddress),
        _ => Ok(family),
    }
}

/// The addresses of `v4` and `v6` a request for `family` gets, before
/// ordering: `AF_INET` the IPv4 ones, `AF_INET6` the IPv6 ones and, with
/// `AI_V4MAPPED`, the IPv4 ones mapped when there is no IPv6 one (or always,
/// with `AI_ALL`), else both families, IPv4 first.
pub fn narrow(family: c_int, flags: c_int, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<IpAddr> {
    match family {
        AF_INET => v4.iter().map(|&ip| ip.into()).collect(),
        AF_INET6 => {
            let mut out: Vec<IpAddr> = v6.iter().map(|&ip| ip.into()).collect();
            if flags & AI_V4MAPPED != 0 && (out.is_empty() || flags & AI_ALL != 0) {
                out.extend(v4.iter().map(|ip| IpAddr::V6(ip.to_ipv6_mapped())));
            }
            out
        }
        _ => v4.iter().map(|&ip| IpAddr::from(ip)).chain(v6.iter().map(|&ip| ip.into())).collect(),
    }
}

/// A destination's precedence in RFC 6724's default policy table
/// (section 2.1), an IPv4 address as its IPv4-mapped form (section 2).
/// glibc's compiled-in table (used without `/etc/gai.conf` rules) is
/// still RFC 3484's (IPv4 10, below global IPv6 at 40; no unique-local,
/// Teredo or deprecated rows); this one is RFC 6724's, which puts a fake
/// IPv4 address before its unique-local IPv6 twin.
pub fn precedence(ip: IpAddr) -> u8 {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(v6);
    let within = |net: u128, prefix: u32| bits & u128::MAX.checked_shl(128 - prefix).unwrap_or(0) == net;
    if bits == 1 {
        50 // ::1/128
    } else if within(0xffff << 32, 96) {
        35 // ::ffff:0:0/96, IPv4
    } else if within(0x2002 << 112, 16) {
        30 // 2002::/16, 6to4
    } else if within(0x2001_0000 << 96, 32) {
        5 // 2001::/32, Teredo
    } else if within(0xfc << 120, 7) {
        3 // fc00::/7, unique local
    } else if within(0, 96) || within(0xfec0 << 112, 10) || within(0x3ffe << 112, 16) {
        1 // IPv4-compatible, site-local, 6bone: deprecated
    } else {
        40 // ::/0
    }
}

/// Sorts destinations by RFC 6724 section 6: rule 6, higher precedence
/// first; rule 10, otherwise the order is left unchanged (a stable sort).
/// Rules 1 to 5 and 7 to 9 compare each destination's source address,
/// which a name we answer ourselves (a fake address, or a hosts entry the
/// program connects to through the proxy) does not have.
pub fn order(addrs: &mut [IpAddr]) {
    addrs.sort_by_key(|ip| std::cmp::Reverse(precedence(*ip)));
}

/// The addresses to return, in order, for a name whose addresses are `v4`
/// and `v6`: [`addrconfig_family`] (with `AI_ADDRCONFIG` only: `configured`
/// is asked only then), [`narrow`], [`order`]. An empty answer is
/// [`NoAddress`].
pub fn select(hints: &Hints, v4: &[Ipv4Addr], v6: &[Ipv6Addr], configured: impl FnOnce() -> Configured) -> Result<Vec<IpAddr>, NoAddress> {
    let family = if hints.flags & AI_ADDRCONFIG != 0 { addrconfig_family(hints.family, configured())? } else { hints.family };
    let mut out = narrow(family, hints.flags, v4, v6);
    order(&mut out);
    if out.is_empty() {
        return Err(NoAddress);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    const BOTH: Configured = Configured { v4: true, v6: true };
    const ONLY_V4: Configured = Configured { v4: true, v6: false };
    const ONLY_V6: Configured = Configured { v4: false, v6: true };
    const NEITHER: Configured = Configured { v4: false, v6: false };

    // ---- RFC 6724 section 2.1: the default policy table, one row each.

    #[test]
    fn precedence_of_loopback_is_50() {
        assert_eq!(precedence(ip("::1")), 50);
        assert_eq!(precedence(ip("::2")), 1, "only ::1/128, not its neighbours (::/96)");
    }

    #[test]
    fn precedence_of_ipv4_is_35_as_its_mapped_form() {
        for a in ["198.18.0.1", "127.0.0.1", "10.1.2.3", "::ffff:192.0.2.1", "::ffff:0.0.0.0"] {
            assert_eq!(precedence(ip(a)), 35, "{a}");
        }
    }

    #[test]
    fn precedence_of_6to4_is_30() {
        assert_eq!(precedence(ip("2002::1")), 30);
        assert_eq!(precedence(ip("2002:ffff:ffff::1")), 30);
        assert_eq!(precedence(ip("2003::1")), 40, "2002::/16 only");
    }

    #[test]
    fn precedence_of_teredo_is_5() {
        assert_eq!(precedence(ip("2001::1")), 5);
        assert_eq!(precedence(ip("2001:0:ffff::1")), 5);
        assert_eq!(precedence(ip("2001:1::1")), 40, "2001::/32 only");
        assert_eq!(precedence(ip("2001:db8::1")), 40);
    }

    #[test]
    fn precedence_of_unique_local_is_3() {
        assert_eq!(precedence(ip("fc00::1")), 3);
        assert_eq!(precedence(ip("fd50:c5f1:f1ed::1")), 3);
        assert_eq!(precedence(ip("fe00::1")), 40, "fc00::/7 only");
    }

    #[test]
    fn precedence_of_deprecated_prefixes_is_1() {
        assert_eq!(precedence(ip("::192.0.2.1")), 1, "IPv4-compatible ::/96");
        assert_eq!(precedence(ip("::")), 1);
        assert_eq!(precedence(ip("fec0::1")), 1, "site-local fec0::/10");
        assert_eq!(precedence(ip("feff::1")), 1);
        assert_eq!(precedence(ip("3ffe::1")), 1, "6bone 3ffe::/16");
        assert_eq!(precedence(ip("fe80::1")), 40, "link-local is not site-local");
        assert_eq!(precedence(ip("3fff::1")), 40);
    }

    #[test]
    fn precedence_of_any_other_address_is_40() {
        for a in ["2001:db8::7", "2a00::1", "fe80::1", "ff02::1", "::1:0:0:0"] {
            assert_eq!(precedence(ip(a)), 40, "{a}");
        }
    }

    // ---- RFC 6724 section 6: the rules the code implements.

    #[test]
    fn rule_6_prefers_higher_precedence() {
        let mut a = ips(&["fd50::1", "2001::1", "198.18.0.1", "2001:db8::1", "::1", "fec0::1", "2002::1"]);
        order(&mut a);
        assert_eq!(a, ips(&["::1", "2001:db8::1", "198.18.0.1", "2002::1", "2001::1", "fd50::1", "fec0::1"]));
    }

    #[test]
    fn rule_10_leaves_the_order_unchanged_otherwise() {
        let mut a = ips(&["2001:db8::2", "2001:db8::1", "2a00::9"]);
        order(&mut a);
        assert_eq!(a, ips(&["2001:db8::2", "2001:db8::1", "2a00::9"]));
        let mut a = ips(&["198.18.0.9", "fd50::1", "198.18.0.1", "fd50::0"]);
        order(&mut a);
        assert_eq!(a, ips(&["198.18.0.9", "198.18.0.1", "fd50::1", "fd50::0"]), "ties keep their order");
    }

    // ---- AI_ADDRCONFIG

    #[test]
    fn configured_families_do_not_count_loopback() {
        assert_eq!(Configured::from_addrs([]), NEITHER);
        assert_eq!(Configured::from_addrs(ips(&["127.0.0.1", "::1"])), NEITHER);
        assert_eq!(Configured::from_addrs(ips(&["127.0.0.1", "192.0.2.9", "::1"])), ONLY_V4);
        assert_eq!(Configured::from_addrs(ips(&["127.0.0.1", "2001:db8::9"])), ONLY_V6);
        assert_eq!(Configured::from_addrs(ips(&["2001:db8::9", "192.0.2.9"])), BOTH);
    }

    #[test]
    fn addrconfig_narrows_an_unspecified_family_to_the_one_configured() {
        assert_eq!(addrconfig_family(AF_UNSPEC, ONLY_V4), Ok(AF_INET));
        assert_eq!(addrconfig_family(AF_UNSPEC, ONLY_V6), Ok(AF_INET6));
        assert_eq!(addrconfig_family(AF_UNSPEC, BOTH), Ok(AF_UNSPEC));
        assert_eq!(addrconfig_family(AF_UNSPEC, NEITHER), Ok(AF_UNSPEC), "only loopback: no narrowing");
    }

    #[test]
    fn addrconfig_refuses_a_family_that_is_not_configured() {
        assert_eq!(addrconfig_family(AF_INET, ONLY_V6), Err(NoAddress));
        assert_eq!(addrconfig_family(AF_INET6, ONLY_V4), Err(NoAddress));
        assert_eq!(addrconfig_family(AF_INET, ONLY_V4), Ok(AF_INET));
        assert_eq!(addrconfig_family(AF_INET6, BOTH), Ok(AF_INET6));
    }

    // ---- narrowing by hints

    #[test]
    fn a_family_keeps_its_own_addresses() {
        let v4 = [Ipv4Addr::new(198, 18, 0, 1)];
        let v6: [Ipv6Addr; 1] = ["fd50::1".parse().unwrap()];
        assert_eq!(narrow(AF_INET, 0, &v4, &v6), ips(&["198.18.0.1"]));
        assert_eq!(narrow(AF_INET6, 0, &v4, &v6), ips(&["fd50::1"]));
        assert_eq!(narrow(AF_UNSPEC, 0, &v4, &v6), ips(&["198.18.0.1", "fd50::1"]));
        assert_eq!(narrow(AF_INET6, 0, &v4, &[]), Vec::<IpAddr>::new(), "no mapping without AI_V4MAPPED");
    }

    #[test]
    fn v4mapped_maps_only_without_an_ipv6_address_unless_all() {
        let v4 = [Ipv4Addr::new(198, 18, 0, 1)];
        let v6: [Ipv6Addr; 1] = ["fd50::1".parse().unwrap()];
        assert_eq!(narrow(AF_INET6, AI_V4MAPPED, &v4, &v6), ips(&["fd50::1"]));
        assert_eq!(narrow(AF_INET6, AI_V4MAPPED, &v4, &[]), ips(&["::ffff:198.18.0.1"]));
        assert_eq!(narrow(AF_INET6, AI_V4MAPPED | AI_ALL, &v4, &v6), ips(&["fd50::1", "::ffff:198.18.0.1"]));
        assert_eq!(narrow(AF_INET6, AI_ALL, &v4, &[]), Vec::<IpAddr>::new(), "AI_ALL alone maps nothing");
        assert_eq!(narrow(AF_INET, AI_V4MAPPED | AI_ALL, &v4, &v6), ips(&["198.18.0.1"]), "only for AF_INET6");
    }

    // ---- all together

    #[test]
    fn select_narrows_orders_and_asks_the_machine_only_for_addrconfig() {
        let v4 = [Ipv4Addr::new(198, 18, 0, 1)];
        let v6: [Ipv6Addr; 1] = ["fd50:c5f1:f1ed::1".parse().unwrap()];
        let plain = Hints { flags: 0, ..Hints::DEFAULT };
        // IPv4 (35) before a unique local address (3), whatever order they came in.
        assert_eq!(select(&plain, &v4, &v6, || unreachable!()), Ok(ips(&["198.18.0.1", "fd50:c5f1:f1ed::1"])));
        let mapped = Hints { flags: AI_V4MAPPED | AI_ALL, family: AF_INET6, ..plain };
        assert_eq!(select(&mapped, &v4, &v6, || unreachable!()), Ok(ips(&["::ffff:198.18.0.1", "fd50:c5f1:f1ed::1"])));
        assert_eq!(select(&Hints { family: AF_INET6, ..plain }, &v4, &[], || unreachable!()), Err(NoAddress));
        assert_eq!(select(&Hints::DEFAULT, &v4, &v6, || ONLY_V6), Ok(ips(&["fd50:c5f1:f1ed::1"])));
        assert_eq!(select(&Hints::DEFAULT, &v4, &v6, || NEITHER).map(|a| a.len()), Ok(2));
        let v4_only = Hints { family: AF_INET, ..Hints::DEFAULT };
        assert_eq!(select(&v4_only, &v4, &v6, || ONLY_V6), Err(NoAddress));
    }
}
