//! `bind`, `listen`, `getsockname`: listening sockets that become a SOCKS
//! BIND ([`crate::bind`]; `accept` is in hooks/socket.rs, `epoll_ctl`,
//! whose registrations of a spent listener move, in hooks/wait.rs), and
//! the local address of a proxied connection.

use crate::fd_table::{self, kind};
use crate::ffi::{self, fail};
use crate::{bind, real, runtime, socket_addr};
use libc::{c_int, sockaddr, socklen_t, AF_INET, AF_INET6, SOCK_STREAM};
use socksify_proto::config::BindMode;

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: addr is the program's: null or `len` bytes (bind's contract).
    let family = unsafe { socket_addr::family(addr, len) };
    if family != Some(AF_INET) && family != Some(AF_INET6) {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::bind(fd, addr, len) };
    }
    // Nested: the shim's own sockets (a UDP association binds its socket).
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter() else { return unsafe { real::bind(fd, addr, len) } };
    ffi::catch(-1, libc::EADDRNOTAVAIL, || {
        // SAFETY: the program's address argument (read), or its arguments passed on unchanged.
        let Ok(Some(requested)) = (unsafe { socket_addr::read_program(addr, len) }) else { return unsafe { real::bind(fd, addr, len) } };
        // A malformed configuration: a bind sends nothing, so it stays local.
        // SAFETY: the program's arguments, passed on unchanged.
        let Some(config) = runtime::config() else { return unsafe { real::bind(fd, addr, len) } };
        let maybe_bind = match config.bind {
            BindMode::Off => false,
            BindMode::Auto => requested.port() == 0,
            BindMode::Always => true,
        };
        if !maybe_bind || socket_addr::socket_type(fd) != Some(SOCK_STREAM) {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { real::bind(fd, addr, len) };
        }
        // SAFETY: the program's address (`len` bytes, bind's contract), read as `requested`.
        unsafe { bind::on_bind(fd, addr, len, requested, config) }
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if fd_table::kind(fd) != kind::BIND {
        // SAFETY: integers only; no memory is passed.
        return unsafe { real::listen(fd, backlog) };
    }
    // A signal handler that interrupted the shim: not a local listener.
    let Some(_inside) = crate::hooks::enter() else { return fail(libc::EINTR) };
    ffi::catch(-1, libc::ECONNREFUSED, || bind::listen(fd))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let kind = fd_table::kind(fd);
    if kind != kind::PROXIED_TCP && kind != kind::BIND {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::getsockname(fd, addr, len) };
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter() else { return unsafe { real::getsockname(fd, addr, len) } };
    ffi::catch(-1, libc::EIO, || {
        let (reported, family) = match crate::connect::reported_local(fd, kind) {
            Ok(Some(local)) => local,
            // SAFETY: the program's arguments, passed on unchanged.
            Ok(None) => return unsafe { real::getsockname(fd, addr, len) },
            Err(errno) => return fail(errno),
        };
        match socket_addr::encode(&reported, family) {
            // SAFETY: the program's out-arguments.
            Some(encoded) if !addr.is_null() && !len.is_null() => match unsafe { socket_addr::copy_out(&encoded, addr, len) } {
                Ok(()) => 0,
                Err(errno) => fail(errno),
            },
            Some(_) => fail(libc::EFAULT),
            // SAFETY: the program's arguments, passed on unchanged.
            None => unsafe { real::getsockname(fd, addr, len) },
        }
    })
}
