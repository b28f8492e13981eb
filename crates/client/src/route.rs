//! Where a destination goes: direct, or through the proxy. Pure decisions
//! on the configuration and the first hop's resolved addresses; the front
//! ends add what only they know (the shim: addresses its real resolver gave
//! for bypassed names).

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
    !is_fake(config, dst.ip())
        && (config.no_proxy.bypasses_addr(dst)
            || is_first_hop(first_hop, dst)
            || (config.no_proxy.has_name_rules() && resolved_for_bypassed_name(dst.ip())))
}
