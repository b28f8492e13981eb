//! UDP ASSOCIATE (RFC 1928 section 7).
//!
//! Promise: one relay socket per association, bound on the IP the client
//! reached us at (the reply's BND.ADDR). From the client side only its own
//! address is accepted: the port the request names, on the control
//! connection's IP (the request may name that IP, leave it 0, or give a
//! name, which PySocks sends as "0"). A request that names port 0 or another
//! IP is refused (`not allowed`): the server could only guess the client's
//! port from the first datagram, and a stranger on the same IP could send
//! that one first. From the outside only datagrams from an address and port
//! the client has sent to in this association are relayed back (address-
//! and port-dependent filtering, like a NAT); the rules (and, beyond
//! loopback, the guard on this host's addresses) judge them too. Client
//! datagrams with FRAG≠0, a malformed header or a denied destination are
//! dropped. Payloads go to destinations (IPv4, IPv6 or a name, `--map`
//! first) from a socket bound to `--bind-out` for the family; answers come
//! back wrapped in the RFC header carrying the sender's address. The
//! association ends when the control TCP connection closes, or when no
//! datagram was relayed either way for `--udp-idle-timeout-ms` (then we
//! close the control connection); one log line then counts datagrams and
//! payload bytes each way.

use crate::cli::Config;
use crate::log::reply_name;
use crate::client_conn::{reply5, ClientConn, Session};
use crate::{outbound, rules};
use socket2::{SockAddr, Type};
use socksify_proto::wire::socks5::ReplyCode;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr, MAX_HEADER_LEN};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Room for the largest UDP payload plus the largest header.
const DATAGRAM_MAX: usize = 65536 + MAX_HEADER_LEN;
/// Datagrams handled per socket per wake-up (one `recvmmsg`).
const BATCH: usize = 32;
/// Names resolved per association before the cache is flushed.
const NAME_CACHE_MAX: usize = 256;
/// Peers remembered per association before the set is flushed (the client's
/// next datagram to a peer lets its answers in again).
const PEERS_MAX: usize = 4096;

#[derive(Default)]
struct Counters {
    datagrams_out: u64,
    datagrams_in: u64,
    bytes_out: u64,
    bytes_in: u64,
    dropped: u64,
}

/// The state of one association.
struct Association<'a> {
    cfg: &'a Config,
    relay: UdpSocket,
    /// The only source accepted on the relay socket.
    client: SocketAddr,
    /// Destinations the client has sent to: the only sources let back in.
    peers: HashSet<SocketAddr>,
    out4: Option<UdpSocket>,
    out6: Option<UdpSocket>,
    names: HashMap<String, Vec<SocketAddr>>,
    n: Counters,
}

pub fn serve(sess: &Session, mut conn: ClientConn, dst: TargetAddr) {
    let line = sess.log("udp-associate").kv("dst", &dst);
    let client = match expected_client(&dst, sess.client) {
        Ok(c) => c,
        Err(why) => {
            let _ = conn.send(&reply5(ReplyCode::NotAllowed, None));
            return sess.finish(line.kv("reply", "not-allowed").kv("error", why));
        }
    };
    let local_ip = match conn.stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => {
            let _ = conn.send(&reply5(ReplyCode::GeneralFailure, None));
            return sess.finish(line.kv("reply", "general-failure").kv("error", e));
        }
    };
    let relay = match UdpSocket::bind(SocketAddr::new(local_ip, 0)) {
        Ok(s) => s,
        Err(e) => {
            let code = outbound::reply_for(&e);
            let _ = conn.send(&reply5(code, None));
            return sess.finish(line.kv("reply", reply_name(code)).kv("error", e));
        }
    };
    let relay_addr = relay.local_addr().ok();
    if let Err(e) = conn.send(&reply5(ReplyCode::Succeeded, relay_addr)) {
        return sess.finish(line.kv("reply", "succeeded").kv("error", e));
    }
    conn.end_handshake();
    let mut assoc = Association {
        cfg: &sess.cfg,
        relay,
        client,
        peers: HashSet::new(),
        out4: None,
        out6: None,
        names: HashMap::new(),
        n: Counters::default(),
    };
    let end = assoc.run(&conn.stream);
    let n = &assoc.n;
    let mut line = line
        .kv("reply", "succeeded")
        .kv("datagrams_out", n.datagrams_out)
        .kv("datagrams_in", n.datagrams_in)
        .kv("bytes_out", n.bytes_out)
        .kv("bytes_in", n.bytes_in)
        .kv("ms", sess.ms())
        .kv("relay", relay_addr.map_or("-".into(), |a| a.to_string()))
        .kv("dropped", n.dropped);
    if let Some(user) = &sess.user {
        line = line.kv("user", user);
    }
    match end {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => line = line.kv("end", "idle-timeout"),
        Err(e) => line = line.kv("error", e),
        Ok(()) => {}
    }
    line.emit(sess.cfg.quiet);
}

/// The address the client's datagrams must come from: the port its request
/// names, on the control connection's IP (RFC 1928 section 7). The request
/// may leave the IP 0 (a client that does not know it, or is behind NAT)
/// or send a name in its place (PySocks sends "0"); it must name the port,
/// and no other IP than the one it speaks from.
fn expected_client(dst: &TargetAddr, control_peer: SocketAddr) -> Result<SocketAddr, String> {
    let peer_ip = canonical_ip(control_peer.ip());
    let (ip, port) = match dst {
        TargetAddr::Ip(named) => (canonical_ip(named.ip()), named.port()),
        TargetAddr::Domain(_, port) => (peer_ip, *port),
    };
    if port == 0 {
        return Err(
            "UDP ASSOCIATE must name the port the client sends from (port 0 would let the first datagram from its IP take it)".into()
        );
    }
    if !ip.is_unspecified() && ip != peer_ip {
        return Err(format!("UDP ASSOCIATE names {ip} but the client connects from {peer_ip}"));
    }
    Ok(SocketAddr::new(peer_ip, port))
}

impl Association<'_> {
    /// Polls the control connection, the relay socket and the outward
    /// sockets until the control connection closes, or until no datagram
    /// was relayed either way for `--udp-idle-timeout-ms`.
    fn run(&mut self, control: &std::net::TcpStream) -> io::Result<()> {
        control.set_nonblocking(true)?;
        self.relay.set_nonblocking(true)?;
        let mut io = Batch::new();
        let mut relayed = 0;
        let mut last = Instant::now();
        loop {
            let wait_ms = match self.cfg.udp_idle_timeout {
                None => -1,
                Some(idle) => {
                    let left = (last + idle).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                    }
                    // Round up, so the wait never ends before the deadline.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
                }
            };
            // At most four fds: no allocation per wake-up.
            let mut fds = [pollfd(control.as_raw_fd()), pollfd(self.relay.as_raw_fd()), pollfd(-1), pollfd(-1)];
            let mut nfds = 2;
            for s in [&self.out4, &self.out6].into_iter().flatten() {
                fds[nfds] = pollfd(s.as_raw_fd());
                nfds += 1;
            }
            // SAFETY: fds is a live array of at least nfds initialised pollfd structs.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds as libc::nfds_t, wait_ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Datagrams first: what arrived before the client closed the
            // control connection is still relayed (and counted).
            if fds[1].revents != 0 {
                self.relay_from_client(&mut io);
            }
            for pfd in &fds[2..nfds] {
                if pfd.revents != 0 {
                    self.relay_to_client(pfd.fd, &mut io);
                }
            }
            if fds[0].revents != 0 && control_closed(control) {
                return Ok(());
            }
            // Only datagrams actually relayed keep the association alive.
            if self.n.datagrams_out + self.n.datagrams_in != relayed {
                relayed = self.n.datagrams_out + self.n.datagrams_in;
                last = Instant::now();
            }
        }
    }

    /// Drains the relay socket: client datagrams to their destinations.
    /// One `recvmmsg` takes what is queued (a bounded batch, so a flood on
    /// one socket cannot starve the others); datagrams to IP addresses
    /// leave in `sendmmsg` batches per outward socket.
    fn relay_from_client(&mut self, io: &mut Batch) {
        let n = io.recv(self.relay.as_raw_fd(), 0);
        io.out.clear();
        for i in 0..n {
            let Some(src) = io.source(i) else {
                self.n.dropped += 1;
                continue;
            };
            if src != self.client {
                self.n.dropped += 1;
                continue;
            }
            // Names go one datagram at a time (in order with what is queued).
            let fast = match UdpHeader::parse(io.datagram(i)) {
                Ok((UdpHeader { frag: 0, dst: TargetAddr::Ip(sa) }, offset)) => Some((sa, offset)),
                _ => None,
            };
            let Some((sa, offset)) = fast else {
                self.flush_out(io);
                if !self.forward(io.datagram(i)) {
                    self.n.dropped += 1;
                }
                continue;
            };
            // Judged and sent in the form it reaches (0.0.0.0 is 127.0.0.1).
            let dst = rules::reached_addr(sa);
            if !self.cfg.dest_allowed(dst.ip(), dst.port()) || self.outward(dst).is_none() {
                self.n.dropped += 1;
                continue;
            }
            self.remember_peer(dst);
            io.queue_out(i, offset, io.got[i].1 - offset, dst);
        }
        self.flush_out(io);
    }

    /// Sends the queued client datagrams, one `sendmmsg` per run of the same family.
    fn flush_out(&mut self, io: &mut Batch) {
        let mut start = 0;
        while start < io.out.len() {
            let v4 = io.out[start].dst.is_ipv4();
            let end = start + io.out[start..].iter().take_while(|o| o.dst.is_ipv4() == v4).count();
            let sock = if v4 { &self.out4 } else { &self.out6 };
            let Some(sock) = sock else {
                self.n.dropped += (end - start) as u64;
                start = end;
                continue;
            };
            let (sent, bytes, failed) = io.send_out(sock.as_raw_fd(), start..end);
            self.n.datagrams_out += sent;
            self.n.bytes_out += bytes;
            self.n.dropped += failed;
            start = end;
        }
        io.out.clear();
    }

    /// Sends one client datagram on; false if it was dropped.
    fn forward(&mut self, datagram: &[u8]) -> bool {
        let Ok((header, offset)) = UdpHeader::parse(datagram) else { return false };
        if header.frag != 0 {
            return false; // no reassembly, as RFC 1928 allows
        }
        let payload = &datagram[offset..];
        // Try each address of the destination until one family works; for a
        // name, remember the one that did.
        for dst in self.destinations(&header.dst) {
            let Some(sock) = self.outward(dst) else { continue };
            if sock.send_to(payload, dst).is_ok() {
                self.remember_peer(dst);
                if let TargetAddr::Domain(name, _) = &header.dst {
                    if let Some(addrs) = self.names.get_mut(name) {
                        if let Some(i) = addrs.iter().position(|a| a.ip() == dst.ip()) {
                            addrs.swap(0, i);
                        }
                    }
                }
                self.n.datagrams_out += 1;
                self.n.bytes_out += payload.len() as u64;
                return true;
            }
        }
        false
    }

    /// Lets answers from `dst` back in.
    fn remember_peer(&mut self, dst: SocketAddr) {
        if self.peers.contains(&dst) {
            return;
        }
        if self.peers.len() >= PEERS_MAX {
            self.peers.clear();
        }
        self.peers.insert(dst);
    }

    /// The addresses a header names, resolved (cached per name) and allowed by the rules.
    fn destinations(&mut self, target: &TargetAddr) -> Vec<SocketAddr> {
        let TargetAddr::Domain(name, port) = target else {
            return outbound::allowed_addrs(self.cfg, target).unwrap_or_default();
        };
        if let Some(hit) = self.names.get(name) {
            let cfg = self.cfg;
            return hit.iter().map(|a| SocketAddr::new(a.ip(), *port)).filter(|a| cfg.dest_allowed(a.ip(), a.port())).collect();
        }
        if self.names.len() >= NAME_CACHE_MAX {
            self.names.clear();
        }
        // Cached without the port: the rules are re-checked for each new port.
        let addrs = outbound::resolve(self.cfg, target).unwrap_or_default();
        self.names.insert(name.clone(), addrs);
        self.destinations(target)
    }

    /// The outward socket for `dst`'s family, created on first use.
    fn outward(&mut self, dst: SocketAddr) -> Option<&UdpSocket> {
        let slot = if dst.is_ipv4() { &mut self.out4 } else { &mut self.out6 };
        if slot.is_none() {
            let sock = outbound::socket_for(self.cfg, dst, Type::DGRAM).ok()?;
            if self.cfg.bind_out_for(dst.ip()).is_none() {
                let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                sock.bind(&any.parse::<SocketAddr>().ok()?.into()).ok()?;
            }
            sock.set_nonblocking(true).ok()?;
            *slot = Some(sock.into());
        }
        slot.as_ref()
    }

    /// Drains one outward socket: answers wrapped back to the client, one
    /// `recvmmsg` in and one `sendmmsg` out per batch.
    fn relay_to_client(&mut self, fd: i32, io: &mut Batch) {
        if ![&self.out4, &self.out6].into_iter().flatten().any(|s| s.as_raw_fd() == fd) {
            return;
        }
        let n = io.recv(fd, HEADER_ROOM);
        io.out.clear();
        for i in 0..n {
            let Some(src) = io.source(i) else {
                self.n.dropped += 1;
                continue;
            };
            if !self.peers.contains(&src) || !self.cfg.dest_allowed(src.ip(), src.port()) {
                self.n.dropped += 1;
                continue;
            }
            let client = self.client;
            io.head.clear();
            UdpHeader::new(TargetAddr::Ip(src)).emit(&mut io.head);
            let start = HEADER_ROOM - io.head.len();
            let slot = i * SLOT;
            let head = std::mem::take(&mut io.head);
            io.mem[slot + start..slot + HEADER_ROOM].copy_from_slice(&head);
            io.head = head;
            io.queue_out(i, start, io.got[i].1, client);
        }
        let (sent, bytes, failed) = io.send_out(self.relay.as_raw_fd(), 0..io.out.len());
        self.n.datagrams_in += sent;
        self.n.bytes_in += bytes;
        self.n.dropped += failed;
        io.out.clear();
    }
}

/// Room in front of an answer for the largest header (IPv6).
const HEADER_ROOM: usize = 3 + 1 + 16 + 2;
/// One datagram's room in the batch buffer.
const SLOT: usize = DATAGRAM_MAX;

/// Buffers for `recvmmsg`/`sendmmsg`, allocated once per association.
/// The datagram memory is `BATCH` slots of [`SLOT`] bytes, zero-allocated,
/// so the kernel maps only the pages datagrams actually touch.
struct Batch {
    mem: Vec<u8>,
    /// Received: (offset in its slot where the datagram starts, length) and the sender.
    got: Vec<(usize, usize)>,
    from: Vec<libc::sockaddr_storage>,
    from_len: Vec<libc::socklen_t>,
    /// Queued to send, in order.
    out: Vec<Out>,
    out_addr: Vec<SockAddr>,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    head: Vec<u8>,
}

/// A datagram queued for `sendmmsg`: bytes `start..` (to the end of what
/// was received) of batch slot `slot`, of which `payload` count as payload.
struct Out {
    slot: usize,
    start: usize,
    payload: usize,
    dst: SocketAddr,
}

impl Batch {
    fn new() -> Batch {
        // SAFETY: all-zero bytes are a valid sockaddr_storage / mmsghdr.
        let zero_storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Batch {
            mem: vec![0u8; BATCH * SLOT],
            got: Vec::with_capacity(BATCH),
            from: vec![zero_storage; BATCH],
            from_len: vec![0; BATCH],
            out: Vec::with_capacity(BATCH),
            out_addr: Vec::with_capacity(BATCH),
            iov: Vec::with_capacity(BATCH),
            hdr: Vec::with_capacity(BATCH),
            head: Vec::with_capacity(HEADER_ROOM),
        }
    }

    /// Receives what is queued on `fd` (up to `BATCH` datagrams, never
    /// waiting), each at `offset` in its slot; returns how many.
    fn recv(&mut self, fd: i32, offset: usize) -> usize {
        self.got.clear();
        self.iov.clear();
        self.hdr.clear();
        let base = self.mem.as_mut_ptr();
        for i in 0..BATCH {
            self.iov.push(libc::iovec {
                // SAFETY: slot i lies inside mem (BATCH * SLOT bytes), offset < SLOT.
                iov_base: unsafe { base.add(i * SLOT + offset) }.cast(),
                iov_len: SLOT - offset,
            });
        }
        for i in 0..BATCH {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut self.from[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdr.push(h);
        }
        let n = loop {
            // SAFETY: hdr holds BATCH headers pointing into buffers we own.
            let n = unsafe { libc::recvmmsg(fd, self.hdr.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if n >= 0 {
                break n as usize;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // EAGAIN, or an ICMP error from an earlier send.
                return 0;
            }
        };
        for i in 0..n {
            self.from_len[i] = self.hdr[i].msg_hdr.msg_namelen;
            self.got.push((offset, self.hdr[i].msg_len as usize));
        }
        n
    }

    /// The sender of received datagram `i`, IPv4-mapped addresses as IPv4.
    fn source(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the kernel filled from[i] with from_len[i] bytes of a socket address.
        let addr = unsafe { SockAddr::new(self.from[i], self.from_len[i]) };
        let sa = addr.as_socket()?;
        Some(SocketAddr::new(canonical_ip(sa.ip()), sa.port()))
    }

    /// Received datagram `i`.
    fn datagram(&self, i: usize) -> &[u8] {
        let (at, len) = self.got[i];
        &self.mem[i * SLOT + at..i * SLOT + at + len]
    }

    /// Queues bytes `start..` of received datagram `i` for `dst`.
    fn queue_out(&mut self, i: usize, start: usize, payload: usize, dst: SocketAddr) {
        self.out.push(Out { slot: i, start, payload, dst });
    }

    /// Sends `out[range]` on `fd` with `sendmmsg`; a datagram the kernel
    /// refuses is dropped and the rest still go. Returns (sent, payload
    /// bytes sent, dropped).
    fn send_out(&mut self, fd: i32, range: std::ops::Range<usize>) -> (u64, u64, u64) {
        if range.is_empty() {
            return (0, 0, 0);
        }
        self.iov.clear();
        self.hdr.clear();
        self.out_addr.clear();
        let base = self.mem.as_mut_ptr();
        for o in &self.out[range.clone()] {
            let (at, len) = self.got[o.slot];
            self.iov.push(libc::iovec {
                // SAFETY: start..at+len lies inside slot o.slot of mem.
                iov_base: unsafe { base.add(o.slot * SLOT + o.start) }.cast(),
                iov_len: at + len - o.start,
            });
            self.out_addr.push(SockAddr::from(o.dst));
        }
        for k in 0..self.iov.len() {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = self.out_addr[k].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.out_addr[k].len();
            h.msg_hdr.msg_iov = &mut self.iov[k];
            h.msg_hdr.msg_iovlen = 1;
            self.hdr.push(h);
        }
        let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        let total = self.hdr.len();
        let mut k = 0;
        while k < total {
            // SAFETY: hdr[k..] are headers pointing into buffers we own.
            let r = unsafe { libc::sendmmsg(fd, self.hdr.as_mut_ptr().add(k), (total - k) as libc::c_uint, libc::MSG_DONTWAIT) };
            if r <= 0 {
                if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // hdr[k] was refused: drop it, go on with the next.
                failed += 1;
                k += 1;
                continue;
            }
            for o in &self.out[range.start + k..range.start + k + r as usize] {
                bytes += o.payload as u64;
            }
            sent += r as u64;
            k += r as usize;
        }
        (sent, bytes, failed)
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// Reads and discards whatever the client sends on the control connection;
/// true once it is closed or broken.
fn control_closed(mut control: &std::net::TcpStream) -> bool {
    let mut scratch = [0u8; 512];
    loop {
        match control.read(&mut scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}
