//! What each notified call becomes: the routing of the shim, applied to a
//! call the supervisor reads out of the program.
//!
//! | call | destination | answer |
//! | --- | --- | --- |
//! | `connect`, TCP | bypassed (`SOCKSIFY_NO_PROXY`, the proxy itself) | the kernel runs it |
//! | `connect`, TCP | anything else | our handshake on the program's own socket (a duplicate from `pidfd_getfd`), then 0 or the errno |
//! | `connect`, TCP, a socket of a family that cannot reach the proxy | same | our handshake on a socket of the other family, which then takes the program's fd number (`family_swap.rs`) |
//! | `getpeername` of a socket we connected | — | the destination the program asked for (not the proxy) |
//! | `connect`, UDP or TCP | a resolv.conf nameserver, port 53, remote DNS (before any bypass rule) | connected to our DNS responder instead |
//! | `sendto`/`sendmsg`, UDP, unconnected | a resolv.conf nameserver, port 53, remote DNS | answered by our DNS responder to the socket's own address (`sent_dns.rs`) |
//! | `recvfrom` with an address, of a socket given such an answer | — | the answer, from the nameserver (`sent_dns.rs`); anything else: the kernel runs it |
//! | `connect`/`sendto`/`sendmsg`/`sendmmsg`, UDP | bypassed, or `SOCKSIFY_UDP=direct`, or a nameserver in local DNS mode | the kernel runs it |
//! | same | anything else, `SOCKSIFY_UDP=block` | EPERM |
//! | `sendto`/`sendmsg`/`sendmmsg`, UDP | anything else | sent by us through the socket's association, from its own socket (`udp.rs`) |
//! | `connect`, UDP | anything else | the association opened, the socket connected to our adapter for it (`udp.rs`) |
//! | any receive (`read`, `readv`, `preadv2`, `recvfrom`, `recvmsg`, `recvmmsg`) of a socket with an association | — | received by us: the header stripped, the real source reported (`udp.rs`) |
//! | `splice` from, or an AIO read (`io_submit`) of, a socket with an association | — | EINVAL (`udp.rs`) |
//! | `sendto`/`sendmsg` with an address, TCP | — | the kernel runs it (it ignores the address), except `MSG_FASTOPEN` to a proxied one: EOPNOTSUPP |
//! | `socket`, IPv4/IPv6 datagram | — | opened by us, installed at a free fd of the reserved range (`reserved.rs`) |
//! | `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)` of a UDP socket, from the range or into it | — | a copy kept in the range, or the socket pinned (never carried), or EPERM if it carries an association (`reserved.rs`) |
//! | UDP to be carried (any of the above) on a socket used below the range, or pinned | — | EPERM |
//! | `bind`, `listen`, `getsockname`, `accept`, `accept4` of a TCP socket the BIND rule picks | — | SOCKS BIND (`bind.rs`) |
//! | anything not IPv4/IPv6 (Unix sockets, netlink, ...) | — | the kernel runs it |
//!
//! Every answer that acts on what we read is given only after
//! `SECCOMP_IOCTL_NOTIF_ID_VALID` says the call still waits: the thread
//! and its memory were still the ones we read.

use super::kernel::{self, Answer, Notif};
use super::connect::{proxy_connect, Caller};
use super::{bind, family_swap, reserved, sent_dns, udp, Level, Supervisor};
use socksify_client::route;
use socksify_proto::config::UdpMode;
use socksify_proto::dns::Transport;
use socksify_proto::wire::TargetAddr;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Handles one notified call: answers it here, or hands it to a thread of
/// its own when it needs a handshake.
pub fn handle(sv: &Arc<Supervisor>, n: Notif) {
    let answer = match i64::from(n.data.nr) {
        libc::SYS_connect => on_connect(sv, &n),
        libc::SYS_getpeername => Some(on_getpeername(sv, &n)),
        libc::SYS_sendto => {
            let [_, buf, len, flags, addr, addr_len] = n.data.args;
            on_send(sv, &n, addr, addr_len, flags, || read_payload(n.pid, &[(buf, len)]))
        }
        libc::SYS_sendmsg => match read_msghdr(n.pid, n.data.args[1]) {
            Ok(hdr) => reserved::passed_fds(sv, &n, &hdr)
                .map(Some)
                .unwrap_or_else(|| on_send(sv, &n, hdr.msg_name as u64, u64::from(hdr.msg_namelen), n.data.args[2], || read_iovecs(n.pid, &hdr))),
            Err(answer) => Some(answer),
        },
        libc::SYS_sendmmsg => on_sendmmsg(sv, &n),
        libc::SYS_recvfrom => udp::on_recv(sv, &n).unwrap_or_else(|| Some(sent_dns::on_recvfrom(sv, &n))),
        libc::SYS_recvmsg | libc::SYS_recvmmsg | libc::SYS_read | libc::SYS_readv | libc::SYS_preadv2 => udp::on_recv(sv, &n).unwrap_or(Some(Answer::Continue)),
        libc::SYS_splice | libc::SYS_io_submit => Some(udp::on_other_read(sv, &n)),
        libc::SYS_socket => reserved::on_socket(sv, &n),
        libc::SYS_bind => Some(bind::on_bind(sv, &n)),
        libc::SYS_listen => bind::on_listen(sv, &n),
        libc::SYS_getsockname => match bind::on_getsockname(sv, &n) {
            Some(Answer::Continue) => Some(family_swap::on_getsockname(sv, &n)),
            other => other,
        },
        libc::SYS_accept | libc::SYS_accept4 => bind::on_accept(sv, &n),
        libc::SYS_pidfd_getfd => Some(reserved::on_pidfd_getfd(sv, &n)),
        nr if is_dup(nr) => reserved::on_dup(sv, &n),
        _ => Some(Answer::Continue),
    };
    if let Some(answer) = answer {
        sv.listener.answer(n.id, answer);
    }
}

fn is_dup(nr: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_dup2 {
        return true;
    }
    matches!(nr, libc::SYS_dup | libc::SYS_dup3 | libc::SYS_fcntl)
}

/// The IPv4/IPv6 address at `ptr` (`len` bytes) in the caller's memory;
/// `None` for another family or a length the kernel will refuse.
fn read_addr(pid: u32, ptr: u64, len: u64) -> Result<Option<SocketAddr>, Answer> {
    let len = len.min(128) as usize;
    let bytes = kernel::read_memory_or_answer(pid, ptr, len)?;
    // SAFETY: bytes holds `len` readable bytes.
    Ok(unsafe { socksify_client::sockaddr::read(bytes.as_ptr() as *const libc::sockaddr, len as libc::socklen_t) })
}

/// The program's socket `fd` (a duplicate), with its domain and type; or
/// the answer when there is none. Not a socket, or no such fd: the kernel
/// gives the program its own errno. Any other failure to take it (we may
/// not, say the program made itself undumpable and we are not root) fails
/// the call: running it could send a proxied destination direct.
fn take_socket(n: &Notif, fd: u64) -> Result<(OwnedFd, i32, i32), Answer> {
    let refuse = |what: &str, e: std::io::Error| {
        say!(Level::Warn, "cannot take fd {fd} of thread {} ({what}: {e}): the call fails with EACCES", n.pid);
        Answer::Fail(libc::EACCES)
    };
    let pidfd = kernel::pidfd_of_thread(n.pid).map_err(|e| refuse("pidfd_open", e))?;
    let sock = kernel::take_fd(&pidfd, fd).map_err(|e| match e.raw_os_error() {
        Some(libc::EBADF) => Answer::Continue,
        _ => refuse("pidfd_getfd", e),
    })?;
    let option = |opt| kernel::socket_int_option(&sock, opt).ok_or(Answer::Continue); // ENOTSOCK
    let (domain, ty) = (option(libc::SO_DOMAIN)?, option(libc::SO_TYPE)?);
    Ok((sock, domain, ty))
}

fn on_connect(sv: &Arc<Supervisor>, n: &Notif) -> Option<Answer> {
    let dst = match read_addr(n.pid, n.data.args[1], n.data.args[2]) {
        Ok(Some(dst)) => dst,
        Ok(None) => return Some(Answer::Continue), // not IPv4/IPv6
        Err(answer) => return Some(answer),
    };
    // A nameserver's traffic is answered here in remote DNS mode, before
    // any bypass rule (a loopback nameserver is bypassed by default).
    let dns = sv.intercepts(&dst);
    if !dns && sv.goes_direct(&dst) {
        say!(Level::Debug, "connect to {dst}: bypassed, direct");
        return Some(Answer::Continue);
    }
    let (sock, domain, ty) = match take_socket(n, n.data.args[0]) {
        Ok(taken) => taken,
        Err(answer) => return Some(answer),
    };
    if !sv.listener.id_valid(n.id) {
        return None; // the thread died while we looked: nothing to answer
    }
    if ty == libc::SOCK_DGRAM && (dns || (!sv.udp_goes_direct(&dst) && sv.config.udp != UdpMode::Block)) {
        if let Err(answer) = reserved::may_carry(sv, n.data.args[0], &sock, dst) {
            return Some(answer);
        }
    }
    match ty {
        libc::SOCK_STREAM if dns => Some(to_responder(sv, &sock, domain, dst, Transport::Tcp)),
        libc::SOCK_DGRAM if dns => Some(to_responder(sv, &sock, domain, dst, Transport::Udp)),
        libc::SOCK_STREAM => connect_tcp(sv, n, sock, domain, dst),
        libc::SOCK_DGRAM => connect_udp(sv, n, sock, domain, dst),
        _ => Some(Answer::Continue),
    }
}

fn connect_tcp(sv: &Arc<Supervisor>, n: &Notif, sock: OwnedFd, domain: i32, dst: SocketAddr) -> Option<Answer> {
    let target = if route::is_fake(&sv.config, dst.ip()) {
        match sv.fake.name_for(dst.ip()).and_then(|name| TargetAddr::domain(&name, dst.port())) {
            Some(target) => target,
            None => {
                say!(Level::Warn, "connect to {dst} refused: a fake address no name holds");
                return Some(Answer::Fail(libc::EHOSTUNREACH));
            }
        }
    } else {
        TargetAddr::Ip(dst)
    };
    // The handshake takes round trips to the proxy: on a thread of its own,
    // so other calls (other threads of the program) are not held up.
    let (sv, id, caller) = (sv.clone(), n.id, Caller { id: n.id, pid: n.pid, fd: n.data.args[0] });
    super::workers::spawn(move || {
        // A panic here must still answer the call (it would wait forever):
        // as a failed connect, never as a direct one.
        let handshake = std::panic::AssertUnwindSafe(|| match family_swap::needed(&sv, &sock, domain) {
            None => proxy_connect(&sv, &sock, domain, dst, &target),
            Some(other) => family_swap::connect(&sv, &caller, &sock, domain, other, dst, &target),
        });
        let answer = std::panic::catch_unwind(handshake).unwrap_or_else(|_| {
            say!(Level::Error, "internal error (panic) connecting to {target}: the call fails with ECONNREFUSED");
            Answer::Fail(libc::ECONNREFUSED)
        });
        sv.listener.answer(id, answer);
    });
    None
}


/// `getpeername` of a socket we connected through the proxy: the address
/// the program connected to, written out as the kernel would (truncated to
/// the caller's length, the full length stored). Any other socket: the
/// kernel answers.
fn on_getpeername(sv: &Supervisor, n: &Notif) -> Answer {
    if sv.peers.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
        return Answer::Continue;
    }
    let Ok((sock, domain, _)) = take_socket(n, n.data.args[0]) else { return Answer::Continue };
    let Some(inode) = kernel::socket_inode(&sock) else { return Answer::Continue };
    let Some(dst) = sv.peers.lock().unwrap_or_else(|e| e.into_inner()).get(&inode).copied() else { return Answer::Continue };
    let (addr_ptr, len_ptr) = (n.data.args[1], n.data.args[2]);
    let Ok(len) = kernel::read_memory(n.pid, len_ptr, 4) else { return Answer::Continue };
    let room = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let domain = sv.program_family(inode).unwrap_or(domain);
    let Some((raw, full)) = socksify_client::sockaddr::encode(&dst, domain) else { return Answer::Continue };
    // SAFETY: raw holds `full` initialized bytes of address.
    let bytes = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, full as usize) };
    if !sv.listener.id_valid(n.id) {
        return Answer::Continue; // the caller is gone: write nothing
    }
    let n_out = room.min(full as usize);
    if !kernel::write_memory(n.pid, addr_ptr, &bytes[..n_out]) || !kernel::write_memory(n.pid, len_ptr, &full.to_ne_bytes()) {
        return Answer::Fail(libc::EFAULT);
    }
    Answer::Return(0)
}


fn connect_udp(sv: &Arc<Supervisor>, n: &Notif, sock: OwnedFd, domain: i32, dst: SocketAddr) -> Option<Answer> {
    if sv.udp_goes_direct(&dst) {
        return Some(Answer::Continue);
    }
    if sv.config.udp == UdpMode::Block {
        return Some(udp::blocked(dst));
    }
    udp::connect(sv, n, sock, domain, dst)
}

/// A connect to a nameserver in remote DNS mode: the program's socket is
/// connected to the supervisor's responder instead. A non-blocking TCP
/// socket may get EINPROGRESS, as from any connect, and wait as usual.
fn to_responder(sv: &Supervisor, sock: &OwnedFd, domain: i32, dst: SocketAddr, transport: Transport) -> Answer {
    let refused = if transport == Transport::Udp { libc::EPERM } else { libc::ECONNREFUSED };
    let Some(responder) = sv.dns.as_ref().and_then(|r| r.addr_for(domain, transport)) else {
        say!(Level::Warn, "connect to nameserver {dst} refused: the supervisor's DNS responder is not running");
        return Answer::Fail(refused);
    };
    let Some((raw, len)) = socksify_client::sockaddr::encode(&responder, domain) else { return Answer::Fail(refused) };
    // SAFETY: raw is a valid address of the socket's family.
    let rc = unsafe { libc::connect(sock.as_raw_fd(), &raw as *const _ as *const libc::sockaddr, len) };
    let errno = if rc == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) };
    say!(Level::Debug, "connect to nameserver {dst}: to the supervisor's DNS responder {responder} ({transport:?}), errno {errno}");
    if errno == 0 {
        Answer::Return(0)
    } else {
        Answer::Fail(errno)
    }
}

/// A send with a destination address (`addr` 0: none); `payload` reads
/// what it sends, for a DNS query the responder answers.
fn on_send(
    sv: &Arc<Supervisor>,
    n: &Notif,
    addr: u64,
    len: u64,
    flags: u64,
    payload: impl FnOnce() -> Result<Vec<u8>, Answer>,
) -> Option<Answer> {
    if addr == 0 {
        return Some(Answer::Continue);
    }
    let dst = match read_addr(n.pid, addr, len) {
        Ok(Some(dst)) => dst,
        Ok(None) => return Some(Answer::Continue),
        Err(answer) => return Some(answer),
    };
    match send_verdict(sv, n, dst, flags) {
        SendVerdict::Decided(answer) => Some(answer),
        SendVerdict::DnsQuery(sock, domain) => match payload() {
            Ok(query) => sent_dns::answer_query(sv, n, &sock, domain, dst, query),
            Err(answer) => Some(answer),
        },
        SendVerdict::Proxied(sock, domain) => match payload() {
            Ok(data) => udp::send(sv, n, sock, domain, dst, flags, data),
            Err(answer) => Some(answer),
        },
    }
}

enum SendVerdict {
    Decided(Answer),
    /// A UDP datagram to a nameserver in remote DNS mode: for the
    /// responder (the program's socket, its domain).
    DnsQuery(OwnedFd, i32),
    /// A UDP datagram for the association (the program's socket, its domain).
    Proxied(OwnedFd, i32),
}

fn send_verdict(sv: &Supervisor, n: &Notif, dst: SocketAddr, flags: u64) -> SendVerdict {
    // A query to a nameserver (remote DNS) is answered here, whatever the
    // bypass rules say.
    if !sv.intercepts(&dst) && sv.udp_goes_direct(&dst) {
        return SendVerdict::Decided(Answer::Continue);
    }
    let (sock, domain, ty) = match take_socket(n, n.data.args[0]) {
        Ok(taken) => taken,
        Err(answer) => return SendVerdict::Decided(answer),
    };
    if !sv.listener.id_valid(n.id) {
        return SendVerdict::Decided(Answer::Continue); // the thread is gone; the answer goes nowhere
    }
    SendVerdict::Decided(match ty {
        libc::SOCK_DGRAM if sv.config.udp == UdpMode::Block && !sv.intercepts(&dst) => udp::blocked(dst),
        libc::SOCK_DGRAM if reserved::may_carry(sv, n.data.args[0], &sock, dst).is_err() => Answer::Fail(libc::EPERM),
        libc::SOCK_DGRAM if sv.intercepts(&dst) => return SendVerdict::DnsQuery(sock, domain),
        libc::SOCK_DGRAM => return SendVerdict::Proxied(sock, domain),
        libc::SOCK_STREAM if flags & libc::MSG_FASTOPEN as u64 != 0 => Answer::Fail(libc::EOPNOTSUPP),
        _ => Answer::Continue,
    })
}

/// The `msghdr` at `ptr`.
fn read_msghdr(pid: u32, ptr: u64) -> Result<libc::msghdr, Answer> {
    let bytes = kernel::read_memory_or_answer(pid, ptr, std::mem::size_of::<libc::msghdr>())?;
    // SAFETY: bytes holds one msghdr; read_unaligned copes with the Vec's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const libc::msghdr) })
}

/// The largest datagram a UDP socket sends.
const MAX_DATAGRAM: u64 = 65535;

/// The bytes of the (address, length) pieces in the caller's memory, as
/// one datagram; EMSGSIZE if too long for one.
fn read_payload(pid: u32, pieces: &[(u64, u64)]) -> Result<Vec<u8>, Answer> {
    if pieces.iter().map(|(_, len)| len).sum::<u64>() > MAX_DATAGRAM {
        return Err(Answer::Fail(libc::EMSGSIZE));
    }
    let mut out = Vec::new();
    for &(ptr, len) in pieces.iter().filter(|(_, len)| *len > 0) {
        out.extend(kernel::read_memory_or_answer(pid, ptr, len as usize)?);
    }
    Ok(out)
}

/// What a `sendmsg` sends: the bytes of its iovecs.
fn read_iovecs(pid: u32, hdr: &libc::msghdr) -> Result<Vec<u8>, Answer> {
    let (count, size) = (hdr.msg_iovlen.min(1024), std::mem::size_of::<libc::iovec>());
    let bytes = kernel::read_memory_or_answer(pid, hdr.msg_iov as u64, count * size)?;
    let pieces: Vec<(u64, u64)> = (0..count)
        .map(|i| {
            // SAFETY: bytes holds `count` iovecs.
            let iov = unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(i * size) as *const libc::iovec) };
            (iov.iov_base as u64, iov.iov_len as u64)
        })
        .collect();
    read_payload(pid, &pieces)
}

/// `sendmmsg`: left to the kernel when every message may go as it is;
/// otherwise sent by us, message by message (`udp::sendmmsg`). A DNS
/// query among several messages is not answered here: refused.
fn on_sendmmsg(sv: &Arc<Supervisor>, n: &Notif) -> Option<Answer> {
    let (ptr, count) = (n.data.args[1], n.data.args[2].min(1024) as usize);
    let size = std::mem::size_of::<libc::mmsghdr>();
    let bytes = match kernel::read_memory_or_answer(n.pid, ptr, size * count) {
        Ok(bytes) => bytes,
        Err(answer) => return Some(answer),
    };
    let mut msgs = Vec::with_capacity(count);
    let mut socket = None;
    for i in 0..count {
        // SAFETY: bytes holds `count` mmsghdrs.
        let m = unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(i * size) as *const libc::mmsghdr) };
        if let Some(answer) = reserved::passed_fds(sv, n, &m.msg_hdr) {
            return Some(answer);
        }
        let dst = match m.msg_hdr.msg_name.is_null() {
            true => None,
            false => match read_addr(n.pid, m.msg_hdr.msg_name as u64, u64::from(m.msg_hdr.msg_namelen)) {
                Ok(dst) => dst,
                Err(answer) => return Some(answer),
            },
        };
        msgs.push((ptr + (i * size + std::mem::offset_of!(libc::mmsghdr, msg_len)) as u64, dst, m.msg_hdr));
        let Some(dst) = dst else { continue };
        match send_verdict(sv, n, dst, n.data.args[3]) {
            SendVerdict::Decided(Answer::Continue) => {}
            SendVerdict::Decided(answer) => return Some(answer),
            SendVerdict::DnsQuery(..) => return Some(super::refuse_udp(dst)),
            SendVerdict::Proxied(sock, domain) => socket = Some((sock, domain)),
        }
    }
    let Some((sock, domain)) = socket else { return Some(Answer::Continue) };
    let mut out = Vec::with_capacity(msgs.len());
    for (len_at, dst, hdr) in msgs {
        match read_iovecs(n.pid, &hdr) {
            Ok(payload) => out.push((len_at, dst, payload)),
            Err(answer) => return Some(answer),
        }
    }
    udp::sendmmsg(sv, n, sock, domain, out, n.data.args[3])
}
