//! DNS over UDP: the answer goes back to the program's own socket.
//!
//! The shim keeps one loopback UDP socket per family (127.0.0.1 and ::1,
//! port chosen by the kernel), made on first use, close-on-exec. An answer
//! is sent from it to the address the program's socket is bound to (its
//! loopback address if bound to the wildcard), wrapped in the RFC 1928 UDP
//! header with the nameserver as the source, exactly as a relay would wrap
//! a reply. `crate::udp` records that this socket's datagrams are welcome
//! on the program's socket, and the receive hooks unwrap them.
//!
//! Nothing ever reads our socket: datagrams sent to it are dropped by a
//! socket filter. It is checked by inode before each use, so a program that
//! closes it (a `closefrom` loop, `dup2` over it) only makes us open
//! another. A `fork` child shares it, which is harmless: it only sends.

use crate::fork_safe::ForkSafeMutex;
use crate::{real, socket_addr, udp};
use libc::{c_int, c_void, AF_INET, AF_INET6};
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Our sending socket of one family.
#[derive(Clone, Copy)]
struct Responder {
    fd: c_int,
    ino: u64,
    /// Its address, as the program's socket will see it.
    addr: SocketAddr,
}

/// IPv4 first, IPv6 second.
static RESPONDERS: ForkSafeMutex<[Option<Responder>; 2]> = ForkSafeMutex::new([None, None]);

/// A classic BPF program of one instruction, `ret 0`: drop every datagram.
fn drop_everything(fd: c_int) {
    let code = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: code.as_ptr() as *mut libc::sock_filter };
    // SAFETY: a valid one-instruction filter, copied by the kernel.
    unsafe {
        crate::real::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const _ as *const c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
}

fn open(v6: bool) -> Result<Responder, String> {
    let (family, ip) = if v6 { (AF_INET6, IpAddr::V6(Ipv6Addr::LOCALHOST)) } else { (AF_INET, IpAddr::V4(Ipv4Addr::LOCALHOST)) };
    let sock = super::own_socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)?;
    drop_everything(sock.0);
    let raw = socket_addr::encode(&SocketAddr::new(ip, 0), family).ok_or("no address")?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { real::bind(sock.0, &raw.0 as *const _ as *const libc::sockaddr, raw.1) } != 0 {
        return Err(format!("binding {ip}: {}", std::io::Error::last_os_error()));
    }
    let port = socket_addr::local_addr(sock.0).ok_or("reading our address")?.port();
    let ino = udp::inode(sock.0).ok_or("our socket vanished")?;
    let fd = sock.0;
    std::mem::forget(sock); // kept for the life of the process
    Ok(Responder { fd, ino, addr: SocketAddr::new(ip, port) })
}

/// Our socket of the IPv6 (`v6`) or IPv4 family, (re)opened as needed.
fn responder(v6: bool) -> Result<Responder, String> {
    let slot = v6 as usize;
    let known = RESPONDERS.lock()[slot];
    if let Some(r) = known {
        if udp::inode(r.fd) == Some(r.ino) {
            return Ok(r);
        }
        // Closed behind our back: the number is not ours any more.
    }
    let fresh = open(v6)?;
    RESPONDERS.lock()[slot] = Some(fresh);
    Ok(fresh)
}

/// Whether answers to a socket of `family` bound at `local` (if it is)
/// that talks to `nameserver` come from our IPv6 socket: an IPv6 peer or
/// an address bound to IPv6; everything else (IPv4, v4-mapped, a
/// dual-stack wildcard) takes the IPv4 one.
fn wants_v6(family: c_int, local: Option<SocketAddr>, nameserver: SocketAddr) -> bool {
    family == AF_INET6
        && match local.map(|l| canonical_ip(l.ip())) {
            Some(ip) if !ip.is_unspecified() => ip.is_ipv6(),
            _ => canonical_ip(nameserver.ip()).is_ipv6(),
        }
}

/// Our socket that answers the program's socket `fd` (bound at `local`,
/// if it is) for `nameserver`, recorded with the socket in `crate::udp`
/// as a welcome source.
fn prepare(fd: c_int, family: c_int, local: Option<SocketAddr>, nameserver: SocketAddr) -> Result<Responder, udp::AssocError> {
    let r = responder(wants_v6(family, local, nameserver)).map_err(|why| udp::AssocError { errno: libc::ENETUNREACH, why })?;
    udp::track_responder(fd, family, SocketAddr::new(canonical_ip(r.addr.ip()), r.addr.port()), nameserver)?;
    Ok(r)
}

/// For a `connect` of the program's socket `fd` to `nameserver`: the
/// address to connect it to in the kernel instead (our socket's).
pub fn source_for(fd: c_int, family: c_int, nameserver: SocketAddr) -> Result<SocketAddr, udp::AssocError> {
    prepare(fd, family, socket_addr::local_addr(fd).filter(|a| a.port() != 0), nameserver).map(|r| r.addr)
}

/// Sends `answer` to the program's socket `fd` as a datagram from
/// `nameserver`; the socket is bound first if it is not.
pub fn deliver(fd: c_int, family: c_int, nameserver: SocketAddr, answer: &[u8]) -> Result<(), udp::AssocError> {
    let local = udp::bound_addr(fd, family)?;
    let r = prepare(fd, family, Some(local), nameserver)?;
    // To the socket's own address; a wildcard one is reached on loopback.
    let ip = match canonical_ip(local.ip()) {
        ip if ip.is_unspecified() => r.addr.ip(),
        ip => ip,
    };
    let our_family = if r.addr.is_ipv6() { AF_INET6 } else { AF_INET };
    let to = socket_addr::encode(&SocketAddr::new(ip, local.port()), our_family)
        .ok_or_else(|| udp::AssocError { errno: libc::EAFNOSUPPORT, why: format!("cannot answer a socket bound at {local}") })?;
    let mut datagram = Vec::with_capacity(answer.len() + 32);
    UdpHeader::new(TargetAddr::Ip(nameserver)).emit(&mut datagram);
    datagram.extend_from_slice(answer);
    // SAFETY: a live buffer and a valid address of our socket's family.
    let n = unsafe {
        real::sendto(r.fd, datagram.as_ptr() as *const c_void, datagram.len(), 0, &to.0 as *const _ as *const libc::sockaddr, to.1)
    };
    if n < 0 {
        // The program's receive buffer is full (or it went away): a lost
        // datagram, as UDP allows; the program will ask again.
        log::debug!("dns responder: answer to fd {fd} not sent: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
