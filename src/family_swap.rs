//! A proxy of the other address family.
//!
//! The program's own socket is the one connected to the proxy, so it keeps
//! its options and family. The one exception: when that family cannot
//! reach any address of the first hop (an `AF_INET` socket and a proxy
//! reachable only over IPv6, or an `AF_INET6` socket with `IPV6_V6ONLY`
//! and an IPv4-only proxy), a socket of the right family takes its place
//! with `dup3` before anything else can have seen it (the program has not
//! connected yet), carrying over what the program set:
//! - the file status flags (`O_NONBLOCK`, ...) and `FD_CLOEXEC`;
//! - the protocol (TCP or MPTCP);
//! - every socket option in [`CARRIED`] whose value differs from a fresh
//!   socket's, with `IP_TOS`/`IP_TTL` and `IPV6_TCLASS`/`IPV6_UNICAST_HOPS`
//!   translated between the families.
//!
//! A socket the program bound to a local address is never replaced (its
//! address has no equivalent in the other family): that connect fails as
//! before, with EAFNOSUPPORT, and nothing goes direct. After a swap,
//! `getsockname` still answers in the program's family
//! (`socket_addr::told`: v4-mapped, or 0.0.0.0 with the port for an IPv6
//! address on an IPv4 socket).

use crate::own_fd;
use crate::{real, socket_addr};
use libc::{c_int, c_void, socklen_t, AF_INET, AF_INET6, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, SOL_SOCKET};
use socksify_proto::wire::canonical_ip;
use std::net::SocketAddr;

/// Whether a socket of `family` (with `IPV6_V6ONLY` as the kernel says)
/// can connect to at least one of `addrs`.
pub fn can_reach(fd: c_int, family: c_int, addrs: &[SocketAddr]) -> bool {
    let any_v4 = addrs.iter().any(|a| canonical_ip(a.ip()).is_ipv4());
    let any_v6 = addrs.iter().any(|a| canonical_ip(a.ip()).is_ipv6());
    match family {
        AF_INET => any_v4,
        // v4-mapped addresses reach IPv4 unless the socket is v6-only; the
        // option costs a syscall, so it is asked only when it matters.
        _ => any_v6 || (any_v4 && socket_addr::int_option(fd, IPPROTO_IPV6, libc::IPV6_V6ONLY) == Some(0)),
    }
}

/// A socket option copied from the program's socket to its replacement:
/// (level, name) on an `AF_INET` socket and on an `AF_INET6` socket.
struct Carried {
    v4: (c_int, c_int),
    v6: (c_int, c_int),
    /// `SO_RCVBUF`/`SO_SNDBUF`: the kernel reports twice what was set.
    doubled: bool,
}

const fn same(level: c_int, name: c_int) -> Carried {
    Carried { v4: (level, name), v6: (level, name), doubled: false }
}

/// The options a program sets on a TCP socket before `connect`.
const CARRIED: &[Carried] = &[
    same(SOL_SOCKET, libc::SO_KEEPALIVE),
    same(SOL_SOCKET, libc::SO_REUSEADDR),
    same(SOL_SOCKET, libc::SO_REUSEPORT),
    same(SOL_SOCKET, libc::SO_OOBINLINE),
    same(SOL_SOCKET, libc::SO_PRIORITY),
    same(SOL_SOCKET, libc::SO_MARK),
    same(SOL_SOCKET, libc::SO_RCVLOWAT),
    same(SOL_SOCKET, libc::SO_LINGER),
    same(SOL_SOCKET, libc::SO_RCVTIMEO),
    same(SOL_SOCKET, libc::SO_SNDTIMEO),
    same(SOL_SOCKET, libc::SO_BINDTODEVICE),
    Carried { v4: (SOL_SOCKET, libc::SO_RCVBUF), v6: (SOL_SOCKET, libc::SO_RCVBUF), doubled: true },
    Carried { v4: (SOL_SOCKET, libc::SO_SNDBUF), v6: (SOL_SOCKET, libc::SO_SNDBUF), doubled: true },
    same(IPPROTO_TCP, libc::TCP_NODELAY),
    same(IPPROTO_TCP, libc::TCP_KEEPIDLE),
    same(IPPROTO_TCP, libc::TCP_KEEPINTVL),
    same(IPPROTO_TCP, libc::TCP_KEEPCNT),
    same(IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    same(IPPROTO_TCP, libc::TCP_MAXSEG),
    same(IPPROTO_TCP, libc::TCP_CORK),
    same(IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
    same(IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT),
    same(IPPROTO_TCP, libc::TCP_WINDOW_CLAMP),
    same(IPPROTO_TCP, libc::TCP_SYNCNT),
    same(IPPROTO_TCP, libc::TCP_LINGER2),
    same(IPPROTO_TCP, libc::TCP_CONGESTION),
    Carried { v4: (IPPROTO_IP, libc::IP_TOS), v6: (IPPROTO_IPV6, libc::IPV6_TCLASS), doubled: false },
    Carried { v4: (IPPROTO_IP, libc::IP_TTL), v6: (IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS), doubled: false },
];

/// An option's raw value, as `getsockopt` gives it.
#[derive(PartialEq)]
struct Value {
    bytes: [u8; 64],
    len: socklen_t,
}

fn get(fd: c_int, (level, name): (c_int, c_int)) -> Option<Value> {
    let mut v = Value { bytes: [0; 64], len: 64 };
    // SAFETY: a 64-byte out-buffer with its length; the kernel writes at most that.
    let rc = unsafe { real::getsockopt(fd, level, name, v.bytes.as_mut_ptr() as *mut c_void, &mut v.len) };
    (rc == 0).then_some(v)
}

/// Puts a socket of `to_family` in place of the program's unconnected TCP
/// socket `fd` (of the other family), as the module comment says. Returns
/// the errno to fail the connect with when that cannot be done.
pub fn replace(fd: c_int, from_family: c_int, to_family: c_int) -> Result<(), c_int> {
    let bound = socket_addr::local_addr(fd);
    if bound.is_some_and(|a| a.port() != 0 || !a.ip().is_unspecified()) {
        log::warn!("connect fd {fd}: the proxy is reachable only from the other address family, and the socket is bound to {bound:?}");
        return Err(libc::EAFNOSUPPORT);
    }
    let protocol = socket_addr::int_option(fd, SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(IPPROTO_TCP);
    let fresh_old = own_fd::socket(from_family, libc::SOCK_STREAM, protocol)?;
    let new = own_fd::socket(to_family, libc::SOCK_STREAM, protocol)?;
    let old_opt = |c: &Carried| if from_family == AF_INET { c.v4 } else { c.v6 };
    let new_opt = |c: &Carried| if to_family == AF_INET { c.v4 } else { c.v6 };
    for option in CARRIED {
        let (Some(value), Some(default)) = (get(fd, old_opt(option)), get(fresh_old.0, old_opt(option))) else { continue };
        if value == default {
            continue; // not set by the program
        }
        let mut value = value;
        if option.doubled {
            let set = c_int::from_ne_bytes(value.bytes[..4].try_into().expect("4 bytes")) / 2;
            value.bytes[..4].copy_from_slice(&set.to_ne_bytes());
        }
        let (level, name) = new_opt(option);
        // SAFETY: the value read above, with its length.
        let rc = unsafe { crate::real::setsockopt(new.0, level, name, value.bytes.as_ptr() as *const c_void, value.len) };
        if rc != 0 {
            log::warn!(
                "connect fd {fd}: socket option ({level}, {name}) not carried over to the {} socket: {}",
                family_name(to_family),
                std::io::Error::last_os_error()
            );
        }
    }
    // SAFETY: fcntl on the program's fd and ours.
    let (status, fd_flags) = unsafe { (real::fcntl(fd, libc::F_GETFL, 0), real::fcntl(fd, libc::F_GETFD, 0)) };
    if status < 0 || fd_flags < 0 {
        return Err(crate::ffi::errno());
    }
    // SAFETY: as above; the status flags the program's fd had.
    unsafe { real::fcntl(new.0, libc::F_SETFL, status as libc::c_ulong) };
    let cloexec = if fd_flags & libc::FD_CLOEXEC != 0 { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 replaces the program's fd with ours in one step; the
    // program's old socket is closed by it (unless it holds a dup).
    if unsafe { real::dup3(new.0, fd, cloexec) } < 0 {
        return Err(crate::ffi::errno());
    }
    log::info!("connect fd {fd}: the proxy is reachable only over {}: the socket was replaced by one of that family", family_name(to_family));
    Ok(())
}

pub fn family_name(family: c_int) -> &'static str {
    if family == AF_INET {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The other of `AF_INET` and `AF_INET6`.
pub fn other(family: c_int) -> c_int {
    if family == AF_INET {
        AF_INET6
    } else {
        AF_INET
    }
}
