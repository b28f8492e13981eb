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
//! - every socket option in `socksify_client::family_swap::CARRIED` whose
//!   value differs from a fresh socket's, with `IP_TOS`/`IP_TTL` and
//!   `IPV6_TCLASS`/`IPV6_UNICAST_HOPS` translated between the families.
//!
//! A socket the program bound to a local address is never replaced (its
//! address has no equivalent in the other family): that connect fails as
//! before, with EAFNOSUPPORT, and nothing goes direct. After a swap,
//! `getsockname` still answers in the program's family
//! (`socket_addr::told`: v4-mapped, or 0.0.0.0 with the port for an IPv6
//! address on an IPv4 socket).

use crate::own_fd;
use crate::{real, socket_addr};
use libc::{c_int, c_void, socklen_t, IPPROTO_IPV6, IPPROTO_TCP, SOL_SOCKET};
use std::net::SocketAddr;

/// Whether a socket of `family` (with `IPV6_V6ONLY` as the kernel says)
/// can connect to at least one of `addrs`.
pub fn can_reach(fd: c_int, family: c_int, addrs: &[SocketAddr]) -> bool {
    // v4-mapped addresses reach IPv4 unless the socket is v6-only; the
    // option costs a syscall, so it is asked only when it matters.
    socksify_client::family_swap::can_reach(family, addrs, || socket_addr::int_option(fd, IPPROTO_IPV6, libc::IPV6_V6ONLY) != Some(0))
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
    let set = |to: c_int, level: c_int, name: c_int, value: &[u8]| {
        // SAFETY: the value read from the program's socket, with its length.
        let rc = unsafe { crate::real::setsockopt(to, level, name, value.as_ptr() as *const c_void, value.len() as socklen_t) };
        if rc == 0 {
            Ok(())
        } else {
            Err(crate::ffi::errno())
        }
    };
    let get = |fd: c_int, level: c_int, name: c_int, buf: &mut [u8], len: &mut socklen_t| {
        *len = (*len).min(buf.len() as socklen_t);
        // SAFETY: buf holds at least *len bytes; the real getsockopt writes at most that.
        unsafe { real::getsockopt(fd, level, name, buf.as_mut_ptr() as *mut c_void, len) }
    };
    for ((level, name), e) in socksify_client::family_swap::carry_options(fd, from_family, fresh_old.0, new.0, to_family, get, set) {
        log::warn!(
            "connect fd {fd}: socket option ({level}, {name}) not carried over to the {} socket: {}",
            family_name(to_family),
            std::io::Error::from_raw_os_error(e)
        );
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

pub use socksify_client::family_swap::{family_name, other};
