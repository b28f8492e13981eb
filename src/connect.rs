//! What the program's `connect` becomes, and whom `getpeername` names,
//! once the hook (hooks/connect.rs) has copied the address out of its
//! memory: a TCP socket connected through the chain ([`crate::tcp`]), a
//! UDP socket connected to its association's relay ([`crate::udp`]), a
//! nameserver answered in-process ([`crate::dns_responder`]), or the
//! program's own call, untouched, for what goes direct. The program's call
//! is handed in as a closure: nothing here reads its pointers.

use crate::fd_table::{self, ProxiedTcp};
use crate::ffi::fail;
use crate::{real, runtime, socket_addr, tcp, udp};
use libc::{c_int, sockaddr, socklen_t, AF_INET, AF_INET6, SOCK_STREAM};
use socksify_client::socket_kind::{self, Carried};
use socksify_proto::config::{BindMode, UdpMode};
use socksify_proto::wire::socks5::Command;
use std::net::SocketAddr;

/// What the program's `connect(fd, dst)` becomes (`dst` copied out of its
/// memory): our connect through the proxy, or the answer of `kernel`, the
/// program's own call passed on unchanged. `background`: a non-blocking
/// socket's handshake may finish after the call (`EINPROGRESS`,
/// [`crate::connecting`]); not for `sendto(MSG_FASTOPEN)`, whose send
/// follows. Returns what `connect` returns (errno set on -1).
pub fn connect(fd: c_int, dst: SocketAddr, background: bool, kernel: &mut dyn FnMut() -> c_int) -> c_int {
    let Some(sock_type) = socket_addr::socket_type(fd) else {
        return kernel(); // not a socket: the kernel says ENOTSOCK/EBADF
    };
    if sock_type != SOCK_STREAM {
        // A dual-stack AF_INET6 UDP socket may be given an AF_INET address:
        // ask the kernel for the socket's own family (such connects are rare).
        let Some(sock_family) = socket_addr::socket_family(fd) else { return kernel() };
        if sock_family != AF_INET && sock_family != AF_INET6 {
            return kernel();
        }
        let protocol = if sock_type == libc::SOCK_DGRAM { socket_addr::socket_protocol(fd).unwrap_or(0) } else { 0 };
        return match socket_kind::carried(sock_type, protocol) {
            Carried::Udp => connect_udp(fd, sock_family, dst, kernel),
            // Raw, ICMP, UDP-Lite, SCTP...: direct if bypassed, else EPERM.
            Carried::No(what) => match crate::uncarried::to(what, &dst) {
                Ok(()) => kernel(),
                Err(errno) => fail(errno),
            },
            Carried::Stream => kernel(),
        };
    }
    if fd_table::kind(fd) == fd_table::kind::CONNECTING {
        // A second connect while the first is under way, or after it
        // failed: as the kernel answers (the failure is reported once).
        match crate::connecting::table::view(fd).map(|v| v.state) {
            Some(crate::connecting::State::Pending) => return fail(libc::EALREADY),
            Some(crate::connecting::State::Failed(_)) => {
                return fail(crate::connecting::take_failure(fd).unwrap_or(libc::ECONNREFUSED));
            }
            None => crate::sockets::forget(fd),
        }
    }
    if fd_table::kind(fd) == fd_table::kind::UDP {
        // The fd number was a UDP socket of ours, closed behind our back
        // (a raw syscall) and reused: that state is not this socket's.
        crate::sockets::forget(fd);
    }
    if fd_table::kind(fd) == fd_table::kind::BIND {
        if !crate::bind::may_connect(fd) {
            return fail(libc::EISCONN); // connected to the proxy for a BIND
        }
        // Bound, but connected rather than listened on: a client that
        // chose its source address. It keeps that address.
        crate::sockets::forget(fd);
    }
    // A TCP socket's family is its address's: the kernel refuses any other,
    // so asking it (SO_DOMAIN) would cost a syscall for nothing.
    let sock_family = socket_addr::family_of(&dst);
    let Some(config) = runtime::config() else {
        log::error!("connect to {dst} refused: the configuration is malformed (see the message above)");
        return fail(libc::ECONNREFUSED);
    };
    if crate::dns_responder::intercepts(config, &dst) {
        return crate::dns_responder::tcp::connect(fd, sock_family, dst);
    }
    if let Some(why) = crate::route::direct_reason(config, &dst) {
        log::info!("tcp fd {fd} -> {dst}: direct, not through the proxy: {why}");
        return kernel();
    }
    runtime::debug_panic("connect");
    if fd_table::kind(fd) == fd_table::kind::PROXIED_TCP {
        if still_proxied(fd) {
            return fail(libc::EISCONN);
        }
        crate::sockets::forget(fd);
    }
    if fd as usize >= fd_table::SLOTS {
        log::error!("connect fd {fd} to {dst} refused: fd number beyond the shim's table");
        return fail(libc::EMFILE);
    }
    let Some(target) = crate::fake_dns::target_for(config, &dst) else {
        log::warn!("connect fd {fd} to {dst} refused: a fake address no name holds (stale or from another process)");
        return fail(libc::EHOSTUNREACH);
    };
    if background && socket_addr::is_nonblocking(fd) {
        if let Some(rc) = crate::connecting::start(fd, sock_family, config, &target, dst) {
            return rc;
        }
    }
    match tcp::connect_via_proxy(fd, sock_family, config, Command::Connect, &target) {
        Ok((proxy, bound)) => {
            log::info!("tcp fd {fd} -> {target} via {}: connected (proxy bound {bound})", config.chain[0]);
            let opened = fd_table::next_opened();
            fd_table::set_proxied_tcp(fd, ProxiedTcp { peer: dst, proxy, bound: crate::bind::reported_addr(&bound), opened });
            0
        }
        Err(e) => {
            // Once per destination and reason: curl trying a name's fake
            // IPv4 and then IPv6 address would say the same thing twice.
            log::debug!("tcp fd {fd} -> {target}: failed");
            crate::log_once::log_once(format!("tcp -> {target} via {}: {e}", config.chain[0]));
            // Leave the socket as a failed direct connect would: not
            // connected to anything (the proxy may have accepted it), and
            // free to connect again.
            dissolve(fd);
            fail(e.errno())
        }
    }
}

use tcp::dissolve;

/// `connect` on an IPv4/IPv6 UDP socket (from [`connect`]): a proxied
/// destination opens the association and records `dst` as the socket's
/// peer (`getpeername` reports it, `send` and `write` go to it through the
/// relay, the socket filter and the receive hooks admit only its
/// datagrams). The socket is *not* connected in the kernel: a write by a
/// call the shim does not hook (`sendfile`, `splice`, `pwritev2`, a raw
/// `write` system call...) then fails with `EDESTADDRREQ`, where a socket
/// connected to the relay would send it there without its SOCKS header,
/// to be dropped by the relay while the call reported success.
fn connect_udp(fd: c_int, family: c_int, dst: SocketAddr, kernel: &mut dyn FnMut() -> c_int) -> c_int {
    let ours = fd_table::kind(fd) == fd_table::kind::UDP;
    let Some(config) = runtime::config() else {
        udp::log_once(format!("udp connect to {dst} refused: the configuration is malformed (see the message above)"));
        return fail(libc::ECONNREFUSED);
    };
    if crate::dns_responder::intercepts(config, &dst) {
        // Connected in the kernel to the DNS responder's socket instead.
        let connected = crate::dns_responder::udp::source_for(fd, family, dst).and_then(|src| udp::connect_kernel(fd, family, src));
        if let Err(e) = connected {
            udp::log_once(format!("udp connect to {dst}: {}", e.why));
            return fail(e.errno);
        }
        udp::set_peer(fd, Some(dst));
        log::info!("udp fd {fd} connected to {dst}: DNS answered in-process");
        return 0;
    }
    let why = crate::route::direct_reason(config, &dst).map(|r| r.to_string());
    let why = why.or_else(|| (config.udp == UdpMode::Direct).then(|| "SOCKSIFY_UDP=direct".to_owned()));
    if let Some(why) = why {
        log::info!("udp fd {fd} connected to {dst}: direct, not through the proxy: {why}");
        let rc = kernel();
        if rc == 0 && ours {
            udp::set_peer(fd, None);
            udp::refresh_filter(fd, config);
        }
        return rc;
    }
    if config.udp == UdpMode::Block {
        udp::log_once(format!("udp connect to {dst} refused: SOCKSIFY_UDP=block"));
        return fail(libc::EPERM);
    }
    if crate::fake_dns::is_fake(config, dst.ip()) && crate::fake_dns::target_for(config, &dst).is_none() {
        udp::log_once(format!("udp connect to {dst}: a fake address that no name holds"));
        return fail(libc::EHOSTUNREACH);
    }
    if kernel_peer(fd).is_some() {
        // Connected before (directly, or to the DNS responder): the kernel
        // must forget that peer, and the socket keep its port.
        udp::disconnect_kernel(fd, &mut || dissolve(fd));
    }
    let view = match udp::ensure(fd, family, config) {
        Ok(v) => v,
        Err(e) => {
            udp::log_once(format!("udp connect to {dst} via {}: {}", config.chain[0], e.why));
            return fail(e.errno);
        }
    };
    udp::set_peer(fd, Some(dst));
    udp::refresh_filter(fd, config);
    log::info!("udp fd {fd} connected to {dst} via {} (relay {})", config.chain[0], view.relay);
    0
}

/// `connect(AF_UNSPEC)` on one of our UDP sockets (`kernel`: the
/// program's call): the peer dissolved, the socket's port kept (its
/// association names it). Returns what `connect` returns.
pub fn disconnect_udp(fd: c_int, kernel: &mut dyn FnMut() -> c_int) -> c_int {
    udp::set_peer(fd, None);
    let rc = udp::disconnect_kernel(fd, kernel);
    if let Some(config) = runtime::config() {
        udp::refresh_filter(fd, config);
    }
    rc
}

/// Whether `fd` is still the socket we connected (not closed behind our
/// back, e.g. by `fclose` or a raw syscall, and reused).
pub fn still_proxied(fd: c_int) -> bool {
    let Some(details) = fd_table::proxied_tcp(fd) else { return false };
    kernel_peer(fd).is_some_and(|peer| {
        socksify_proto::wire::canonical_ip(peer.ip()) == socksify_proto::wire::canonical_ip(details.proxy.ip())
            && peer.port() == details.proxy.port()
    })
}

fn kernel_peer(fd: c_int) -> Option<std::net::SocketAddr> {
    // SAFETY: zeroed storage is a valid out-buffer.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: storage is large enough for any address.
    let rc = unsafe { real::getpeername(fd, &mut storage as *mut _ as *mut sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getpeername wrote `len` bytes of address into our storage.
    unsafe { socket_addr::read(&storage as *const _ as *const sockaddr, len) }
}

/// The peer `getpeername` reports for fd of kind `kind` (UDP or proxied
/// TCP; a BIND listener has none), in the family to encode it in; `None`: the kernel's answer is
/// right (a UDP socket without a proxied peer, a TCP fd that is no longer
/// the socket we connected, whose state is then dropped).
pub fn reported_peer(fd: c_int, kind: u8) -> Option<(SocketAddr, c_int)> {
    if kind == fd_table::kind::UDP {
        let peer = udp::peer(fd)?;
        return Some((peer, socket_addr::socket_family(fd).unwrap_or(AF_INET6)));
    }
    let Some(details) = fd_table::proxied_tcp(fd).filter(|_| still_proxied(fd)) else {
        crate::sockets::forget(fd);
        return None;
    };
    // The peer is kept in the family the program made the socket with (a
    // TCP socket connects to no other; `accept` stores a BIND's peer so),
    // even where the shim put a socket of the other family in its place
    // (family_swap.rs).
    Some((details.peer, socket_addr::family_of(&details.peer)))
}

/// The local address `getsockname` reports for fd of kind `kind` (a BIND
/// listener or proxied TCP), in the family the program made the socket
/// with, even where the shim put one of the other family in its place,
/// or where the proxy's side is of the other family (`socket_addr::told`:
/// v4-mapped, or 0.0.0.0 with the port for IPv6 on an IPv4 socket);
/// `None`: the kernel's answer is right.
pub fn reported_local(fd: c_int, kind: u8) -> Result<Option<(SocketAddr, c_int)>, c_int> {
    if kind == fd_table::kind::BIND {
        let family = crate::bind::program_family(fd).unwrap_or(AF_INET6);
        // Where the proxy listens; after a failed BIND the socket's own
        // address, which may be of the swapped-in socket's family.
        let Some(side) = crate::bind::local_addr(fd)?.or_else(|| socket_addr::local_addr(fd)) else { return Ok(None) };
        return Ok(Some((socket_addr::told(side, family), family)));
    }
    let Some(details) = fd_table::proxied_tcp(fd).filter(|_| still_proxied(fd)) else { return Ok(None) };
    let family = socket_addr::family_of(&details.peer);
    // The proxy's side (BND.ADDR), which is what the far end sees, so a
    // program that advertises its address for a call back (active FTP's
    // `PORT`) advertises the proxy, where the BIND will listen. Not with
    // `SOCKSIFY_BIND=off`, nor when the proxy named no address: the
    // kernel's own address then, still in the program's family.
    let bind_on = runtime::config().is_some_and(|c| c.bind != BindMode::Off);
    let Some(side) = details.bound.filter(|_| bind_on).or_else(|| socket_addr::local_addr(fd)) else { return Ok(None) };
    Ok(Some((socket_addr::told(side, family), family)))
}
