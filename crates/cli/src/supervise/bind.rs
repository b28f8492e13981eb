//! SOCKS BIND under the supervisor (active FTP and other call-backs), with
//! the shim's rule (`socksify_proto::bind::decide`) and semantics. Unless
//! `SOCKSIFY_BIND=off`, the filter notifies `bind`, `listen`, `accept` and
//! `accept4` on every fd, and `getsockname` always (none is frequent
//! enough to matter beside the connect or accept it goes with; with no
//! BIND socket they are let through at once).
//!
//! - `bind` of a TCP socket: the rule decides against the program's live
//!   proxied connections (their kernel addresses, remembered at connect;
//!   live: an fd of the process still holds them). A BIND candidate is
//!   bound as asked by the kernel, and remembered.
//! - `listen` on a candidate runs the BIND on the program's socket (our
//!   duplicate): connected to the proxy, request sent, first reply read,
//!   on a thread (round trips). `listen` returns 0, or the errno with the
//!   socket left unconnected, never a listener.
//! - `getsockname` on it reports the proxy's BND.ADDR:BND.PORT, in the
//!   program's family: the address the program hands out (asked before
//!   `listen`, it runs the BIND first, as `listen` would).
//! - The socket is readable when the second reply comes, as a listener is
//!   with a connection waiting: `poll`/`epoll` need no help. `accept`
//!   reads exactly that reply (the peer's first bytes stay queued), puts a
//!   loopback listener no packet reaches (a socket filter drops them all)
//!   at the listening fd number (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SETFD`),
//!   and hands the socket, now the peer's connection, to the program as a
//!   new fd (`ADDFD` with `SEND`), its peer written out as the kernel would
//!   and reported by `getpeername`. A non-blocking `accept` before the
//!   peer came gets `EAGAIN`; a blocking one waits in the supervisor.
//! - The proxy refusing the peer or closing: that `accept` and every later
//!   one fail with the reply's errno (`ECONNABORTED` for a close).
//!
//! Not done: the program's `epoll` registrations of the listening fd stay on the socket that became the
//! connection (the shim moves them to the new listener).

use super::connect::dissolve;
use super::kernel::{self, Answer, Notif};
use super::sent_dns::local_or_peer_addr;
use super::{Level, Supervisor};
use socksify_client::route;
use socksify_client::tcp::{connect_via_proxy, ConnectError, Libc};
use socksify_proto::bind::{self as rule, Family, ProxiedConn, SecondReply};
use socksify_proto::config::BindMode;
use socksify_proto::handshake::{Dialect, HandshakeError};
use socksify_proto::wire::socks5::{Command, ReplyCode};
use socksify_proto::wire::{canonical_ip, TargetAddr, MAX_HEADER_LEN};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a socket is to the BIND engine.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Bound by the rule's choice; the BIND runs at `listen`. `related`:
    /// the destination of the connection it belongs to.
    Candidate { related: Option<SocketAddr> },
    /// The proxy listens on `bound` for its peer.
    Waiting { bound: SocketAddr, socks4: bool },
    /// The BIND failed: `accept` says `errno`.
    Failed { bound: SocketAddr, errno: i32 },
    /// The listener left after the peer came, and the peer's connection:
    /// `getsockname` reports where the proxy listened.
    Spent { bound: SocketAddr },
}

/// The BIND engine's memory.
#[derive(Default)]
pub struct Binds {
    /// The program's TCP connections through the proxy, by socket inode:
    /// (the kernel's local address, the destination).
    conns: Mutex<HashMap<u64, (SocketAddr, SocketAddr)>>,
    states: Mutex<HashMap<u64, State>>,
}

/// How many of each the engine remembers; past that it forgets them all.
const MAX_REMEMBERED: usize = 65536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Binds {
    /// A TCP connection through the proxy, for the rule.
    pub fn remember_conn(&self, sock: &OwnedFd, dst: SocketAddr) {
        let (Some(inode), Some(local)) = (kernel::socket_inode(sock), local_or_peer_addr(sock, libc::getsockname)) else { return };
        let mut conns = lock(&self.conns);
        if conns.len() >= MAX_REMEMBERED {
            conns.clear();
        }
        conns.insert(inode, (local, dst));
    }

    fn set(&self, inode: u64, state: State) {
        let mut states = lock(&self.states);
        if states.len() >= MAX_REMEMBERED {
            states.retain(|_, s| matches!(s, State::Waiting { .. }));
        }
        states.insert(inode, state);
    }

    fn get(&self, inode: u64) -> Option<State> {
        lock(&self.states).get(&inode).copied()
    }

    fn is_empty(&self) -> bool {
        lock(&self.states).is_empty()
    }
}

/// The socket inodes the process of thread `pid` holds an fd of.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The program's TCP socket `fd` (a duplicate) with its inode and family.
fn tcp_socket(n: &Notif, fd: u64) -> Option<(OwnedFd, u64, i32)> {
    let pidfd = kernel::pidfd_of_thread(n.pid).ok()?;
    let sock = kernel::take_fd(&pidfd, fd).ok()?;
    let domain = kernel::socket_int_option(&sock, libc::SO_DOMAIN)?;
    let tcp = matches!(domain, libc::AF_INET | libc::AF_INET6) && kernel::socket_int_option(&sock, libc::SO_TYPE) == Some(libc::SOCK_STREAM);
    let inode = kernel::socket_inode(&sock)?;
    tcp.then_some((sock, inode, domain))
}

fn family(domain: i32) -> Family {
    if domain == libc::AF_INET {
        Family::V4
    } else {
        Family::V6
    }
}

/// `bind(fd, addr, len)`: a candidate when the rule says so; the kernel
/// binds either way.
pub fn on_bind(sv: &Supervisor, n: &Notif) -> Answer {
    if sv.config.bind == BindMode::Off {
        return Answer::Continue;
    }
    let len = n.data.args[2].min(128) as usize;
    let Ok(bytes) = kernel::read_memory(n.pid, n.data.args[1], len) else { return Answer::Continue };
    // SAFETY: bytes holds `len` readable bytes.
    let Some(requested) = (unsafe { socksify_client::sockaddr::read(bytes.as_ptr() as *const libc::sockaddr, len as libc::socklen_t) }) else {
        return Answer::Continue;
    };
    let Some((_, inode, _)) = tcp_socket(n, n.data.args[0]) else { return Answer::Continue };
    let live = socket_inodes(n.pid);
    let conns: Vec<(ProxiedConn, SocketAddr)> = {
        let all = lock(&sv.binds.conns);
        all.iter().filter(|(i, _)| live.contains(i)).map(|(_, &(local, dst))| (ProxiedConn { local, reported: None }, dst)).collect()
    };
    let views: Vec<ProxiedConn> = conns.iter().map(|(v, _)| *v).collect();
    match rule::decide(sv.config.bind, requested, &views) {
        rule::Decision::Local => Answer::Continue,
        rule::Decision::Bind { related } => {
            let related = related.map(|i| conns[i].1);
            say!(Level::Debug, "bind to {requested}: a SOCKS BIND once it listens (expected peer {related:?})");
            sv.binds.set(inode, State::Candidate { related });
            Answer::Continue
        }
    }
}

/// `listen(fd, backlog)` on a candidate: the BIND. `None`: answered by a thread.
pub fn on_listen(sv: &Arc<Supervisor>, n: &Notif) -> Option<Answer> {
    if sv.binds.is_empty() {
        return Some(Answer::Continue);
    }
    let Some((sock, inode, domain)) = tcp_socket(n, n.data.args[0]) else { return Some(Answer::Continue) };
    let related = match sv.binds.get(inode) {
        Some(State::Candidate { related }) => related,
        Some(State::Waiting { .. }) => return Some(Answer::Return(0)),
        Some(State::Failed { errno, .. }) => return Some(Answer::Fail(errno)),
        _ => return Some(Answer::Continue),
    };
    let (sv, id) = (sv.clone(), n.id);
    super::workers::spawn(move || {
        let run = std::panic::AssertUnwindSafe(|| start(&sv, &sock, inode, domain, related));
        let answer = std::panic::catch_unwind(run).unwrap_or(Answer::Fail(libc::ECONNREFUSED));
        sv.listener.answer(id, answer);
    });
    None
}

/// Runs the BIND on `sock`; the answer to `listen`.
fn start(sv: &Supervisor, sock: &OwnedFd, inode: u64, domain: i32, related: Option<SocketAddr>) -> Answer {
    let hop = &sv.config.chain[0];
    let related = related.and_then(|dst| {
        if route::is_fake(&sv.config, dst.ip()) {
            sv.fake.name_for(dst.ip()).and_then(|name| TargetAddr::domain(&name, dst.port()))
        } else {
            Some(TargetAddr::Ip(dst))
        }
    });
    let mut target = rule::expected_peer(related);
    let result = loop {
        match connect_via_proxy(&Libc, sock.as_raw_fd(), domain, &sv.config, &sv.first_hop, Command::Bind, &target) {
            Err(ConnectError::Handshake(HandshakeError::Rejected(ReplyCode::AddressTypeNotSupported))) if matches!(target, TargetAddr::Domain(..)) => {
                say!(Level::Info, "bind: the proxy takes no name in a BIND request; asking for any peer instead of {target}");
                dissolve(sock);
                target = rule::any_peer();
            }
            other => break other,
        }
    };
    let refuse = |errno: i32| {
        dissolve(sock);
        sv.binds.set(inode, State::Failed { bound: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0), errno });
        Answer::Fail(errno)
    };
    let bound = match result {
        Ok((proxy, TargetAddr::Ip(bound))) => {
            // 0.0.0.0 in a reply means "the address you reached me at".
            let ip = if bound.ip().is_unspecified() { proxy.ip() } else { bound.ip() };
            SocketAddr::new(canonical_ip(ip), bound.port())
        }
        Ok((_, name)) => {
            say!(Level::Warn, "bind for {target} via {hop}: the proxy listens on a name ({name}), which no program can advertise");
            return refuse(libc::EPROTO);
        }
        Err(e) => {
            say!(Level::Warn, "bind for {target} via {hop}: {e}");
            return refuse(e.errno());
        }
    };
    if rule::in_family(bound, family(domain)).is_none() {
        say!(Level::Warn, "bind for {target} via {hop}: the proxy listens on {bound}, an IPv6 address this IPv4 socket cannot report");
        return refuse(libc::EAFNOSUPPORT);
    }
    let socks4 = matches!(sv.config.chain[sv.config.chain.len() - 1].dialect(), Dialect::Socks4 { .. });
    sv.binds.set(inode, State::Waiting { bound, socks4 });
    say!(Level::Info, "bind for {target} via {hop}: the proxy listens on {bound}");
    Answer::Return(0)
}

/// Writes `addr` (in `domain`'s family) to the program's `ptr`/`len_ptr`
/// pair as the kernel would: cut to the room, the full length stored.
fn write_addr(pid: u32, ptr: u64, len_ptr: u64, addr: SocketAddr, domain: i32) -> bool {
    if ptr == 0 || len_ptr == 0 {
        return true;
    }
    let Ok(len) = kernel::read_memory(pid, len_ptr, 4) else { return false };
    let room = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let addr = rule::reported(addr, family(domain));
    let Some((raw, full)) = socksify_client::sockaddr::encode(&addr, domain) else { return false };
    // SAFETY: raw holds `full` initialized bytes of address.
    let bytes = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, full as usize) };
    kernel::write_memory(pid, ptr, &bytes[..room.min(full as usize)]) && kernel::write_memory(pid, len_ptr, &full.to_ne_bytes())
}

/// `getsockname` of a BIND socket (or what it left): where the proxy
/// listens; on a candidate, the BIND runs first (the program may ask for
/// the address before it listens). `None`: answered by a thread.
pub fn on_getsockname(sv: &Arc<Supervisor>, n: &Notif) -> Option<Answer> {
    if sv.binds.is_empty() {
        return Some(Answer::Continue);
    }
    let Some((sock, inode, domain)) = tcp_socket(n, n.data.args[0]) else { return Some(Answer::Continue) };
    let (pid, id, [_, addr, len, ..]) = (n.pid, n.id, n.data.args);
    let reply = move |sv: &Supervisor| {
        let bound = match sv.binds.get(inode) {
            Some(State::Waiting { bound, .. } | State::Spent { bound }) => bound,
            // The proxy listened, then the peer never came: still its address.
            Some(State::Failed { bound, .. }) if bound.port() != 0 => bound,
            _ => return Answer::Continue,
        };
        if !sv.listener.id_valid(id) {
            return Answer::Continue;
        }
        match write_addr(pid, addr, len, bound, domain) {
            true => Answer::Return(0),
            false => Answer::Fail(libc::EFAULT),
        }
    };
    let Some(State::Candidate { related }) = sv.binds.get(inode) else { return Some(reply(sv)) };
    let sv = sv.clone();
    super::workers::spawn(move || {
        let run = std::panic::AssertUnwindSafe(|| match start(&sv, &sock, inode, domain, related) {
            Answer::Return(0) => reply(&sv),
            failed => failed,
        });
        let answer = std::panic::catch_unwind(run).unwrap_or(Answer::Fail(libc::ECONNREFUSED));
        sv.listener.answer(id, answer);
    });
    None
}

/// `accept`/`accept4` on a BIND socket. `None`: answered already, or by a thread.
pub fn on_accept(sv: &Arc<Supervisor>, n: &Notif) -> Option<Answer> {
    if sv.binds.is_empty() {
        return Some(Answer::Continue);
    }
    let Some((sock, inode, domain)) = tcp_socket(n, n.data.args[0]) else { return Some(Answer::Continue) };
    let (bound, socks4) = match sv.binds.get(inode) {
        Some(State::Waiting { bound, socks4 }) => (bound, socks4),
        Some(State::Failed { errno, .. }) => return Some(Answer::Fail(errno)),
        _ => return Some(Answer::Continue),
    };
    let flags = if i64::from(n.data.nr) == libc::SYS_accept4 { n.data.args[3] as i32 } else { 0 };
    let a = Accept { sock, inode, domain, bound, socks4, flags, pid: n.pid, id: n.id, fd: n.data.args[0], addr: n.data.args[1], len: n.data.args[2] };
    match a.attempt(sv) {
        Some(answer) => return answer,
        None if a.nonblocking() => return Some(Answer::Fail(libc::EAGAIN)),
        None => {}
    }
    let sv = sv.clone();
    std::thread::spawn(move || loop {
        if !sv.listener.id_valid(a.id) {
            return;
        }
        let mut pfd = libc::pollfd { fd: a.sock.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
        // SAFETY: one pollfd; checking every 200 ms that the caller still waits.
        if unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
            match a.attempt(&sv) {
                Some(Some(answer)) => return sv.listener.answer(a.id, answer),
                Some(None) => return,
                None => std::thread::sleep(Duration::from_millis(10)), // part of the reply
            }
        }
    });
    None
}

struct Accept {
    sock: OwnedFd,
    inode: u64,
    domain: i32,
    bound: SocketAddr,
    socks4: bool,
    flags: i32,
    pid: u32,
    id: u64,
    /// The listening fd, and accept's address arguments.
    fd: u64,
    addr: u64,
    len: u64,
}

impl Accept {
    fn nonblocking(&self) -> bool {
        // SAFETY: F_GETFL takes no argument.
        let fl = unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_GETFL) };
        fl >= 0 && fl & libc::O_NONBLOCK != 0
    }

    fn fail(&self, sv: &Supervisor, errno: i32, why: &str) -> Option<Option<Answer>> {
        say!(Level::Warn, "bind (proxy listening on {}): no connection: {why}", self.bound);
        sv.binds.set(self.inode, State::Failed { bound: self.bound, errno });
        Some(Some(Answer::Fail(errno)))
    }

    /// The peer, if the second reply is all there: `Some(Some)` the
    /// answer, `Some(None)` answered by an install; `None`: not yet.
    fn attempt(&self, sv: &Supervisor) -> Option<Option<Answer>> {
        let mut buf = [0u8; MAX_HEADER_LEN];
        // SAFETY: peeks into a local buffer.
        let n = unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n == 0 {
            return self.fail(sv, libc::ECONNABORTED, "the proxy closed the connection before a peer came");
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => None,
                _ => self.fail(sv, libc::ECONNABORTED, &e.to_string()),
            };
        }
        match rule::second_reply(self.socks4, &buf[..n as usize]) {
            Ok(SecondReply::Peer(peer, used)) => Some(self.hand_out(sv, peer, used)),
            Ok(SecondReply::Incomplete) => None,
            Err(e) => self.fail(sv, e.errno(), &e.to_string()),
        }
    }

    /// The peer came: the listening fd becomes an unreachable listener,
    /// the socket the program's new fd.
    fn hand_out(&self, sv: &Supervisor, peer: SocketAddr, used: usize) -> Option<Answer> {
        if !sv.listener.id_valid(self.id) {
            return None;
        }
        let mut reply = [0u8; MAX_HEADER_LEN];
        // SAFETY: reads exactly the reply, which is queued (peeked).
        unsafe { libc::recv(self.sock.as_raw_fd(), reply.as_mut_ptr() as *mut libc::c_void, used, libc::MSG_DONTWAIT) };
        // SAFETY: F_GETFL takes no argument.
        let status = unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_GETFL) }.max(0);
        match unreachable_listener(self.domain, status & libc::O_NONBLOCK != 0) {
            Ok(quiet) => {
                if let Some(inode) = kernel::socket_inode(&quiet) {
                    sv.binds.set(inode, State::Spent { bound: self.bound });
                }
                let cloexec = kernel::fd_cloexec(self.pid, self.fd);
                if let Err(e) = sv.listener.add_fd(self.id, &quiet, self.fd as u32, cloexec, false) {
                    say!(Level::Warn, "bind: cannot retire the listening fd {} ({e}); it stays the connection's socket", self.fd);
                }
            }
            Err(e) => say!(Level::Warn, "bind: cannot retire the listening fd {} ({e}); it stays the connection's socket", self.fd),
        }
        // The connection is a new socket as far as the program knows:
        // blocking unless accept4 asked for SOCK_NONBLOCK.
        let status = status & !libc::O_NONBLOCK | if self.flags & libc::SOCK_NONBLOCK != 0 { libc::O_NONBLOCK } else { 0 };
        // SAFETY: flags only.
        unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_SETFL, status) };
        let peer = rule::reported(peer, family(self.domain));
        sv.binds.set(self.inode, State::Spent { bound: self.bound });
        sv.remember_peer(self.inode, peer);
        if !write_addr(self.pid, self.addr, self.len, peer, self.domain) {
            say!(Level::Debug, "bind: accept's address buffer is not writable; the connection is accepted anyway");
        }
        match sv.listener.add_fd_lowest(self.id, &self.sock, self.flags & libc::SOCK_CLOEXEC != 0) {
            Ok(fd) => {
                say!(Level::Info, "bind (proxy listening on {}): accepted {peer} as fd {fd}", self.bound);
                None
            }
            Err(e) => Some(Answer::Fail(e.raw_os_error().unwrap_or(libc::EMFILE))),
        }
    }
}

/// A listening TCP socket on loopback that no connection reaches: a socket
/// filter drops every packet, the SYNs included.
fn unreachable_listener(domain: i32, nonblocking: bool) -> std::io::Result<OwnedFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: socket(2).
    let fd = unsafe { libc::socket(domain, ty, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let s = unsafe { OwnedFd::from_raw_fd(fd) };
    let loopback: std::net::IpAddr = if domain == libc::AF_INET6 { std::net::Ipv6Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::LOCALHOST.into() };
    let drop_all = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: drop_all.as_ptr() as *mut libc::sock_filter };
    let (raw, len) = socksify_client::sockaddr::encode(&SocketAddr::new(loopback, 0), domain).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    // SAFETY: plain socket calls on our socket, with valid arguments.
    let ok = unsafe {
        libc::bind(s.as_raw_fd(), &raw as *const _ as *const libc::sockaddr, len) == 0
            && libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog as *const _ as *const libc::c_void, std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t) == 0
            && libc::listen(s.as_raw_fd(), 1) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}
