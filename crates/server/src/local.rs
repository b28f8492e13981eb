//! Destinations that are this host: loopback, link-local, "this network"
//! (`0.0.0.0/8`, `::`, which reach the host itself) and the addresses of the
//! server's own interfaces. A server that listens beyond loopback denies
//! them unless a rule allows them (see [`crate::cli::Config::dest_allowed`]),
//! so that a client cannot reach services bound to loopback, the cloud
//! metadata address `169.254.169.254`, or the server host's own ports.
//!
//! Promise: [`is_this_host`] judges against the interface addresses as they
//! were at most [`REFRESH`] ago (`getifaddrs` is a netlink dump, too slow to
//! run for every datagram); IPv4-mapped IPv6 addresses count as IPv4.

use socksify_proto::wire::canonical_ip;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old the list of interface addresses may be.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Whether `ip` is this host: loopback, link-local, unspecified/this-network,
/// or an address of one of its interfaces.
pub fn is_this_host(ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    let special = match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.octets()[0] == 0,
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    special || own_addrs().contains(&ip)
}

/// The interface addresses, refreshed when older than [`REFRESH`].
fn own_addrs() -> Arc<Vec<IpAddr>> {
    static CACHE: Mutex<Option<(Instant, Arc<Vec<IpAddr>>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, addrs)) = &*cache {
        if at.elapsed() < REFRESH {
            return addrs.clone();
        }
    }
    // On failure keep what we knew (the special ranges are judged anyway).
    let addrs = match interface_addrs() {
        Some(a) => Arc::new(a),
        None => cache.as_ref().map(|(_, a)| a.clone()).unwrap_or_default(),
    };
    *cache = Some((Instant::now(), addrs.clone()));
    addrs
}

/// Every IPv4 and IPv6 address of every interface, from `getifaddrs(3)`.
fn interface_addrs() -> Option<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let ip = unsafe {
                match (*ifa.ifa_addr).sa_family as libc::c_int {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            out.extend(ip.map(canonical_ip));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_and_own_loopback_are_this_host() {
        for local in ["127.0.0.1", "127.9.9.9", "0.0.0.0", "0.1.2.3", "169.254.169.254", "::1", "::", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(is_this_host(ip(local)), "{local}");
        }
        for remote in ["192.0.2.1", "10.0.0.1", "2001:db8::1", "fec0::1", "::ffff:192.0.2.1"] {
            assert!(!is_this_host(ip(remote)), "{remote}");
        }
    }
}
