//! A TCP connect through the proxy on a socket of the supervisor's (the
//! program's own, a duplicate, or its replacement of the other family):
//! the handshake, and what a failure leaves.

use super::kernel::{self, Answer};
use super::{Level, Supervisor};
use socksify_client::tcp::{connect_via_proxy, Libc};
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::TargetAddr;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

/// A notified call, for what is done after it was read.
pub struct Caller {
    pub id: u64,
    pub pid: u32,
    /// The fd it was made on.
    pub fd: u64,
}

/// The handshake on the program's socket; the answer to its connect.
pub fn proxy_connect(sv: &Supervisor, sock: &OwnedFd, domain: i32, dst: SocketAddr, target: &TargetAddr) -> Answer {
    match connect_via_proxy(&Libc, sock.as_raw_fd(), domain, &sv.config, &sv.first_hop, Command::Connect, target) {
        Ok((_, bound)) => {
            say!(Level::Info, "tcp -> {target} via {}: connected (proxy bound {bound})", sv.config.chain[0]);
            if let Some(inode) = kernel::socket_inode(sock) {
                sv.remember_peer(inode, dst);
            }
            sv.binds.remember_conn(sock, dst);
            Answer::Return(0)
        }
        Err(e) => {
            say!(Level::Warn, "tcp -> {target} via {}: {e}", sv.config.chain[0]);
            dissolve(sock); // as after a failed connect
            Answer::Fail(e.errno())
        }
    }
}


/// Leaves `sock` connected to nothing (an `AF_UNSPEC` connect).
pub fn dissolve(sock: &OwnedFd) {
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a valid AF_UNSPEC address dissolves the connection.
    unsafe { libc::connect(sock.as_raw_fd(), &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t) };
}
