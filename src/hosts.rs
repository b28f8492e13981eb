//! `/etc/hosts`, read by us: in remote mode a name there is answered from
//! the file, never from DNS (glibc would send a query for a family the file
//! lacks), and `localhost` always resolves to loopback. The parsing is
//! `socksify_proto::hosts`, shared with the supervisor's DNS responder.

pub use socksify_proto::hosts::Host;
use std::net::IpAddr;

fn read() -> String {
    // Our own read of a regular file; our hooks pass it straight through.
    std::fs::read_to_string("/etc/hosts").unwrap_or_default()
}

/// The host for `name` from /etc/hosts (`localhost` always has loopback).
pub fn by_name(name: &str) -> Option<Host> {
    socksify_proto::hosts::lookup(&read(), name)
}

pub fn by_addr(ip: IpAddr) -> Option<(String, Vec<String>)> {
    socksify_proto::hosts::by_addr_in(&read(), ip)
}
