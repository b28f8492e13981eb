//! UDP: `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `sendmmsg`,
//! `recvmmsg`, and `send`/`recv`/`write`/`read`/`writev`/`readv` on our
//! UDP sockets (`connect` of a UDP socket is in [`super::connect`]). The
//! associations themselves are in [`crate::udp`].
//!
//! Fast path: a call on an fd that is not ours (kind `NONE`) and that names
//! no IPv4/IPv6 destination is one relaxed load, then the real call. A send
//! that names an IPv4/IPv6 destination is checked even on an fd we have
//! never seen (a socket made before we were loaded, or by a path we do not
//! hook): bypass list first, socket type only for proxied destinations.
//!
//! Every send to a proxied destination goes through the association or
//! fails (`SOCKSIFY_UDP=block`: `EPERM`; association failed: the errno of
//! the failure); it is never sent directly.

// msghdr's field types differ between C libraries (glibc: size_t, musl: int).
#![allow(clippy::unnecessary_cast)]

use crate::fd_table::{self, kind};
use crate::ffi::{self, fail};
use crate::udp::{self, Incoming, View, HEADER_MAX};
use crate::{guard, real, runtime, socket_addr, user_mem};
use libc::{
    c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t, MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, SOCK_DGRAM,
    SOCK_STREAM,
};
use socksify_proto::config::UdpMode;
use std::net::SocketAddr;

/// Whether `addr` is an IPv4/IPv6 address (the only ones we may proxy),
/// or may be (a pointer the fast path does not read: the slow path copies
/// it safely).
#[inline(always)]
unsafe fn names_inet(addr: *const sockaddr, len: socklen_t) -> bool {
    // SAFETY: the program's addr: null, implausible (not read) or `len` bytes, as family needs.
    matches!(unsafe { socket_addr::family(addr, len) }, Some(libc::AF_INET) | Some(libc::AF_INET6) | Some(socket_addr::UNREAD))
}

/// The IPv4 destination `addr` as a [`fd_table::direct_key`], if it is one.
#[inline(always)]
unsafe fn ipv4_key(addr: *const sockaddr, len: socklen_t) -> Option<u64> {
    // SAFETY: the program's addr: null, implausible (not read) or `len` bytes, as family needs.
    if unsafe { socket_addr::family(addr, len) } != Some(libc::AF_INET) || (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return None;
    }
    // SAFETY: an AF_INET address of sockaddr_in's length; any alignment.
    Some(fd_table::direct_key(unsafe { &std::ptr::read_unaligned(addr as *const libc::sockaddr_in) }))
}

/// Whether `fd` last sent directly to this same IPv4 destination: then it
/// goes directly again, without the routing decision.
#[inline(always)]
unsafe fn last_direct(fd: c_int, addr: *const sockaddr, len: socklen_t) -> bool {
    // SAFETY: the program's addr, as ipv4_key needs it.
    unsafe { ipv4_key(addr, len) }.is_some_and(|key| fd_table::is_last_direct(fd, key))
}

/// A send as the program made it: the bytes, and where (if it said).
struct Out<'a> {
    iov: &'a [iovec],
    dst: *const sockaddr,
    dst_len: socklen_t,
    control: *mut c_void,
    control_len: usize,
}

/// Where a received datagram's details go.
struct In<'a> {
    iov: &'a [iovec],
    name: *mut sockaddr,
    /// The program's (`recvfrom`), or our copy of its `msghdr`'s (`recvmsg`).
    name_len: *mut socklen_t,
    name_len_is_ours: bool,
    control: *mut c_void,
    /// In: room for control messages; out: bytes of them.
    control_len: *mut usize,
    msg_flags: *mut c_int,
}

/// Which calls check, with an `fstat`, that one of our fds is still the
/// socket we recorded. A number closed where our hooks cannot see it and
/// handed out again is mostly caught where the kernel hands it out
/// (`socket`, `accept`, `accept4`; `fclose` forgets what it closes, see
/// hooks/socket.rs and hooks/close.rs), so the socket calls trust the table:
/// the two `fstat`s per round trip were the shim's main cost on UDP.
/// `write`/`read` and their vector forms can land on any fd, including one
/// opened by a call we do not hook (`open`, `pipe`), so they still check.
#[derive(Clone, Copy, PartialEq)]
enum FdCheck {
    Verify,
    Trust,
}

/// The slow path of every send. `real` makes the call as the program did.
unsafe fn send_slow(fd: c_int, out: &Out, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    let Some(_inside) = crate::hooks::enter() else {
        if guard::nested_may_go_direct() {
            return real();
        }
        // A signal handler that interrupted the shim, sending on one of our
        // sockets or to an address: never direct (guard.rs).
        return fail(libc::EINTR);
    };
    // SAFETY: out describes the program's call, as send_slow's caller built it.
    ffi::catch(-1, libc::ENETUNREACH, || unsafe { send_inner(fd, out, flags, check, real) })
}

/// Whether `fd`, recorded as ours, still is (see [`FdCheck`]).
fn still_ours(fd: c_int, check: FdCheck) -> bool {
    match udp::tracked(fd) {
        Some(ino) => check == FdCheck::Trust || udp::inode(fd) == Some(ino),
        None => false,
    }
}

unsafe fn send_inner(fd: c_int, out: &Out, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    let view = match fd_table::kind(fd) == kind::UDP {
        true => match still_ours(fd, check) {
            true => udp::view(fd),
            _ => {
                crate::sockets::forget(fd); // closed behind our back and reused
                None
            }
        },
        false => None,
    };
    let ours = fd_table::kind(fd) == kind::UDP;
    let dst = match socket_addr::read_program(out.dst, out.dst_len) {
        Err(errno) => return fail(errno),
        Ok(Some(dst)) => dst,
        Ok(None) if !out.dst.is_null() => return real(), // another family, or too short: the kernel answers
        Ok(None) => match ours.then(|| udp::peer(fd)).flatten() {
            Some(peer) => peer, // connected through us
            None => return real(),
        },
    };
    let Some(config) = runtime::config() else {
        // Which sockets we would proxy is unknown: refuse every UDP send.
        return match socket_addr::socket_family_and_type(fd) {
            Some((family, SOCK_DGRAM)) if udp::is_inet(family) => {
                udp::log_once(format!("udp to {dst} refused: the configuration is malformed (see the message above)"));
                fail(libc::ENETUNREACH)
            }
            _ => real(),
        };
    };
    if crate::dns_responder::intercepts(config, &dst) {
        let family = match view {
            Some(v) => Some(v.family),
            None if ours => udp::family(fd),
            None => match socket_addr::socket_family_and_type(fd) {
                Some((family, SOCK_DGRAM)) if udp::is_inet(family) => Some(family),
                _ => None, // a TCP fast open: the connect hook answers
            },
        };
        if let Some(family) = family {
            return send_dns(fd, family, out, config, dst);
        }
    }
    if runtime::goes_direct(config, &dst) {
        if ours {
            udp::refresh_filter_if_stale(fd, config);
        } else {
            // SAFETY: the destination was read (copied) from the same pointer and length just above, so they are readable.
            if let Some(key) = unsafe { ipv4_key(out.dst, out.dst_len) } {
                fd_table::remember_direct(fd, key);
            }
        }
        return real();
    }
    let family = match (view, ours) {
        (Some(v), _) => v.family,
        (None, true) => match udp::family(fd) {
            Some(f) => f,
            None => return real(),
        },
        (None, false) => match socket_addr::socket_family_and_type(fd) {
            Some((family, SOCK_DGRAM)) if udp::is_inet(family) => family,
            Some((_, SOCK_STREAM)) if flags & libc::MSG_FASTOPEN != 0 && !out.dst.is_null() => {
                // SAFETY: out describes the program's call (its destination read above).
                return unsafe { fast_open(fd, out, flags) };
            }
            _ => return real(),
        },
    };
    match config.udp {
        UdpMode::Direct => return real(),
        UdpMode::Block => {
            udp::log_once(format!("udp to {dst} refused: SOCKSIFY_UDP=block"));
            return fail(libc::EPERM);
        }
        UdpMode::Proxy => {}
    }
    runtime::debug_panic("udp-send");
    let view = match udp::ensure(fd, family, config) {
        Ok(v) => v,
        Err(e) => {
            udp::log_once(format!("udp to {dst} via {}: {}", config.chain[0], e.why));
            return fail(e.errno);
        }
    };
    let Some(header) = udp::header_for(view.ino, config, dst) else {
        udp::log_once(format!("udp to {dst}: a fake address that no name holds (looked up before, or evicted)"));
        return fail(libc::EHOSTUNREACH);
    };
    // SAFETY: out's iovecs are the program's, checked by the kernel when it sends.
    unsafe { send_wrapped(fd, &view, &header, out, flags) }
}

/// A datagram to a nameserver of resolv.conf in remote DNS mode: the DNS
/// responder answers it on the program's socket; it is never sent.
fn send_dns(fd: c_int, family: c_int, out: &Out, config: &'static socksify_proto::config::Config, dst: SocketAddr) -> ssize_t {
    let mut msg = Vec::new();
    for v in out.iov.iter().filter(|v| !v.iov_base.is_null()) {
        // Copied by the kernel: a bad pointer is EFAULT (user_mem.rs).
        let at = msg.len();
        msg.resize(at + v.iov_len.min(65536), 0);
        if let Err(errno) = user_mem::read(v.iov_base, &mut msg[at..]) {
            return fail(errno);
        }
    }
    if let Some(answer) = crate::dns_responder::answer(config, &msg, dst, socksify_proto::dns::Transport::Udp) {
        if let Err(e) = crate::dns_responder::udp::deliver(fd, family, dst, &answer) {
            udp::log_once(format!("dns to {dst}: {}", e.why));
            return fail(e.errno);
        }
    }
    msg.len() as ssize_t
}

/// Sends one datagram to the relay: our header, then the program's bytes.
unsafe fn send_wrapped(fd: c_int, view: &View, header: &[u8], out: &Out, flags: c_int) -> ssize_t {
    let Some(relay) = socket_addr::encode(&view.relay, view.family) else { return fail(libc::ENETUNREACH) };
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
        return n;
    }
    (n as usize).saturating_sub(header.len()) as ssize_t
}

/// `sendto(..., MSG_FASTOPEN)` on a TCP socket to a proxied destination:
/// our proxied connect, then a plain send.
unsafe fn fast_open(fd: c_int, out: &Out, flags: c_int) -> ssize_t {
    // SAFETY: the program's destination and length, as it gave them.
    if unsafe { super::connect::connect_inet(fd, out.dst, out.dst_len) } != 0 {
        return -1;
    }
    // SAFETY: all-zero is a valid msghdr; iov is the program's.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = out.iov.as_ptr() as *mut iovec;
    msg.msg_iovlen = out.iov.len() as _;
    // SAFETY: msg points to the program's iovecs (the kernel checks their buffers).
    unsafe { real::sendmsg(fd, &msg, flags & !libc::MSG_FASTOPEN) }
}

/// The slow path of every receive on one of our sockets.
unsafe fn recv_slow(fd: c_int, inp: &In, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    let Some(_inside) = crate::hooks::enter() else { return real() };
    // SAFETY: inp describes the program's call, as recv_slow's caller built it.
    ffi::catch(-1, libc::EIO, || unsafe { recv_inner(fd, inp, flags, check, real) })
}

unsafe fn recv_inner(fd: c_int, inp: &In, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    if !still_ours(fd, check) {
        crate::sockets::forget(fd); // closed behind our back and reused
        return real();
    }
    let Some(view) = udp::view(fd) else { return real() };
    let Some(config) = runtime::config() else { return real() };
    let cap: usize = inp.iov.iter().map(|v| v.iov_len).sum();
    let room = cap.min(65536) + HEADER_MAX;
    let mut buf: Vec<u8> = Vec::with_capacity(room);
    // SAFETY: control_len is null (checked) or points to recvmsg_ours' own copy.
    let control_room = if inp.control_len.is_null() { 0 } else { unsafe { *inp.control_len } };
    loop {
        // SAFETY: all-zero storage and msghdr are valid; pointers set below are live.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = iovec { iov_base: buf.as_mut_ptr() as *mut c_void, iov_len: room };
        // SAFETY: all-zero is a valid msghdr; the fields set below point to live data.
        let mut msg: msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut from as *mut _ as *mut c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = inp.control;
        msg.msg_controllen = control_room as _;
        // SAFETY: msg points to our buffers and the program's control buffer (its room as the program said; the kernel checks it).
        let n = unsafe { real::recvmsg(fd, &mut msg, flags | MSG_TRUNC) };
        if n < 0 {
            return n;
        }
        let got = (n as usize).min(room);
        // SAFETY: the kernel wrote `got` bytes.
        unsafe { buf.set_len(got) };
        // SAFETY: the kernel wrote msg_namelen bytes of address into from.
        let src_kernel = unsafe { socket_addr::read(&from as *const _ as *const sockaddr, msg.msg_namelen) };
        let (src, offset) = match udp::classify(fd, &view, config, src_kernel, &buf) {
            Incoming::Relayed { src, offset } => (src, offset),
            Incoming::Direct => (src_kernel.expect("classify checked"), 0),
            Incoming::Drop(why) => {
                log::debug!("udp fd {fd}: dropped a datagram from {src_kernel:?}: {why}");
                if flags & MSG_PEEK != 0 {
                    // Peeking left it queued: take it off.
                    // SAFETY: a zero-length receive writes nothing.
                    unsafe { real::recv(fd, std::ptr::null_mut(), 0, MSG_DONTWAIT) };
                }
                buf.clear();
                continue;
            }
        };
        if !inp.name.is_null() && inp.name_len.is_null() {
            return fail(libc::EFAULT); // as the kernel answers, having taken the datagram
        }
        let full = n as usize - offset;
        // The payload, the source address and its length go to the
        // program's memory in one copy by the kernel: a bad pointer is
        // EFAULT (the datagram is taken, as the kernel does), not a crash.
        let (mut pairs, copied) = to_iov(&buf[offset..], inp.iov);
        let encoded = if inp.name.is_null() { None } else { socket_addr::encode(&src, view.family) };
        let mut full_len: socklen_t = 0;
        if let Some((storage, len)) = &encoded {
            let room = match inp.name_len_is_ours {
                // SAFETY: name_len_is_ours: recvmsg_ours' own copy.
                true => unsafe { *inp.name_len },
                false => match user_mem::read_value(inp.name_len) {
                    Ok(room) => room,
                    Err(errno) => return fail(errno),
                },
            };
            // SAFETY: storage holds `len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(storage as *const _ as *const u8, (*len).min(room) as usize) };
            pairs.push((inp.name as *mut c_void, bytes));
            full_len = *len;
        }
        let len_bytes = full_len.to_ne_bytes();
        if encoded.is_some() {
            match inp.name_len_is_ours {
                // SAFETY: name_len_is_ours: recvmsg_ours' own copy.
                true => unsafe { *inp.name_len = full_len },
                false => pairs.push((inp.name_len as *mut c_void, &len_bytes)),
            }
        }
        if let Err(errno) = user_mem::write_all(&pairs) {
            return fail(errno);
        }
        if !inp.control_len.is_null() {
            // SAFETY: control_len is null (checked) or points to recvmsg_ours' own copy.
            unsafe { *inp.control_len = msg.msg_controllen as usize };
        }
        if !inp.msg_flags.is_null() {
            let trunc = if full > cap { MSG_TRUNC } else { 0 };
            // SAFETY: non-null: recvmsg_ours' own copy.
            unsafe { *inp.msg_flags = (msg.msg_flags & !MSG_TRUNC) | trunc };
        }
        return if flags & MSG_TRUNC != 0 { full as ssize_t } else { copied as ssize_t };
    }
}

/// Where the pieces of `data` go in the program's buffers `iov` (for
/// [`user_mem::write_all`]), and how many bytes fit.
fn to_iov<'a>(mut data: &'a [u8], iov: &[iovec]) -> (Vec<(*mut c_void, &'a [u8])>, usize) {
    let mut pairs = Vec::with_capacity(iov.len() + 2);
    let mut copied = 0;
    for v in iov {
        if data.is_empty() {
            break;
        }
        let n = data.len().min(v.iov_len);
        pairs.push((v.iov_base, &data[..n]));
        data = &data[n..];
        copied += n;
    }
    (pairs, copied)
}

fn one_iov(buf: *const c_void, len: size_t) -> iovec {
    iovec { iov_base: buf as *mut c_void, iov_len: len }
}

fn no_in(iov: &[iovec]) -> In<'_> {
    In {
        iov,
        name: std::ptr::null_mut(),
        name_len: std::ptr::null_mut(),
        name_len_is_ours: false,
        control: std::ptr::null_mut(),
        control_len: std::ptr::null_mut(),
        msg_flags: std::ptr::null_mut(),
    }
}

fn no_out(iov: &[iovec]) -> Out<'_> {
    Out { iov, dst: std::ptr::null(), dst_len: 0, control: std::ptr::null_mut(), control_len: 0 }
}

// ------------------------------------------------------------------ hooks

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let k = fd_table::kind(fd);
    // SAFETY: the program's addr: null or alen bytes (sendto's contract).
    if !(k == kind::UDP || (k == kind::NONE && unsafe { names_inet(addr, alen) } && unsafe { !last_direct(fd, addr, alen) })) {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::sendto(fd, buf, len, flags, addr, alen) };
    }
    // SAFETY: the program's arguments, as sendto's contract gives them.
    unsafe { sendto_ours(fd, buf, len, flags, addr, alen) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn sendto_ours(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let iov = [one_iov(buf, len)];
    let out = Out { iov: &iov, dst: addr, dst_len: alen, control: std::ptr::null_mut(), control_len: 0 };
    // SAFETY: out holds the program's pointers; real() passes its arguments on unchanged.
    unsafe { send_slow(fd, &out, flags, FdCheck::Trust, &mut || real::sendto(fd, buf, len, flags, addr, alen)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let k = fd_table::kind(fd);
    // An msghdr where no program memory can be goes to the slow path,
    // which copies it safely (EFAULT) rather than read it here.
    if msg.is_null()
        || !(k == kind::UDP
            || (k == kind::NONE
                && (!user_mem::plausible(msg as *const c_void)
                    // SAFETY: msg is non-null and plausible (user_mem::plausible), a msghdr by sendmsg's contract; its name is null or msg_namelen bytes.
                    || unsafe { names_inet((*msg).msg_name as *const sockaddr, (*msg).msg_namelen) })))
    {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the program's arguments; sendmsg_ours reads them through the kernel.
    unsafe { sendmsg_ours(fd, msg, flags) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn sendmsg_ours(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // The program's msghdr and iovec array, copied by the kernel.
    let m = match user_mem::read_value(msg) {
        Ok(m) => m,
        Err(errno) => return fail(errno),
    };
    let iov = match user_mem::read_iovs(m.msg_iov, m.msg_iovlen as usize) {
        Ok(iov) => iov,
        Err(errno) => return fail(errno),
    };
    let out = Out {
        iov: &iov,
        dst: m.msg_name as *const sockaddr,
        dst_len: m.msg_namelen,
        control: m.msg_control,
        control_len: m.msg_controllen as usize,
    };
    // SAFETY: out holds copies of the program's msghdr and iovecs; real() passes its arguments on unchanged.
    unsafe { send_slow(fd, &out, flags, FdCheck::Trust, &mut || real::sendmsg(fd, msg, flags)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    let k = fd_table::kind(fd);
    let mine = k == kind::UDP
        || (k == kind::NONE
            && !msgs.is_null()
            && (!user_mem::plausible(msgs as *const c_void)
                // SAFETY: msgs is non-null and plausible, an array of vlen mmsghdrs by sendmmsg's contract.
                || (0..vlen as usize).any(|i| unsafe {
                    let m = &(*msgs.add(i)).msg_hdr;
                    names_inet(m.msg_name as *const sockaddr, m.msg_namelen)
                })));
    if !mine {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::sendmmsg(fd, msgs, vlen, flags) };
    }
    let mut sent = 0;
    for i in 0..vlen as usize {
        // Pointers into the program's array, not references: its memory is
        // read and written by the kernel (a bad pointer is EFAULT).
        // SAFETY: pointer arithmetic only, within the program's array of vlen entries; nothing is read here.
        let entry = unsafe { msgs.add(i) };
        // SAFETY: a pointer into the program's array (addr_of reads nothing); our sendmsg hook copies it through the kernel.
        let n = unsafe { sendmsg(fd, std::ptr::addr_of!((*entry).msg_hdr), flags) };
        if n < 0 {
            if sent == 0 {
                return -1;
            }
            break;
        }
        // SAFETY: addr_of_mut only computes the address; user_mem writes it through the kernel.
        if let Err(errno) = user_mem::write_value(unsafe { std::ptr::addr_of_mut!((*entry).msg_len) }, n as c_uint) {
            return if sent == 0 { fail(errno) } else { sent };
        }
        sent += 1;
    }
    sent
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::send(fd, buf, len, flags) };
    }
    // SAFETY: the program's arguments, as send's contract gives them.
    unsafe { send_ours(fd, buf, len, flags) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn send_ours(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    let iov = [one_iov(buf, len)];
    // SAFETY: the program's arguments; real() passes them on unchanged.
    unsafe { send_slow(fd, &no_out(&iov), flags, FdCheck::Trust, &mut || real::send(fd, buf, len, flags)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::write(fd, buf, len) };
    }
    // SAFETY: the program's arguments, as write's contract gives them.
    unsafe { write_ours(fd, buf, len) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn write_ours(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    let iov = [one_iov(buf, len)];
    // SAFETY: the program's arguments; real() passes them on unchanged.
    unsafe { send_slow(fd, &no_out(&iov), 0, FdCheck::Verify, &mut || real::write(fd, buf, len)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::writev(fd, iov, n) };
    }
    // SAFETY: the program's arguments; writev_ours reads the iovecs through the kernel.
    unsafe { writev_ours(fd, iov, n) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn writev_ours(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let v = match user_mem::read_iovs(iov, n.max(0) as usize) {
        Ok(v) => v,
        Err(errno) => return fail(errno),
    };
    // SAFETY: the iovecs copied through the kernel; real() passes the program's arguments on unchanged.
    unsafe { send_slow(fd, &no_out(&v), 0, FdCheck::Verify, &mut || real::writev(fd, iov, n)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) };
    }
    // SAFETY: the program's arguments, as recvfrom's contract gives them.
    unsafe { recvfrom_ours(fd, buf, len, flags, addr, alen) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn recvfrom_ours(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let iov = [one_iov(buf, len)];
    let inp = In { name: addr, name_len: alen, ..no_in(&iov) };
    // SAFETY: inp holds the program's pointers; real() passes its arguments on unchanged.
    unsafe { recv_slow(fd, &inp, flags, FdCheck::Trust, &mut || real::recvfrom(fd, buf, len, flags, addr, alen)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::recv(fd, buf, len, flags) };
    }
    // SAFETY: the program's arguments, as recv's contract gives them.
    unsafe { recv_ours(fd, buf, len, flags) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn recv_ours(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    let iov = [one_iov(buf, len)];
    // SAFETY: the program's arguments; real() passes them on unchanged.
    unsafe { recv_slow(fd, &no_in(&iov), flags, FdCheck::Trust, &mut || real::recv(fd, buf, len, flags)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::read(fd, buf, len) };
    }
    // SAFETY: the program's arguments, as read's contract gives them.
    unsafe { read_ours(fd, buf, len) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn read_ours(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    let iov = [one_iov(buf, len)];
    // SAFETY: the program's arguments; real() passes them on unchanged.
    unsafe { recv_slow(fd, &no_in(&iov), 0, FdCheck::Verify, &mut || real::read(fd, buf, len)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::readv(fd, iov, n) };
    }
    // SAFETY: the program's arguments; readv_ours reads the iovecs through the kernel.
    unsafe { readv_ours(fd, iov, n) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn readv_ours(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let v = match user_mem::read_iovs(iov, n.max(0) as usize) {
        Ok(v) => v,
        Err(errno) => return fail(errno),
    };
    // SAFETY: the iovecs copied through the kernel; real() passes the program's arguments on unchanged.
    unsafe { recv_slow(fd, &no_in(&v), 0, FdCheck::Verify, &mut || real::readv(fd, iov, n)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if fd_table::kind(fd) != kind::UDP || msg.is_null() {
        // SAFETY: the program's arguments, passed on unchanged.
        let n = unsafe { real::recvmsg(fd, msg, flags) };
        // Control messages came (rare): they may carry new fds.
        // SAFETY: the kernel just read this msghdr (n >= 0), so it is readable.
        if n >= 0 && !msg.is_null() && unsafe { (*msg).msg_controllen } != 0 {
            // SAFETY: the kernel just filled this msghdr's control buffer (n >= 0).
            unsafe { received_fds(msg) };
        }
        return n;
    }
    // SAFETY: the program's arguments; recvmsg_ours reads the msghdr through the kernel.
    unsafe { recvmsg_ours(fd, msg, flags) }
}

/// Fds the kernel just installed from an `SCM_RIGHTS` message: numbers it
/// handed out, like `socket`'s (see hooks/socket.rs).
#[cold]
#[inline(never)]
unsafe fn received_fds(msg: *const msghdr) {
    // SAFETY: the kernel filled the control buffer; CMSG_* walk within it.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cm) as *const c_int;
                let n = ((*cm).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / std::mem::size_of::<c_int>();
                for i in 0..n {
                    super::socket::fresh(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cm = libc::CMSG_NXTHDR(msg, cm);
        }
    }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn recvmsg_ours(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // The program's msghdr and iovec array, copied by the kernel; the
    // msghdr goes back the same way (a bad pointer is EFAULT).
    let mut m = match user_mem::read_value(msg) {
        Ok(m) => m,
        Err(errno) => return fail(errno),
    };
    let iov = match user_mem::read_iovs(m.msg_iov, m.msg_iovlen as usize) {
        Ok(iov) => iov,
        Err(errno) => return fail(errno),
    };
    let mut name_len = m.msg_namelen;
    let mut control_len = m.msg_controllen as usize;
    let mut msg_flags = 0;
    let inp = In {
        iov: &iov,
        name: m.msg_name as *mut sockaddr,
        name_len: &mut name_len,
        name_len_is_ours: true,
        control: m.msg_control,
        control_len: &mut control_len,
        msg_flags: &mut msg_flags,
    };
    // SAFETY: inp points to our copies and the program's buffers; real() passes its arguments on unchanged.
    let n = unsafe { recv_slow(fd, &inp, flags, FdCheck::Trust, &mut || real::recvmsg(fd, msg, flags)) };
    if n >= 0 && fd_table::kind(fd) == kind::UDP {
        m.msg_namelen = name_len;
        m.msg_controllen = control_len as _;
        m.msg_flags = msg_flags;
        if let Err(errno) = user_mem::write_value(msg, m) {
            return fail(errno);
        }
    }
    n
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int {
    if fd_table::kind(fd) != kind::UDP || msgs.is_null() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::recvmmsg(fd, msgs, vlen, flags, timeout) };
    }
    // One datagram at a time: the first as the flags say, the rest only if
    // already queued (as with MSG_WAITFORONE).
    let saved = ffi::errno();
    let mut got = 0;
    for i in 0..vlen as usize {
        // SAFETY: pointer arithmetic only, within the program's array of vlen entries; nothing is read here.
        let entry = unsafe { msgs.add(i) }; // the program's, see sendmmsg
        let f = (flags & !libc::MSG_WAITFORONE) | if i == 0 { 0 } else { MSG_DONTWAIT };
        // SAFETY: a pointer into the program's array (addr_of_mut reads nothing); recvmsg_ours copies it through the kernel.
        let n = unsafe { recvmsg_ours(fd, std::ptr::addr_of_mut!((*entry).msg_hdr), f) };
        if n < 0 {
            if got == 0 {
                return -1;
            }
            ffi::set_errno(saved);
            break;
        }
        // SAFETY: addr_of_mut only computes the address; user_mem writes it through the kernel.
        if let Err(errno) = user_mem::write_value(unsafe { std::ptr::addr_of_mut!((*entry).msg_len) }, n as c_uint) {
            return if got == 0 { fail(errno) } else { got };
        }
        got += 1;
    }
    got
}
