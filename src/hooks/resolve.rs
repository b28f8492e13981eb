//! Name resolution: `getaddrinfo`, `freeaddrinfo`, `gethostbyname`,
//! `gethostbyname2`, `gethostbyname_r`, `gethostbyname2_r`,
//! `gethostbyaddr`, `gethostbyaddr_r` and `getnameinfo`.
//!
//! Who answers a name (decided by the client core's
//! `socksify_client::route::name_lookup`, carried out by the engine,
//! `names::for_getaddrinfo` and `names::for_hostent`):
//! * libc, for numeric hosts, `AI_NUMERICHOST`, a null node, local DNS mode
//!   (`socks5://`, `SOCKSIFY_DNS=local`) and names `SOCKSIFY_NO_PROXY`
//!   bypasses (name rules apply before any faking);
//! * `/etc/hosts`, read by us, for names it lists and for `localhost`;
//! * the fake-address table for every other name in remote mode: the
//!   program gets an address from the fake pools and `connect` sends the
//!   name to the proxy. No DNS query leaves the program.
//!
//! Reverse look-ups (`route::addr_lookup`, [`reverse`]) of a fake address
//! give its name; of any other address in remote mode, `/etc/hosts` or the
//! numeric form (a PTR query would leak), unless the address is bypassed.
//!
//! Every hook: the guard (our own look-ups go straight to libc), then the
//! slow path inside [`ffi::catch`]; a panic returns an error, never libc's
//! answer for a name that must not reach DNS. The hooks read the C
//! arguments, call the engine (`names`), and lay out its answer (the
//! `addrinfo` list: [`addrinfo`]; a `hostent`: [`hostent`]); when libc
//! answers, they hand its addresses back (`names::ByLibc::answered`).
//!
//! `getaddrinfo_a` and the raw `res_*` queries: [`raw_dns`].

mod addrinfo;
mod hostent;
mod raw_dns; // getaddrinfo_a and res_* (glibc's resolver bypasses our hooks)

use crate::names::{self, reverse, AddrInfo as Answer, ByLibc, Failed, HostEntry, Reverse};
use crate::{ffi, real, socket_addr};
use hostent::HostData;
use libc::{addrinfo as AddrInfo, c_char, c_int, c_void, hostent as HostEnt, size_t, sockaddr, socklen_t};
use libc::{AF_INET, AF_INET6, AI_CANONNAME, AI_NUMERICHOST, EAI_FAIL, EAI_NONAME, EAI_OVERFLOW, NI_NAMEREQD, NI_NUMERICHOST};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr::null_mut;

#[allow(clippy::too_many_arguments)] // gethostbyaddr_r's C signature
mod libc_resolver {
    use libc::{c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
    crate::real_fns! {
        fn gethostbyname(name: *const c_char) -> *mut hostent;
        fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent;
        fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
        fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
        fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent;
        fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
        fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int;
    }
}

// <netdb.h> values the libc crate does not carry for glibc.
const NETDB_INTERNAL: c_int = -1;
const HOST_NOT_FOUND: c_int = 1;
const NO_RECOVERY: c_int = 3;
const TRY_AGAIN: c_int = 2;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
    fn inet_aton(cp: *const c_char, inp: *mut libc::in_addr) -> c_int;
}

fn set_h_errno(value: c_int) {
    // SAFETY: glibc's per-thread h_errno slot.
    unsafe { *__h_errno_location() = value }
}

/// Whether glibc reads `name` as an address without any look-up
/// (`inet_aton` forms such as `127.1`, IPv6 with an optional scope).
fn is_numeric(name: &CStr) -> bool {
    // SAFETY: zeroed in_addr is a valid out-buffer; name is a C string.
    let mut a: libc::in_addr = unsafe { std::mem::zeroed() };
    // SAFETY: name is a C string; `a` is our own out-buffer.
    if unsafe { inet_aton(name.as_ptr(), &mut a) } != 0 {
        return true;
    }
    name.to_str().ok().and_then(|s| s.split('%').next()).is_some_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

// ---------------------------------------------------------------- getaddrinfo

#[cfg_attr(not(test), no_mangle)] // the unit-test binary must keep libc's own
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const AddrInfo,
    res: *mut *mut AddrInfo,
) -> c_int {
    if node.is_null() || res.is_null() {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    }
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter_resolver() else { return unsafe { real::getaddrinfo(node, service, hints, res) } };
    // SAFETY: the program's arguments, valid by getaddrinfo's contract (node and res checked non-null).
    ffi::catch(EAI_FAIL, libc::EIO, || unsafe { getaddrinfo_slow(node, service, hints, res) })
}

unsafe fn getaddrinfo_slow(node: *const c_char, service: *const c_char, hints_ptr: *const AddrInfo, res: *mut *mut AddrInfo) -> c_int {
    // SAFETY: hints_ptr is the program's: null or an addrinfo.
    let hints = unsafe { addrinfo::read_hints(hints_ptr) };
    // A numeric host, or an error glibc finds before any look-up (flags,
    // family, service, socket type): glibc answers, without a query.
    let mut probe = addrinfo::hints_to_c(&hints);
    probe.ai_flags |= AI_NUMERICHOST;
    // SAFETY: the program's node, service and result pointer; our own hints.
    let rc = unsafe { real::getaddrinfo(node, service, &probe, res) };
    if rc == 0 {
        // glibc reports the caller's flags in each entry, not the probe's.
        // SAFETY: res is non-null (checked in the hook) and the real getaddrinfo just set it.
        let mut cur = unsafe { *res };
        while !cur.is_null() {
            // SAFETY: walking the list the real getaddrinfo just returned (rc == 0); nobody else has it yet.
            unsafe {
                (*cur).ai_flags = hints.flags;
                cur = (*cur).ai_next;
            }
        }
    }
    if rc != EAI_NONAME || hints.flags & AI_NUMERICHOST != 0 {
        return rc;
    }
    // SAFETY: node is non-null (checked in the hook) and a C string by getaddrinfo's contract.
    let Ok(name) = unsafe { CStr::from_ptr(node) }.to_str() else { return EAI_NONAME };
    // SAFETY: service is the program's: null or a C string.
    let tuples = match unsafe { addrinfo::tuples(service, &hints) } {
        Ok(t) => t,
        Err(e) => return e,
    };
    let port = tuples.first().map_or(0, |t| t.port);
    let (canon, addrs) = match names::for_getaddrinfo(name, port, &hints) {
        Answer::Libc(libc) => {
            // SAFETY: the program's arguments, passed on unchanged.
            let rc = unsafe { real::getaddrinfo(node, service, hints_ptr, res) };
            if rc == 0 {
                // SAFETY: rc == 0: *res is the list libc just returned.
                libc.answered(|| unsafe { addrinfo::addrs(*res) });
            }
            return rc;
        }
        Answer::Addrs { canon, addrs } => (canon, addrs),
        Answer::Failed(why) => return eai_of(why),
    };
    let canon = if hints.flags & AI_CANONNAME != 0 { CString::new(canon).ok() } else { None };
    match addrinfo::build(&addrs, &tuples, hints.flags, canon.as_deref()) {
        Ok(list) => {
            // SAFETY: res is non-null (checked in the hook) and writable by getaddrinfo's contract.
            unsafe { *res = list };
            0
        }
        Err(e) => e,
    }
}

/// `getaddrinfo`'s error for a look-up we fail.
fn eai_of(why: Failed) -> c_int {
    match why {
        Failed::NotFound => EAI_NONAME,
        Failed::Refused => EAI_FAIL,
        Failed::TryAgain => libc::EAI_AGAIN,
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn freeaddrinfo(res: *mut AddrInfo) {
    if res.is_null() {
        return;
    }
    let errno = ffi::errno();
    // On a panic we leak the list rather than risk freeing ours twice.
    // SAFETY: res is a list from getaddrinfo, not yet freed (freeaddrinfo's contract).
    let ours = ffi::catch(true, errno, || unsafe { addrinfo::free_if_ours(res) });
    if !ours {
        // SAFETY: not one of ours: libc's list, given back to libc.
        unsafe { real::freeaddrinfo(res) };
    }
}

/// The addresses of a `hostent` (libc's, for a bypassed name's answer).
///
/// # Safety
/// `ent` is null or a `hostent` libc just returned.
unsafe fn hostent_addrs(ent: *const HostEnt) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if ent.is_null() {
        return out;
    }
    // SAFETY: a hostent libc just returned: a null-terminated address list.
    let ent = unsafe { &*ent };
    let mut i = 0;
    while !ent.h_addr_list.is_null() {
        // SAFETY: h_addr_list is null-terminated and we stop at the null.
        let addr = unsafe { *ent.h_addr_list.add(i) };
        if addr.is_null() {
            break;
        }
        let ip = match ent.h_length {
            // SAFETY: h_length is 4: each address in the list is 4 bytes.
            4 => IpAddr::V4(Ipv4Addr::from(unsafe { std::ptr::read_unaligned(addr as *const [u8; 4]) })),
            // SAFETY: h_length is 16: each address in the list is 16 bytes.
            16 => IpAddr::V6(Ipv6Addr::from(unsafe { std::ptr::read_unaligned(addr as *const [u8; 16]) })),
            _ => break,
        };
        out.push(ip);
        i += 1;
    }
    out
}

// ------------------------------------------------------------ gethostbyname*

enum HostLookup {
    /// libc answers; its addresses go back to the engine.
    Libc(ByLibc),
    /// libc answers a call that is not ours (a numeric name, another family).
    LibcAlone,
    Found(HostData),
    NotFound(c_int),
}

unsafe fn by_name(name: *const c_char, family: c_int) -> HostLookup {
    if name.is_null() || (family != AF_INET && family != AF_INET6) {
        return HostLookup::LibcAlone;
    }
    // SAFETY: name is non-null (checked above) and a C string by the C function's contract.
    let cname = unsafe { CStr::from_ptr(name) };
    if is_numeric(cname) {
        return HostLookup::LibcAlone;
    }
    let Ok(text) = cname.to_str() else { return HostLookup::NotFound(HOST_NOT_FOUND) };
    match names::for_hostent(text, family) {
        HostEntry::Libc(libc) => HostLookup::Libc(libc),
        HostEntry::Found { name, aliases, addrs } => HostLookup::Found(HostData { name, aliases, family, addrs }),
        HostEntry::Failed(Failed::NotFound) => HostLookup::NotFound(HOST_NOT_FOUND),
        HostEntry::Failed(Failed::Refused) => HostLookup::NotFound(NO_RECOVERY),
        HostEntry::Failed(Failed::TryAgain) => HostLookup::NotFound(TRY_AGAIN),
    }
}

unsafe fn by_addr(addr: *const c_void, len: socklen_t, family: c_int) -> HostLookup {
    if addr.is_null() {
        return HostLookup::LibcAlone;
    }
    let ip = match (family, len) {
        // SAFETY: the caller says `addr` holds `len` bytes.
        (AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(unsafe { std::ptr::read_unaligned(addr as *const [u8; 4]) })),
        // SAFETY: the caller says `addr` holds `len` (16) bytes.
        (AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(unsafe { std::ptr::read_unaligned(addr as *const [u8; 16]) })),
        _ => return HostLookup::LibcAlone,
    };
    match reverse(ip, 0) {
        Reverse::Libc => HostLookup::LibcAlone,
        Reverse::Name(name, aliases) => HostLookup::Found(HostData { name, aliases, family, addrs: vec![ip] }),
        Reverse::NotFound => HostLookup::NotFound(HOST_NOT_FOUND),
    }
}

/// The non-reentrant form: our answers live in a per-thread buffer.
fn answer_static(lookup: HostLookup, libc_answer: impl FnOnce() -> *mut HostEnt) -> *mut HostEnt {
    match lookup {
        HostLookup::LibcAlone => libc_answer(),
        HostLookup::Libc(libc) => {
            let ent = libc_answer();
            // SAFETY: ent is what libc's gethostbyname* just returned: null or a valid hostent.
            libc.answered(|| unsafe { hostent_addrs(ent) });
            ent
        }
        HostLookup::Found(data) => {
            let ent = hostent::in_thread_buffer(&data);
            if ent.is_null() {
                set_h_errno(NETDB_INTERNAL);
            }
            ent
        }
        HostLookup::NotFound(h_errno) => {
            set_h_errno(h_errno);
            null_mut()
        }
    }
}

/// The reentrant form: the caller's buffer, `ERANGE` when it is too small.
unsafe fn answer_r(
    lookup: HostLookup,
    ret: *mut HostEnt,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut HostEnt,
    h_errnop: *mut c_int,
    libc_answer: impl FnOnce() -> c_int,
) -> c_int {
    // SAFETY: each pointer is checked for null; otherwise the caller's writable out-pointer.
    let set = |found: *mut HostEnt, h_errno: c_int| unsafe {
        if !result.is_null() {
            *result = found;
        }
        if !h_errnop.is_null() {
            *h_errnop = h_errno;
        }
    };
    match lookup {
        HostLookup::LibcAlone => libc_answer(),
        HostLookup::Libc(libc) => {
            let rc = libc_answer();
            if rc == 0 && !result.is_null() {
                // SAFETY: rc == 0 and result non-null: libc stored null or a valid hostent there.
                libc.answered(|| unsafe { hostent_addrs(*result) });
            }
            rc
        }
        // SAFETY: ret and buf/buflen are the caller's buffers, as the _r contract says.
        HostLookup::Found(data) => match unsafe { hostent::write(&data, ret, buf, buflen) } {
            Ok(()) => {
                set(ret, 0);
                0
            }
            Err(()) => {
                set(null_mut(), NETDB_INTERNAL);
                ffi::set_errno(libc::ERANGE);
                libc::ERANGE
            }
        },
        HostLookup::NotFound(h_errno) => {
            set(null_mut(), h_errno);
            0
        }
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut HostEnt {
    // SAFETY: the program's argument, passed on unchanged.
    let Some(_inside) = crate::hooks::enter_resolver() else { return unsafe { libc_resolver::gethostbyname(name) } };
    set_h_errno(NO_RECOVERY); // what a panic leaves
    // SAFETY: name is the program's, null or a C string (by_name checks null); libc gets it unchanged.
    ffi::catch(null_mut(), libc::EIO, || answer_static(unsafe { by_name(name, AF_INET) }, || unsafe { libc_resolver::gethostbyname(name) }))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut HostEnt {
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter_resolver() else { return unsafe { libc_resolver::gethostbyname2(name, af) } };
    set_h_errno(NO_RECOVERY);
    // SAFETY: name is the program's, null or a C string (by_name checks null); libc gets it unchanged.
    ffi::catch(null_mut(), libc::EIO, || answer_static(unsafe { by_name(name, af) }, || unsafe { libc_resolver::gethostbyname2(name, af) }))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut HostEnt,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut HostEnt,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(_inside) = crate::hooks::enter_resolver() else {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { libc_resolver::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) };
    };
    // SAFETY: the caller's out-pointers, each null or writable.
    unsafe { reset_r(result, h_errnop) };
    // SAFETY: the program's name (null or a C string) and buffers, as gethostbyname_r's contract says; libc gets them unchanged.
    ffi::catch(libc::EIO, libc::EIO, || unsafe {
        answer_r(by_name(name, AF_INET), ret, buf, buflen, result, h_errnop, || {
            libc_resolver::gethostbyname_r(name, ret, buf, buflen, result, h_errnop)
        })
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut HostEnt,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut HostEnt,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(_inside) = crate::hooks::enter_resolver() else {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { libc_resolver::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) };
    };
    // SAFETY: the caller's out-pointers, each null or writable.
    unsafe { reset_r(result, h_errnop) };
    // SAFETY: the program's name (null or a C string) and buffers, as gethostbyname2_r's contract says; libc gets them unchanged.
    ffi::catch(libc::EIO, libc::EIO, || unsafe {
        answer_r(by_name(name, af), ret, buf, buflen, result, h_errnop, || {
            libc_resolver::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop)
        })
    })
}

/// What a `_r` call reports if it panics: no result, `NO_RECOVERY`.
unsafe fn reset_r(result: *mut *mut HostEnt, h_errnop: *mut c_int) {
    // SAFETY: each pointer is checked for null; otherwise writable (reset_r's contract).
    unsafe {
        if !result.is_null() {
            *result = null_mut();
        }
        if !h_errnop.is_null() {
            *h_errnop = NO_RECOVERY;
        }
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut HostEnt {
    // SAFETY: the program's arguments, passed on unchanged.
    let Some(_inside) = crate::hooks::enter_resolver() else { return unsafe { libc_resolver::gethostbyaddr(addr, len, af) } };
    set_h_errno(NO_RECOVERY);
    ffi::catch(null_mut(), libc::EIO, || {
        // SAFETY: addr is the program's, null or `len` bytes (by_addr checks null and len); libc gets them unchanged.
        answer_static(unsafe { by_addr(addr, len, af) }, || unsafe { libc_resolver::gethostbyaddr(addr, len, af) })
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    ret: *mut HostEnt,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut HostEnt,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(_inside) = crate::hooks::enter_resolver() else {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { libc_resolver::gethostbyaddr_r(addr, len, af, ret, buf, buflen, result, h_errnop) };
    };
    // SAFETY: the caller's out-pointers, each null or writable.
    unsafe { reset_r(result, h_errnop) };
    // SAFETY: the program's address (`len` bytes) and buffers, as gethostbyaddr_r's contract says; libc gets them unchanged.
    ffi::catch(libc::EIO, libc::EIO, || unsafe {
        answer_r(by_addr(addr, len, af), ret, buf, buflen, result, h_errnop, || {
            libc_resolver::gethostbyaddr_r(addr, len, af, ret, buf, buflen, result, h_errnop)
        })
    })
}

// ---------------------------------------------------------------- getnameinfo

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the program's arguments, with at most the flags changed.
    let libc_answer = |flags| unsafe { libc_resolver::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) };
    // Only a host name look-up can be ours; services come from /etc/services.
    if host.is_null() || hostlen == 0 || flags & NI_NUMERICHOST != 0 {
        return libc_answer(flags);
    }
    let Some(_inside) = crate::hooks::enter_resolver() else { return libc_answer(flags) };
    ffi::catch(EAI_FAIL, libc::EIO, || {
        // SAFETY: sa holds salen bytes (getnameinfo's contract).
        let Some(addr) = (unsafe { socket_addr::read(sa, salen) }) else { return libc_answer(flags) };
        match reverse(addr.ip(), addr.port()) {
            Reverse::Libc => libc_answer(flags),
            Reverse::NotFound if flags & NI_NAMEREQD != 0 => EAI_NONAME,
            Reverse::NotFound => libc_answer(flags | NI_NUMERICHOST),
            Reverse::Name(name, _) => {
                if !serv.is_null() && servlen > 0 {
                    // SAFETY: the caller's arguments, without the host part.
                    let rc = unsafe { libc_resolver::getnameinfo(sa, salen, null_mut(), 0, serv, servlen, flags) };
                    if rc != 0 {
                        return rc;
                    }
                }
                if name.len() >= hostlen as usize {
                    return EAI_OVERFLOW;
                }
                // SAFETY: host has hostlen > name.len() bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(name.as_ptr(), host as *mut u8, name.len());
                    *host.add(name.len()) = 0;
                }
                0
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_forms_glibc_accepts() {
        for n in [c"127.0.0.1", c"127.1", c"0x7f.1", c"::1", c"fe80::1%lo", c"::ffff:1.2.3.4"] {
            assert!(is_numeric(n), "{n:?}");
        }
        for n in [c"name.test", c"localhost", c"1.2.3.4.example", c""] {
            assert!(!is_numeric(n), "{n:?}");
        }
    }
}
