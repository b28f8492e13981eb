//! Connecting the program's own TCP socket through the proxy chain: the
//! shim's side of `socksify_client::tcp` (which drives the handshake), with
//! libc's own functions behind our hooks, and a socket of the other family
//! put in place first when only that one reaches the proxy.

use crate::{family_swap, real, runtime, socket_addr};
use libc::{c_int, c_void, sockaddr, socklen_t};
use socksify_proto::config::Config;
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::TargetAddr;
use std::net::SocketAddr;

pub use socksify_client::tcp::ConnectError;

/// The real `connect`/`send`/`recv`/`fcntl`/`poll`/`getsockopt`, never our hooks.
pub struct RealIo;

impl socksify_client::tcp::SocketIo for RealIo {
    unsafe fn connect(&self, fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: the caller's arguments, passed on (SocketIo::connect has connect(2)'s contract).
        unsafe { real::connect(fd, addr, len) }
    }
    unsafe fn send(&self, fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize {
        // SAFETY: the caller's arguments, passed on (SocketIo::send has send(2)'s contract).
        unsafe { real::send(fd, buf, len, flags) }
    }
    unsafe fn recv(&self, fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
        // SAFETY: the caller's arguments, passed on (SocketIo::recv has recv(2)'s contract).
        unsafe { real::recv(fd, buf, len, flags) }
    }
    fn fcntl(&self, fd: c_int, cmd: c_int, arg: c_int) -> c_int {
        // SAFETY: an integer argument; no memory is passed.
        unsafe { real::fcntl(fd, cmd, arg as libc::c_ulong) }
    }
    fn poll(&self, pfd: &mut libc::pollfd, timeout_ms: c_int) -> c_int {
        // SAFETY: one valid pollfd.
        unsafe { real::poll(pfd, 1, timeout_ms) }
    }
    fn so_error(&self, fd: c_int) -> c_int {
        socket_addr::int_option(fd, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(0)
    }
}

/// The family `fd` has once it can reach the first hop: its own, or (see
/// `family_swap`) the other one, after its socket was replaced.
pub fn reachable_family(fd: c_int, family: c_int, config: &'static Config) -> Result<c_int, ConnectError> {
    let addrs = runtime::proxy_addrs(config, 0);
    if addrs.is_empty() || family_swap::can_reach(fd, family, addrs) {
        return Ok(family);
    }
    let other = family_swap::other(family);
    family_swap::replace(fd, family, other).map_err(|e| {
        ConnectError::Io(
            if other == libc::AF_INET { "replacing the socket by an IPv4 one" } else { "replacing the socket by an IPv6 one" },
            e,
        )
    })?;
    Ok(other)
}

/// Connects `fd` (a TCP socket of `family`) to `dst` through the chain,
/// running `command` (CONNECT, BIND or UDP ASSOCIATE) at the last hop.
/// Returns the first hop's address and the last hop's bound address.
pub fn connect_via_proxy(
    fd: c_int,
    family: c_int,
    config: &'static Config,
    command: Command,
    dst: &TargetAddr,
) -> Result<(SocketAddr, TargetAddr), ConnectError> {
    let family = reachable_family(fd, family, config)?;
    socksify_client::tcp::connect_via_proxy(&RealIo, fd, family, config, runtime::proxy_addrs(config, 0), command, dst)
}

/// `connect(fd, AF_UNSPEC)`, ours: dissolves whatever the kernel has `fd`
/// connected to.
pub fn dissolve(fd: c_int) -> c_int {
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a valid AF_UNSPEC address dissolves the connection.
    unsafe { real::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as socklen_t) }
}
