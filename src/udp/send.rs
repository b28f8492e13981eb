//! One datagram out: where it goes (the DNS responder, directly, or
//! through the association, opened on first use) and, proxied, the
//! program's bytes sent to the relay behind our RFC 1928 header.
//!
//! Every send to a proxied destination goes through the association or
//! fails (`SOCKSIFY_UDP=block`: `EPERM`; association failed: the errno of
//! the failure); it is never sent directly.

// msghdr's field types differ between C libraries (glibc: size_t, musl: int).
#![allow(clippy::unnecessary_cast)]

use crate::fd_table::{self, kind};
use crate::udp::table::{self, View};
use crate::udp::{self, assoc, datagram, filter, log_once, FdCheck};
use crate::{real, runtime, socket_addr, user_mem};
use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t, SOCK_DGRAM, SOCK_STREAM};
use socksify_client::socket_kind::{self, Carried};
use socksify_proto::config::{Config, UdpMode};
use std::net::SocketAddr;

/// A send as the program made it: the bytes, and where (if it said).
pub struct Out<'a> {
    /// The program's buffers (the array itself copied or built by us).
    pub iov: &'a [iovec],
    /// The program's destination, not yet read (null: none given).
    pub dst: *const sockaddr,
    pub dst_len: socklen_t,
    pub control: *mut c_void,
    pub control_len: usize,
}

/// What became of a send.
pub enum Sent {
    /// Sent (through the relay, or answered by the DNS responder): the
    /// program's byte count.
    Bytes(usize),
    /// Not ours to change: the caller makes the program's call as it was.
    Unchanged,
    /// `sendto(MSG_FASTOPEN)` on a TCP socket to an IPv4/IPv6 address: a
    /// `connect` first (the caller's, through the proxy if it must).
    TcpFastOpen,
}

/// `out` sent on `fd`, or the errno it fails with.
///
/// # Safety
/// `out` describes the program's call: its pointers are the program's
/// (read through the kernel, a bad one is `EFAULT`), `iov` is ours to read.
pub unsafe fn send(fd: c_int, out: &Out, flags: c_int, check: FdCheck) -> Result<Sent, i32> {
    // SAFETY: the program's destination (this function's contract).
    let given = unsafe { socket_addr::read_program(out.dst, out.dst_len) }?;
    if given.is_none() && !out.dst.is_null() {
        return Ok(Sent::Unchanged); // another family, or too short: the kernel answers
    }
    // The one lock of the common path: everything the table knows.
    let mut ours = fd_table::kind(fd) == kind::UDP;
    let tracked = match ours {
        true => table::for_send(fd, given, assoc::CHECK_EVERY_MS).filter(|t| check == FdCheck::Trust || table::inode(fd) == Some(t.ino)),
        false => None,
    };
    if ours && tracked.is_none() {
        crate::sockets::forget(fd); // closed behind our back and reused
        ours = fd_table::kind(fd) == kind::UDP;
    }
    let dst = match (given, tracked.as_ref().and_then(|t| t.peer)) {
        (Some(dst), _) => dst,
        (None, Some(peer)) => peer, // connected through us
        (None, None) => return Ok(Sent::Unchanged),
    };
    let Some(config) = runtime::config() else {
        // Which sockets we would proxy is unknown: refuse every UDP send.
        if inet_udp_family(fd).is_none() {
            return Ok(Sent::Unchanged);
        }
        log_once(format!("udp to {dst} refused: the configuration is malformed (see the message above)"));
        return Err(libc::ENETUNREACH);
    };
    if crate::dns_responder::intercepts(config, &dst) {
        let family = match (&tracked, ours) {
            (Some(t), _) => Some(t.family),
            (None, true) => None, // marked ours, not in the table
            (None, false) => match socket_addr::socket_family_and_type(fd) {
                Some((family, SOCK_DGRAM)) if udp::is_inet(family) => Some(family),
                // A TCP Fast Open to the nameserver (bypassed or not): the
                // connect hook's decision, the DNS responder.
                Some((_, SOCK_STREAM)) if fast_open(flags, out) => return Ok(Sent::TcpFastOpen),
                _ => None,
            },
        };
        if let Some(family) = family {
            // SAFETY: out is the program's call (this function's contract).
            return unsafe { send_dns(fd, family, out, config, dst) };
        }
    }
    if crate::route::goes_direct(config, &dst) {
        if ours {
            filter::refresh_if_stale(fd, config);
        } else if let Some(key) = ipv4_key(&dst) {
            fd_table::remember_direct(fd, key);
        }
        return Ok(Sent::Unchanged);
    }
    // The socket's type is asked only now, for a proxied destination.
    let family = match (&tracked, ours) {
        (Some(t), _) => t.family,
        (None, true) => return Ok(Sent::Unchanged),
        (None, false) => match socket_addr::socket_family_and_type(fd) {
            Some((family, ty)) if udp::is_inet(family) => {
                let protocol = if ty == SOCK_DGRAM { socket_addr::socket_protocol(fd).unwrap_or(0) } else { 0 };
                match socket_kind::carried(ty, protocol) {
                    Carried::Udp => family,
                    Carried::Stream if fast_open(flags, out) => return Ok(Sent::TcpFastOpen),
                    Carried::Stream => return Ok(Sent::Unchanged), // the kernel ignores the address
                    // Raw, ICMP, UDP-Lite, SCTP: nothing carries them.
                    Carried::No(what) => return crate::uncarried::refuse(what, &dst).map(|()| Sent::Unchanged),
                }
            }
            _ => return Ok(Sent::Unchanged),
        },
    };
    match config.udp {
        UdpMode::Direct => return Ok(Sent::Unchanged),
        UdpMode::Block => {
            log_once(format!("udp to {dst} refused: SOCKSIFY_UDP=block"));
            return Err(libc::EPERM);
        }
        UdpMode::Proxy => {}
    }
    runtime::debug_panic("udp-send");
    let (live, cached) = tracked.map_or((None, None), |t| (t.live, t.header.map(|h| (t.ino, h))));
    let view = match assoc::ensure_from(fd, family, config, live) {
        Ok(v) => v,
        Err(e) => {
            log_once(format!("udp to {dst} via {}: {}", config.chain[0], e.why));
            return Err(e.errno);
        }
    };
    let header = match cached {
        Some((ino, header)) if ino == view.ino => header,
        _ => match datagram::header_for(view.ino, config, dst) {
            Some(header) => header,
            None => {
                log_once(format!("udp to {dst}: a fake address that no name holds (looked up before, or evicted)"));
                return Err(libc::EHOSTUNREACH);
            }
        },
    };
    // SAFETY: out's iovecs are the program's, checked by the kernel when it sends.
    unsafe { send_wrapped(fd, &view, header.as_bytes(), out, flags) }
}

/// Whether a send is `sendto(MSG_FASTOPEN)` with a destination.
fn fast_open(flags: c_int, out: &Out) -> bool {
    flags & libc::MSG_FASTOPEN != 0 && !out.dst.is_null()
}

/// The family of `fd` if it is an IPv4/IPv6 UDP socket.
fn inet_udp_family(fd: c_int) -> Option<c_int> {
    match socket_addr::socket_family_and_type(fd) {
        Some((family, SOCK_DGRAM)) if udp::is_inet(family) => Some(family),
        _ => None,
    }
}

/// The IPv4 destination `dst` as a [`fd_table::direct_key`], if it is one.
fn ipv4_key(dst: &SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = dst else { return None };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    };
    Some(fd_table::direct_key(&sin))
}

/// A datagram to a nameserver of resolv.conf in remote DNS mode: the DNS
/// responder answers it on the program's socket; it is never sent.
///
/// # Safety
/// As [`send`]: `out`'s buffers are the program's.
unsafe fn send_dns(fd: c_int, family: c_int, out: &Out, config: &'static Config, dst: SocketAddr) -> Result<Sent, i32> {
    let mut msg = Vec::new();
    for v in out.iov.iter().filter(|v| !v.iov_base.is_null()) {
        // Copied by the kernel: a bad pointer is EFAULT (user_mem.rs).
        let at = msg.len();
        msg.resize(at + v.iov_len.min(65536), 0);
        // SAFETY: the program's buffer (this function's contract).
        unsafe { user_mem::read(v.iov_base, &mut msg[at..]) }?;
    }
    if let Some(answer) = crate::dns_responder::answer(config, &msg, dst, socksify_proto::dns::Transport::Udp) {
        if let Err(e) = crate::dns_responder::udp::deliver(fd, family, dst, &answer) {
            log_once(format!("dns to {dst}: {}", e.why));
            return Err(e.errno);
        }
    }
    Ok(Sent::Bytes(msg.len()))
}

/// Sends one datagram to the relay: our header, then the program's bytes.
unsafe fn send_wrapped(fd: c_int, view: &View, header: &[u8], out: &Out, flags: c_int) -> Result<Sent, i32> {
    let Some(relay) = socket_addr::encode(&view.relay, view.family) else { return Err(libc::ENETUNREACH) };
    let mut iov: Vec<iovec> = Vec::with_capacity(out.iov.len() + 1);
    iov.push(iovec { iov_base: header.as_ptr() as *mut c_void, iov_len: header.len() });
    iov.extend_from_slice(out.iov);
    // SAFETY: all-zero is a valid msghdr; the fields set point to live data.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &relay.0 as *const _ as *mut c_void;
    msg.msg_namelen = relay.1;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = out.control;
    msg.msg_controllen = out.control_len as _;
    // SAFETY: msg points to our relay address and iovec array, and the program's buffers (the kernel checks those).
    let n = unsafe { real::sendmsg(fd, &msg, flags & !libc::MSG_FASTOPEN) };
    if n < 0 {
        return Err(crate::ffi::errno());
    }
    Ok(Sent::Bytes((n as usize).saturating_sub(header.len())))
}
