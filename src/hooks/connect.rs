//! `connect` (of TCP and UDP sockets) and `getpeername`.

use crate::fd_table::{self, ProxiedTcp};
use crate::ffi::{self, fail};
use crate::{guard, real, runtime, socket_addr, tcp, udp};
use libc::{c_int, sockaddr, socklen_t, AF_INET, AF_INET6, SOCK_STREAM};
use socksify_proto::config::UdpMode;
use socksify_proto::wire::socks5::Command;
use std::net::SocketAddr;

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // Fast path: only IPv4/IPv6 destinations can be ours. The address is
    // copied by the kernel, once (a connect can afford the system call), so
    // a bad pointer is EFAULT from the real call, never a crash here.
    let copied = socket_addr::read_program_family(addr, len);
    let family = copied.map(|(family, _)| family);
    if family != Some(AF_INET) && family != Some(AF_INET6) {
        if family == Some(libc::AF_UNSPEC) && fd_table::kind(fd) == fd_table::kind::UDP {
            disconnect_udp(fd); // dissolving a UDP socket's proxied peer
        }
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::connect(fd, addr, len) };
    }
    let Some(_inside) = crate::hooks::enter() else {
        if guard::nested_may_go_direct() {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { real::connect(fd, addr, len) };
        }
        // A signal handler that interrupted the shim: never direct (guard.rs).
        return fail(libc::EINTR);
    };
    // A successful connect leaves errno as it was, as the real one does;
    // the handshake's own EAGAINs are not the program's business.
    let errno_before = ffi::errno();
    let Some((_, Some(dst))) = copied else {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::connect(fd, addr, len) }; // too short: let the kernel say EINVAL
    };
    // SAFETY: the program's arguments, as connect's contract gives them; dst was copied from them.
    let rc = ffi::catch(-1, libc::ECONNREFUSED, || unsafe { connect_to(fd, addr, len, dst) });
    if rc == 0 {
        ffi::set_errno(errno_before);
    }
    rc
}

/// What a `connect` to an IPv4/IPv6 address turns into (also the first
/// half of `sendto(MSG_FASTOPEN)`, see hooks/udp.rs).
pub(super) unsafe fn connect_inet(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match socket_addr::read_program(addr, len) {
        // SAFETY: the program's arguments, as connect's contract gives them; dst was copied from them.
        Ok(Some(dst)) => unsafe { connect_to(fd, addr, len, dst) },
        // SAFETY: the program's arguments, passed on unchanged.
        Ok(None) => unsafe { real::connect(fd, addr, len) }, // too short: let the kernel say EINVAL
        Err(errno) => fail(errno),
    }
}

/// [`connect_inet`] with the program's address already copied as `dst`.
unsafe fn connect_to(fd: c_int, addr: *const sockaddr, len: socklen_t, dst: std::net::SocketAddr) -> c_int {
    let Some(sock_type) = socket_addr::socket_type(fd) else {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::connect(fd, addr, len) }; // not a socket: the kernel says ENOTSOCK/EBADF
    };
    if sock_type == libc::SOCK_DGRAM {
        // A dual-stack AF_INET6 UDP socket may be given an AF_INET address:
        // ask the kernel for the socket's own family (UDP connects are rare).
        // SAFETY: the program's arguments, passed on unchanged.
        let Some(sock_family) = socket_addr::socket_family(fd) else { return unsafe { real::connect(fd, addr, len) } };
        if sock_family != AF_INET && sock_family != AF_INET6 {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { real::connect(fd, addr, len) };
        }
        // SAFETY: the program's arguments, as connect's contract gives them; dst was read from them.
        return unsafe { connect_udp(fd, sock_family, addr, len, dst) };
    }
    if sock_type != SOCK_STREAM {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::connect(fd, addr, len) };
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
    let sock_family = if dst.is_ipv4() { AF_INET } else { AF_INET6 };
    let Some(config) = runtime::config() else {
        log::error!("connect to {dst} refused: the configuration is malformed (see the message above)");
        return fail(libc::ECONNREFUSED);
    };
    if crate::dns_responder::intercepts(config, &dst) {
        return crate::dns_responder::tcp::connect(fd, sock_family, dst);
    }
    if crate::route::goes_direct(config, &dst) {
        log::debug!("connect fd {fd} to {dst}: bypassed, direct");
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::connect(fd, addr, len) };
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
    match tcp::connect_via_proxy(fd, sock_family, config, Command::Connect, &target) {
        Ok((proxy, bound)) => {
            log::info!("tcp fd {fd} -> {target} via {}: connected (proxy bound {bound})", config.chain[0]);
            let opened = fd_table::next_opened();
            fd_table::set_proxied_tcp(fd, ProxiedTcp { peer: dst, proxy, bound: crate::bind::reported_addr(&bound), opened });
            0
        }
        Err(e) => {
            log::warn!("tcp fd {fd} -> {target} via {}: {e}", config.chain[0]);
            // Leave the socket as a failed direct connect would: not
            // connected to anything (the proxy may have accepted it), and
            // free to connect again.
            let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
            // SAFETY: a valid AF_UNSPEC address dissolves the connection.
            unsafe { real::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as socklen_t) };
            fail(e.errno())
        }
    }
}

/// `connect` on an IPv4/IPv6 UDP socket (from [`connect_inet`]): a
/// proxied destination opens the association and connects the socket in
/// the kernel to the relay (so only the relay can reach it); `getpeername`
/// then reports `dst`.
unsafe fn connect_udp(fd: c_int, family: c_int, addr: *const sockaddr, len: socklen_t, dst: SocketAddr) -> c_int {
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
    if crate::route::goes_direct(config, &dst) || config.udp == UdpMode::Direct {
        // SAFETY: the program's arguments, passed on unchanged.
        let rc = unsafe { real::connect(fd, addr, len) };
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
    let view = match udp::ensure(fd, family, config) {
        Ok(v) => v,
        Err(e) => {
            udp::log_once(format!("udp connect to {dst} via {}: {}", config.chain[0], e.why));
            return fail(e.errno);
        }
    };
    if let Err(e) = udp::connect_kernel(fd, family, view.relay) {
        udp::log_once(format!("udp connect to {dst}: {}", e.why));
        return fail(e.errno);
    }
    udp::set_peer(fd, Some(dst));
    udp::refresh_filter(fd, config);
    log::info!("udp fd {fd} connected to {dst} via {} (relay {})", config.chain[0], view.relay);
    0
}

/// `connect(AF_UNSPEC)` on one of our UDP sockets: dissolve the peer.
fn disconnect_udp(fd: c_int) {
    if let Some(_inside) = crate::hooks::enter() {
        ffi::catch((), 0, || {
            udp::set_peer(fd, None);
            if let Some(config) = runtime::config() {
                udp::refresh_filter(fd, config);
            }
        });
    }
}

/// Whether `fd` is still the socket we connected (not closed behind our
/// back, e.g. by `fclose` or a raw syscall, and reused).
pub(super) fn still_proxied(fd: c_int) -> bool {
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

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let kind = fd_table::kind(fd);
    if kind == fd_table::kind::NONE || kind == fd_table::kind::CONTROL {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter() else { return unsafe { real::getpeername(fd, addr, len) } };
    if kind == fd_table::kind::UDP {
        return ffi::catch(-1, libc::EIO, || match udp::peer(fd) {
            Some(peer) => {
                let family = socket_addr::socket_family(fd).unwrap_or(AF_INET6);
                match socket_addr::encode(&peer, family) {
                    Some(encoded) if !addr.is_null() && !len.is_null() => match socket_addr::copy_out(&encoded, addr, len) {
                        Ok(()) => 0,
                        Err(errno) => fail(errno),
                    },
                    _ => fail(libc::EFAULT),
                }
            }
            // SAFETY: the program's arguments, passed on unchanged.
            None => unsafe { real::getpeername(fd, addr, len) },
        });
    }
    ffi::catch(-1, libc::EIO, || {
        let Some(details) = fd_table::proxied_tcp(fd).filter(|_| still_proxied(fd)) else {
            crate::sockets::forget(fd);
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { real::getpeername(fd, addr, len) };
        };
        // The family of the address the program connected to is its
        // socket's (a TCP socket takes no other), even where the shim put a
        // socket of the other family in its place (family_swap.rs).
        let family = if details.peer.is_ipv4() { AF_INET } else { AF_INET6 };
        match socket_addr::encode(&details.peer, family) {
            Some(encoded) if !addr.is_null() && !len.is_null() => match socket_addr::copy_out(&encoded, addr, len) {
                Ok(()) => 0,
                Err(errno) => fail(errno),
            },
            Some(_) => fail(libc::EFAULT),
            // SAFETY: the program's arguments, passed on unchanged.
            None => unsafe { real::getpeername(fd, addr, len) },
        }
    })
}
