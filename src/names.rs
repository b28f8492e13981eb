//! What a look-up of a name or an address gets, for the resolver hooks
//! (`getaddrinfo`, `gethostbyname*`, `getnameinfo`): the client core's
//! decision ([`name_lookup`], [`addr_lookup`]) carried out: a fake address
//! allocated, `/etc/hosts` read, a malformed configuration reported.

use crate::{fake_dns, hosts, runtime};
use socksify_client::route::{addr_lookup, name_lookup, AddrLookup, NameLookup};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Who answers a forward look-up of a non-numeric name.
#[derive(Debug)]
pub enum Forward {
    /// libc's resolver: local mode, or a name `SOCKSIFY_NO_PROXY` bypasses
    /// (`bypassed`: its addresses are remembered so `connect` goes direct).
    Libc {
        bypassed: bool,
    },
    Hosts(hosts::Host),
    Fake(Ipv4Addr, Ipv6Addr),
    NotFound,
    /// The configuration is malformed: a name that would need the proxy
    /// fails rather than going to DNS.
    Refused,
    /// No fake address can be handed out safely now (fake_dns.rs).
    TryAgain,
}

/// `name` is not numeric; `port` is 0 when the caller gives none. The
/// decision is the client core's [`name_lookup`]; here its side effects.
pub fn forward(name: &str, port: u16) -> Forward {
    match name_lookup(runtime::config(), name, port, hosts::by_name) {
        NameLookup::Resolver { bypassed } => Forward::Libc { bypassed },
        NameLookup::Hosts(host) => Forward::Hosts(host),
        NameLookup::NotFound => Forward::NotFound,
        NameLookup::Refused => {
            log::error!("look-up of {name:?} refused: the configuration is malformed (see the message above)");
            Forward::Refused
        }
        NameLookup::Fake(config) => fake_dns::addrs_for(config, name).map_or(Forward::TryAgain, |(v4, v6)| Forward::Fake(v4, v6)),
    }
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
