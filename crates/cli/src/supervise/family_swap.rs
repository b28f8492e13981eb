//! A proxy of the other address family under the supervisor: a TCP
//! `connect` on a socket whose family cannot reach any address of the
//! first hop (an `AF_INET` socket and an IPv6-only proxy, or a v6-only
//! `AF_INET6` socket and an IPv4-only one) is made on a socket of the other
//! family, opened here, with the options the program set carried over
//! (`socksify_client::family_swap`), its file status flags and protocol.
//! Once the handshake is done, that socket takes the program's fd number
//! (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SETFD`, close-on-exec as the old fd
//! was), closing the program's socket, and the connect returns 0; a failed
//! handshake leaves the program's socket as it was. As in the shim, a
//! socket the program bound to an address is never replaced: its connect
//! fails with `EAFNOSUPPORT`.
//!
//! `getpeername` reports the destination and `getsockname` the socket's
//! own address in the program's family (the supervisor answers both: an
//! IPv6 address no IPv4 one stands for is told as 0.0.0.0 with its port,
//! as the shim does).

use super::connect::{dissolve, proxy_connect, Caller};
use super::kernel::{self, Answer, Notif};
use super::sent_dns::local_or_peer_addr;
use super::{Level, Supervisor};
use socksify_client::family_swap::{can_reach, carry_options, family_name, libc_getsockopt, other};
use socksify_proto::wire::TargetAddr;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The family to connect through instead of `domain`, if the program's
/// socket cannot reach the proxy.
pub fn needed(sv: &Supervisor, sock: &OwnedFd, domain: i32) -> Option<i32> {
    let v6only = || {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: IPV6_V6ONLY writes one int.
        let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &mut v as *mut _ as *mut libc::c_void, &mut len) };
        rc != 0 || v != 0
    };
    (!sv.first_hop.is_empty() && !can_reach(domain, &sv.first_hop, v6only)).then(|| other(domain))
}

fn socket(family: i32, protocol: i32) -> Result<OwnedFd, i32> {
    // SAFETY: socket(2); the fd is ours.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The connect through a socket of family `to` in place of the program's
/// `sock` (of `from`); the call's answer.
pub fn connect(sv: &Supervisor, caller: &Caller, sock: &OwnedFd, from: i32, to: i32, dst: SocketAddr, target: &TargetAddr) -> Answer {
    match replacement(sock, from, to) {
        Ok(new) => {
            let answer = proxy_connect(sv, &new, to, dst, target);
            if answer != Answer::Return(0) {
                return answer;
            }
            match install(sv, caller, sock, &new) {
                Ok(()) => {
                    if let Some(inode) = kernel::socket_inode(&new) {
                        sv.remember_family(inode, from);
                    }
                    say!(Level::Info, "connect fd {}: the proxy is reachable only over {}: the socket was replaced by one of that family", caller.fd, family_name(to));
                    answer
                }
                Err(errno) => {
                    dissolve(&new);
                    Answer::Fail(errno)
                }
            }
        }
        Err(errno) => Answer::Fail(errno),
    }
}

/// A socket of family `to` with what the program set on `sock`.
fn replacement(sock: &OwnedFd, from: i32, to: i32) -> Result<OwnedFd, i32> {
    if let Some(bound) = local_or_peer_addr(sock, libc::getsockname).filter(|a| a.port() != 0 || !a.ip().is_unspecified()) {
        say!(Level::Warn, "connect: the proxy is reachable only from the other address family, and the socket is bound to {bound}: EAFNOSUPPORT");
        return Err(libc::EAFNOSUPPORT);
    }
    let protocol = kernel::socket_int_option(sock, libc::SO_PROTOCOL).unwrap_or(libc::IPPROTO_TCP);
    let fresh = socket(from, protocol)?;
    let new = socket(to, protocol)?;
    let set = |fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &[u8]| {
        // SAFETY: the value read from the program's socket, with its length.
        let rc = unsafe { libc::setsockopt(fd, level, name, value.as_ptr() as *const libc::c_void, value.len() as libc::socklen_t) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        }
    };
    for ((level, name), e) in carry_options(sock.as_raw_fd(), from, fresh.as_raw_fd(), new.as_raw_fd(), to, libc_getsockopt, set) {
        say!(Level::Warn, "socket option ({level}, {name}) not carried over to the {} socket: {}", family_name(to), std::io::Error::from_raw_os_error(e));
    }
    // SAFETY: fcntl on the program's socket (our duplicate shares its file) and ours.
    unsafe {
        let status = libc::fcntl(sock.as_raw_fd(), libc::F_GETFL);
        if status >= 0 {
            libc::fcntl(new.as_raw_fd(), libc::F_SETFL, status);
        }
    }
    Ok(new)
}

/// Puts `new` at the program's fd number, if that still holds `old`.
fn install(sv: &Supervisor, caller: &Caller, old: &OwnedFd, new: &OwnedFd) -> Result<(), i32> {
    let pidfd = kernel::pidfd_of_thread(caller.pid).map_err(|_| libc::ECONNABORTED)?;
    let now = kernel::take_fd(&pidfd, caller.fd).ok().and_then(|fd| kernel::socket_inode(&fd));
    if now.is_none() || now != kernel::socket_inode(old) {
        return Err(libc::EBADF); // closed or replaced by another thread meanwhile
    }
    let cloexec = kernel::fd_cloexec(caller.pid, caller.fd);
    sv.listener.add_fd(caller.id, new, caller.fd as u32, cloexec, false).map(drop).map_err(|e| {
        say!(Level::Warn, "connect fd {}: cannot put the new socket in the program's place: {e}", caller.fd);
        e.raw_os_error().unwrap_or(libc::EIO)
    })
}

/// `getsockname` of a socket we replaced: its address in the family the
/// program made it with. Any other socket: the kernel's answer.
pub fn on_getsockname(sv: &Supervisor, n: &Notif) -> Answer {
    if !sv.has_replaced_families() {
        return Answer::Continue;
    }
    let Ok(pidfd) = kernel::pidfd_of_thread(n.pid) else { return Answer::Continue };
    let Ok(sock) = kernel::take_fd(&pidfd, n.data.args[0]) else { return Answer::Continue };
    let Some(family) = kernel::socket_inode(&sock).and_then(|inode| sv.program_family(inode)) else { return Answer::Continue };
    let Some(local) = local_or_peer_addr(&sock, libc::getsockname) else { return Answer::Continue };
    let told = socksify_proto::bind::reported(local, if family == libc::AF_INET { socksify_proto::bind::Family::V4 } else { socksify_proto::bind::Family::V6 });
    let Some((raw, full)) = socksify_client::sockaddr::encode(&told, family) else { return Answer::Continue };
    // SAFETY: raw holds `full` initialized bytes of address.
    let bytes = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, full as usize) };
    let [_, addr, len, ..] = n.data.args;
    let Ok(room) = kernel::read_memory(n.pid, len, 4) else { return Answer::Continue };
    let room = u32::from_ne_bytes([room[0], room[1], room[2], room[3]]) as usize;
    if !sv.listener.id_valid(n.id) {
        return Answer::Continue;
    }
    if !kernel::write_memory(n.pid, addr, &bytes[..room.min(full as usize)]) || !kernel::write_memory(n.pid, len, &full.to_ne_bytes()) {
        return Answer::Fail(libc::EFAULT);
    }
    Answer::Return(0)
}
