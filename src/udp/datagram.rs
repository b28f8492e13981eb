//! The RFC 1928 UDP datagram as the shim sees it: the header a datagram to
//! a destination travels with, and what a received datagram is (relayed,
//! direct, or to be dropped).

use crate::udp::table::{self, Recent, View};
use crate::udp::Header;
use libc::c_int;
use socksify_proto::config::Config;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::net::SocketAddr;

/// The header for a datagram to `dst` (of socket `ino`), noted as its
/// last destination: a fake address from remote DNS travels as the name
/// it stands for. `None` for a fake address that no name holds (the send
/// fails with `EHOSTUNREACH`, it goes nowhere).
pub fn header_for(ino: u64, config: &'static Config, dst: SocketAddr) -> Option<Header> {
    let target = crate::fake_dns::target_for(config, &dst)?;
    let name = match &target {
        TargetAddr::Domain(name, _) => Some(name.clone()),
        TargetAddr::Ip(_) => None,
    };
    let header = Header::new(&UdpHeader::new(target));
    table::note_destination(ino, dst, name.as_deref(), Some(header));
    Some(header)
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

/// Classifies a datagram (`data` holds the start of it) that came from
/// `from` on socket `fd`, whose view and last destination are `view` and
/// `last`.
pub fn classify(fd: c_int, view: &View, last: Option<&Recent>, config: &'static Config, from: Option<SocketAddr>, data: &[u8]) -> Incoming {
    let Some(from) = from else { return Incoming::Drop("no source address") };
    let from = SocketAddr::new(canonical_ip(from.ip()), from.port());
    if from != view.relay && Some(from) != view.responder {
        if view.peer.is_none() && crate::route::goes_direct(config, &from) {
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
    let by_last = last.and_then(|last| table::reported_source_by_last(last, &header.dst));
    let Some(src) = by_last.or_else(|| table::reported_source(fd, &header.dst)) else {
        return Incoming::Drop("source given as an unknown name");
    };
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
