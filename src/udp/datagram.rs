//! The RFC 1928 UDP datagram as the shim sees it: the header a datagram to
//! a destination travels with, and what a received datagram is (relayed,
//! direct, or to be dropped).

use crate::runtime;
use crate::udp::table::{self, View};
use libc::c_int;
use socksify_proto::config::Config;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::net::SocketAddr;

/// The largest RFC 1928 UDP header (a 255-byte name).
pub const HEADER_MAX: usize = 3 + 1 + 1 + 255 + 2;

/// The header for a datagram to `dst`: a fake address from remote DNS
/// travels as the name it stands for. `None` for a fake address that no
/// name holds (the send fails with `EHOSTUNREACH`, it goes nowhere).
pub fn header_for(ino: u64, config: &'static Config, dst: SocketAddr) -> Option<Vec<u8>> {
    let target = crate::fake_dns::target_for(config, &dst)?;
    match &target {
        TargetAddr::Domain(name, _) => table::note_destination(ino, dst, Some(name)),
        TargetAddr::Ip(_) => table::note_destination(ino, dst, None),
    }
    let header = UdpHeader::new(target);
    let mut out = Vec::with_capacity(header.encoded_len());
    header.emit(&mut out);
    Some(out)
}

/// What a datagram received on one of our sockets is.
pub enum Incoming {
    /// From the relay: the payload starts at `offset`, sent by `src`.
    Relayed { src: SocketAddr, offset: usize },
    /// From a bypassed source, delivered as it is.
    Direct,
    /// Dropped (not from the relay, malformed, fragment, not the peer).
    Drop(&'static str),
}

/// Classifies a datagram of `len` bytes (`data` holds the start of it)
/// that came from `from` on socket `fd`.
pub fn classify(fd: c_int, view: &View, config: &'static Config, from: Option<SocketAddr>, data: &[u8]) -> Incoming {
    let Some(from) = from else { return Incoming::Drop("no source address") };
    let from = SocketAddr::new(canonical_ip(from.ip()), from.port());
    if from != view.relay && Some(from) != view.responder {
        if view.peer.is_none() && runtime::goes_direct(config, &from) {
            return Incoming::Direct;
        }
        return Incoming::Drop("not from the relay");
    }
    let (header, offset) = match UdpHeader::parse(data) {
        Ok(x) => x,
        Err(_) => return Incoming::Drop("malformed header"),
    };
    if header.frag != 0 {
        return Incoming::Drop("fragment");
    }
    let Some(src) = table::reported_source(fd, &header.dst) else { return Incoming::Drop("source given as an unknown name") };
    if let Some(peer) = view.peer {
        // A connected socket hears only its peer (the kernel's rule). A
        // fake peer stands for a name: the proxy may report the address
        // it resolved, so only the port can be checked then.
        let fake = crate::fake_dns::name_for(config, peer.ip()).is_some();
        let same = canonical_ip(src.ip()) == canonical_ip(peer.ip()) && src.port() == peer.port();
        if !(same || (fake && src.port() == peer.port())) {
            return Incoming::Drop("not from the connected peer");
        }
        return Incoming::Relayed { src: peer, offset };
    }
    Incoming::Relayed { src, offset }
}
