//! `getaddrinfo` answers laid out the way glibc lays them out, for names
//! the shim answers itself (fake addresses, `/etc/hosts`). Which addresses,
//! in which order, is the engine's (`names::for_getaddrinfo`, with the
//! client core's `socksify_client::addrinfo`); here the C side: the hints
//! read, the list built and freed.
//!
//! What glibc decides from the service and the hints (flag checks, service
//! names, one entry per socket type, protocols, errors) we take from glibc
//! itself: [`tuples`] asks the real `getaddrinfo` about a numeric host with
//! the caller's service and hints, which never leaves the machine. We then
//! repeat its (socket type, protocol, port) list for each of our addresses,
//! addresses outer, types inner, as glibc does.
//!
//! Lists are laid out as glibc lays them out (one `malloc` per entry with
//! its `sockaddr` right behind it, `ai_canonname` its own `malloc`), so even
//! libc's `freeaddrinfo` would free them correctly; [`free_if_ours`] still
//! tells ours apart by the engine's registry of list heads (`names::lists`).

use crate::names::lists;
use crate::real;
use libc::{addrinfo, c_char, c_int, sockaddr, AF_INET, AF_INET6};
use libc::{AI_ADDRCONFIG, AI_ALL, AI_CANONNAME, AI_NUMERICHOST, AI_V4MAPPED, EAI_MEMORY, EAI_NONAME};
use socksify_client::addrinfo::Hints;
use std::ffi::CStr;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::ptr::null_mut;

/// The caller's hints, or glibc's defaults for a null pointer.
///
/// # Safety
/// `hints` is null or points to an `addrinfo`.
pub unsafe fn read_hints(hints: *const addrinfo) -> Hints {
    if hints.is_null() {
        return Hints::DEFAULT;
    }
    // SAFETY: caller guarantees a readable addrinfo.
    let h = unsafe { &*hints };
    Hints { flags: h.ai_flags, family: h.ai_family, socktype: h.ai_socktype, protocol: h.ai_protocol }
}

/// `hints` as a C `addrinfo`, for glibc.
pub fn hints_to_c(hints: &Hints) -> addrinfo {
    // SAFETY: all-zero is a valid addrinfo (null pointers, zero lengths).
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    h.ai_flags = hints.flags;
    h.ai_family = hints.family;
    h.ai_socktype = hints.socktype;
    h.ai_protocol = hints.protocol;
    h
}

/// One socket type / protocol / port every address is repeated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub socktype: c_int,
    pub protocol: c_int,
    pub port: u16,
}

/// The (socket type, protocol, port) list glibc returns per address for
/// `service` and `hints`, or glibc's `EAI_*` error for them.
///
/// # Safety
/// `service` is null or a NUL-terminated string.
pub unsafe fn tuples(service: *const c_char, hints: &Hints) -> Result<Vec<Tuple>, c_int> {
    let mut h = hints_to_c(hints);
    h.ai_family = AF_INET;
    h.ai_flags = (hints.flags & !(AI_CANONNAME | AI_ADDRCONFIG | AI_V4MAPPED | AI_ALL)) | AI_NUMERICHOST;
    let mut res: *mut addrinfo = null_mut();
    // SAFETY: a numeric host, the caller's service, our hints, an out-pointer.
    let rc = unsafe { real::getaddrinfo(c"0.0.0.0".as_ptr(), service, &h, &mut res) };
    if rc != 0 {
        return Err(rc);
    }
    let mut out = Vec::new();
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: walking the list glibc just returned.
        let ai = unsafe { &*cur };
        // SAFETY: glibc's entry: ai_addr holds ai_addrlen bytes.
        let port = unsafe { crate::socket_addr::read(ai.ai_addr, ai.ai_addrlen) }.map_or(0, |sa| sa.port());
        out.push(Tuple { socktype: ai.ai_socktype, protocol: ai.ai_protocol, port });
        cur = ai.ai_next;
    }
    // SAFETY: res came from the real getaddrinfo.
    unsafe { real::freeaddrinfo(res) };
    Ok(out)
}

/// The addresses of a list (libc's, for a bypassed name's answer).
///
/// # Safety
/// `cur` is null or a list from `getaddrinfo`, not yet freed.
pub unsafe fn addrs(mut cur: *const addrinfo) -> Vec<IpAddr> {
    let mut out = Vec::new();
    while !cur.is_null() {
        // SAFETY: walking the caller's list.
        let ai = unsafe { &*cur };
        // SAFETY: a getaddrinfo entry: ai_addr holds ai_addrlen bytes.
        if let Some(sa) = unsafe { crate::socket_addr::read(ai.ai_addr, ai.ai_addrlen) } {
            out.push(sa.ip());
        }
        cur = ai.ai_next;
    }
    out
}

/// Builds the list for `addrs` × `tuples` (`ai_flags` = the caller's
/// flags, `ai_canonname` on the first entry only), registered as ours
/// (`names::lists`).
/// `Err(EAI_MEMORY)` if malloc fails.
pub fn build(addrs: &[IpAddr], tuples: &[Tuple], flags: c_int, canon: Option<&CStr>) -> Result<*mut addrinfo, c_int> {
    let mut head: *mut addrinfo = null_mut();
    let mut tail: *mut *mut addrinfo = &mut head;
    for ip in addrs {
        for t in tuples {
            let family = if ip.is_ipv4() { AF_INET } else { AF_INET6 };
            let Some((storage, len)) = crate::socket_addr::encode(&SocketAddr::new(*ip, t.port), family) else { continue };
            // SAFETY: one block for the entry and its address, as glibc does.
            let node = unsafe { libc::malloc(size_of::<addrinfo>() + len as usize) } as *mut addrinfo;
            if node.is_null() {
                // SAFETY: head is our partial list.
                unsafe { free_list(head) };
                return Err(EAI_MEMORY);
            }
            // SAFETY: node has room for an addrinfo followed by `len` bytes;
            // malloc's alignment suits both.
            unsafe {
                let addr = node.add(1) as *mut sockaddr;
                std::ptr::copy_nonoverlapping(&storage as *const _ as *const u8, addr as *mut u8, len as usize);
                node.write(addrinfo {
                    ai_flags: flags,
                    ai_family: family,
                    ai_socktype: t.socktype,
                    ai_protocol: t.protocol,
                    ai_addrlen: len,
                    ai_addr: addr,
                    ai_canonname: null_mut(),
                    ai_next: null_mut(),
                });
                *tail = node;
                tail = &mut (*node).ai_next;
            }
        }
    }
    if head.is_null() {
        return Err(EAI_NONAME);
    }
    if let Some(canon) = canon {
        // SAFETY: canon is a C string; strdup's result is freed with the list.
        let copy = unsafe { libc::strdup(canon.as_ptr()) };
        if copy.is_null() {
            // SAFETY: head is our partial list, not handed out.
            unsafe { free_list(head) };
            return Err(EAI_MEMORY);
        }
        // SAFETY: head is the non-null first entry we just built.
        unsafe { (*head).ai_canonname = copy };
    }
    lists::register(head);
    Ok(head)
}

/// Frees `head` if we built it and returns true; false for libc's lists.
///
/// # Safety
/// `head` is a list from `getaddrinfo` (ours or libc's), not yet freed.
pub unsafe fn free_if_ours(head: *mut addrinfo) -> bool {
    if !lists::take_back(head) {
        return false;
    }
    // SAFETY: we built it; the program gave it back.
    unsafe { free_list(head) };
    true
}

unsafe fn free_list(mut cur: *mut addrinfo) {
    while !cur.is_null() {
        // SAFETY: every node and canonname were malloc'd by `build`.
        unsafe {
            let next = (*cur).ai_next;
            libc::free((*cur).ai_canonname as *mut libc::c_void);
            libc::free(cur as *mut libc::c_void);
            cur = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{socklen_t, AF_UNSPEC, AI_NUMERICSERV, AI_PASSIVE, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
    use std::ffi::CString;

    /// Fields of one entry, comparable.
    #[derive(Debug, PartialEq)]
    struct Entry {
        flags: c_int,
        family: c_int,
        socktype: c_int,
        protocol: c_int,
        addr: Option<SocketAddr>,
        addrlen: socklen_t,
        canon: Option<String>,
    }

    unsafe fn entries(mut cur: *const addrinfo) -> Vec<Entry> {
        let mut out = Vec::new();
        while !cur.is_null() {
            // SAFETY: walking a list getaddrinfo (ours or glibc's) returned and not yet freed.
            let ai = unsafe { &*cur };
            out.push(Entry {
                flags: ai.ai_flags,
                family: ai.ai_family,
                socktype: ai.ai_socktype,
                protocol: ai.ai_protocol,
                // SAFETY: the entry's ai_addr holds ai_addrlen bytes.
                addr: unsafe { crate::socket_addr::read(ai.ai_addr, ai.ai_addrlen) },
                addrlen: ai.ai_addrlen,
                // SAFETY: a non-null ai_canonname is a C string.
                canon: (!ai.ai_canonname.is_null()).then(|| unsafe { CStr::from_ptr(ai.ai_canonname) }.to_string_lossy().into_owned()),
            });
            cur = ai.ai_next;
        }
        out
    }

    /// What glibc answers for numeric `host`.
    fn glibc(host: &str, service: Option<&str>, hints: Hints) -> Result<Vec<Entry>, c_int> {
        let host = CString::new(host).unwrap();
        let service = service.map(|s| CString::new(s).unwrap());
        let h = hints_to_c(&hints);
        let mut res = null_mut();
        // SAFETY: C strings, our hints and an out-pointer.
        let rc = unsafe { real::getaddrinfo(host.as_ptr(), service.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()), &h, &mut res) };
        if rc != 0 {
            return Err(rc);
        }
        // SAFETY: rc == 0: res is the list glibc returned.
        let out = unsafe { entries(res) };
        // SAFETY: glibc's list, freed once, by glibc.
        unsafe { real::freeaddrinfo(res) };
        Ok(out)
    }

    /// What we answer for a name whose only address is `ip` (canonical
    /// name: `host`, as glibc gives for a numeric host).
    fn ours(host: &str, ip: IpAddr, service: Option<&str>, hints: Hints) -> Result<Vec<Entry>, c_int> {
        let service = service.map(|s| CString::new(s).unwrap());
        // SAFETY: a C string or null.
        let tuples = unsafe { tuples(service.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()), &hints) }?;
        let (v4, v6): (Vec<_>, Vec<_>) = match ip {
            IpAddr::V4(a) => (vec![a], vec![]),
            IpAddr::V6(a) => (vec![], vec![a]),
        };
        let addrs = socksify_client::addrinfo::select(&Hints { flags: hints.flags & !AI_ADDRCONFIG, ..hints }, &v4, &v6, || unreachable!())
            .map_err(|_| EAI_NONAME)?;
        let canon = CString::new(host).unwrap();
        let list = build(&addrs, &tuples, hints.flags, (hints.flags & AI_CANONNAME != 0).then_some(canon.as_c_str()))?;
        // SAFETY: the list build just returned.
        let out = unsafe { entries(list) };
        // SAFETY: the list build just returned, freed once.
        assert!(unsafe { free_if_ours(list) });
        Ok(out)
    }

    #[test]
    fn same_as_glibc_for_numeric_hosts_under_every_hint_combination() {
        let families = [AF_UNSPEC, AF_INET, AF_INET6];
        let socktypes = [0, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW];
        let protocols = [0, IPPROTO_TCP, IPPROTO_UDP];
        let flag_sets = [0, AI_CANONNAME, AI_V4MAPPED, AI_V4MAPPED | AI_ALL, AI_PASSIVE, AI_NUMERICSERV, AI_CANONNAME | AI_V4MAPPED];
        let services = [None, Some("80"), Some("http"), Some("domain"), Some("no-such-service"), Some("65535")];
        let mut compared = 0;
        for host in ["192.0.2.7", "2001:db8::7"] {
            let ip: IpAddr = host.parse().unwrap();
            for &family in &families {
                for &socktype in &socktypes {
                    for &protocol in &protocols {
                        for &flags in &flag_sets {
                            for service in services {
                                let hints = Hints { flags, family, socktype, protocol };
                                // A numeric host of the other family is glibc's
                                // EAI_ADDRFAMILY; a name without such an address
                                // is EAI_NONAME, which is what we answer.
                                let want = glibc(host, service, hints).map_err(|e| {
                                    if e == -9
                                    /* EAI_ADDRFAMILY */
                                    {
                                        EAI_NONAME
                                    } else {
                                        e
                                    }
                                });
                                let got = ours(host, ip, service, hints);
                                assert_eq!(got, want, "host {host} service {service:?} hints {hints:?}");
                                compared += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 3 * 4 * 3 * 7 * 6);
    }

    #[test]
    fn one_entry_per_socket_type_without_hints() {
        let hints = Hints { flags: 0, family: AF_UNSPEC, socktype: 0, protocol: 0 };
        // SAFETY: a null service.
        let t = unsafe { tuples(std::ptr::null(), &hints) }.unwrap();
        assert_eq!(
            t.iter().map(|t| (t.socktype, t.protocol)).collect::<Vec<_>>(),
            vec![(SOCK_STREAM, IPPROTO_TCP), (SOCK_DGRAM, IPPROTO_UDP), (SOCK_RAW, 0)]
        );
    }

    #[test]
    fn a_list_s_addresses_are_read_back() {
        let want: Vec<IpAddr> = vec!["198.18.0.1".parse().unwrap(), "fd50::1".parse().unwrap()];
        let tuples = [Tuple { socktype: SOCK_STREAM, protocol: IPPROTO_TCP, port: 80 }, Tuple { socktype: SOCK_DGRAM, protocol: IPPROTO_UDP, port: 80 }];
        let list = build(&want, &tuples, 0, None).unwrap();
        // SAFETY: the list build just returned, not yet freed.
        let got = unsafe { addrs(list) };
        // SAFETY: our list, freed once.
        assert!(unsafe { free_if_ours(list) });
        assert_eq!(got, vec![want[0], want[0], want[1], want[1]], "addresses outer, socket types inner");
        // SAFETY: a null list.
        assert!(unsafe { addrs(null_mut()) }.is_empty());
    }

    #[test]
    fn glibcs_errors_come_through() {
        let h = Hints { flags: 0, family: AF_INET, socktype: SOCK_RAW, protocol: 0 };
        // SAFETY: a C string literal.
        assert_eq!(unsafe { tuples(c"80".as_ptr(), &h) }, Err(libc::EAI_SERVICE));
        let h = Hints { flags: AI_NUMERICSERV, family: AF_UNSPEC, socktype: 0, protocol: 0 };
        // SAFETY: a C string literal.
        assert_eq!(unsafe { tuples(c"http".as_ptr(), &h) }, Err(EAI_NONAME));
        let h = Hints { flags: 0x4000_0000, family: AF_UNSPEC, socktype: 0, protocol: 0 };
        // SAFETY: a null service.
        assert_eq!(unsafe { tuples(std::ptr::null(), &h) }, Err(libc::EAI_BADFLAGS));
    }

    #[test]
    fn libc_lists_are_not_ours() {
        let mut res = null_mut();
        // SAFETY: a C string literal, null service and hints, an out-pointer.
        assert_eq!(unsafe { real::getaddrinfo(c"127.0.0.1".as_ptr(), std::ptr::null(), std::ptr::null(), &mut res) }, 0);
        let ours =
            build(&["192.0.2.1".parse().unwrap()], &[Tuple { socktype: SOCK_STREAM, protocol: IPPROTO_TCP, port: 1 }], 0, None).unwrap();
        // SAFETY: glibc's list, not yet freed.
        assert!(!unsafe { free_if_ours(res) });
        // SAFETY: glibc's list, freed once, by glibc.
        unsafe { real::freeaddrinfo(res) };
        // SAFETY: our list, not yet freed.
        assert!(unsafe { free_if_ours(ours) });
        // SAFETY: the same pointer again: only the registry is asked, nothing is freed.
        assert!(!unsafe { free_if_ours(ours) }, "freed once");
    }
}
