//! One datagram in: taken from the kernel into our buffer, classified
//! (relayed, direct, or dropped and the next one taken), unwrapped, and
//! handed to the program's buffers with its real source.

// msghdr's field types differ between C libraries (glibc: size_t, musl: int).
#![allow(clippy::unnecessary_cast)]

use crate::udp::datagram::{self, Incoming};
use crate::udp::{table, FdCheck, HEADER_MAX};
use crate::{real, runtime, socket_addr, user_mem};
use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t, MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC};

/// Where a received datagram's details go.
pub struct In<'a> {
    /// The program's buffers (the array itself copied or built by us).
    pub iov: &'a [iovec],
    pub name: *mut sockaddr,
    /// The program's (`recvfrom`), or our copy of its `msghdr`'s (`recvmsg`).
    pub name_len: *mut socklen_t,
    pub name_len_is_ours: bool,
    pub control: *mut c_void,
    /// In: room for control messages; out: bytes of them.
    pub control_len: *mut usize,
    pub msg_flags: *mut c_int,
}

/// What became of a receive.
pub enum Received {
    /// The program's byte count (as `recvmsg` counts, `MSG_TRUNC` too).
    Bytes(usize),
    /// Not ours: the caller makes the program's call as it was.
    Unchanged,
}

/// One datagram for the program from `fd`, or the errno the call fails
/// with.
///
/// # Safety
/// `inp` describes the program's call: `name`, `name_len` (unless
/// `name_len_is_ours`) and the buffers are the program's (written through
/// the kernel); `control_len` and `msg_flags` are null or ours.
pub unsafe fn recv(fd: c_int, inp: &In, flags: c_int, check: FdCheck) -> Result<Received, i32> {
    // The one lock of the common path: the socket's view and last destination.
    let tracked = table::for_recv(fd).filter(|t| check == FdCheck::Trust || table::inode(fd) == Some(t.ino));
    let Some(table::ForRecv { live, .. }) = tracked else {
        crate::sockets::forget(fd); // closed behind our back and reused
        return Ok(Received::Unchanged);
    };
    let Some((view, last)) = live else { return Ok(Received::Unchanged) };
    let Some(config) = runtime::config() else { return Ok(Received::Unchanged) };
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
            return Err(crate::ffi::errno());
        }
        let got = (n as usize).min(room);
        // SAFETY: the kernel wrote `got` bytes.
        unsafe { buf.set_len(got) };
        // SAFETY: the kernel wrote msg_namelen bytes of address into from.
        let src_kernel = unsafe { socket_addr::read(&from as *const _ as *const sockaddr, msg.msg_namelen) };
        let (src, offset) = match datagram::classify(fd, &view, last.as_ref(), config, src_kernel, &buf) {
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
            return Err(libc::EFAULT); // as the kernel answers, having taken the datagram
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
                // SAFETY: otherwise the program's (this function's contract).
                false => unsafe { user_mem::read_value(inp.name_len) }?,
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
        // SAFETY: the program's buffers, name and name_len (this function's contract).
        unsafe { user_mem::write_all(&pairs) }?;
        if !inp.control_len.is_null() {
            // SAFETY: control_len is null (checked) or points to recvmsg_ours' own copy.
            unsafe { *inp.control_len = msg.msg_controllen as usize };
        }
        if !inp.msg_flags.is_null() {
            let trunc = if full > cap { MSG_TRUNC } else { 0 };
            // SAFETY: non-null: recvmsg_ours' own copy.
            unsafe { *inp.msg_flags = (msg.msg_flags & !MSG_TRUNC) | trunc };
        }
        return Ok(Received::Bytes(if flags & MSG_TRUNC != 0 { full } else { copied }));
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
