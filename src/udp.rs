//! UDP through SOCKS5 UDP ASSOCIATE: the associations and the datagram
//! format. The hooks that use this live in [`crate::hooks::udp`].
//!
//! One association per *socket* (not per fd: `dup`s share it), opened by
//! the first datagram to a proxied destination (or a `connect` to one):
//! the socket is bound first if it is not, a TCP control connection of our
//! own (`O_CLOEXEC`, never in the fd table, never seen by the program)
//! sends UDP ASSOCIATE with the socket's bound address, and the reply's
//! address is the relay (`0.0.0.0`/`::` or port 0 there mean the proxy's own
//! address). Datagrams then go from the program's own socket to the relay
//! with the RFC 1928 header; replies are unwrapped and reported with their
//! real source. Datagrams from anywhere else are dropped, except from
//! bypassed sources, which the program may talk to directly.
//!
//! The association ends when the socket's last fd is closed (the control
//! connection is closed, so the server tears its side down). If the
//! control fd is closed behind our back (`close_range`, a raw syscall) or
//! the server ends the association, the next datagram notices (`poll` on
//! the control fd) and opens a new one.
//!
//! Tables sit behind one [`ForkSafeMutex`], held only for map operations:
//! every syscall (handshake, send, receive) runs with the lock released,
//! on values copied out.

use crate::fork_safe::ForkSafeMutex;
use crate::udp_filter::{self, Spec};
use crate::{fd_table, real, runtime, socket_addr, tcp};
use libc::{c_int, sockaddr, socklen_t, AF_INET, AF_INET6};
use socksify_proto::config::Config;
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The largest RFC 1928 UDP header (a 255-byte name).
pub const HEADER_MAX: usize = 3 + 1 + 1 + 255 + 2;

/// An open association.
#[derive(Debug, Clone, Copy)]
struct Assoc {
    /// Our TCP control connection.
    ctrl: c_int,
    /// Its inode: tells our socket from a program fd that reused the number.
    ctrl_ino: u64,
    /// Where datagrams go, as the kernel will see it (canonical IP).
    relay: SocketAddr,
}

/// One UDP socket of the program.
#[derive(Debug, Default)]
struct Sock {
    /// How many of the program's fds refer to it.
    fds: u32,
    /// `AF_INET` or `AF_INET6`.
    family: c_int,
    assoc: Option<Assoc>,
    /// The destination of a `connect` through us (as the program gave it).
    peer: Option<SocketAddr>,
    /// Recent destinations, most recent last, with the name a fake one
    /// stands for. A reply is reported from the address the program sent
    /// to: a name's reply (which the proxy reports from the address it
    /// resolved, or as the name) from its fake address, as the program
    /// (musl's resolver, for one) expects.
    recent: Vec<(SocketAddr, Option<String>)>,
    /// When the control connection was last checked ([`coarse_ms`]).
    checked_ms: u64,
    /// The shim's DNS responder socket (`crate::dns_responder::udp`),
    /// once the program sent a query to its nameserver from this socket:
    /// answers come from there, wrapped like a relay's datagrams.
    responder: Option<SocketAddr>,
    /// The socket filter we attached ([`refresh_filter`]), and the
    /// generation of bypassed addresses it was built with.
    filter: Option<(udp_filter::Spec, u64)>,
    /// The program attached a filter of its own: we leave it alone.
    foreign_filter: bool,
}

#[derive(Default)]
struct Table {
    /// Program fd → socket inode.
    fds: HashMap<c_int, u64>,
    socks: HashMap<u64, Sock>,
}

static TABLE: ForkSafeMutex<Option<Table>> = ForkSafeMutex::new(None);

/// What a send or receive needs, copied out of the table.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub family: c_int,
    /// Where wrapped datagrams come from: the association's relay, or
    /// (a socket that only talked DNS to its nameserver) the responder.
    pub relay: SocketAddr,
    /// The DNS responder's socket, whose datagrams are welcome too.
    pub responder: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    ctrl: c_int,
    ctrl_ino: u64,
    /// The socket's inode: a mismatch with the fd's means the fd was
    /// closed behind our back and reused.
    pub ino: u64,
}

/// Why an association could not be used; the errno the call fails with.
#[derive(Debug)]
pub struct AssocError {
    pub errno: i32,
    pub why: String,
}

fn err(errno: i32, why: impl Into<String>) -> AssocError {
    AssocError { errno, why: why.into() }
}

/// The inode of `fd`, or `None` if it is not open.
pub fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one struct stat.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// Closes our control fd, unless the number now belongs to someone else.
fn close_ctrl(assoc: &Assoc) {
    if inode(assoc.ctrl) == Some(assoc.ctrl_ino) {
        fd_table::set_control(assoc.ctrl, false);
        // SAFETY: the fd is still our control socket.
        unsafe { real::close(assoc.ctrl) };
    }
}

/// Whether `fd` is still one of our control connections (not closed
/// behind our back and its number reused). Takes a lock and an `fstat`:
/// only for a `close` of an fd marked as ours.
pub fn is_control(fd: c_int) -> bool {
    let ino = {
        let table = TABLE.lock();
        table.as_ref().and_then(|t| t.socks.values().find_map(|s| s.assoc.filter(|a| a.ctrl == fd).map(|a| a.ctrl_ino)))
    };
    ino.is_some_and(|ino| inode(fd) == Some(ino))
}

/// Our control fd `fd` was replaced behind our back (`dup2` over it, a
/// raw close): its association is dead; the next datagram opens another.
pub fn control_lost(fd: c_int) {
    let mut table = TABLE.lock();
    let Some(t) = table.as_mut() else { return };
    for sock in t.socks.values_mut() {
        if sock.assoc.is_some_and(|a| a.ctrl == fd) {
            sock.assoc = None;
        }
    }
}

/// Milliseconds of a cheap monotonic clock (vDSO, no syscall).
fn coarse_ms() -> u64 {
    // SAFETY: all-zero timespec is valid; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is our own, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// How often a send checks that the association's control connection is
/// still up (the server ended it, or a raw syscall closed our fd): a
/// `close` by the program cannot take it (it answers `EBADF`), so this is
/// for rarer ends, and costs one `poll` per socket per interval.
const CHECK_EVERY_MS: u64 = 200;

/// Whether the control connection is still up: `poll` says nothing to
/// read (the server never sends on it: readable means closed, and an fd
/// closed behind our back answers `POLLNVAL`).
fn alive(view: &View) -> bool {
    let mut pfd = libc::pollfd { fd: view.ctrl, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, zero timeout.
    match unsafe { libc::poll(&mut pfd, 1, 0) } {
        0 => true,
        n if n < 0 => inode(view.ctrl) == Some(view.ctrl_ino), // EINTR and the like
        _ => false,
    }
}

/// The table entry for `fd`, if it is tracked and has an association or
/// talked to the DNS responder.
pub fn view(fd: c_int) -> Option<View> {
    let table = TABLE.lock();
    let t = table.as_ref()?;
    let ino = *t.fds.get(&fd)?;
    let sock = t.socks.get(&ino)?;
    let (relay, ctrl, ctrl_ino) = match sock.assoc {
        Some(a) => (a.relay, a.ctrl, a.ctrl_ino),
        None => (sock.responder?, -1, 0),
    };
    Some(View { family: sock.family, relay, responder: sock.responder, peer: sock.peer, ctrl, ctrl_ino, ino })
}

/// [`view`], and whether the control connection is due for a check
/// (then the check is counted as done).
fn view_for_send(fd: c_int) -> Option<(View, bool)> {
    let now = coarse_ms();
    let mut table = TABLE.lock();
    let t = table.as_mut()?;
    let ino = *t.fds.get(&fd)?;
    let sock = t.socks.get_mut(&ino)?;
    let assoc = sock.assoc?;
    let due = now.saturating_sub(sock.checked_ms) >= CHECK_EVERY_MS;
    if due {
        sock.checked_ms = now;
    }
    let view = View {
        family: sock.family,
        relay: assoc.relay,
        responder: sock.responder,
        peer: sock.peer,
        ctrl: assoc.ctrl,
        ctrl_ino: assoc.ctrl_ino,
        ino,
    };
    Some((view, due))
}

/// The socket inode `fd` is recorded as, if tracked.
pub fn tracked(fd: c_int) -> Option<u64> {
    TABLE.lock().as_ref()?.fds.get(&fd).copied()
}

/// The recorded family of a tracked socket.
pub fn family(fd: c_int) -> Option<c_int> {
    let table = TABLE.lock();
    let t = table.as_ref()?;
    t.socks.get(t.fds.get(&fd)?).map(|s| s.family)
}

/// Every destination our UDP sockets are connected to or recently sent to
/// (for the fake-address table, see fake_dns.rs).
pub fn destinations() -> Vec<SocketAddr> {
    let table = TABLE.lock();
    let Some(t) = table.as_ref() else { return Vec::new() };
    t.socks.values().flat_map(|s| s.peer.into_iter().chain(s.recent.iter().map(|(a, _)| *a))).collect()
}

/// The proxied peer of a connected socket (what `getpeername` reports).
pub fn peer(fd: c_int) -> Option<SocketAddr> {
    let table = TABLE.lock();
    let t = table.as_ref()?;
    t.socks.get(t.fds.get(&fd)?)?.peer
}

/// Records (or clears) the proxied peer of a tracked socket.
pub fn set_peer(fd: c_int, peer: Option<SocketAddr>) {
    let mut table = TABLE.lock();
    let Some(t) = table.as_mut() else { return };
    let Some(ino) = t.fds.get(&fd).copied() else { return };
    if let Some(sock) = t.socks.get_mut(&ino) {
        sock.peer = peer;
    }
}

/// Where the program believes a relayed datagram from `src` (as the
/// proxy reported it) came from: `src` itself if the program sent there,
/// else the fake address of a name it sent to on that port.
fn reported_source(fd: c_int, src: &TargetAddr) -> Option<SocketAddr> {
    let table = TABLE.lock();
    let recent = table.as_ref().and_then(|t| t.socks.get(t.fds.get(&fd)?)).map_or(&[][..], |s| &s.recent[..]);
    match src {
        TargetAddr::Domain(name, port) => recent
            .iter()
            .rev()
            .find(|(a, n)| a.port() == *port && n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(a, _)| *a),
        TargetAddr::Ip(sa) => {
            let sa = SocketAddr::new(canonical_ip(sa.ip()), sa.port());
            let sent_there = recent.iter().any(|(a, n)| n.is_none() && canonical_ip(a.ip()) == sa.ip() && a.port() == sa.port());
            let named = || recent.iter().rev().find(|(a, n)| n.is_some() && a.port() == sa.port()).map(|(a, _)| *a);
            Some(if sent_there { sa } else { named().unwrap_or(sa) })
        }
    }
}

/// Records a destination the program sent to (cheap when it repeats).
fn note_destination(ino: u64, dst: SocketAddr, name: Option<&str>) {
    const MAX_RECENT: usize = 64;
    let mut table = TABLE.lock();
    let Some(sock) = table.as_mut().and_then(|t| t.socks.get_mut(&ino)) else { return };
    if sock.recent.last().is_some_and(|(a, n)| *a == dst && n.as_deref() == name) {
        return;
    }
    sock.recent.retain(|(a, n)| !(*a == dst && n.as_deref() == name));
    if sock.recent.len() >= MAX_RECENT {
        sock.recent.remove(0);
    }
    sock.recent.push((dst, name.map(str::to_owned)));
}

/// `fd` was closed: the socket's association ends with its last fd.
/// Called by [`fd_table::forget`] after it cleared the kind.
pub fn forget(fd: c_int) {
    let ended = {
        let mut table = TABLE.lock();
        let Some(t) = table.as_mut() else { return };
        let Some(ino) = t.fds.remove(&fd) else { return };
        let last = t.socks.get_mut(&ino).map(|s| {
            s.fds = s.fds.saturating_sub(1);
            s.fds == 0
        });
        if last == Some(true) {
            t.socks.remove(&ino).and_then(|s| s.assoc)
        } else {
            None
        }
    };
    // The syscalls run after the lock is released.
    if let Some(assoc) = ended {
        log::info!("udp association via relay {} closed with its socket", assoc.relay);
        close_ctrl(&assoc);
    }
}

/// `new` is a duplicate of `old` (`dup`, `dup2`, `fcntl(F_DUPFD)`).
pub fn dup(old: c_int, new: c_int) {
    let mut table = TABLE.lock();
    let Some(t) = table.as_mut() else { return };
    let Some(ino) = t.fds.get(&old).copied() else { return };
    if !fd_table::set_udp(new) {
        return;
    }
    if t.fds.insert(new, ino) != Some(ino) {
        if let Some(s) = t.socks.get_mut(&ino) {
            s.fds += 1;
        }
    }
}

/// The program's fds we track as UDP sockets.
pub fn tracked_fds() -> Vec<c_int> {
    TABLE.lock().as_ref().map_or_else(Vec::new, |t| t.fds.keys().copied().collect())
}

/// Our control fds (so `close_range` can leave them open).
pub fn control_fds() -> Vec<c_int> {
    TABLE.lock().as_ref().map_or_else(Vec::new, |t| t.socks.values().filter_map(|s| s.assoc.map(|a| a.ctrl)).collect())
}

/// The socket's local address, binding it to the wildcard address of its
/// family (port 0) first if it is unbound: the association names it.
pub fn bound_addr(fd: c_int, family: c_int) -> Result<SocketAddr, AssocError> {
    let addr = socket_addr::local_addr(fd).ok_or_else(|| err(libc::EBADF, "reading the socket's address"))?;
    if addr.port() != 0 {
        return Ok(addr);
    }
    let any = if family == AF_INET6 {
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
    } else {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    };
    let raw = socket_addr::encode(&any, family).ok_or_else(|| err(libc::EAFNOSUPPORT, "binding the socket"))?;
    // SAFETY: raw is a valid sockaddr of the socket's family.
    if unsafe { real::bind(fd, &raw.0 as *const _ as *const sockaddr, raw.1) } != 0 {
        let e = crate::ffi::errno();
        // EINVAL: bound meanwhile by another thread; read it again.
        if e != libc::EINVAL {
            return Err(err(e, format!("binding the socket: {}", std::io::Error::from_raw_os_error(e))));
        }
    }
    socket_addr::local_addr(fd).filter(|a| a.port() != 0).ok_or_else(|| err(libc::EADDRNOTAVAIL, "binding the socket"))
}

/// Opens an association for a UDP socket bound at `local`.
fn open(family: c_int, local: SocketAddr, config: &'static Config) -> Result<Assoc, AssocError> {
    if config.chain.len() != 1 {
        return Err(err(libc::ENETUNREACH, "UDP cannot go through a chain of proxies (UDP ASSOCIATE needs the relay reachable from here)"));
    }
    let hop = &config.chain[0];
    if !hop.scheme.supports_udp() {
        return Err(err(libc::ENETUNREACH, format!("{hop} cannot carry UDP (SOCKS4 has no UDP ASSOCIATE)")));
    }
    // SAFETY: plain socket(2); the fd is ours, close-on-exec.
    let ctrl = unsafe { real::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if ctrl < 0 {
        let e = crate::ffi::errno();
        return Err(err(e, format!("creating the control socket: {}", std::io::Error::from_raw_os_error(e))));
    }
    if fd_table::kind(ctrl) != fd_table::kind::NONE {
        // A number the table still knows was closed behind our back: what
        // it says is the old socket's (as for the program's, hooks/socket.rs).
        crate::sockets::forget_closed(ctrl);
    }
    // SAFETY: ctrl is our own fd, closed once on each failure path.
    let close = || unsafe { real::close(ctrl) };
    // The address our datagrams will come from: the bound one, or (bound
    // to the wildcard) "any address, this port" in the proxy's family.
    let proxy_v4 = runtime::proxy_addrs(config, 0).first().is_none_or(|a| canonical_ip(a.ip()).is_ipv4());
    let ip = canonical_ip(local.ip());
    let ip = match ip.is_unspecified() {
        true if proxy_v4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        true => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        false => ip,
    };
    let request = TargetAddr::Ip(SocketAddr::new(ip, local.port()));
    let (proxy, bound) = match tcp::connect_via_proxy(ctrl, family, config, Command::UdpAssociate, &request) {
        Ok(x) => x,
        Err(e) => {
            close();
            return Err(err(e.errno(), format!("UDP ASSOCIATE via {hop}: {e}")));
        }
    };
    // An unspecified address (0.0.0.0, ::) or port 0 means the proxy's own
    // (many servers answer 0.0.0.0:0 and relay on their own port).
    let relay = match bound {
        TargetAddr::Ip(sa) => {
            let ip = if sa.ip().is_unspecified() { proxy.ip() } else { sa.ip() };
            let port = if sa.port() == 0 { proxy.port() } else { sa.port() };
            SocketAddr::new(canonical_ip(ip), port)
        }
        TargetAddr::Domain(name, port) => {
            close();
            return Err(err(libc::ECONNREFUSED, format!("UDP ASSOCIATE via {hop}: relay given as a name ({name}:{port})")));
        }
    };
    let Some(ctrl_ino) = inode(ctrl) else {
        close();
        return Err(err(libc::EBADF, "control socket vanished"));
    };
    fd_table::set_control(ctrl, true);
    log::info!("udp association for {local} via {hop}: relay {relay}");
    Ok(Assoc { ctrl, ctrl_ino, relay })
}

/// The live association of UDP socket `fd` (of `family`), opening one
/// (or a new one, if the old one died) as needed. Also tracks `fd`.
pub fn ensure(fd: c_int, family: c_int, config: &'static Config) -> Result<View, AssocError> {
    if let Some((v, due)) = view_for_send(fd) {
        if !due || alive(&v) {
            return Ok(v);
        }
        // Died: forget it (closing our fd if it is still ours), open anew.
        let dead = {
            let mut table = TABLE.lock();
            table.as_mut().and_then(|t| t.socks.get_mut(&v.ino)).and_then(|s| {
                let same = s.assoc.is_some_and(|a| a.ctrl == v.ctrl && a.ctrl_ino == v.ctrl_ino);
                if same {
                    s.assoc.take()
                } else {
                    None
                }
            })
        };
        if let Some(a) = dead {
            log::info!("udp association via relay {} ended (control connection closed); opening a new one", a.relay);
            close_ctrl(&a);
        }
    }
    if fd as usize >= fd_table::SLOTS {
        return Err(err(libc::EMFILE, "fd number beyond the shim's table"));
    }
    let ino = inode(fd).ok_or_else(|| err(libc::EBADF, "the socket is not open"))?;
    let local = bound_addr(fd, family)?;
    let fresh = open(family, local, config)?;
    // Install it, unless another thread was faster.
    let (chosen, loser, peer, responder) = {
        let mut table = TABLE.lock();
        let t = table.get_or_insert_with(Table::default);
        let sock = t.track(fd, ino, family);
        let responder = sock.responder;
        match sock.assoc {
            Some(theirs) => (theirs, Some(fresh), sock.peer, responder),
            None => {
                sock.assoc = Some(fresh);
                sock.checked_ms = coarse_ms();
                (fresh, None, sock.peer, responder)
            }
        }
    };
    fd_table::set_udp(fd);
    if let Some(extra) = loser {
        close_ctrl(&extra);
    }
    if peer.is_some() {
        // A connected socket follows its relay.
        connect_kernel(fd, family, chosen.relay)?;
    }
    refresh_filter(fd, config);
    Ok(View { family, relay: chosen.relay, responder, peer, ctrl: chosen.ctrl, ctrl_ino: chosen.ctrl_ino, ino })
}

impl Table {
    /// The entry of socket `ino` (of `family`), with `fd` counted as one
    /// of its fds (dropping what a reused number said before).
    fn track(&mut self, fd: c_int, ino: u64, family: c_int) -> &mut Sock {
        if let Some(old) = self.fds.get(&fd).copied().filter(|&old| old != ino) {
            // The fd number was reused behind our back: drop the stale entry.
            self.fds.remove(&fd);
            if let Some(s) = self.socks.get_mut(&old) {
                s.fds = s.fds.saturating_sub(1);
            }
        }
        if self.fds.insert(fd, ino).is_none() {
            self.socks.entry(ino).or_default().fds += 1;
        }
        let sock = self.socks.entry(ino).or_default();
        sock.family = family;
        sock
    }
}

/// Records that socket `fd` (of `family`) asked `nameserver` and gets its
/// answers from the DNS responder at `source`: tracks the fd, so the
/// receive hooks unwrap them and report `nameserver` as their source.
pub fn track_responder(fd: c_int, family: c_int, source: SocketAddr, nameserver: SocketAddr) -> Result<(), AssocError> {
    if fd as usize >= fd_table::SLOTS {
        return Err(err(libc::EMFILE, "fd number beyond the shim's table"));
    }
    let ino = inode(fd).ok_or_else(|| err(libc::EBADF, "the socket is not open"))?;
    {
        let mut table = TABLE.lock();
        let sock = table.get_or_insert_with(Table::default).track(fd, ino, family);
        sock.responder = Some(source);
    }
    fd_table::set_udp(fd);
    note_destination(ino, nameserver, None);
    if let Some(config) = runtime::config() {
        refresh_filter(fd, config); // the responder's answers must get in
    }
    Ok(())
}

/// Connects the socket in the kernel to `addr` (the relay, for a socket
/// connected to a proxied destination: only the relay can then reach it).
pub fn connect_kernel(fd: c_int, family: c_int, addr: SocketAddr) -> Result<(), AssocError> {
    let raw = socket_addr::encode(&addr, family)
        .ok_or_else(|| err(libc::ENETUNREACH, format!("relay {addr} not reachable from this socket's family")))?;
    // SAFETY: raw is a valid sockaddr for the socket's family.
    if unsafe { real::connect(fd, &raw.0 as *const _ as *const sockaddr, raw.1) } != 0 {
        let e = crate::ffi::errno();
        return Err(err(e, format!("connecting to the relay {addr}")));
    }
    Ok(())
}

/// The header for a datagram to `dst`: a fake address from remote DNS
/// travels as the name it stands for. `None` for a fake address that no
/// name holds (the send fails with `EHOSTUNREACH`, it goes nowhere).
pub fn header_for(ino: u64, config: &'static Config, dst: SocketAddr) -> Option<Vec<u8>> {
    let target = crate::fake_dns::target_for(config, &dst)?;
    match &target {
        TargetAddr::Domain(name, _) => note_destination(ino, dst, Some(name)),
        TargetAddr::Ip(_) => note_destination(ino, dst, None),
    }
    let header = UdpHeader::new(target);
    let mut out = Vec::with_capacity(header.encoded_len());
    header.emit(&mut out);
    Some(out)
}

/// The name a fake address (remote DNS) stands for.
fn fake_name(config: &Config, ip: IpAddr) -> Option<String> {
    crate::fake_dns::name_for(config, ip)
}

/// What a datagram received on one of our sockets is.
pub enum Incoming {
    /// From the relay: the payload starts at `offset`, sent by `src`.
    Relayed { src: SocketAddr, offset: usize },
    /// From a bypassed source, delivered as it is.
    Direct,
    /// Dropped (not from the relay, malformed, fragment, not the peer).
    Drop(&'static str),
}

/// Classifies a datagram of `len` bytes (`data` holds the start of it)
/// that came from `from` on socket `fd`.
pub fn classify(fd: c_int, view: &View, config: &'static Config, from: Option<SocketAddr>, data: &[u8]) -> Incoming {
    let Some(from) = from else { return Incoming::Drop("no source address") };
    let from = SocketAddr::new(canonical_ip(from.ip()), from.port());
    if from != view.relay && Some(from) != view.responder {
        if view.peer.is_none() && runtime::goes_direct(config, &from) {
            return Incoming::Direct;
        }
        return Incoming::Drop("not from the relay");
    }
    let (header, offset) = match UdpHeader::parse(data) {
        Ok(x) => x,
        Err(_) => return Incoming::Drop("malformed header"),
    };
    if header.frag != 0 {
        return Incoming::Drop("fragment");
    }
    let Some(src) = reported_source(fd, &header.dst) else { return Incoming::Drop("source given as an unknown name") };
    if let Some(peer) = view.peer {
        // A connected socket hears only its peer (the kernel's rule). A
        // fake peer stands for a name: the proxy may report the address
        // it resolved, so only the port can be checked then.
        let fake = fake_name(config, peer.ip()).is_some();
        let same = canonical_ip(src.ip()) == canonical_ip(peer.ip()) && src.port() == peer.port();
        if !(same || (fake && src.port() == peer.port())) {
            return Incoming::Drop("not from the connected peer");
        }
        return Incoming::Relayed { src: peer, offset };
    }
    Incoming::Relayed { src, offset }
}

pub use crate::log_once::log_once;

/// Whether `family` is one we proxy.
pub fn is_inet(family: c_int) -> bool {
    family == AF_INET || family == AF_INET6
}

/// What the socket filter of `fd`'s socket must admit now: the relay (and
/// the DNS responder, which wraps its answers the same way), the peer of a
/// connected socket, or (unconnected) the sources the program
/// hears directly, as [`classify`] decides.
fn filter_spec(config: &'static Config, relays: Vec<SocketAddr>, peer: Option<SocketAddr>) -> Spec {
    let full = |ip: &IpAddr| if ip.is_ipv4() { 32 } else { 128 };
    let direct = match peer {
        Some(_) => Vec::new(),
        None => {
            let mut direct = config.no_proxy.addr_rules();
            let hops = runtime::proxy_addrs(config, 0).iter().map(|a| canonical_ip(a.ip()));
            direct.extend(hops.zip(runtime::proxy_addrs(config, 0)).map(|(ip, a)| (ip, full(&ip), Some(a.port()))));
            direct.extend(crate::fake_dns::bypassed_addrs().into_iter().map(|ip| (ip, full(&ip), None)));
            direct
        }
    };
    let peer = peer.map(|p| (SocketAddr::new(canonical_ip(p.ip()), p.port()), crate::fake_dns::is_fake(config, p.ip())));
    Spec { relays, peer, direct }
}

/// Gives `fd`'s socket the filter it needs now (see udp_filter.rs), if it
/// has not got it already: after an association opens, the peer changes,
/// or a bypassed name resolved to a new address.
pub fn refresh_filter(fd: c_int, config: &'static Config) {
    let generation = crate::fake_dns::bypassed_generation();
    let (ino, relay, peer, current) = {
        let table = TABLE.lock();
        let Some(t) = table.as_ref() else { return };
        let Some(&ino) = t.fds.get(&fd) else { return };
        let Some(sock) = t.socks.get(&ino) else { return };
        let Some(assoc) = sock.assoc else { return };
        if sock.foreign_filter {
            return;
        }
        (ino, [Some(assoc.relay), sock.responder], sock.peer, sock.filter.clone())
    };
    let spec = filter_spec(config, relay.into_iter().flatten().collect(), peer);
    if current.as_ref().is_some_and(|(s, g)| *s == spec && *g == generation) {
        return;
    }
    if current.is_none() && has_filter(fd) {
        log_once(format!("udp fd {fd}: the program has a socket filter of its own; stray datagrams may wake its poll"));
        if let Some(sock) = TABLE.lock().as_mut().and_then(|t| t.socks.get_mut(&ino)) {
            sock.foreign_filter = true;
        }
        return;
    }
    let mut prog = udp_filter::program(&spec);
    if prog.len() > udp_filter::MAX_INSNS {
        // Too many direct sources for one filter: let every source in but
        // the relay's bad datagrams (the shim still drops strays on read).
        log_once(format!("udp fd {fd}: too many bypassed sources for a socket filter; stray datagrams may wake poll"));
        let any = vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, None), (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, None)];
        prog = udp_filter::program(&Spec { direct: any, ..spec.clone() });
    }
    match udp_filter::attach(fd, &prog) {
        Ok(()) => {
            if let Some(sock) = TABLE.lock().as_mut().and_then(|t| t.socks.get_mut(&ino)) {
                sock.filter = Some((spec, generation));
            }
        }
        Err(e) => log_once(format!(
            "udp fd {fd}: cannot attach a socket filter ({}); stray datagrams may wake poll",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// Whether `fd` has a socket filter (`SO_GET_FILTER` reports its length).
fn has_filter(fd: c_int) -> bool {
    let mut len: socklen_t = 0;
    // SAFETY: with a zero length the kernel only reports the filter's length.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, std::ptr::null_mut(), &mut len) };
    rc == 0 && len > 0
}

/// For a direct send from one of our sockets: refresh its filter if a
/// bypassed name resolved to a new address since it was built (the reply
/// from there must get in).
pub fn refresh_filter_if_stale(fd: c_int, config: &'static Config) {
    let generation = crate::fake_dns::bypassed_generation();
    let stale = {
        let table = TABLE.lock();
        table.as_ref().and_then(|t| t.socks.get(t.fds.get(&fd)?)).is_some_and(|s| s.filter.as_ref().is_some_and(|(_, g)| *g != generation))
    };
    if stale {
        refresh_filter(fd, config);
    }
}
