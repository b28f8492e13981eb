//! `getaddrinfo` answers built the way glibc builds them, for names the
//! shim answers itself (fake addresses, `/etc/hosts`).
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
//! libc's `freeaddrinfo` would free them correctly; our [`free`] still tells
//! ours apart by a registry of list heads.

use crate::fork_safe::ForkSafeMutex;
use crate::real;
use libc::{addrinfo, c_char, c_int, sockaddr, socklen_t, AF_INET, AF_INET6, AF_UNSPEC};
use libc::{AI_ADDRCONFIG, AI_ALL, AI_CANONNAME, AI_NUMERICHOST, AI_V4MAPPED, EAI_MEMORY, EAI_NONAME};
use std::collections::HashSet;
use std::ffi::CStr;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

/// glibc's flags when the caller passes no hints (`AI_DEFAULT`).
pub const DEFAULT_FLAGS: c_int = AI_V4MAPPED | AI_ADDRCONFIG;

/// The caller's hints, or glibc's defaults for a null pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub flags: c_int,
    pub family: c_int,
    pub socktype: c_int,
    pub protocol: c_int,
}

impl Hints {
    /// # Safety
    /// `hints` is null or points to an `addrinfo`.
    pub unsafe fn read(hints: *const addrinfo) -> Hints {
        if hints.is_null() {
            return Hints { flags: DEFAULT_FLAGS, family: AF_UNSPEC, socktype: 0, protocol: 0 };
        }
        // SAFETY: caller guarantees a readable addrinfo.
        let h = unsafe { &*hints };
        Hints { flags: h.ai_flags, family: h.ai_family, socktype: h.ai_socktype, protocol: h.ai_protocol }
    }

    pub fn to_c(self) -> addrinfo {
        // SAFETY: all-zero is a valid addrinfo (null pointers, zero lengths).
        let mut h: addrinfo = unsafe { std::mem::zeroed() };
        h.ai_flags = self.flags;
        h.ai_family = self.family;
        h.ai_socktype = self.socktype;
        h.ai_protocol = self.protocol;
        h
    }
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
    let mut h = hints.to_c();
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

/// Whether the machine has a non-loopback IPv4 / IPv6 address, as glibc's
/// `AI_ADDRCONFIG` check (`__check_pf`) counts them.
pub fn configured_families() -> (bool, bool) {
    let mut ifap: *mut libc::ifaddrs = null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return (true, true); // cannot tell: do not narrow (glibc does the same)
    }
    // SAFETY: a list getifaddrs just built.
    let seen = unsafe { families_in(ifap) };
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    seen
}

/// [`configured_families`] over one `getifaddrs` list.
///
/// # Safety
/// `list` is null or an `ifaddrs` list whose `ifa_addr`s are null or hold
/// a whole address of their family (other families: at least the family).
unsafe fn families_in(list: *const libc::ifaddrs) -> (bool, bool) {
    let (mut v4, mut v6) = (false, false);
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: walking the caller's list.
        let ifa = unsafe { &*cur };
        // An interface address is only as long as its family's sockaddr
        // (an AF_INET one is 16 bytes): read the family first.
        // SAFETY: null, or at least the family is readable.
        let len = match unsafe { crate::socket_addr::family(ifa.ifa_addr, size_of::<libc::sa_family_t>() as socklen_t) } {
            Some(AF_INET) => size_of::<libc::sockaddr_in>(),
            Some(AF_INET6) => size_of::<libc::sockaddr_in6>(),
            _ => 0,
        };
        // SAFETY: `len` bytes of that family are readable (the caller's promise).
        match unsafe { crate::socket_addr::read(ifa.ifa_addr, len as socklen_t) }.map(|sa| sa.ip()) {
            Some(IpAddr::V4(ip)) if ip != Ipv4Addr::LOCALHOST => v4 = true,
            Some(IpAddr::V6(ip)) if ip != Ipv6Addr::LOCALHOST => v6 = true,
            _ => {}
        }
        cur = ifa.ifa_next;
    }
    (v4, v6)
}

/// The addresses to return, in glibc's order, for a name whose addresses
/// are `v4` and `v6`: the family and `AI_ADDRCONFIG` narrow, `AI_V4MAPPED`
/// (with `AI_ALL`) maps IPv4 into an `AF_INET6` answer, and the result is
/// ordered by RFC 6724 precedence as glibc's default policy orders it.
/// `configured` is only asked for with `AI_ADDRCONFIG`.
pub fn select(hints: &Hints, v4: &[Ipv4Addr], v6: &[Ipv6Addr], configured: impl FnOnce() -> (bool, bool)) -> Result<Vec<IpAddr>, c_int> {
    let mut family = hints.family;
    if hints.flags & AI_ADDRCONFIG != 0 {
        let (seen4, seen6) = configured();
        if family == AF_UNSPEC && (seen4 || seen6) && seen4 != seen6 {
            family = if seen4 { AF_INET } else { AF_INET6 };
        } else if (family == AF_INET && !seen4) || (family == AF_INET6 && !seen6) {
            return Err(EAI_NONAME);
        }
    }
    let mapped = || v4.iter().map(|ip| IpAddr::V6(ip.to_ipv6_mapped()));
    let mut out: Vec<IpAddr> = match family {
        AF_INET => v4.iter().map(|&ip| ip.into()).collect(),
        AF_INET6 => {
            let mut out: Vec<IpAddr> = v6.iter().map(|&ip| ip.into()).collect();
            if hints.flags & AI_V4MAPPED != 0 && (out.is_empty() || hints.flags & AI_ALL != 0) {
                out.extend(mapped());
            }
            out
        }
        _ => v4.iter().map(|&ip| IpAddr::from(ip)).chain(v6.iter().map(|&ip| ip.into())).collect(),
    };
    out.sort_by_key(|ip| std::cmp::Reverse(precedence(*ip)));
    if out.is_empty() {
        return Err(EAI_NONAME);
    }
    Ok(out)
}

/// RFC 6724's default policy table (glibc's without a gai.conf).
fn precedence(ip: IpAddr) -> u8 {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(v6);
    let within = |net: u128, prefix: u32| bits & u128::MAX.checked_shl(128 - prefix).unwrap_or(0) == net;
    if bits == 1 {
        50
    } else if within(0xffff << 32, 96) {
        35
    } else if within(0x2002 << 112, 16) {
        30
    } else if within(0x2001_0000 << 96, 32) {
        5
    } else if within(0xfc << 120, 7) {
        3
    } else if within(0, 96) || within(0xfec0 << 112, 10) || within(0x3ffe << 112, 16) {
        1
    } else {
        40
    }
}

/// Builds the list for `addrs` × `tuples` (`ai_flags` = the caller's
/// flags, `ai_canonname` on the first entry only), registered as ours.
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
    register(head);
    Ok(head)
}

/// Heads of the lists we handed out and that are not freed yet.
static OURS: ForkSafeMutex<Option<HashSet<usize>>> = ForkSafeMutex::new(None);
/// How many there are: `freeaddrinfo` skips the lock while there are none.
static OURS_LIVE: AtomicUsize = AtomicUsize::new(0);

fn register(head: *mut addrinfo) {
    if OURS.lock().get_or_insert_with(HashSet::new).insert(head as usize) {
        OURS_LIVE.fetch_add(1, Ordering::Relaxed);
    }
}

/// Frees `head` if we built it and returns true; false for libc's lists.
///
/// # Safety
/// `head` is a list from `getaddrinfo` (ours or libc's), not yet freed.
pub unsafe fn free_if_ours(head: *mut addrinfo) -> bool {
    if OURS_LIVE.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let ours = OURS.lock().as_mut().is_some_and(|set| set.remove(&(head as usize)));
    if !ours {
        return false;
    }
    OURS_LIVE.fetch_sub(1, Ordering::Relaxed);
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
    use libc::{AI_NUMERICSERV, AI_PASSIVE, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
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
        let h = hints.to_c();
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
        let addrs = select(&Hints { flags: hints.flags & !AI_ADDRCONFIG, ..hints }, &v4, &v6, || unreachable!())?;
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
    fn unspecified_family_gives_ipv4_before_a_ula_and_one_entry_per_socket_type() {
        let hints = Hints { flags: 0, family: AF_UNSPEC, socktype: 0, protocol: 0 };
        let v4 = [Ipv4Addr::new(198, 18, 0, 1)];
        let v6: [Ipv6Addr; 1] = ["fd50:c5f1:f1ed::1".parse().unwrap()];
        let addrs = select(&hints, &v4, &v6, || unreachable!()).unwrap();
        assert_eq!(addrs, vec![IpAddr::from(v4[0]), IpAddr::from(v6[0])]);
        // SAFETY: a null service.
        let t = unsafe { tuples(std::ptr::null(), &hints) }.unwrap();
        assert_eq!(
            t.iter().map(|t| (t.socktype, t.protocol)).collect::<Vec<_>>(),
            vec![(SOCK_STREAM, IPPROTO_TCP), (SOCK_DGRAM, IPPROTO_UDP), (SOCK_RAW, 0)]
        );
        // AF_INET6 with AI_V4MAPPED: the IPv6 address alone; with AI_ALL both.
        let h6 = Hints { family: AF_INET6, flags: AI_V4MAPPED, ..hints };
        assert_eq!(select(&h6, &v4, &v6, || unreachable!()).unwrap(), vec![IpAddr::from(v6[0])]);
        assert_eq!(select(&h6, &v4, &[], || unreachable!()).unwrap(), vec![IpAddr::V6(v4[0].to_ipv6_mapped())]);
        let all = select(&Hints { flags: AI_V4MAPPED | AI_ALL, ..h6 }, &v4, &v6, || unreachable!()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(select(&Hints { family: AF_INET6, ..hints }, &v4, &[], || unreachable!()), Err(EAI_NONAME));
    }

    #[test]
    fn addrconfig_narrows_like_glibc() {
        let v4 = [Ipv4Addr::new(198, 18, 0, 1)];
        let v6: [Ipv6Addr; 1] = ["fd50::1".parse().unwrap()];
        let h = |family| Hints { flags: AI_ADDRCONFIG, family, socktype: 0, protocol: 0 };
        assert_eq!(select(&h(AF_UNSPEC), &v4, &v6, || (true, false)).unwrap(), vec![IpAddr::from(v4[0])]);
        assert_eq!(select(&h(AF_UNSPEC), &v4, &v6, || (false, true)).unwrap(), vec![IpAddr::from(v6[0])]);
        assert_eq!(select(&h(AF_UNSPEC), &v4, &v6, || (false, false)).unwrap().len(), 2, "only loopback: no narrowing");
        assert_eq!(select(&h(AF_INET6), &v4, &v6, || (true, false)), Err(EAI_NONAME));
        assert_eq!(select(&h(AF_INET), &v4, &v6, || (true, false)).unwrap(), vec![IpAddr::from(v4[0])]);
    }

    #[test]
    fn interface_families_count_non_loopback_addresses_of_each_length() {
        // Each address in a block of exactly its family's size, as the kernel's are.
        fn v4(ip: Ipv4Addr) -> Box<libc::sockaddr_in> {
            let (st, _) = crate::socket_addr::encode(&SocketAddr::new(ip.into(), 0), AF_INET).unwrap();
            // SAFETY: encode wrote a sockaddr_in at the start of the storage.
            Box::new(unsafe { std::ptr::read(&st as *const _ as *const libc::sockaddr_in) })
        }
        fn v6(ip: Ipv6Addr) -> Box<libc::sockaddr_in6> {
            let (st, _) = crate::socket_addr::encode(&SocketAddr::new(ip.into(), 0), AF_INET6).unwrap();
            // SAFETY: encode wrote a sockaddr_in6 at the start of the storage.
            Box::new(unsafe { std::ptr::read(&st as *const _ as *const libc::sockaddr_in6) })
        }
        let packet = Box::new(libc::sockaddr { sa_family: libc::AF_PACKET as libc::sa_family_t, sa_data: [0; 14] });
        let lo4 = v4(Ipv4Addr::LOCALHOST);
        let lo6 = v6(Ipv6Addr::LOCALHOST);
        let eth4 = v4(Ipv4Addr::new(192, 0, 2, 9));
        let eth6 = v6("2001:db8::9".parse().unwrap());
        let list = |addrs: &[*const sockaddr]| -> Vec<libc::ifaddrs> {
            let mut nodes: Vec<libc::ifaddrs> = addrs
                .iter()
                // SAFETY: all-zero is a valid ifaddrs (null pointers).
                .map(|&a| libc::ifaddrs { ifa_addr: a as *mut sockaddr, ..unsafe { std::mem::zeroed() } })
                .collect();
            for i in 1..nodes.len() {
                let next: *mut libc::ifaddrs = &mut nodes[i];
                nodes[i - 1].ifa_next = next;
            }
            nodes
        };
        let families = |addrs: &[*const sockaddr]| {
            let nodes = list(addrs);
            // SAFETY: nodes (alive until the end of the closure) link to each other; each address is null or whole.
            unsafe { families_in(nodes.first().map_or(std::ptr::null(), |n| n as *const _)) }
        };
        let (packet, lo4, lo6) = (&*packet as *const sockaddr, &*lo4 as *const _ as *const sockaddr, &*lo6 as *const _ as *const sockaddr);
        let (eth4, eth6) = (&*eth4 as *const _ as *const sockaddr, &*eth6 as *const _ as *const sockaddr);
        assert_eq!(families(&[]), (false, false));
        assert_eq!(families(&[std::ptr::null(), packet, lo4, lo6]), (false, false), "loopback and link layer only");
        assert_eq!(families(&[packet, lo4, eth4, lo6]), (true, false));
        assert_eq!(families(&[lo4, eth6]), (false, true));
        assert_eq!(families(&[eth6, std::ptr::null(), eth4]), (true, true));
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
