//! DNS queries a program sends on an unconnected UDP socket, in remote DNS
//! mode: musl's resolver does `sendto(fd, query, nameserver:53)`, `poll`,
//! then `recvfrom(fd, buf, len, 0, &sa, &salen)`, and keeps only answers
//! whose source is a nameserver.
//!
//! The `sendto` (or `sendmsg`) is answered here: the program's socket is
//! bound if it was not (as the kernel would on the send), the responder
//! sends its answer to that address, and the call returns the query's
//! length once the answer is queued, so the program's `poll` sees it. A
//! `recvfrom` that asks for the source and meets one of these answers is
//! done here too: the answer's bytes, and the nameserver as its source.
//! Anything else on the socket is the kernel's to receive.
//!
//! Not covered: `recvmsg`, whose address sits inside a `msghdr` the filter
//! cannot look into; a program reading answers with it sees them come
//! from the supervisor's loopback address (a resolver that checks the
//! source drops them and times out).

use super::kernel::{self, Answer, Notif};
use super::{Level, Supervisor};
use socksify_proto::wire::canonical_ip;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// An answer on its way to a program socket: to which query (its DNS id),
/// the nameserver the program sent it to, and where the answer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Awaited {
    id: u16,
    nameserver: SocketAddr,
    from: SocketAddr,
}

/// The answers sent and not yet received, by program socket (inode).
/// Bounded: a forgotten one reaches the program with the supervisor's
/// address, which its resolver ignores (a lost answer, never a leak).
#[derive(Default)]
pub struct Awaiting(Mutex<HashMap<u64, VecDeque<Awaited>>>);

impl Awaiting {
    const MAX_SOCKETS: usize = 4096;
    const MAX_PER_SOCKET: usize = 64;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, VecDeque<Awaited>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, inode: u64, awaited: Awaited) {
        let mut map = self.lock();
        if map.len() >= Self::MAX_SOCKETS && !map.contains_key(&inode) {
            map.clear();
        }
        let queue = map.entry(inode).or_default();
        if queue.len() >= Self::MAX_PER_SOCKET {
            queue.pop_front();
        }
        queue.push_back(awaited);
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn has(&self, inode: u64) -> bool {
        self.lock().contains_key(&inode)
    }

    /// The nameserver to report as the source of a datagram from `from`
    /// with DNS id `id` on socket `inode`, if it is an answer we sent;
    /// taken off the list when `consume`.
    fn source_of(&self, inode: u64, from: SocketAddr, id: u16, consume: bool) -> Option<SocketAddr> {
        let mut map = self.lock();
        let queue = map.get_mut(&inode)?;
        let at = queue.iter().position(|a| a.id == id && same_addr(&a.from, &from))?;
        let nameserver = queue[at].nameserver;
        if consume {
            queue.remove(at);
            if queue.is_empty() {
                map.remove(&inode);
            }
        }
        Some(nameserver)
    }
}

/// Equal as endpoints (an IPv4 address and its v4-mapped form are one).
fn same_addr(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && canonical_ip(a.ip()) == canonical_ip(b.ip())
}

/// Where to send an answer for a program socket bound to `local`: its
/// address, or loopback for a wildcard (IPv6 loopback for an IPv6 socket
/// when the responder has it, else IPv4, which a dual-stack socket
/// receives v4-mapped). Always in the family the sender must have.
fn answer_dest(local: SocketAddr, v6_responder: bool) -> SocketAddr {
    let ip = match canonical_ip(local.ip()) {
        ip if !ip.is_unspecified() => ip,
        _ if local.is_ipv6() && v6_responder => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    SocketAddr::new(ip, local.port())
}

/// The DNS id of a message (0 if too short to have one).
fn dns_id(msg: &[u8]) -> u16 {
    msg.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// A `sendto`/`sendmsg` of `query` to nameserver `dst` on the program's
/// UDP socket `sock` (a duplicate): answered by the responder, as above.
/// `None` when the call is answered once the answer is queued.
pub fn answer_query(sv: &Arc<Supervisor>, n: &Notif, sock: &OwnedFd, domain: i32, dst: SocketAddr, query: Vec<u8>) -> Option<Answer> {
    let Some(responder) = sv.dns.as_ref() else {
        say!(Level::Warn, "udp to nameserver {dst} refused: the supervisor's DNS responder is not running");
        return Some(Answer::Fail(libc::EPERM));
    };
    if local_or_peer_addr(sock, libc::getpeername).is_some() {
        // A connected socket takes datagrams from its peer only.
        return Some(super::refuse_udp(dst));
    }
    let local = match bound_addr(sock, domain) {
        Ok(local) => local,
        Err(errno) => return Some(Answer::Fail(errno)),
    };
    let v6 = responder.answers_from(&SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)).is_some();
    let to = answer_dest(local, v6);
    let (Some(from), Some(inode)) = (responder.answers_from(&to), kernel::socket_inode(sock)) else {
        return Some(Answer::Fail(libc::EPERM));
    };
    if !sv.listener.id_valid(n.id) {
        return None; // the thread is gone: nothing to answer
    }
    sv.awaiting.add(inode, Awaited { id: dns_id(&query), nameserver: dst, from });
    say!(Level::Debug, "udp query to nameserver {dst}: answered by the supervisor's DNS responder, to {to}");
    let (len, sv2, id) = (query.len() as i64, sv.clone(), n.id);
    match responder.answer_to(query, to, move || sv2.listener.answer(id, Answer::Return(len))) {
        Some(()) => None,
        None => Some(Answer::Fail(libc::EPERM)),
    }
}

/// `getsockname` or `getpeername` of `sock`; `None` if it has none.
pub(super) fn local_or_peer_addr(
    sock: &OwnedFd,
    call: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut raw: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: raw is writable for len bytes.
    if unsafe { call(sock.as_raw_fd(), &mut raw as *mut _ as *mut libc::sockaddr, &mut len) } != 0 {
        return None;
    }
    // SAFETY: the kernel wrote len bytes of address.
    unsafe { socksify_client::sockaddr::read(&raw as *const _ as *const libc::sockaddr, len) }
}

/// The socket's local address, after binding it to the wildcard address
/// and a free port if it had none (what the kernel does on a first send).
pub(super) fn bound_addr(sock: &OwnedFd, domain: i32) -> Result<SocketAddr, i32> {
    let local = local_or_peer_addr(sock, libc::getsockname).ok_or(libc::EBADF)?;
    if local.port() != 0 {
        return Ok(local);
    }
    let any = if domain == libc::AF_INET6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let (raw, len) = socksify_client::sockaddr::encode(&SocketAddr::new(any, 0), domain).ok_or(libc::EAFNOSUPPORT)?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { libc::bind(sock.as_raw_fd(), &raw as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    local_or_peer_addr(sock, libc::getsockname).ok_or(libc::EBADF)
}

/// One datagram off `sock` without waiting (peeked or taken): its full
/// length (bytes beyond `buf` are cut) and source.
fn recv_now(sock: &OwnedFd, buf: &mut [u8], peek: bool) -> Option<(usize, SocketAddr)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut raw: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: buf and raw are writable for the lengths given.
    let n = unsafe {
        libc::recvfrom(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags, &mut raw as *mut _ as *mut libc::sockaddr, &mut len)
    };
    // SAFETY: the kernel wrote len bytes of address.
    let from = unsafe { socksify_client::sockaddr::read(&raw as *const _ as *const libc::sockaddr, len) }?;
    (n >= 0).then_some((n as usize, from))
}

/// `recvfrom(fd, buf, len, flags, addr, addrlen)` with an address: an
/// answer we sent is received here, reported from its nameserver (written
/// out as the kernel would: the bytes cut to `len`, `MSG_TRUNC` giving the
/// full length, the address cut to `*addrlen`, its full length stored).
/// Anything else, or flags we do not mimic: the kernel runs the call.
pub fn on_recvfrom(sv: &Supervisor, n: &Notif) -> Answer {
    const MIMICKED: u64 = (libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_CMSG_CLOEXEC | libc::MSG_NOSIGNAL) as u64;
    let [fd, buf_ptr, buf_len, flags, addr_ptr, len_ptr] = n.data.args;
    if sv.awaiting.is_empty() || flags & !MIMICKED != 0 {
        return Answer::Continue;
    }
    let Ok(pidfd) = kernel::pidfd_of_thread(n.pid) else { return Answer::Continue };
    let Ok(sock) = kernel::take_fd(&pidfd, fd) else { return Answer::Continue };
    let Some(inode) = kernel::socket_inode(&sock).filter(|i| sv.awaiting.has(*i)) else { return Answer::Continue };
    let Ok(room) = kernel::read_memory_or_answer(n.pid, len_ptr, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) else { return Answer::Continue };
    let Some(domain) = kernel::socket_int_option(&sock, libc::SO_DOMAIN) else { return Answer::Continue };
    let peek = flags & libc::MSG_PEEK as u64 != 0;
    let mut data = vec![0u8; 65536];
    let Some((_, from)) = recv_now(&sock, &mut data, true) else { return Answer::Continue };
    if room < 0 || sv.awaiting.source_of(inode, from, dns_id(&data), false).is_none() || !sv.listener.id_valid(n.id) {
        return Answer::Continue;
    }
    // Taken for real now (another thread of the program may have taken
    // the one peeked at: what comes is what the program gets).
    let Some((size, from)) = recv_now(&sock, &mut data, peek) else { return Answer::Continue };
    let source = sv.awaiting.source_of(inode, from, dns_id(&data), !peek).unwrap_or(from);
    let copied = size.min(buf_len as usize).min(data.len());
    let Some((raw, full)) = socksify_client::sockaddr::encode(&source, domain) else { return Answer::Fail(libc::EFAULT) };
    // SAFETY: raw holds `full` initialized bytes of address.
    let addr = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, full as usize) };
    let written = kernel::write_memory(n.pid, buf_ptr, &data[..copied])
        && kernel::write_memory(n.pid, addr_ptr, &addr[..(room as usize).min(full as usize)])
        && kernel::write_memory(n.pid, len_ptr, &full.to_ne_bytes());
    if !written {
        return Answer::Fail(libc::EFAULT);
    }
    say!(Level::Debug, "udp answer from the supervisor's DNS responder received as from {source} ({size} bytes)");
    Answer::Return(if flags & libc::MSG_TRUNC as u64 != 0 { size } else { copied } as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_go_to_the_socket_address_or_loopback_for_a_wildcard() {
        assert_eq!(answer_dest(addr("0.0.0.0:4000"), true), addr("127.0.0.1:4000"));
        assert_eq!(answer_dest(addr("[::]:4000"), true), addr("[::1]:4000"));
        assert_eq!(answer_dest(addr("[::]:4000"), false), addr("127.0.0.1:4000"), "dual stack, no IPv6 loopback");
        assert_eq!(answer_dest(addr("[::ffff:127.0.0.1]:4000"), true), addr("127.0.0.1:4000"));
        assert_eq!(answer_dest(addr("10.1.2.3:4000"), true), addr("10.1.2.3:4000"));
    }

    #[test]
    fn an_answer_is_reported_from_its_nameserver_until_taken() {
        let t = Awaiting::default();
        let (ns1, ns2, ours) = (addr("10.0.0.53:53"), addr("10.0.0.54:53"), addr("127.0.0.1:5353"));
        t.add(7, Awaited { id: 1, nameserver: ns1, from: ours });
        t.add(7, Awaited { id: 2, nameserver: ns2, from: ours });
        assert_eq!(t.source_of(7, addr("[::ffff:127.0.0.1]:5353"), 2, false), Some(ns2), "v4-mapped source is the same");
        assert_eq!(t.source_of(7, addr("127.0.0.1:9999"), 2, false), None, "another sender");
        assert_eq!(t.source_of(8, ours, 2, false), None, "another socket");
        assert_eq!(t.source_of(7, ours, 3, false), None, "another query");
        assert_eq!(t.source_of(7, ours, 2, true), Some(ns2));
        assert_eq!(t.source_of(7, ours, 2, false), None, "taken");
        assert_eq!(t.source_of(7, ours, 1, true), Some(ns1));
        assert!(t.is_empty());
    }
}
