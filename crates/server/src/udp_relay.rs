//! UDP ASSOCIATE (RFC 1928 section 7).
//!
//! Promise: one relay socket per association, bound on the IP the client
//! reached us at (the reply's BND.ADDR). Only datagrams from the client's IP
//! are relayed; once the first one arrives the association is locked to that
//! IP:port (and to the port the request named, when it named one). Datagrams
//! with FRAG≠0, a malformed header or a denied destination are dropped.
//! Payloads go to destinations (IPv4, IPv6 or a name, `--map` first) from a
//! socket bound to `--bind-out` for the family; answers come back wrapped in
//! the RFC header carrying the sender's address. The association ends when
//! the control TCP connection closes; one log line then counts datagrams and
//! payload bytes each way.

use crate::cli::Config;
use crate::log::reply_name;
use crate::outbound;
use crate::session::{reply5, ClientConn, Session};
use socket2::Type;
use socksify_proto::wire::socks5::ReplyCode;
use socksify_proto::wire::udp::UdpHeader;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Room for the largest UDP payload plus the largest header.
const DATAGRAM_MAX: usize = 65536 + 262;
/// Datagrams handled per socket per wake-up.
const BATCH: usize = 64;
/// Names resolved per association before the cache is flushed.
const NAME_CACHE_MAX: usize = 256;

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
    client_ip: std::net::IpAddr,
    /// The port the request named, if it named one.
    client_port: Option<u16>,
    /// The client's address once its first datagram arrived.
    client: Option<SocketAddr>,
    out4: Option<UdpSocket>,
    out6: Option<UdpSocket>,
    names: HashMap<String, Vec<SocketAddr>>,
    n: Counters,
}

pub fn serve(sess: &Session, mut conn: ClientConn, dst: TargetAddr) {
    let line = sess.log("udp-associate").kv("dst", &dst);
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
    let client_port = match &dst {
        TargetAddr::Ip(sa) if sa.port() != 0 => Some(sa.port()),
        _ => None,
    };
    let mut assoc = Association {
        cfg: &sess.cfg,
        relay,
        client_ip: canonical_ip(sess.client.ip()),
        client_port,
        client: None,
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
    if let Err(e) = end {
        line = line.kv("error", e);
    }
    line.emit(sess.cfg.quiet);
}

impl Association<'_> {
    /// Polls the control connection, the relay socket and the outward
    /// sockets until the control connection closes.
    fn run(&mut self, control: &std::net::TcpStream) -> io::Result<()> {
        control.set_nonblocking(true)?;
        self.relay.set_nonblocking(true)?;
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let mut fds = vec![pollfd(control.as_raw_fd()), pollfd(self.relay.as_raw_fd())];
            for s in [&self.out4, &self.out6].into_iter().flatten() {
                fds.push(pollfd(s.as_raw_fd()));
            }
            // SAFETY: fds is a live array of initialised pollfd structs.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[0].revents != 0 && control_closed(control) {
                return Ok(());
            }
            if fds[1].revents != 0 {
                self.relay_from_client(&mut buf);
            }
            for pfd in &fds[2..] {
                if pfd.revents != 0 {
                    self.relay_to_client(pfd.fd, &mut buf);
                }
            }
        }
    }

    /// Drains the relay socket: client datagrams to their destinations.
    fn relay_from_client(&mut self, buf: &mut [u8]) {
        // A bounded batch, so a flood on one socket cannot starve the others.
        for _ in 0..BATCH {
            let (len, src) = match self.relay.recv_from(buf) {
                Ok(x) => x,
                Err(_) => return, // WouldBlock, or an ICMP error from an earlier send
            };
            let src = SocketAddr::new(canonical_ip(src.ip()), src.port());
            let accepted = src.ip() == self.client_ip
                && self.client.is_none_or(|c| c == src)
                && self.client_port.is_none_or(|p| p == src.port());
            if !accepted || !self.forward(&buf[..len]) {
                self.n.dropped += 1;
                continue;
            }
            self.client = Some(src);
        }
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

    /// The addresses a header names, resolved (cached per name) and allowed by the rules.
    fn destinations(&mut self, target: &TargetAddr) -> Vec<SocketAddr> {
        let TargetAddr::Domain(name, port) = target else {
            return outbound::allowed_addrs(self.cfg, target).unwrap_or_default();
        };
        if let Some(hit) = self.names.get(name) {
            let rules = &self.cfg.rules;
            return hit.iter().map(|a| SocketAddr::new(a.ip(), *port)).filter(|a| rules.allows(a.ip(), a.port())).collect();
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

    /// Drains one outward socket: answers wrapped back to the client.
    fn relay_to_client(&mut self, fd: i32, buf: &mut [u8]) {
        let header_room = 3 + 1 + 16 + 2;
        for _ in 0..BATCH {
            let sock = [&self.out4, &self.out6].into_iter().flatten().find(|s| s.as_raw_fd() == fd);
            let Some(sock) = sock else { return };
            let (len, src) = match sock.recv_from(&mut buf[header_room..]) {
                Ok(x) => x,
                Err(_) => return,
            };
            let src = SocketAddr::new(canonical_ip(src.ip()), src.port());
            let Some(client) = self.client else {
                self.n.dropped += 1;
                continue;
            };
            if !self.cfg.rules.allows(src.ip(), src.port()) {
                self.n.dropped += 1;
                continue;
            }
            let mut head = Vec::with_capacity(header_room);
            UdpHeader::new(TargetAddr::Ip(src)).emit(&mut head);
            let start = header_room - head.len();
            buf[start..header_room].copy_from_slice(&head);
            if self.relay.send_to(&buf[start..header_room + len], client).is_ok() {
                self.n.datagrams_in += 1;
                self.n.bytes_in += len as u64;
            } else {
                self.n.dropped += 1;
            }
        }
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
