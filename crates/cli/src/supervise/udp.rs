//! UDP ASSOCIATE under the supervisor, with the shim's semantics: the
//! supervisor owns the association (the TCP control connection, UDP
//! ASSOCIATE through the first hop), one per program socket (by inode).
//!
//! **Unconnected sockets.** A `sendto`/`sendmsg`/`sendmmsg` to a proxied
//! destination is done by the supervisor on its duplicate of the program's
//! socket (`pidfd_getfd`: the same socket), with the RFC 1928 header in
//! front of the program's bytes, to the relay; the call is answered with
//! the payload's byte count. The first one binds the socket if it is not
//! (as the kernel would) and opens the association naming that address, on
//! a thread of its own (round trips to the proxy). Datagrams so leave from
//! the program's own socket and the relay answers to it. Every receive on
//! such a socket (`read`, `readv`, `preadv2`, `recvfrom`, `recvmsg`,
//! `recvmmsg`: all notified on the reserved fd range, where the program's
//! UDP sockets live, `reserved.rs`; the supervisor carries no socket used
//! through an fd below it) is done by the supervisor: it receives on its
//! duplicate, drops what is not from the relay (a bypassed source is
//! delivered as it is), strips the header and writes the payload, and the
//! real source and the lengths where the call has room for them, into the
//! program's memory (`process_vm_writev`), then answers with the length
//! (`recvmmsg`: one message), as `sent_dns.rs` does for musl's DNS
//! answers. With
//! nothing queued, a non-blocking call gets `EAGAIN`; a blocking one waits
//! on a thread of the supervisor (bounded by `SO_RCVTIMEO`, and by the
//! caller's life, checked every 200 ms).
//!
//! **Connected sockets.** After `connect` the program sends with `write`
//! or `send`, which the filter does not see (notifying them would cost
//! every TCP write a round trip). So a
//! `connect` to a proxied destination opens the association at once (its
//! errno is the connect's, as in the shim) for an adapter of two sockets of
//! the supervisor's: `inner` on loopback, to which the program's socket is
//! connected in the kernel (and which is connected back to it, so only it
//! is heard), and `outer`, connected to the relay (the kernel drops any
//! other sender). A pump thread wraps what comes in on `inner` for the
//! destination and unwraps what the relay sends, keeping only the
//! connected peer's datagrams (the kernel's rule for a connected socket).
//! The program's calls stay in the kernel (blocking, signals, `poll`: all
//! as usual; a `read` or `recv` is notified, on the range, and let through
//! at once); `getpeername` reports the destination, and a `recvfrom` or
//! `recvmsg` asking for the source gets the destination too.
//!
//! **Ends.** The association is kept per socket inode and holds no
//! reference to the program's socket; a sweep every second lists the UDP
//! sockets of the namespace (`sock_diag.rs`) and closes the association of
//! a socket that is gone (or, for an adapter, no longer connected to it).
//! A control connection the proxy ended is noticed on the next send, which
//! opens a new association; an adapter's pump ends with it (the program's
//! next send gets `ECONNREFUSED`).
//!
//! **Not covered.** Control messages of a proxied `sendmsg` are not sent; a
//! `sendmmsg` that holds a proxied message is sent by the supervisor
//! message by message.

use super::kernel::{self, Answer, Notif};
use super::sent_dns::{bound_addr, local_or_peer_addr};
use super::{sock_diag, Level, Supervisor};
use socksify_client::route;
use socksify_client::tcp::{connect_via_proxy, Libc};
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr, MAX_HEADER_LEN};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The associations of the program's sockets, by inode.
#[derive(Default)]
pub struct Table {
    assocs: Mutex<HashMap<u64, Arc<Slot>>>,
    adapters: Mutex<HashMap<u64, Arc<Adapter>>>,
    sweeper: std::sync::OnceLock<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An unconnected socket's association: `opening` makes one thread open
/// it while the others wait; `live` is read without waiting for that.
struct Slot {
    opening: Mutex<()>,
    live: Mutex<Option<Arc<Assoc>>>,
    /// When it was made: a sweep judges only what its socket list can show.
    born: Instant,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot { opening: Mutex::default(), live: Mutex::default(), born: Instant::now() }
    }
}

struct Assoc {
    ctrl: OwnedFd,
    relay: SocketAddr,
    /// The fake address each name sent to stands for (the header names
    /// it), so a reply naming it reports the address the program used.
    names: Mutex<HashMap<String, IpAddr>>,
}

/// How many names one association remembers.
const MAX_NAMES: usize = 1024;

/// Whether a control connection is still up: the server never sends on
/// it, so readable means closed.
fn alive(ctrl: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd { fd: ctrl.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, zero timeout.
    unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
}

impl Slot {
    fn current(&self) -> Option<Arc<Assoc>> {
        let mut live = lock(&self.live);
        match live.as_ref() {
            Some(a) if alive(&a.ctrl) => Some(a.clone()),
            Some(a) => {
                say!(Level::Info, "udp association via relay {} ended (control connection closed)", a.relay);
                *live = None;
                None
            }
            None => None,
        }
    }
}

/// What a received datagram is checked against.
#[derive(Clone)]
enum Source {
    Relay(Arc<Assoc>),
    Adapter(Arc<Adapter>),
}

impl Table {
    fn is_empty(&self) -> bool {
        lock(&self.assocs).is_empty() && lock(&self.adapters).is_empty()
    }

    /// Whether the socket carries an association (or is opening one): a
    /// receive the filter does not see would show the relay's datagrams.
    pub fn carries(&self, inode: u64) -> bool {
        lock(&self.assocs).contains_key(&inode) || self.adapter(inode).is_some()
    }

    fn slot(&self, inode: u64) -> Arc<Slot> {
        lock(&self.assocs).entry(inode).or_default().clone()
    }

    fn adapter(&self, inode: u64) -> Option<Arc<Adapter>> {
        lock(&self.adapters).get(&inode).filter(|a| !a.ended.load(Ordering::Relaxed)).cloned()
    }

    fn source(&self, inode: u64) -> Option<Source> {
        if let Some(a) = self.adapter(inode) {
            return Some(Source::Adapter(a));
        }
        let slot = lock(&self.assocs).get(&inode).cloned()?;
        let live = lock(&slot.live).clone();
        live.map(Source::Relay)
    }

    /// Starts the sweep (once): every second, the associations of sockets
    /// that are gone are closed.
    fn start_sweeper(&self, sv: &Arc<Supervisor>) {
        self.sweeper.get_or_init(|| {
            let sv = Arc::downgrade(sv);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(sv) = sv.upgrade() else { return };
                sweep(&sv);
            });
        });
    }
}

fn sweep(sv: &Supervisor) {
    if sv.udp.is_empty() {
        return;
    }
    let listed = Instant::now();
    let sockets = match sock_diag::udp_sockets() {
        Ok(s) => s,
        Err(e) => {
            say!(Level::Debug, "listing UDP sockets (sock_diag): {e}");
            return;
        }
    };
    lock(&sv.udp.assocs).retain(|inode, slot| {
        let keep = slot.born >= listed || sockets.contains_key(inode);
        if !keep {
            if let Some(a) = lock(&slot.live).as_ref() {
                say!(Level::Debug, "udp association via relay {}: the program's socket is closed, closing it", a.relay);
            }
        }
        keep
    });
    let mut gone = Vec::new();
    lock(&sv.udp.adapters).retain(|inode, ad| {
        let listed_ok = ad.born >= listed || sockets.get(inode) == Some(&Some(ad.inner_addr));
        let keep = !ad.ended.load(Ordering::Relaxed) && listed_ok;
        if !keep {
            ad.stop();
            gone.push(*inode);
        }
        keep
    });
    let mut peers = lock(&sv.peers);
    for inode in gone {
        peers.remove(&inode);
    }
}

/// EPERM for UDP to a proxied destination under `SOCKSIFY_UDP=block`.
pub fn blocked(dst: SocketAddr) -> Answer {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let level = if WARNED.swap(true, Ordering::Relaxed) { Level::Info } else { Level::Warn };
    say!(level, "udp to {dst} refused (EPERM): SOCKSIFY_UDP=block");
    Answer::Fail(libc::EPERM)
}

/// The target a datagram to `dst` names: a fake address as its name.
/// `None` for a fake address no name holds.
fn target_for(sv: &Supervisor, dst: SocketAddr) -> Option<TargetAddr> {
    if route::is_fake(&sv.config, dst.ip()) {
        return sv.fake.name_for(dst.ip()).and_then(|name| TargetAddr::domain(&name, dst.port()));
    }
    Some(TargetAddr::Ip(SocketAddr::new(canonical_ip(dst.ip()), dst.port())))
}

fn header(target: TargetAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEADER_LEN);
    UdpHeader::new(target).emit(&mut out);
    out
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A socket of ours, close-on-exec.
fn socket(domain: i32, ty: i32) -> Result<OwnedFd, i32> {
    // SAFETY: socket(2); the fd is ours.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn connect_to(fd: &OwnedFd, addr: SocketAddr, domain: i32) -> Result<(), i32> {
    let (raw, len) = socksify_client::sockaddr::encode(&addr, domain).ok_or(libc::EAFNOSUPPORT)?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { libc::connect(fd.as_raw_fd(), &raw as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(errno());
    }
    Ok(())
}

fn bind_to(fd: &OwnedFd, addr: SocketAddr, domain: i32) -> Result<SocketAddr, i32> {
    let (raw, len) = socksify_client::sockaddr::encode(&addr, domain).ok_or(libc::EAFNOSUPPORT)?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { libc::bind(fd.as_raw_fd(), &raw as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(errno());
    }
    local_or_peer_addr(fd, libc::getsockname).ok_or(libc::EBADF)
}

/// UDP ASSOCIATE through the first hop for datagrams from `local`: the
/// control connection and the relay; or the errno and why not.
fn associate(sv: &Supervisor, local: SocketAddr) -> Result<(OwnedFd, SocketAddr), (i32, String)> {
    if let Some(refused) = socksify_client::udp::unsupported(&sv.config) {
        return Err(refused);
    }
    let hop = &sv.config.chain[0];
    let Some(first) = sv.first_hop.first() else {
        return Err((libc::ENETUNREACH, format!("no address for the proxy {hop}")));
    };
    let proxy_v4 = canonical_ip(first.ip()).is_ipv4();
    let family = if first.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let ctrl = socket(family, libc::SOCK_STREAM).map_err(|e| (e, "creating the control socket".to_string()))?;
    let request = socksify_client::udp::request_for(local, proxy_v4);
    let (proxy, bound) = connect_via_proxy(&Libc, ctrl.as_raw_fd(), family, &sv.config, &sv.first_hop, Command::UdpAssociate, &request)
        .map_err(|e| (e.errno(), format!("UDP ASSOCIATE via {hop}: {e}")))?;
    let relay = socksify_client::udp::relay_addr(&bound, proxy).map_err(|why| (libc::ECONNREFUSED, format!("UDP ASSOCIATE via {hop}: {why}")))?;
    say!(Level::Info, "udp association for {local} via {hop}: relay {relay}");
    Ok((ctrl, relay))
}

/// The live association of the program's unconnected socket `sock`,
/// opened (the socket bound first, if it is not) when there is none.
fn ensure(sv: &Arc<Supervisor>, sock: &OwnedFd, domain: i32, inode: u64) -> Result<Arc<Assoc>, (i32, String)> {
    let slot = sv.udp.slot(inode);
    let _one = lock(&slot.opening);
    if let Some(a) = slot.current() {
        return Ok(a);
    }
    let local = bound_addr(sock, domain).map_err(|e| (e, format!("binding the socket: {}", std::io::Error::from_raw_os_error(e))))?;
    let (ctrl, relay) = associate(sv, local)?;
    if socksify_client::sockaddr::encode(&relay, domain).is_none() {
        return Err((libc::ENETUNREACH, format!("relay {relay} not reachable from an IPv4 socket")));
    }
    let a = Arc::new(Assoc { ctrl, relay, names: Mutex::default() });
    *lock(&slot.live) = Some(a.clone());
    sv.udp.start_sweeper(sv);
    Ok(a)
}

/// A datagram of the program (`payload`, already read) to proxied `dst`
/// on its UDP socket `sock`. `None`: answered by a thread.
pub fn send(sv: &Arc<Supervisor>, n: &Notif, sock: OwnedFd, domain: i32, dst: SocketAddr, flags: u64, payload: Vec<u8>) -> Option<Answer> {
    let Some(inode) = kernel::socket_inode(&sock) else { return Some(Answer::Fail(libc::EBADF)) };
    if let Some(ad) = sv.udp.adapter(inode) {
        return Some(ad.send_to(sv, dst, &payload));
    }
    let ready = lock(&sv.udp.assocs).get(&inode).cloned().and_then(|slot| slot.current());
    if let Some(a) = ready {
        return Some(send_wrapped(sv, &sock, domain, &a, dst, flags, &payload));
    }
    // Opening takes round trips to the proxy: on a thread of its own.
    let (sv, id) = (sv.clone(), n.id);
    super::workers::spawn(move || {
        let open = std::panic::AssertUnwindSafe(|| match ensure(&sv, &sock, domain, inode) {
            Ok(a) => send_wrapped(&sv, &sock, domain, &a, dst, flags, &payload),
            Err((errno, why)) => {
                say!(Level::Warn, "udp to {dst}: {why}");
                Answer::Fail(errno)
            }
        });
        let answer = std::panic::catch_unwind(open).unwrap_or_else(|_| {
            say!(Level::Error, "internal error (panic) sending udp to {dst}: the call fails with ENETUNREACH");
            Answer::Fail(libc::ENETUNREACH)
        });
        sv.listener.answer(id, answer);
    });
    None
}

/// Sends one datagram from the program's socket to the relay: the header
/// for `dst`, then the payload; the answer is the payload's byte count.
fn send_wrapped(sv: &Supervisor, sock: &OwnedFd, domain: i32, a: &Assoc, dst: SocketAddr, flags: u64, payload: &[u8]) -> Answer {
    let Some(target) = target_for(sv, dst) else {
        say!(Level::Warn, "udp to {dst}: a fake address that no name holds");
        return Answer::Fail(libc::EHOSTUNREACH);
    };
    if let TargetAddr::Domain(name, _) = &target {
        let mut names = lock(&a.names);
        if names.len() >= MAX_NAMES {
            names.clear();
        }
        names.insert(name.to_ascii_lowercase(), dst.ip());
    }
    let Some((relay, relay_len)) = socksify_client::sockaddr::encode(&a.relay, domain) else { return Answer::Fail(libc::ENETUNREACH) };
    let head = header(target);
    let mut iov = [
        libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
        libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() },
    ];
    // SAFETY: all-zero is a valid msghdr; the fields set point to live data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &relay as *const _ as *mut libc::c_void;
    msg.msg_namelen = relay_len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // Never wait in the supervisor: a full send buffer is EAGAIN.
    let passed = flags as i32 & (libc::MSG_CONFIRM | libc::MSG_NOSIGNAL | libc::MSG_DONTROUTE);
    // SAFETY: msg points to our header, the payload and the relay's address.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, passed | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Answer::Fail(errno());
    }
    say!(Level::Debug, "udp -> {dst} via relay {}: {} bytes", a.relay, payload.len());
    Answer::Return(n as i64 - head.len() as i64)
}

/// `sendmmsg` holding a proxied datagram: each message sent by the
/// supervisor (proxied ones through the association, the others as they
/// are), on a thread; the answer is the number sent, or the first errno.
/// `msgs`: the (address of the message's `msg_len`, destination, payload).
pub fn sendmmsg(sv: &Arc<Supervisor>, n: &Notif, sock: OwnedFd, domain: i32, msgs: Vec<(u64, Option<SocketAddr>, Vec<u8>)>, flags: u64) -> Option<Answer> {
    let (sv, id, pid) = (sv.clone(), n.id, n.pid);
    super::workers::spawn(move || {
        let all = std::panic::AssertUnwindSafe(|| {
            let inode = kernel::socket_inode(&sock).unwrap_or(0);
            let mut sent = 0i64;
            for (len_at, dst, payload) in &msgs {
                if !sv.listener.id_valid(id) {
                    return Answer::Fail(libc::EINTR);
                }
                let answer = match dst {
                    Some(dst) if !sv.udp_goes_direct(dst) => match sv.udp.adapter(inode) {
                        Some(ad) => ad.send_to(&sv, *dst, payload),
                        None => match ensure(&sv, &sock, domain, inode) {
                            Ok(a) => send_wrapped(&sv, &sock, domain, &a, *dst, flags, payload),
                            Err((errno, why)) => {
                                say!(Level::Warn, "udp to {dst}: {why}");
                                Answer::Fail(errno)
                            }
                        },
                    },
                    _ => send_plain(&sock, domain, *dst, flags, payload),
                };
                match answer {
                    Answer::Return(bytes) => {
                        kernel::write_memory(pid, *len_at, &(bytes as u32).to_ne_bytes());
                        sent += 1;
                    }
                    Answer::Fail(errno) if sent == 0 => return Answer::Fail(errno),
                    _ => break,
                }
            }
            Answer::Return(sent)
        });
        let answer = std::panic::catch_unwind(all).unwrap_or(Answer::Fail(libc::ENETUNREACH));
        sv.listener.answer(id, answer);
    });
    None
}

/// A datagram that goes where the program sent it (bypassed, or to the
/// socket's own peer), sent by us on its socket.
fn send_plain(sock: &OwnedFd, domain: i32, dst: Option<SocketAddr>, flags: u64, payload: &[u8]) -> Answer {
    let encoded = dst.and_then(|d| socksify_client::sockaddr::encode(&d, domain));
    let (ptr, len) = match &encoded {
        Some((raw, len)) => (raw as *const _ as *const libc::sockaddr, *len),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: payload and the address (or none) are ours, valid for their lengths.
    let n = unsafe { libc::sendto(sock.as_raw_fd(), payload.as_ptr() as *const libc::c_void, payload.len(), flags as i32 | libc::MSG_DONTWAIT, ptr, len) };
    if n < 0 {
        Answer::Fail(errno())
    } else {
        Answer::Return(n as i64)
    }
}

// ---- Connected sockets: the adapter ----

struct Adapter {
    /// The destination the program connected to.
    dst: Mutex<SocketAddr>,
    /// Ours, on loopback; the program's socket is connected to it.
    inner: OwnedFd,
    inner_addr: SocketAddr,
    /// Ours, connected to the relay.
    outer: OwnedFd,
    ctrl: OwnedFd,
    relay: SocketAddr,
    /// An eventfd that ends the pump.
    stop: OwnedFd,
    ended: AtomicBool,
    born: Instant,
}

impl Adapter {
    fn stop(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) of 8 bytes to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr() as *const libc::c_void, one.len()) };
    }

    /// A datagram to `dst` sent through this socket's association.
    fn send_to(&self, sv: &Supervisor, dst: SocketAddr, payload: &[u8]) -> Answer {
        let Some(target) = target_for(sv, dst) else { return Answer::Fail(libc::EHOSTUNREACH) };
        let mut datagram = header(target);
        datagram.extend_from_slice(payload);
        // SAFETY: datagram is readable for its length.
        let n = unsafe { libc::send(self.outer.as_raw_fd(), datagram.as_ptr() as *const libc::c_void, datagram.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Answer::Fail(errno());
        }
        Answer::Return(payload.len() as i64)
    }

    /// Whether a reply naming `from` is from the connected destination. A
    /// fake destination stands for a name: the proxy may report the
    /// address it resolved, so only the port can be checked then.
    fn is_from_peer(&self, sv: &Supervisor, from: &TargetAddr) -> bool {
        let dst = *lock(&self.dst);
        match from {
            TargetAddr::Ip(sa) => {
                (canonical_ip(sa.ip()) == canonical_ip(dst.ip()) && sa.port() == dst.port())
                    || (route::is_fake(&sv.config, dst.ip()) && sa.port() == dst.port())
            }
            TargetAddr::Domain(name, port) => {
                *port == dst.port() && sv.fake.name_for(dst.ip()).is_some_and(|n| n.eq_ignore_ascii_case(name))
            }
        }
    }
}

/// A `connect` of the program's UDP socket `sock` to proxied `dst`.
/// `None`: answered by a thread.
pub fn connect(sv: &Arc<Supervisor>, n: &Notif, sock: OwnedFd, domain: i32, dst: SocketAddr) -> Option<Answer> {
    let Some(inode) = kernel::socket_inode(&sock) else { return Some(Answer::Fail(libc::EBADF)) };
    if target_for(sv, dst).is_none() {
        say!(Level::Warn, "udp connect to {dst} refused: a fake address no name holds");
        return Some(Answer::Fail(libc::EHOSTUNREACH));
    }
    if let Some(ad) = sv.udp.adapter(inode) {
        // Connected again, to another proxied destination: same association.
        *lock(&ad.dst) = dst;
        lock(&sv.peers).insert(inode, dst);
        return Some(Answer::Return(0));
    }
    let (sv, id) = (sv.clone(), n.id);
    super::workers::spawn(move || {
        let open = std::panic::AssertUnwindSafe(|| match open_adapter(&sv, &sock, domain, dst) {
            Ok(ad) => {
                let ad = Arc::new(ad);
                if let Some(old) = lock(&sv.udp.adapters).insert(inode, ad.clone()) {
                    old.stop();
                }
                lock(&sv.peers).insert(inode, dst);
                let (sv2, ad2) = (sv.clone(), ad);
                std::thread::spawn(move || pump(&sv2, &ad2));
                sv.udp.start_sweeper(&sv);
                say!(Level::Info, "udp socket connected to {dst} through the association's relay");
                Answer::Return(0)
            }
            Err((errno, why)) => {
                say!(Level::Warn, "udp connect to {dst}: {why}");
                Answer::Fail(errno)
            }
        });
        let answer = std::panic::catch_unwind(open).unwrap_or(Answer::Fail(libc::ENETUNREACH));
        sv.listener.answer(id, answer);
    });
    None
}

/// Whether an IPv6 socket takes IPv6 only.
fn v6_only(sock: &OwnedFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: IPV6_V6ONLY reads one int into value.
    let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &mut value as *mut _ as *mut libc::c_void, &mut len) };
    rc == 0 && value != 0
}

fn open_adapter(sv: &Supervisor, sock: &OwnedFd, domain: i32, dst: SocketAddr) -> Result<Adapter, (i32, String)> {
    let step = |what: &'static str| move |e: i32| (e, format!("{what}: {}", std::io::Error::from_raw_os_error(e)));
    // The outer socket: the association names its address.
    let hop_v4 = sv.first_hop.first().is_none_or(|a| a.is_ipv4());
    let (outer_domain, any) = if hop_v4 { (libc::AF_INET, IpAddr::V4(Ipv4Addr::UNSPECIFIED)) } else { (libc::AF_INET6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)) };
    let outer = socket(outer_domain, libc::SOCK_DGRAM).map_err(step("creating the relay socket"))?;
    let outer_local = bind_to(&outer, SocketAddr::new(any, 0), outer_domain).map_err(step("binding the relay socket"))?;
    let (ctrl, relay) = associate(sv, outer_local)?;
    connect_to(&outer, relay, outer_domain).map_err(step("connecting to the relay"))?;
    // The inner socket, on loopback where the program's socket can reach it.
    let (inner_domain, lo) = if domain == libc::AF_INET6 && v6_only(sock) {
        (libc::AF_INET6, IpAddr::V6(Ipv6Addr::LOCALHOST))
    } else {
        (libc::AF_INET, IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    let inner = socket(inner_domain, libc::SOCK_DGRAM).map_err(step("creating the loopback socket"))?;
    let inner_addr = bind_to(&inner, SocketAddr::new(lo, 0), inner_domain).map_err(step("binding the loopback socket"))?;
    let inner_addr = SocketAddr::new(canonical_ip(inner_addr.ip()), inner_addr.port());
    connect_to(sock, inner_addr, domain).map_err(step("connecting the socket"))?;
    let program = local_or_peer_addr(sock, libc::getsockname).ok_or((libc::EBADF, "reading the socket's address".to_string()))?;
    connect_to(&inner, SocketAddr::new(canonical_ip(program.ip()), program.port()), inner_domain).map_err(step("connecting the loopback socket"))?;
    // SAFETY: eventfd(2); the fd is ours.
    let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if stop < 0 {
        return Err(step("eventfd")(errno()));
    }
    // SAFETY: a fresh fd we own.
    let stop = unsafe { OwnedFd::from_raw_fd(stop) };
    Ok(Adapter { dst: Mutex::new(dst), inner, inner_addr, outer, ctrl, relay, stop, ended: AtomicBool::new(false), born: Instant::now() })
}

/// Carries an adapter's datagrams until its association ends or the
/// sweep stops it.
fn pump(sv: &Supervisor, ad: &Adapter) {
    let mut buf = vec![0u8; 65536 + MAX_HEADER_LEN];
    let why = loop {
        let mut fds = [ad.inner.as_raw_fd(), ad.outer.as_raw_fd(), ad.ctrl.as_raw_fd(), ad.stop.as_raw_fd()]
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        // SAFETY: four valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break "poll failed";
        }
        if fds[3].revents != 0 {
            break "the program's socket is closed or connected elsewhere";
        }
        if fds[2].revents != 0 {
            break "the proxy closed the control connection";
        }
        if fds[0].revents != 0 {
            // From the program: out to the relay.
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(ad.inner.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                let dst = *lock(&ad.dst);
                ad.send_to(sv, dst, &buf[..n as usize]);
            }
        }
        if fds[1].revents != 0 {
            // From the relay: in to the program, from its peer only.
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(ad.outer.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                let data = &buf[..n as usize];
                match UdpHeader::parse(data) {
                    Ok((h, offset)) if h.frag == 0 && ad.is_from_peer(sv, &h.dst) => {
                        let payload = &data[offset..];
                        // SAFETY: payload is readable for its length.
                        unsafe { libc::send(ad.inner.as_raw_fd(), payload.as_ptr() as *const libc::c_void, payload.len(), libc::MSG_DONTWAIT) };
                    }
                    _ => say!(Level::Debug, "udp datagram from relay {} dropped (malformed, a fragment, or not from the peer)", ad.relay),
                }
            }
        }
    };
    ad.ended.store(true, Ordering::Relaxed);
    let dst = *lock(&ad.dst);
    let level = if why.starts_with("the proxy") { Level::Warn } else { Level::Debug };
    say!(level, "udp association for the socket connected to {dst} ended: {why}");
}

// ---- Receiving ----

/// Where the program wants a datagram.
enum Into {
    /// `recvfrom(fd, buf, len, flags, addr, addrlen)` (`addr` 0: none
    /// asked for), and `read(fd, buf, len)`.
    From { buf: u64, len: u64, addr: u64, addr_len: u64 },
    /// `recvmsg(fd, msg, flags)`: the `msghdr`'s address and its iovecs;
    /// for `recvmmsg`, the first message, whose length goes to `msg_len`.
    Msg { at: u64, hdr: libc::msghdr, iov: Vec<(u64, u64)>, mmsg: bool },
    /// `readv`, `preadv2` at the current offset: the iovecs.
    Vec { iov: Vec<(u64, u64)> },
}

// SAFETY: the msghdr's pointers are the program's addresses, never dereferenced here.
unsafe impl Send for Into {}

struct Receive {
    sock: OwnedFd,
    domain: i32,
    into: Into,
    flags: u64,
    source: Source,
    pid: u32,
    id: u64,
}

/// Flags whose meaning the supervisor's receive keeps (`MSG_ERRQUEUE` and
/// `MSG_OOB` leave the call to the kernel; others are ignored).
const MIMICKED: u64 = (libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_CMSG_CLOEXEC | libc::MSG_NOSIGNAL) as u64;

/// A receive on a socket with an association (any of them on the
/// reserved range: `recvfrom`, `recvmsg`, `recvmmsg`, `read`, `readv`,
/// `preadv2`): done here, so the relay's header never reaches the program.
/// On an adapter's socket (connected) only a receive asking for the source
/// is done here; the others find no header in the kernel. `None`: not such
/// a socket, not ours to answer; `Some(None)`: answered by a thread (it
/// waits for a datagram).
pub fn on_recv(sv: &Arc<Supervisor>, n: &Notif) -> Option<Option<Answer>> {
    if sv.udp.is_empty() {
        return None;
    }
    let [fd, a1, a2, a3, a4, a5] = n.data.args;
    let nr = i64::from(n.data.nr);
    let flags = match nr {
        libc::SYS_recvfrom | libc::SYS_recvmmsg => a3,
        libc::SYS_recvmsg => a2,
        // preadv2 at an offset: ESPIPE from the kernel.
        libc::SYS_preadv2 if a3 as i64 != -1 => return None, // on 64 bits the low half is the offset
        libc::SYS_preadv2 if a5 & libc::RWF_NOWAIT as u64 != 0 => libc::MSG_DONTWAIT as u64,
        _ => 0, // read, readv, preadv2
    };
    // The error queue and out-of-band data hold nothing of the relay's:
    // the kernel's. Any other flag we do not mimic is ignored (the kernel
    // would run the call with it and hand over the relay's datagram).
    if flags & (libc::MSG_ERRQUEUE | libc::MSG_OOB) as u64 != 0 {
        return None;
    }
    let flags = flags & MIMICKED;
    let pidfd = kernel::pidfd_of_thread(n.pid).ok()?;
    let sock = kernel::take_fd(&pidfd, fd).ok()?;
    let source = sv.udp.source(kernel::socket_inode(&sock)?)?;
    let asks_source = match nr {
        libc::SYS_recvfrom => a4 != 0,
        libc::SYS_recvmsg | libc::SYS_recvmmsg => true, // the msghdr may name one
        _ => false,
    };
    if matches!(source, Source::Adapter(_)) && !asks_source {
        return None;
    }
    let domain = kernel::socket_int_option(&sock, libc::SO_DOMAIN)?;
    let fault = |answer: Answer| if answer == Answer::Continue { Answer::Fail(libc::EFAULT) } else { answer };
    let into = match nr {
        libc::SYS_recvmsg | libc::SYS_recvmmsg => {
            let hdr = match kernel::read_memory_or_answer(n.pid, a1, std::mem::size_of::<libc::msghdr>()) {
                // SAFETY: the bytes hold one msghdr (an mmsghdr starts with one); read_unaligned copes with the Vec's alignment.
                Ok(bytes) => unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const libc::msghdr) },
                Err(answer) => return Some(Some(fault(answer))),
            };
            if nr == libc::SYS_recvmmsg && a2 == 0 {
                return Some(Some(Answer::Return(0)));
            }
            let iov = match read_iovecs(n.pid, hdr.msg_iov as u64, hdr.msg_iovlen) {
                Ok(iov) => iov,
                Err(answer) => return Some(Some(answer)),
            };
            Into::Msg { at: a1, hdr, iov, mmsg: nr == libc::SYS_recvmmsg }
        }
        libc::SYS_recvfrom => Into::From { buf: a1, len: a2, addr: a4, addr_len: a5 },
        libc::SYS_readv | libc::SYS_preadv2 => match read_iovecs(n.pid, a1, a2 as usize) {
            Ok(iov) => Into::Vec { iov },
            Err(answer) => return Some(Some(answer)),
        },
        _ => Into::From { buf: a1, len: a2, addr: 0, addr_len: 0 }, // read
    };
    let r = Receive { sock, domain, into, flags, source, pid: n.pid, id: n.id };
    if !sv.listener.id_valid(n.id) {
        return Some(None);
    }
    if let Some(answer) = r.attempt(sv) {
        return Some(Some(answer));
    }
    if r.nonblocking() {
        return Some(Some(Answer::Fail(libc::EAGAIN)));
    }
    let (sv, id) = (sv.clone(), n.id);
    std::thread::spawn(move || {
        let wait = std::panic::AssertUnwindSafe(|| r.wait(&sv));
        match std::panic::catch_unwind(wait) {
            Ok(Some(answer)) => sv.listener.answer(id, answer),
            Ok(None) => {}
            Err(_) => sv.listener.answer(id, Answer::Fail(libc::EIO)),
        }
    });
    Some(None)
}

/// `splice` from a socket, and `io_submit` of an AIO read of one: receives
/// the supervisor cannot do in the program's place. Refused (EINVAL) on a
/// socket with an unconnected association, whose datagrams hold the
/// relay's header; anything else is the kernel's.
pub fn on_other_read(sv: &Supervisor, n: &Notif) -> Answer {
    if sv.udp.is_empty() {
        return Answer::Continue;
    }
    let fds: Vec<u64> = if i64::from(n.data.nr) == libc::SYS_splice { vec![n.data.args[0]] } else { aio_read_fds(n) };
    let Ok(pidfd) = kernel::pidfd_of_thread(n.pid) else { return Answer::Continue };
    for fd in fds.into_iter().filter(|fd| sv.reserved.in_range(*fd)) {
        let Some(inode) = kernel::take_fd(&pidfd, fd).ok().and_then(|sock| kernel::socket_inode(&sock)) else { continue };
        if matches!(sv.udp.source(inode), Some(Source::Relay(_))) {
            say!(Level::Warn, "splice or AIO read of UDP socket fd {fd}, which carries a proxied association: refused (EINVAL)");
            return Answer::Fail(libc::EINVAL);
        }
    }
    Answer::Continue
}

/// The fds that `io_submit(ctx, nr, iocbpp)`'s read commands read from.
fn aio_read_fds(n: &Notif) -> Vec<u64> {
    const IOCB_CMD_PREAD: u16 = 0;
    const IOCB_CMD_PREADV: u16 = 7;
    let count = (n.data.args[1] as i64).clamp(0, 1024) as usize;
    let Ok(ptrs) = kernel::read_memory(n.pid, n.data.args[2], count * 8) else { return Vec::new() };
    ptrs.chunks_exact(8)
        .filter_map(|p| {
            // struct iocb: aio_lio_opcode (u16) at 16, aio_fildes (u32) at 20.
            let cb = kernel::read_memory(n.pid, u64::from_ne_bytes(p.try_into().ok()?), 24).ok()?;
            let op = u16::from_ne_bytes([cb[16], cb[17]]);
            let fd = u32::from_ne_bytes([cb[20], cb[21], cb[22], cb[23]]);
            matches!(op, IOCB_CMD_PREAD | IOCB_CMD_PREADV).then_some(u64::from(fd))
        })
        .collect()
}

/// The (address, length) of the `count` iovecs at `ptr`, read from the program.
fn read_iovecs(pid: u32, ptr: u64, count: usize) -> Result<Vec<(u64, u64)>, Answer> {
    let (count, size) = (count.min(1024), std::mem::size_of::<libc::iovec>());
    if count == 0 {
        return Ok(Vec::new());
    }
    let bytes = kernel::read_memory_or_answer(pid, ptr, count * size).map_err(|a| if a == Answer::Continue { Answer::Fail(libc::EFAULT) } else { a })?;
    Ok((0..count)
        .map(|i| {
            // SAFETY: bytes holds `count` iovecs.
            let iov = unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(i * size) as *const libc::iovec) };
            (iov.iov_base as u64, iov.iov_len as u64)
        })
        .collect())
}

/// Writes `payload` across the iovecs; how many bytes went, and whether all writes did.
fn scatter(pid: u32, iov: &[(u64, u64)], payload: &[u8]) -> (usize, bool) {
    let (mut copied, mut ok) = (0, true);
    for &(base, len) in iov {
        let take = (len as usize).min(payload.len() - copied);
        if take == 0 {
            continue;
        }
        ok &= kernel::write_memory(pid, base, &payload[copied..copied + take]);
        copied += take;
    }
    (copied, ok)
}

impl Receive {
    fn nonblocking(&self) -> bool {
        // SAFETY: F_GETFL takes no argument; the file's flags are the program's.
        let fl = unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_GETFL) };
        self.flags & libc::MSG_DONTWAIT as u64 != 0 || (fl >= 0 && fl & libc::O_NONBLOCK != 0)
    }

    /// The socket's `SO_RCVTIMEO`, if set.
    fn timeout(&self) -> Option<Duration> {
        // SAFETY: all-zero is a valid timeval.
        let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: SO_RCVTIMEO writes one timeval.
        let rc = unsafe { libc::getsockopt(self.sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &mut tv as *mut _ as *mut libc::c_void, &mut len) };
        (rc == 0 && (tv.tv_sec > 0 || tv.tv_usec > 0)).then(|| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
    }

    /// Waits (on a thread) for a datagram the program may have; `None`
    /// when its caller went away.
    fn wait(&self, sv: &Supervisor) -> Option<Answer> {
        let deadline = self.timeout().map(|t| Instant::now() + t);
        loop {
            if !sv.listener.id_valid(self.id) {
                return None;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Some(Answer::Fail(libc::EAGAIN));
            }
            // Checking every 200 ms that the caller still waits.
            let ms = left.map_or(200, |l| l.as_millis().clamp(1, 200) as i32);
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
                if let Some(answer) = self.attempt(sv) {
                    return Some(answer);
                }
            }
        }
    }

    /// One datagram for the program, if one is queued: strays dropped
    /// (taken off the queue) until one is for it; `None` when none is.
    fn attempt(&self, sv: &Supervisor) -> Option<Answer> {
        let peek = self.flags & libc::MSG_PEEK as u64 != 0;
        let mut buf = vec![0u8; 65536 + MAX_HEADER_LEN];
        loop {
            let (size, from) = match recv_now(&self.sock, &mut buf, peek) {
                Ok(got) => got,
                Err(libc::EAGAIN) => return None,
                Err(e) => return Some(Answer::Fail(e)),
            };
            let data = &buf[..size.min(buf.len())];
            match self.translate(sv, from, data) {
                Some((src, offset)) => return Some(self.deliver(&data[offset..], size - offset, src)),
                None => {
                    say!(Level::Debug, "udp datagram from {from:?} dropped: not from the relay (or malformed)");
                    if peek {
                        let _ = recv_now(&self.sock, &mut buf, false);
                    }
                }
            }
        }
    }

    /// The source to report and where the payload starts; `None`: drop.
    fn translate(&self, sv: &Supervisor, from: Option<SocketAddr>, data: &[u8]) -> Option<(SocketAddr, usize)> {
        let from = from.map(|f| SocketAddr::new(canonical_ip(f.ip()), f.port()))?;
        match &self.source {
            Source::Adapter(ad) => (from == ad.inner_addr).then(|| (*lock(&ad.dst), 0)),
            Source::Relay(a) if from == a.relay => {
                let (h, offset) = UdpHeader::parse(data).ok()?;
                if h.frag != 0 {
                    return None;
                }
                let src = match h.dst {
                    TargetAddr::Ip(sa) => SocketAddr::new(canonical_ip(sa.ip()), sa.port()),
                    TargetAddr::Domain(name, port) => SocketAddr::new(*lock(&a.names).get(&name.to_ascii_lowercase())?, port),
                };
                Some((src, offset))
            }
            // A source the program may talk to directly.
            Source::Relay(_) => sv.goes_direct(&from).then_some((from, 0)),
        }
    }

    /// Writes the payload (`full` bytes long, cut to the program's room),
    /// the source and the lengths into the program's memory, as the kernel
    /// would; the call's return value.
    fn deliver(&self, payload: &[u8], full: usize, src: SocketAddr) -> Answer {
        let Some((raw, addr_len)) = socksify_client::sockaddr::encode(&src, self.domain) else { return Answer::Fail(libc::EAFNOSUPPORT) };
        // SAFETY: raw holds `addr_len` initialized bytes of address.
        let addr = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, addr_len as usize) };
        let pid = self.pid;
        let (copied, ok) = match &self.into {
            Into::From { buf, len, addr: addr_ptr, addr_len: len_ptr } => {
                let copied = payload.len().min(*len as usize);
                let mut ok = kernel::write_memory(pid, *buf, &payload[..copied]);
                if *addr_ptr != 0 && *len_ptr != 0 {
                    let room = kernel::read_memory(pid, *len_ptr, 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).unwrap_or(0);
                    ok &= kernel::write_memory(pid, *addr_ptr, &addr[..room.min(addr.len())]);
                    ok &= kernel::write_memory(pid, *len_ptr, &addr_len.to_ne_bytes());
                }
                (copied, ok)
            }
            Into::Vec { iov } => scatter(pid, iov, payload),
            Into::Msg { at, hdr, iov, mmsg } => {
                let (copied, mut ok) = scatter(pid, iov, payload);
                let name_len = if hdr.msg_name.is_null() {
                    0
                } else {
                    let room = hdr.msg_namelen as usize;
                    ok &= kernel::write_memory(pid, hdr.msg_name as u64, &addr[..room.min(addr.len())]);
                    addr_len
                };
                let truncated = if copied < full { libc::MSG_TRUNC } else { 0 };
                ok &= kernel::write_memory(pid, at + std::mem::offset_of!(libc::msghdr, msg_namelen) as u64, &name_len.to_ne_bytes());
                // No control messages: none of the relay's are the program's.
                ok &= kernel::write_memory(pid, at + std::mem::offset_of!(libc::msghdr, msg_controllen) as u64, &0usize.to_ne_bytes());
                ok &= kernel::write_memory(pid, at + std::mem::offset_of!(libc::msghdr, msg_flags) as u64, &truncated.to_ne_bytes());
                if *mmsg {
                    let len = copied as u32;
                    ok &= kernel::write_memory(pid, at + std::mem::offset_of!(libc::mmsghdr, msg_len) as u64, &len.to_ne_bytes());
                }
                (copied, ok)
            }
        };
        if !ok {
            return Answer::Fail(libc::EFAULT);
        }
        say!(Level::Debug, "udp <- {src}: {full} bytes");
        if matches!(self.into, Into::Msg { mmsg: true, .. }) {
            return Answer::Return(1); // one message of the vector
        }
        Answer::Return(if self.flags & libc::MSG_TRUNC as u64 != 0 { full } else { copied } as i64)
    }
}

/// One datagram off `sock` without waiting (peeked or taken): its full
/// length and source; the errno when none.
fn recv_now(sock: &OwnedFd, buf: &mut [u8], peek: bool) -> Result<(usize, Option<SocketAddr>), i32> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut raw: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: buf and raw are writable for the lengths given.
    let n = unsafe {
        libc::recvfrom(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags, &mut raw as *mut _ as *mut libc::sockaddr, &mut len)
    };
    if n < 0 {
        let e = errno();
        return Err(if e == libc::EWOULDBLOCK { libc::EAGAIN } else { e });
    }
    // SAFETY: the kernel wrote len bytes of address.
    let from = unsafe { socksify_client::sockaddr::read(&raw as *const _ as *const libc::sockaddr, len) };
    Ok((n as usize, from))
}
