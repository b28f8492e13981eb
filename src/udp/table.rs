//! The association table: per socket of the program (by inode, so `dup`s
//! share it), its fds, its association, its peer, the destinations it sent
//! to recently, its socket filter.
//!
//! One [`ForkSafeMutex`], held only for map operations: every system call
//! (handshake, send, receive) runs with the lock released, on values
//! copied out.

use crate::fork_safe::{ForkSafeMutex, Locked};
use crate::udp::bpf::Spec;
use crate::udp::Header;
use crate::{fd_table, real};
use libc::c_int;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A destination the program sent to, with the name a fake one stands for.
pub type Recent = (SocketAddr, Option<Arc<str>>);

/// An open association.
#[derive(Debug, Clone, Copy)]
pub struct Assoc {
    /// Our TCP control connection.
    pub ctrl: c_int,
    /// Its inode: tells our socket from a program fd that reused the number.
    pub ctrl_ino: u64,
    /// Where datagrams go, as the kernel will see it (canonical IP).
    pub relay: SocketAddr,
}

impl Assoc {
    /// Closes our control fd, unless the number now belongs to someone else.
    pub fn close(&self) {
        if inode(self.ctrl) == Some(self.ctrl_ino) {
            fd_table::set_control(self.ctrl, false);
            // SAFETY: the fd is still our control socket.
            unsafe { real::close(self.ctrl) };
        }
    }
}

/// One UDP socket of the program.
#[derive(Debug, Default)]
pub struct Sock {
    /// How many of the program's fds refer to it.
    pub fds: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: c_int,
    pub assoc: Option<Assoc>,
    /// The destination of a `connect` through us (as the program gave it).
    pub peer: Option<SocketAddr>,
    /// Recent destinations, most recent last, with the name a fake one
    /// stands for. A reply is reported from the address the program sent
    /// to: a name's reply (which the proxy reports from the address it
    /// resolved, or as the name) from its fake address, as the program
    /// (musl's resolver, for one) expects.
    pub recent: Vec<Recent>,
    /// The header datagrams to the last of `recent` travel with (none for
    /// a nameserver the DNS responder answers). A fake address in `recent`
    /// keeps its name (fake_dns.rs), so the header stays right.
    pub last_header: Option<Header>,
    /// When the control connection was last checked ([`coarse_ms`]).
    pub checked_ms: u64,
    /// The shim's DNS responder socket (`crate::dns_responder::udp`),
    /// once the program sent a query to its nameserver from this socket:
    /// answers come from there, wrapped like a relay's datagrams.
    pub responder: Option<SocketAddr>,
    /// The socket filter we attached (`udp::filter`), and the generation
    /// of bypassed addresses it was built with.
    pub filter: Option<(Spec, u64)>,
    /// The program attached a filter of its own: we leave it alone.
    pub foreign_filter: bool,
}

#[derive(Default)]
pub struct Table {
    /// Program fd → socket inode.
    pub fds: HashMap<c_int, u64>,
    pub socks: HashMap<u64, Sock>,
}

static TABLE: ForkSafeMutex<Option<Table>> = ForkSafeMutex::new(None);

/// The table, locked (for a map operation: no system call while held).
pub fn lock() -> Locked<'static, Option<Table>> {
    TABLE.lock()
}

impl Table {
    /// The entry of the socket `fd` is recorded as.
    pub fn sock_of(&self, fd: c_int) -> Option<&Sock> {
        self.socks.get(self.fds.get(&fd)?)
    }

    /// The entry of socket `ino` (of `family`), with `fd` counted as one
    /// of its fds (dropping what a reused number said before).
    pub fn track(&mut self, fd: c_int, ino: u64, family: c_int) -> &mut Sock {
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

/// The inode of `fd`, or `None` if it is not open.
pub fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one struct stat.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// Milliseconds of a cheap monotonic clock (vDSO, no syscall).
pub fn coarse_ms() -> u64 {
    // SAFETY: all-zero timespec is valid; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is our own, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whether `fd` is still one of our control connections (not closed
/// behind our back and its number reused). Takes a lock and an `fstat`:
/// only for a `close` of an fd marked as ours.
pub fn is_control(fd: c_int) -> bool {
    let ino = {
        let table = lock();
        table.as_ref().and_then(|t| t.socks.values().find_map(|s| s.assoc.filter(|a| a.ctrl == fd).map(|a| a.ctrl_ino)))
    };
    ino.is_some_and(|ino| inode(fd) == Some(ino))
}

/// Our control fd `fd` was replaced behind our back (`dup2` over it, a
/// raw close): its association is dead; the next datagram opens another.
pub fn control_lost(fd: c_int) {
    let mut table = lock();
    let Some(t) = table.as_mut() else { return };
    for sock in t.socks.values_mut() {
        if sock.assoc.is_some_and(|a| a.ctrl == fd) {
            sock.assoc = None;
        }
    }
}

/// Every destination our UDP sockets are connected to or recently sent to
/// (for the fake-address table, see fake_dns.rs).
pub fn destinations() -> Vec<SocketAddr> {
    let table = lock();
    let Some(t) = table.as_ref() else { return Vec::new() };
    t.socks.values().flat_map(|s| s.peer.into_iter().chain(s.recent.iter().map(|(a, _)| *a))).collect()
}

/// The proxied peer of a connected socket (what `getpeername` reports).
pub fn peer(fd: c_int) -> Option<SocketAddr> {
    lock().as_ref()?.sock_of(fd)?.peer
}

/// Records (or clears) the proxied peer of a tracked socket.
pub fn set_peer(fd: c_int, peer: Option<SocketAddr>) {
    let mut table = lock();
    let Some(t) = table.as_mut() else { return };
    let Some(ino) = t.fds.get(&fd).copied() else { return };
    if let Some(sock) = t.socks.get_mut(&ino) {
        sock.peer = peer;
    }
}

/// Where the program believes a relayed datagram from `src` (as the
/// proxy reported it) came from: `src` itself if the program sent there,
/// else the fake address of a name it sent to on that port.
pub fn reported_source(fd: c_int, src: &TargetAddr) -> Option<SocketAddr> {
    let table = lock();
    source_among(table.as_ref().and_then(|t| t.sock_of(fd)).map_or(&[][..], |s| &s.recent[..]), src)
}

/// [`reported_source`] among the destinations `recent`, oldest first.
fn source_among(recent: &[Recent], src: &TargetAddr) -> Option<SocketAddr> {
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

/// [`reported_source`] when the socket's last destination decides it,
/// as it does for the reply to the datagram just sent: no lock (`last`
/// was copied out with the socket's view). `None`: the whole list decides.
pub fn reported_source_by_last(last: &Recent, src: &TargetAddr) -> Option<SocketAddr> {
    let (addr, name) = last;
    match (src, name) {
        (TargetAddr::Domain(src_name, port), Some(name)) => (addr.port() == *port && name.eq_ignore_ascii_case(src_name)).then_some(*addr),
        (TargetAddr::Ip(sa), None) => {
            let sent_there = canonical_ip(addr.ip()) == canonical_ip(sa.ip()) && addr.port() == sa.port();
            sent_there.then(|| SocketAddr::new(canonical_ip(sa.ip()), sa.port()))
        }
        _ => None,
    }
}

/// Records a destination the program sent to (cheap when it repeats),
/// and the header datagrams to it travel with.
pub fn note_destination(ino: u64, dst: SocketAddr, name: Option<&str>, header: Option<Header>) {
    const MAX_RECENT: usize = 64;
    let mut table = lock();
    let Some(sock) = table.as_mut().and_then(|t| t.socks.get_mut(&ino)) else { return };
    sock.last_header = header;
    if sock.recent.last().is_some_and(|(a, n)| *a == dst && n.as_deref() == name) {
        return;
    }
    sock.recent.retain(|(a, n)| !(*a == dst && n.as_deref() == name));
    if sock.recent.len() >= MAX_RECENT {
        sock.recent.remove(0);
    }
    sock.recent.push((dst, name.map(Arc::from)));
}

/// `fd` was closed: the socket's association ends with its last fd.
/// Called by [`fd_table::forget`] after it cleared the kind.
pub fn forget(fd: c_int) {
    let ended = {
        let mut table = lock();
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
        assoc.close();
    }
}

/// `new` is a duplicate of `old` (`dup`, `dup2`, `fcntl(F_DUPFD)`).
pub fn dup(old: c_int, new: c_int) {
    let mut table = lock();
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
    lock().as_ref().map_or_else(Vec::new, |t| t.fds.keys().copied().collect())
}

/// Our control fds (so `close_range` can leave them open).
pub fn control_fds() -> Vec<c_int> {
    lock().as_ref().map_or_else(Vec::new, |t| t.socks.values().filter_map(|s| s.assoc.map(|a| a.ctrl)).collect())
}

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
    pub ctrl: c_int,
    pub ctrl_ino: u64,
    /// The socket's inode: a mismatch with the fd's means the fd was
    /// closed behind our back and reused.
    pub ino: u64,
}

impl Sock {
    /// The view of this socket (inode `ino`), if it has an association or
    /// talked to the DNS responder.
    fn view(&self, ino: u64) -> Option<View> {
        let (relay, ctrl, ctrl_ino) = match self.assoc {
            Some(a) => (a.relay, a.ctrl, a.ctrl_ino),
            None => (self.responder?, -1, 0),
        };
        Some(View { family: self.family, relay, responder: self.responder, peer: self.peer, ctrl, ctrl_ino, ino })
    }
}

/// Everything a send on a tracked socket needs, copied out in one lock.
pub struct ForSend {
    pub ino: u64,
    pub family: c_int,
    pub peer: Option<SocketAddr>,
    /// The association's view, and whether its control connection is due
    /// for a check (then the check is counted as done).
    pub live: Option<(View, bool)>,
    /// The header for the destination (the one given, else the peer), if
    /// the socket's last datagram went there too.
    pub header: Option<Header>,
}

/// [`ForSend`] for `fd` sending to `dst` (`None`: to its peer), checking
/// the control connection every `every_ms`; `None` if `fd` is not tracked.
/// The one lock of a send on the common path.
pub fn for_send(fd: c_int, dst: Option<SocketAddr>, every_ms: u64) -> Option<ForSend> {
    let now = coarse_ms();
    let mut table = lock();
    let t = table.as_mut()?;
    let ino = *t.fds.get(&fd)?;
    let sock = t.socks.get_mut(&ino)?;
    let live = sock.assoc.is_some().then(|| {
        let due = now.saturating_sub(sock.checked_ms) >= every_ms;
        if due {
            sock.checked_ms = now;
        }
        (sock.view(ino).expect("has an association"), due)
    });
    let header = match (dst.or(sock.peer), sock.recent.last()) {
        (Some(dst), Some((last, _))) if *last == dst => sock.last_header,
        _ => None,
    };
    Some(ForSend { ino, family: sock.family, peer: sock.peer, live, header })
}

/// Everything a receive on a tracked socket needs, copied out in one lock.
pub struct ForRecv {
    pub ino: u64,
    /// If it has an association or talked to the DNS responder: its view,
    /// and its last destination (for [`reported_source_by_last`]).
    pub live: Option<(View, Option<Recent>)>,
}

/// [`ForRecv`] for `fd`; `None` if it is not tracked.
pub fn for_recv(fd: c_int) -> Option<ForRecv> {
    let table = lock();
    let t = table.as_ref()?;
    let ino = *t.fds.get(&fd)?;
    let live = t.socks.get(&ino).and_then(|sock| Some((sock.view(ino)?, sock.recent.last().cloned())));
    Some(ForRecv { ino, live })
}

/// The live association of `fd` and whether its check is due, as in
/// [`for_send`] (for `connect`).
pub fn live(fd: c_int, every_ms: u64) -> Option<(View, bool)> {
    for_send(fd, None, every_ms)?.live
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The shortcut of the receive path never contradicts the whole list:
    /// every list of up to three destinations drawn from addresses that
    /// collide in every way (same address, its IPv4-mapped form, same port,
    /// a name in another case), against every source a relay can report.
    #[test]
    fn the_last_destination_answers_as_the_whole_list_would() {
        let ips: [IpAddr; 4] = [
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(198, 18, 0, 7).into(),
            Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        ];
        let names = [None, Some("x.test"), Some("X.Test"), Some("y.test")];
        let mut pool: Vec<Recent> = Vec::new();
        for ip in ips {
            for port in [53, 54] {
                for name in names {
                    pool.push((SocketAddr::new(ip, port), name.map(Arc::from)));
                }
            }
        }
        let mut sources: Vec<TargetAddr> = Vec::new();
        for ip in ips {
            for port in [53, 54] {
                sources.push(TargetAddr::Ip(SocketAddr::new(ip, port)));
            }
        }
        for name in ["x.test", "X.TEST", "y.test", "z.test"] {
            for port in [53, 54] {
                sources.push(TargetAddr::Domain(name.to_owned(), port));
            }
        }
        let (mut lists, mut decided) = (0, 0);
        let mut check = |recent: &[Recent]| {
            lists += 1;
            for src in &sources {
                if let Some(by_last) = reported_source_by_last(recent.last().unwrap(), src) {
                    decided += 1;
                    assert_eq!(Some(by_last), source_among(recent, src), "{recent:?} {src:?}");
                }
            }
        };
        for a in &pool {
            check(std::slice::from_ref(a));
            for b in &pool {
                check(&[a.clone(), b.clone()]);
                for c in &pool {
                    check(&[a.clone(), b.clone(), c.clone()]);
                }
            }
        }
        assert!(lists > 30_000 && decided > 10_000, "{lists} lists, {decided} decided by the last");
    }
}
