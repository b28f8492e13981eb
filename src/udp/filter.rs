//! Keeping each socket's filter (see bpf.rs) in step with what it must
//! admit: after an association opens, the peer changes, or a bypassed
//! name resolves to a new address.

use crate::log_once::log_once;
use crate::runtime;
use crate::udp::bpf::{self, Spec};
use crate::udp::table;
use libc::{c_int, socklen_t};
use socksify_proto::config::Config;
use socksify_proto::wire::canonical_ip;
use socksify_proto::cidr::Cidr;
use std::net::SocketAddr;

/// What the socket filter of `fd`'s socket must admit now: the relay (and
/// the DNS responder, which wraps its answers the same way), the peer of a
/// connected socket, or (unconnected) the sources the program hears
/// directly, as `udp::datagram::classify` decides.
fn spec(config: &'static Config, relays: Vec<SocketAddr>, peer: Option<SocketAddr>) -> Spec {
    let direct = match peer {
        Some(_) => Vec::new(),
        None => {
            let mut direct = config.no_proxy.addr_rules();
            let hops = runtime::proxy_addrs(config, 0).iter().map(|a| canonical_ip(a.ip()));
            direct.extend(hops.zip(runtime::proxy_addrs(config, 0)).map(|(ip, a)| (Cidr::host(ip), Some(a.port()))));
            direct.extend(crate::route::bypassed_addrs().into_iter().map(|ip| (Cidr::host(ip), None)));
            direct
        }
    };
    let peer = peer.map(|p| (SocketAddr::new(canonical_ip(p.ip()), p.port()), crate::fake_dns::is_fake(config, p.ip())));
    Spec { relays, peer, direct }
}

/// Gives `fd`'s socket the filter it needs now, if it has not got it
/// already.
pub fn refresh(fd: c_int, config: &'static Config) {
    let generation = crate::route::bypassed_generation();
    let (ino, relay, peer, current) = {
        let table = table::lock();
        let Some(t) = table.as_ref() else { return };
        let Some(&ino) = t.fds.get(&fd) else { return };
        let Some(sock) = t.socks.get(&ino) else { return };
        let Some(assoc) = sock.assoc else { return };
        if sock.foreign_filter {
            return;
        }
        (ino, [Some(assoc.relay), sock.responder], sock.peer, sock.filter.clone())
    };
    let spec = spec(config, relay.into_iter().flatten().collect(), peer);
    if current.as_ref().is_some_and(|(s, g)| *s == spec && *g == generation) {
        return;
    }
    if current.is_none() && has_filter(fd) {
        log_once(format!("udp fd {fd}: the program has a socket filter of its own; stray datagrams may wake its poll"));
        if let Some(sock) = table::lock().as_mut().and_then(|t| t.socks.get_mut(&ino)) {
            sock.foreign_filter = true;
        }
        return;
    }
    let mut prog = bpf::program(&spec);
    if prog.len() > bpf::MAX_INSNS {
        // Too many direct sources for one filter: let every source in but
        // the relay's bad datagrams (the shim still drops strays on read).
        log_once(format!("udp fd {fd}: too many bypassed sources for a socket filter; stray datagrams may wake poll"));
        let any = Cidr::EVERY.map(|net| (net, None)).to_vec();
        prog = bpf::program(&Spec { direct: any, ..spec.clone() });
    }
    match bpf::attach(fd, &prog) {
        Ok(()) => {
            if let Some(sock) = table::lock().as_mut().and_then(|t| t.socks.get_mut(&ino)) {
                sock.filter = Some((spec, generation));
            }
        }
        Err(e) => log_once(format!(
            "udp fd {fd}: cannot attach a socket filter ({}); stray datagrams may wake poll",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// Whether `fd` has a socket filter (`SO_GET_FILTER` reports its length).
fn has_filter(fd: c_int) -> bool {
    let mut len: socklen_t = 0;
    // SAFETY: with a zero length the kernel only reports the filter's length.
    let rc = unsafe { crate::real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, std::ptr::null_mut(), &mut len) };
    rc == 0 && len > 0
}

/// For a direct send from one of our sockets: refresh its filter if a
/// bypassed name resolved to a new address since it was built (the reply
/// from there must get in).
pub fn refresh_if_stale(fd: c_int, config: &'static Config) {
    let generation = crate::route::bypassed_generation();
    let stale = {
        let table = table::lock();
        table.as_ref().and_then(|t| t.sock_of(fd)).is_some_and(|s| s.filter.as_ref().is_some_and(|(_, g)| *g != generation))
    };
    if stale {
        refresh(fd, config);
    }
}
