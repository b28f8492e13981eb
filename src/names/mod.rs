//! What a look-up of a name or an address gets, for the resolver hooks
//! (`getaddrinfo`, `gethostbyname*`, `getnameinfo`): the client core's
//! decision ([`name_lookup`], [`addr_lookup`]) carried out: a fake address
//! allocated, `/etc/hosts` read, a malformed configuration reported, the
//! answer narrowed and ordered by the client core (`socksify_client::addrinfo`,
//! given the machine's families), a bypassed name's answer remembered.
//!
//! The hooks read the C arguments, call [`for_getaddrinfo`] or
//! [`for_hostent`], and lay out the C answer. The lists `getaddrinfo`
//! hands out: [`lists`]; what glibc resolves without our hooks
//! (`getaddrinfo_a`, `res_*`): [`unhooked`].

pub mod lists;
pub mod unhooked;

use crate::{fake_dns, hosts, runtime, socket_addr};
use socksify_client::addrinfo::{self, Configured, Hints};
use socksify_client::route::{addr_lookup, name_lookup, AddrLookup, NameLookup};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Who answers a forward look-up of a non-numeric name.
#[derive(Debug)]
pub enum Forward {
    /// libc's resolver: local mode, or a name `SOCKSIFY_NO_PROXY` bypasses.
    Libc(ByLibc),
    Hosts(hosts::Host),
    Fake(Ipv4Addr, Ipv6Addr),
    Failed(Failed),
}

/// Why a look-up we answer has no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// No such name, or no address of the family asked for.
    NotFound,
    /// The configuration is malformed: a name that would need the proxy
    /// fails rather than going to DNS.
    Refused,
    /// No fake address can be handed out safely now (fake_dns.rs).
    TryAgain,
}

/// libc answers; what it answers for a bypassed name is remembered, so
/// `connect` sends those addresses direct as the name rule says.
#[derive(Debug)]
#[must_use = "tell it what libc answered"]
pub struct ByLibc {
    bypassed: bool,
}

impl ByLibc {
    /// libc answered with the addresses `addrs` gives (asked only when
    /// they are to be remembered).
    pub fn answered(self, addrs: impl FnOnce() -> Vec<IpAddr>) {
        if self.bypassed {
            for ip in addrs() {
                crate::route::remember_bypassed(ip);
            }
        }
    }
}

/// `name` is not numeric; `port` is 0 when the caller gives none. The
/// decision is the client core's [`name_lookup`]; here its side effects.
pub fn forward(name: &str, port: u16) -> Forward {
    match name_lookup(runtime::config(), name, port, hosts::by_name) {
        NameLookup::Resolver { bypassed } => Forward::Libc(ByLibc { bypassed }),
        NameLookup::Hosts(host) => Forward::Hosts(host),
        NameLookup::NotFound => Forward::Failed(Failed::NotFound),
        NameLookup::Refused => {
            log::error!("look-up of {name:?} refused: the configuration is malformed (see the message above)");
            Forward::Failed(Failed::Refused)
        }
        NameLookup::Fake(config) => {
            fake_dns::addrs_for(config, name).map_or(Forward::Failed(Failed::TryAgain), |(v4, v6)| Forward::Fake(v4, v6))
        }
    }
}

/// What `getaddrinfo` answers for a name we answer ourselves.
#[derive(Debug)]
pub enum AddrInfo {
    Libc(ByLibc),
    /// The addresses in the order of the list, and the canonical name.
    Addrs {
        canon: String,
        addrs: Vec<IpAddr>,
    },
    Failed(Failed),
}

/// [`forward`], then the addresses the caller's `hints` keep, in glibc's
/// order (`socksify_client::addrinfo::select`; the machine's families are
/// listed only for `AI_ADDRCONFIG`).
pub fn for_getaddrinfo(name: &str, port: u16, hints: &Hints) -> AddrInfo {
    let (canon, v4, v6) = match forward(name, port) {
        Forward::Libc(libc) => return AddrInfo::Libc(libc),
        Forward::Hosts(h) => (h.canon, h.v4, h.v6),
        Forward::Fake(v4, v6) => (name.to_owned(), vec![v4], vec![v6]),
        Forward::Failed(why) => return AddrInfo::Failed(why),
    };
    match addrinfo::select(hints, &v4, &v6, configured_families) {
        Ok(addrs) => AddrInfo::Addrs { canon, addrs },
        Err(addrinfo::NoAddress) => AddrInfo::Failed(Failed::NotFound),
    }
}

/// What `gethostbyname*` answers for a name we answer ourselves.
#[derive(Debug)]
pub enum HostEntry {
    Libc(ByLibc),
    /// Every address is of the family asked for.
    Found {
        name: String,
        aliases: Vec<String>,
        addrs: Vec<IpAddr>,
    },
    Failed(Failed),
}

/// [`forward`], then the addresses of `family` (`AF_INET6` for anything
/// but `AF_INET`: the hook passes only these two).
pub fn for_hostent(name: &str, family: libc::c_int) -> HostEntry {
    let v4 = family == libc::AF_INET;
    let (canon, aliases, addrs): (String, Vec<String>, Vec<IpAddr>) = match forward(name, 0) {
        Forward::Libc(libc) => return HostEntry::Libc(libc),
        Forward::Hosts(h) if v4 => (h.canon, h.aliases, h.v4.into_iter().map(IpAddr::V4).collect()),
        Forward::Hosts(h) => (h.canon, h.aliases, h.v6.into_iter().map(IpAddr::V6).collect()),
        Forward::Fake(a, _) if v4 => (name.to_owned(), Vec::new(), vec![a.into()]),
        Forward::Fake(_, a) => (name.to_owned(), Vec::new(), vec![a.into()]),
        Forward::Failed(why) => return HostEntry::Failed(why),
    };
    if addrs.is_empty() {
        return HostEntry::Failed(Failed::NotFound);
    }
    HostEntry::Found { name: canon, aliases, addrs }
}

/// Which families the machine has a non-loopback address of, from
/// `getifaddrs` (`AI_ADDRCONFIG`'s question; cannot tell: both).
fn configured_families() -> Configured {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Configured::UNKNOWN;
    }
    // SAFETY: a list getifaddrs just built.
    let addrs = unsafe { interface_addrs(ifap) };
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    Configured::from_addrs(addrs)
}

/// The IPv4 and IPv6 addresses of one `getifaddrs` list.
///
/// # Safety
/// `list` is null or an `ifaddrs` list whose `ifa_addr`s are null or hold
/// a whole address of their family (other families: at least the family).
unsafe fn interface_addrs(list: *const libc::ifaddrs) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: walking the caller's list.
        let ifa = unsafe { &*cur };
        // An interface address is only as long as its family's sockaddr
        // (an AF_INET one is 16 bytes): read the family first.
        // SAFETY: null, or at least the family is readable.
        let len = match unsafe { socket_addr::family(ifa.ifa_addr, size_of::<libc::sa_family_t>() as libc::socklen_t) } {
            Some(libc::AF_INET) => size_of::<libc::sockaddr_in>(),
            Some(libc::AF_INET6) => size_of::<libc::sockaddr_in6>(),
            _ => 0,
        };
        // SAFETY: `len` bytes of that family are readable (the caller's promise).
        if let Some(sa) = unsafe { socket_addr::read(ifa.ifa_addr, len as libc::socklen_t) } {
            out.push(sa.ip());
        }
        cur = ifa.ifa_next;
    }
    out
}

/// Who answers a reverse look-up.
pub enum Reverse {
    Libc,
    Name(String, Vec<String>),
    NotFound,
}

/// The decision is the client core's [`addr_lookup`].
pub fn reverse(ip: IpAddr, port: u16) -> Reverse {
    match addr_lookup(runtime::config(), ip, port) {
        AddrLookup::FakeName(config) => fake_dns::name_for(config, ip).map_or(Reverse::NotFound, |n| Reverse::Name(n, Vec::new())),
        AddrLookup::Resolver => Reverse::Libc,
        AddrLookup::HostsOnly => hosts::by_addr(ip).map_or(Reverse::NotFound, |(n, a)| Reverse::Name(n, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{sockaddr, AF_INET, AF_INET6};
    use std::net::SocketAddr;

    #[test]
    fn interface_addresses_are_read_by_their_family_s_length() {
        // Each address in a block of exactly its family's size, as the kernel's are.
        fn v4(ip: Ipv4Addr) -> Box<libc::sockaddr_in> {
            let (st, _) = socket_addr::encode(&SocketAddr::new(ip.into(), 0), AF_INET).unwrap();
            // SAFETY: encode wrote a sockaddr_in at the start of the storage.
            Box::new(unsafe { std::ptr::read(&st as *const _ as *const libc::sockaddr_in) })
        }
        fn v6(ip: Ipv6Addr) -> Box<libc::sockaddr_in6> {
            let (st, _) = socket_addr::encode(&SocketAddr::new(ip.into(), 0), AF_INET6).unwrap();
            // SAFETY: encode wrote a sockaddr_in6 at the start of the storage.
            Box::new(unsafe { std::ptr::read(&st as *const _ as *const libc::sockaddr_in6) })
        }
        let packet = Box::new(sockaddr { sa_family: libc::AF_PACKET as libc::sa_family_t, sa_data: [0; 14] });
        let lo4 = v4(Ipv4Addr::LOCALHOST);
        let lo6 = v6(Ipv6Addr::LOCALHOST);
        let eth4 = v4(Ipv4Addr::new(192, 0, 2, 9));
        let eth6 = v6("2001:db8::9".parse().unwrap());
        let list = |addrs: &[*const sockaddr]| -> Vec<libc::ifaddrs> {
            let mut nodes: Vec<libc::ifaddrs> = addrs
                .iter()
                // SAFETY: all-zero is a valid ifaddrs (null pointers).
                .map(|&a| libc::ifaddrs { ifa_addr: a as *mut sockaddr, ..unsafe { std::mem::zeroed() } })
                .collect();
            for i in 1..nodes.len() {
                let next: *mut libc::ifaddrs = &mut nodes[i];
                nodes[i - 1].ifa_next = next;
            }
            nodes
        };
        let addrs = |addrs: &[*const sockaddr]| {
            let nodes = list(addrs);
            // SAFETY: nodes (alive until the end of the closure) link to each other; each address is null or whole.
            unsafe { interface_addrs(nodes.first().map_or(std::ptr::null(), |n| n as *const _)) }
        };
        let (packet, lo4, lo6) = (&*packet as *const sockaddr, &*lo4 as *const _ as *const sockaddr, &*lo6 as *const _ as *const sockaddr);
        let (eth4, eth6) = (&*eth4 as *const _ as *const sockaddr, &*eth6 as *const _ as *const sockaddr);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(addrs(&[]), Vec::<IpAddr>::new());
        assert_eq!(addrs(&[std::ptr::null(), packet, lo4, lo6]), vec![ip("127.0.0.1"), ip("::1")], "null and link layer skipped");
        assert_eq!(addrs(&[packet, lo4, eth4, lo6]), vec![ip("127.0.0.1"), ip("192.0.2.9"), ip("::1")]);
        assert_eq!(addrs(&[eth6, std::ptr::null(), eth4]), vec![ip("2001:db8::9"), ip("192.0.2.9")]);
        assert_eq!(Configured::from_addrs(addrs(&[lo4, eth6])), Configured { v4: false, v6: true });
    }
}
