//! UDP: `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `sendmmsg`,
//! `recvmmsg`, and `send`/`recv`/`write`/`read`/`writev`/`readv` on our
//! UDP sockets (`connect` of a UDP socket is in [`super::connect`]). Each
//! decodes the C arguments into the engine's [`Out`]/[`In`], calls
//! [`crate::udp::send`]/[`crate::udp::recv`], and turns the answer into a
//! return value and errno; the associations and the datagram engine are in
//! [`crate::udp`].
//!
//! Fast path: a call on an fd that is not ours (kind `NONE`) and that names
//! no IPv4/IPv6 destination is one relaxed load, then the real call. A send
//! that names an IPv4/IPv6 destination is checked even on an fd we have
//! never seen (a socket made before we were loaded, or by a path we do not
//! hook): bypass list first, socket type only for proxied destinations.

// msghdr's field types differ between C libraries (glibc: size_t, musl: int).
#![allow(clippy::unnecessary_cast)]

use crate::fd_table::{self, kind};
use crate::ffi::{self, fail};
use crate::udp::recv::{In, Received};
use crate::udp::send::{Out, Sent};
use crate::udp::{self, FdCheck};
use crate::{guard, real, socket_addr, user_mem};
use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t, MSG_DONTWAIT};

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

/// The slow path of every send: inside the guard and the panic catcher,
/// the engine ([`udp::send::send`]) decides; `real` makes the call as the
/// program did.
unsafe fn send_slow(fd: c_int, out: &Out, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    let Some(_inside) = crate::hooks::enter() else {
        if guard::nested_may_go_direct() {
            return real();
        }
        // A signal handler that interrupted the shim, sending on one of our
        // sockets or to an address: never direct (guard.rs).
        return fail(libc::EINTR);
    };
    ffi::catch(-1, libc::ENETUNREACH, || {
        // SAFETY: out describes the program's call, as send_slow's caller built it.
        match unsafe { udp::send::send(fd, out, flags, check) } {
            Ok(Sent::Bytes(n)) => n as ssize_t,
            Ok(Sent::Unchanged) => real(),
            // SAFETY: out describes the program's call (its destination was read).
            Ok(Sent::TcpFastOpen) => unsafe { fast_open(fd, out, flags) },
            Err(errno) => fail(errno),
        }
    })
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

/// The slow path of every receive on one of our sockets ([`udp::recv::recv`]).
unsafe fn recv_slow(fd: c_int, inp: &In, flags: c_int, check: FdCheck, real: &mut dyn FnMut() -> ssize_t) -> ssize_t {
    let Some(_inside) = crate::hooks::enter() else { return real() };
    ffi::catch(-1, libc::EIO, || {
        // SAFETY: inp describes the program's call, as recv_slow's caller built it.
        match unsafe { udp::recv::recv(fd, inp, flags, check) } {
            Ok(Received::Bytes(n)) => n as ssize_t,
            Ok(Received::Unchanged) => real(),
            Err(errno) => fail(errno),
        }
    })
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

/// A read or write of a socket whose connect is under way in the
/// background ([`crate::connecting`]): `EAGAIN`, as the kernel answers
/// for a non-blocking socket not yet connected (its bytes must not reach
/// the proxy mid-handshake); after a failure, its errno, once. `None`:
/// the connect is over meanwhile, the call goes on.
#[cold]
#[inline(never)]
pub(super) fn connecting_io(fd: c_int) -> Option<ssize_t> {
    let _inside = crate::hooks::enter()?;
    crate::ffi::catch(None, 0, || match crate::connecting::table::view(fd)?.state {
        crate::connecting::State::Pending => Some(fail(libc::EAGAIN)),
        crate::connecting::State::Failed(_) => crate::connecting::take_failure(fd).map(fail),
    })
}

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
    if k == kind::CONNECTING {
        if let Some(rc) = connecting_io(fd) {
            return rc;
        }
    }
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
    if k == kind::CONNECTING {
        if let Some(rc) = connecting_io(fd) {
            return rc;
        }
    }
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
    // SAFETY: the program's msghdr argument.
    let m = match unsafe { user_mem::read_value(msg) } {
        Ok(m) => m,
        Err(errno) => return fail(errno),
    };
    // SAFETY: the iovec array of the program's msghdr.
    let iov = match unsafe { user_mem::read_iovs(m.msg_iov, m.msg_iovlen as usize) } {
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
        // SAFETY: addr_of_mut only computes the address of the program's entry's msg_len, which user_mem writes through the kernel.
        if let Err(errno) = unsafe { user_mem::write_value(std::ptr::addr_of_mut!((*entry).msg_len), n as c_uint) } {
            return if sent == 0 { fail(errno) } else { sent };
        }
        sent += 1;
    }
    sent
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::writev(fd, iov, n) };
    }
    // SAFETY: the program's arguments; writev_ours reads the iovecs through the kernel.
    unsafe { writev_ours(fd, iov, n) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn writev_ours(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    // SAFETY: the program's iovec array argument.
    let v = match unsafe { user_mem::read_iovs(iov, n.max(0) as usize) } {
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
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
    let k = fd_table::kind(fd);
    if k != kind::UDP {
        if k == kind::CONNECTING {
            if let Some(rc) = connecting_io(fd) {
                return rc;
            }
        }
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::readv(fd, iov, n) };
    }
    // SAFETY: the program's arguments; readv_ours reads the iovecs through the kernel.
    unsafe { readv_ours(fd, iov, n) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn readv_ours(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    // SAFETY: the program's iovec array argument.
    let v = match unsafe { user_mem::read_iovs(iov, n.max(0) as usize) } {
        Ok(v) => v,
        Err(errno) => return fail(errno),
    };
    // SAFETY: the iovecs copied through the kernel; real() passes the program's arguments on unchanged.
    unsafe { recv_slow(fd, &no_in(&v), 0, FdCheck::Verify, &mut || real::readv(fd, iov, n)) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let k = fd_table::kind(fd);
    if k == kind::CONNECTING {
        if let Some(rc) = connecting_io(fd) {
            return rc;
        }
    }
    if k != kind::UDP || msg.is_null() {
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
    // SAFETY: the program's msghdr argument.
    let mut m = match unsafe { user_mem::read_value(msg) } {
        Ok(m) => m,
        Err(errno) => return fail(errno),
    };
    // SAFETY: the iovec array of the program's msghdr.
    let iov = match unsafe { user_mem::read_iovs(m.msg_iov, m.msg_iovlen as usize) } {
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
        // SAFETY: the program's msghdr argument.
        if let Err(errno) = unsafe { user_mem::write_value(msg, m) } {
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
        // SAFETY: addr_of_mut only computes the address of the program's entry's msg_len, which user_mem writes through the kernel.
        if let Err(errno) = unsafe { user_mem::write_value(std::ptr::addr_of_mut!((*entry).msg_len), n as c_uint) } {
            return if got == 0 { fail(errno) } else { got };
        }
        got += 1;
    }
    got
}
