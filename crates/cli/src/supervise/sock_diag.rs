//! Which UDP sockets exist in this network namespace, by inode, with the
//! address each is connected to: one `NETLINK_SOCK_DIAG` dump per family.
//! The UDP associations (udp.rs) hold no reference to the program's
//! socket, so this is how they learn that the program closed it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id
/// (ports, addresses, interface, cookie), expires, queues, uid, inode.
const DIAG_MSG_LEN: usize = 72;

/// Every UDP socket of the namespace (IPv4 and IPv6): inode → the peer it
/// is connected to (`None`: unconnected).
pub fn udp_sockets() -> io::Result<HashMap<u64, Option<SocketAddr>>> {
    let mut out = HashMap::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(family, &mut out)?;
    }
    Ok(out)
}

fn dump(family: i32, out: &mut HashMap<u64, Option<SocketAddr>>) -> io::Result<()> {
    // SAFETY: socket(2); the fd is ours.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + 56);
    req.extend_from_slice(&((NLMSG_HDRLEN + 56) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    // inet_diag_req_v2: family, protocol, extensions, pad, states, an empty socket id.
    req.extend_from_slice(&[family as u8, libc::IPPROTO_UDP as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    // SAFETY: req is readable for its length.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr() as *const libc::c_void, req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    // Each receive is bounded: the kernel answers a dump at once.
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: SO_RCVTIMEO reads one timeval.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(io::Error::from_raw_os_error(libc::EPROTO));
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = buf.get(at + 16..at + 20).map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b.try_into().unwrap()));
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ => {
                    if let Some((inode, peer)) = parse(&buf[at + NLMSG_HDRLEN..at + len]) {
                        out.insert(inode, peer);
                    }
                }
            }
            at += (len + 3) & !3;
        }
    }
}

/// One `inet_diag_msg`: the socket's inode and its peer, if connected.
fn parse(msg: &[u8]) -> Option<(u64, Option<SocketAddr>)> {
    if msg.len() < DIAG_MSG_LEN {
        return None;
    }
    let inode = u32::from_ne_bytes(msg[68..72].try_into().unwrap()) as u64;
    let dport = u16::from_be_bytes([msg[6], msg[7]]);
    let ip = match i32::from(msg[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(msg[24], msg[25], msg[26], msg[27])),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&msg[24..40]).unwrap())),
    };
    let peer = (dport != 0).then(|| SocketAddr::new(socksify_proto::wire::canonical_ip(ip), dport));
    Some((inode, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn inode(s: &UdpSocket) -> u64 {
        let fd = s.as_fd().try_clone_to_owned().unwrap();
        super::super::kernel::socket_inode(&fd).unwrap()
    }

    #[test]
    fn lists_open_udp_sockets_with_their_peers_and_forgets_closed_ones() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let v6 = UdpSocket::bind("[::1]:0").ok();
        let (ia, ib) = (inode(&a), inode(&b));
        let all = udp_sockets().expect("sock_diag dump");
        assert_eq!(all.get(&ia), Some(&None), "unconnected");
        assert_eq!(all.get(&ib), Some(&Some(a.local_addr().unwrap())), "connected");
        if let Some(v6) = &v6 {
            assert!(all.contains_key(&inode(v6)), "IPv6 sockets are listed");
        }
        drop(b);
        assert!(!udp_sockets().unwrap().contains_key(&ib), "a closed socket is gone");
    }
}
