//! `connect` (of TCP and UDP sockets) and `getpeername`: the C arguments
//! decoded, then what they become is [`crate::connect`]'s.

use crate::ffi::{self, fail};
use crate::{fd_table, guard, real, socket_addr};
use libc::{c_int, sockaddr, socklen_t, AF_INET, AF_INET6};

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // Fast path: only IPv4/IPv6 destinations can be ours. The address is
    // copied by the kernel, once (a connect can afford the system call), so
    // a bad pointer is EFAULT from the real call, never a crash here.
    // SAFETY: the program's address argument.
    let copied = unsafe { socket_addr::read_program_family(addr, len) };
    let family = copied.map(|(family, _)| family);
    if family != Some(AF_INET) && family != Some(AF_INET6) {
        if family == Some(libc::AF_UNSPEC) && fd_table::kind(fd) == fd_table::kind::CONNECTING {
            // The program dissolves a connect under way: ours ends with it.
            if let Some(_inside) = crate::hooks::enter() {
                ffi::catch((), 0, || crate::sockets::forget(fd));
            }
        }
        if family == Some(libc::AF_UNSPEC) && fd_table::kind(fd) == fd_table::kind::UDP {
            // Dissolving a UDP socket's proxied peer, keeping its port.
            if let Some(_inside) = crate::hooks::enter() {
                // SAFETY: the program's arguments, passed on unchanged.
                return ffi::catch(-1, libc::EIO, || crate::connect::disconnect_udp(fd, &mut || unsafe { real::connect(fd, addr, len) }));
            }
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
    // SAFETY: the program's arguments, passed on unchanged.
    let rc = ffi::catch(-1, libc::ECONNREFUSED, || crate::connect::connect(fd, dst, true, &mut || unsafe { real::connect(fd, addr, len) }));
    if rc == 0 {
        ffi::set_errno(errno_before);
    }
    rc
}

/// What a `connect` to an IPv4/IPv6 address turns into (also the first
/// half of `sendto(MSG_FASTOPEN)`, see hooks/udp.rs).
pub(super) unsafe fn connect_inet(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the program's address argument (this function's callers pass it on).
    match unsafe { socket_addr::read_program(addr, len) } {
        // SAFETY: the program's arguments, passed on unchanged.
        // The send follows at once: connected in the call, also when non-blocking.
        Ok(Some(dst)) => crate::connect::connect(fd, dst, false, &mut || unsafe { real::connect(fd, addr, len) }),
        // SAFETY: the program's arguments, passed on unchanged.
        Ok(None) => unsafe { real::connect(fd, addr, len) }, // too short: let the kernel say EINVAL
        Err(errno) => fail(errno),
    }
}

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let kind = fd_table::kind(fd);
    if kind == fd_table::kind::NONE || kind == fd_table::kind::CONTROL {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    if kind == fd_table::kind::CONNECTING {
        // Connected to the proxy, not yet through it (or failed).
        return fail(libc::ENOTCONN);
    }
    if kind == fd_table::kind::BIND {
        // A listener has no peer (its socket may be connected to the proxy
        // for the BIND: that is not the program's business).
        return fail(libc::ENOTCONN);
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter() else { return unsafe { real::getpeername(fd, addr, len) } };
    ffi::catch(-1, libc::EIO, || match crate::connect::reported_peer(fd, kind) {
        Some((peer, family)) => match socket_addr::encode(&peer, family) {
            // SAFETY: the program's out-arguments.
            Some(encoded) if !addr.is_null() && !len.is_null() => match unsafe { socket_addr::copy_out(&encoded, addr, len) } {
                Ok(()) => 0,
                Err(errno) => fail(errno),
            },
            Some(_) => fail(libc::EFAULT),
            // SAFETY: the program's arguments, passed on unchanged.
            None => unsafe { real::getpeername(fd, addr, len) },
        },
        // SAFETY: the program's arguments, passed on unchanged.
        None => unsafe { real::getpeername(fd, addr, len) },
    })
}
