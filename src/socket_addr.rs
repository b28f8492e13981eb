//! Conversions between C `sockaddr`s and `std::net::SocketAddr` (the pure
//! ones live in `socksify-client`, shared with the supervisor), on the
//! program's memory, and socket options the hooks ask about.

use crate::user_mem;
use libc::{sa_family_t, sockaddr, sockaddr_storage, socklen_t};
use std::mem::size_of;
use std::net::SocketAddr;

/// What [`family`] says of a pointer outside where a program's memory can
/// be: the family was not read (the caller takes its slow path, which
/// copies the address safely, or lets the real call answer `EFAULT`).
pub const UNREAD: i32 = -1;

/// The address family of the program's `addr`, or `None` if too short to
/// have one, or [`UNREAD`] for a pointer into the lowest 64 KiB or outside
/// user space (see [`user_mem::plausible`]), which is not read here. For
/// the fast paths: a comparison more than a plain read, and no call.
///
/// # Safety
/// `addr` must be null, implausible, or point to `len` readable bytes.
#[inline(always)]
pub unsafe fn family(addr: *const sockaddr, len: socklen_t) -> Option<i32> {
    // Null is implausible too: one test on the common path, not two.
    if !user_mem::plausible(addr as *const libc::c_void) {
        return (!addr.is_null() && (len as usize) >= size_of::<sa_family_t>()).then_some(UNREAD);
    }
    if (len as usize) < size_of::<sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above).
    Some(unsafe { (*addr).sa_family } as i32)
}

/// The family of a program's address and, for `AF_INET`/`AF_INET6`, the
/// address, copied by the kernel in one system call (`connect` reads both):
/// `None` for a pointer that points nowhere or a length shorter than the
/// family field.
///
/// # Safety
/// `addr` is the program's, as for [`user_mem::read`].
pub unsafe fn read_program_family(addr: *const sockaddr, len: socklen_t) -> Option<(i32, Option<SocketAddr>)> {
    if addr.is_null() || (len as usize) < size_of::<sa_family_t>() {
        return None;
    }
    let n = (len as usize).min(size_of::<sockaddr_storage>());
    // SAFETY: all-zero is a valid sockaddr_storage; the slice covers n of its bytes.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: n <= size_of::<sockaddr_storage>(): within our own storage.
    let bytes = unsafe { std::slice::from_raw_parts_mut(&mut storage as *mut _ as *mut u8, n) };
    // SAFETY: the caller's promise: addr is the program's.
    unsafe { user_mem::read(addr as *const libc::c_void, bytes) }.ok()?;
    // SAFETY: storage holds n readable bytes of an address.
    let parsed = unsafe { socksify_client::sockaddr::read(&storage as *const _ as *const sockaddr, n as socklen_t) };
    Some((storage.ss_family as i32, parsed))
}

/// [`read`] for an address in the program's memory, copied by the kernel:
/// `Err(EFAULT)` if it points nowhere.
///
/// # Safety
/// `addr` is the program's, as for [`user_mem::read`].
pub unsafe fn read_program(addr: *const sockaddr, len: socklen_t) -> Result<Option<SocketAddr>, i32> {
    if addr.is_null() {
        return Ok(None);
    }
    let n = (len as usize).min(size_of::<sockaddr_storage>());
    // SAFETY: all-zero is a valid sockaddr_storage; the slice covers n of its bytes.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: n <= size_of::<sockaddr_storage>(): within our own storage.
    let bytes = unsafe { std::slice::from_raw_parts_mut(&mut storage as *mut _ as *mut u8, n) };
    // SAFETY: the caller's promise: addr is the program's.
    unsafe { user_mem::read(addr as *const libc::c_void, bytes) }?;
    // SAFETY: storage holds n readable bytes.
    Ok(unsafe { read(&storage as *const _ as *const sockaddr, n as socklen_t) })
}

/// Reads an `AF_INET`/`AF_INET6` address; `None` for other families or a
/// length too short for the family (the conversion is `socksify-client`'s,
/// shared with the supervisor).
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    // The family is read as `family` does (a bad pointer never faults).
    // SAFETY: addr is null or `len` readable bytes (this function's contract).
    unsafe { family(addr, len) }?;
    // SAFETY: addr is null or `len` readable bytes (this function's contract).
    unsafe { socksify_client::sockaddr::read(addr, len) }
}

pub use socksify_client::sockaddr::encode;

/// The address family of `addr` (`AF_INET` or `AF_INET6`).
pub fn family_of(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// `addr` as a socket of `family` (`AF_INET`/`AF_INET6`, as the program
/// made it) is told it: the pure rule `socksify_proto::bind::reported`.
pub fn told(addr: SocketAddr, family: libc::c_int) -> SocketAddr {
    socksify_proto::bind::reported(addr, proto_family(family))
}

/// The pure core's name for `AF_INET` (anything else: IPv6).
pub fn proto_family(family: libc::c_int) -> socksify_proto::bind::Family {
    if family == libc::AF_INET {
        socksify_proto::bind::Family::V4
    } else {
        socksify_proto::bind::Family::V6
    }
}

/// Copies an encoded address out to the program's buffer the way the
/// kernel does: truncated to `*len`, and `*len` set to the full size. Both
/// pointers are the program's, read and written by the kernel: a bad one
/// is `Err(EFAULT)`.
///
/// # Safety
/// `out` and `len` are the program's, as for [`user_mem::write`].
pub unsafe fn copy_out(encoded: &(sockaddr_storage, socklen_t), out: *mut sockaddr, len: *mut socklen_t) -> Result<(), i32> {
    let (storage, full) = encoded;
    // SAFETY: the caller's promise: len is the program's.
    let room = unsafe { user_mem::read_value(len) }? as usize;
    let n = room.min(*full as usize);
    // SAFETY: storage holds `full` >= n bytes.
    let bytes = unsafe { std::slice::from_raw_parts(storage as *const _ as *const u8, n) };
    // SAFETY: the caller's promise: out and len are the program's.
    unsafe { user_mem::write_all(&[(out as *mut libc::c_void, bytes), (len as *mut libc::c_void, &full.to_ne_bytes())]) }
}

/// `getsockopt(level, opt)` for an int option; `None` if `fd` is not a
/// socket or has no such option.
pub fn int_option(fd: libc::c_int, level: libc::c_int, opt: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as socklen_t;
    // SAFETY: an int option writes at most one int into `value`.
    let rc = unsafe { crate::real::getsockopt(fd, level, opt, &mut value as *mut _ as *mut libc::c_void, &mut len) };
    (rc == 0).then_some(value)
}

/// The kernel's local address of `fd` (the real `getsockname`), or `None`
/// if it has none of `AF_INET`/`AF_INET6`.
pub fn local_addr(fd: libc::c_int) -> Option<SocketAddr> {
    // SAFETY: zeroed storage is a valid out-buffer of its size.
    let mut st: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: st is our own storage, `len` its size.
    if unsafe { crate::real::getsockname(fd, &mut st as *mut _ as *mut sockaddr, &mut len) } != 0 {
        return None;
    }
    // SAFETY: getsockname wrote `len` bytes of address into st.
    unsafe { read(&st as *const _ as *const sockaddr, len) }
}

/// The socket's type (`SOCK_STREAM`, `SOCK_DGRAM`, ...), or `None` if `fd` is not a socket.
pub fn socket_type(fd: libc::c_int) -> Option<libc::c_int> {
    int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE)
}

/// The socket's domain (`AF_INET`, ...), or `None` if `fd` is not a socket.
pub fn socket_family(fd: libc::c_int) -> Option<libc::c_int> {
    int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// The socket's protocol (`IPPROTO_UDP`, ...), or `None` if `fd` is not a socket.
pub fn socket_protocol(fd: libc::c_int) -> Option<libc::c_int> {
    int_option(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
}

/// The socket's domain and type, or `None` if `fd` is not a socket.
pub fn socket_family_and_type(fd: libc::c_int) -> Option<(libc::c_int, libc::c_int)> {
    Some((socket_family(fd)?, socket_type(fd)?))
}

/// Whether `fd`'s file has `O_NONBLOCK` (a non-blocking `connect`).
pub fn is_nonblocking(fd: libc::c_int) -> bool {
    // SAFETY: a flag query: no memory is passed.
    let flags = unsafe { crate::real::fcntl(fd, libc::F_GETFL, 0) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}
