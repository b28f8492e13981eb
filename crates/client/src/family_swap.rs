//! A proxy of the other address family: what a socket of the other family
//! put in the place of the program's takes over from it. Shared by the
//! shim (`src/family_swap.rs`, which swaps with `dup3`) and the seccomp
//! supervisor (which swaps with `SECCOMP_IOCTL_NOTIF_ADDFD`).
//!
//! Carried over: every socket option in [`CARRIED`] whose value differs
//! from a fresh socket's, with `IP_TOS`/`IP_TTL` and
//! `IPV6_TCLASS`/`IPV6_UNICAST_HOPS` translated between the families. The
//! caller carries the file status flags, `FD_CLOEXEC` and the protocol.

use libc::{c_int, c_void, socklen_t, AF_INET, AF_INET6, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, SOL_SOCKET};
use socksify_proto::wire::canonical_ip;
use std::net::SocketAddr;

/// Whether a socket of `family` can connect to at least one of `addrs`;
/// `v6only` is asked only when it matters (an IPv6 socket, IPv4 addresses).
pub fn can_reach(family: c_int, addrs: &[SocketAddr], v6only: impl FnOnce() -> bool) -> bool {
    let any_v4 = addrs.iter().any(|a| canonical_ip(a.ip()).is_ipv4());
    let any_v6 = addrs.iter().any(|a| canonical_ip(a.ip()).is_ipv6());
    match family {
        AF_INET => any_v4,
        _ => any_v6 || (any_v4 && !v6only()),
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

pub fn family_name(family: c_int) -> &'static str {
    if family == AF_INET {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A socket option copied from the program's socket to its replacement:
/// (level, name) on an `AF_INET` socket and on an `AF_INET6` socket.
pub struct Carried {
    pub v4: (c_int, c_int),
    pub v6: (c_int, c_int),
    /// `SO_RCVBUF`/`SO_SNDBUF`: the kernel reports twice what was set.
    pub doubled: bool,
}

const fn same(level: c_int, name: c_int) -> Carried {
    Carried { v4: (level, name), v6: (level, name), doubled: false }
}

/// The options a program sets on a TCP socket before `connect`.
pub const CARRIED: &[Carried] = &[
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

/// `getsockopt(fd, level, name)` into a buffer of ours, through the
/// caller's `getsockopt` (the shim must pass libc's real one: its own is a hook).
type GetOpt<'a> = &'a dyn Fn(c_int, c_int, c_int, &mut [u8], &mut socklen_t) -> c_int;

fn get(getsockopt: GetOpt<'_>, fd: c_int, (level, name): (c_int, c_int)) -> Option<Value> {
    let mut v = Value { bytes: [0; 64], len: 64 };
    let rc = getsockopt(fd, level, name, &mut v.bytes, &mut v.len);
    (rc == 0).then_some(v)
}

/// `getsockopt(2)` itself, for a process with no hooks (the supervisor).
#[allow(clippy::disallowed_methods)]
pub fn libc_getsockopt(fd: c_int, level: c_int, name: c_int, buf: &mut [u8], len: &mut socklen_t) -> c_int {
    *len = (*len).min(buf.len() as socklen_t);
    // SAFETY: buf holds at least *len bytes; the kernel writes at most that.
    unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr() as *mut c_void, len) }
}

/// Copies the options the program set on `from` (of `from_family`; `fresh`
/// is a new socket of that family, for the defaults) to `to` (of
/// `to_family`), read with `getsockopt` and written with `set` (the shim
/// passes libc's real functions).
/// Each option `set` refused: its (level, name) and errno.
pub fn carry_options(
    from: c_int,
    from_family: c_int,
    fresh: c_int,
    to: c_int,
    to_family: c_int,
    getsockopt: impl Fn(c_int, c_int, c_int, &mut [u8], &mut socklen_t) -> c_int,
    set: impl Fn(c_int, c_int, c_int, &[u8]) -> Result<(), i32>,
) -> Vec<((c_int, c_int), i32)> {
    let old_opt = |c: &Carried| if from_family == AF_INET { c.v4 } else { c.v6 };
    let new_opt = |c: &Carried| if to_family == AF_INET { c.v4 } else { c.v6 };
    let mut refused = Vec::new();
    for option in CARRIED {
        let (Some(mut value), Some(default)) = (get(&getsockopt, from, old_opt(option)), get(&getsockopt, fresh, old_opt(option))) else {
            continue;
        };
        if value == default {
            continue; // not set by the program
        }
        if option.doubled {
            let set = c_int::from_ne_bytes(value.bytes[..4].try_into().expect("4 bytes")) / 2;
            value.bytes[..4].copy_from_slice(&set.to_ne_bytes());
        }
        let (level, name) = new_opt(option);
        if let Err(e) = set(to, level, name, &value.bytes[..value.len as usize]) {
            refused.push(((level, name), e));
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn which_family_reaches_which_proxy() {
        let v4 = [SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 1080)];
        let v6 = [SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 1080)];
        assert!(can_reach(AF_INET, &v4, || unreachable!()));
        assert!(!can_reach(AF_INET, &v6, || unreachable!()));
        assert!(can_reach(AF_INET6, &v6, || unreachable!()));
        assert!(can_reach(AF_INET6, &v4, || false), "dual-stack: v4-mapped");
        assert!(!can_reach(AF_INET6, &v4, || true), "v6-only");
    }
}
