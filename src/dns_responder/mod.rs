//! The in-process DNS responder (remote DNS mode): what a program sends to
//! a nameserver of `/etc/resolv.conf` on port 53 is answered here, and
//! nothing reaches that nameserver unless the name is bypassed.
//!
//! Programs with a stub resolver of their own (`dig`, `host`, node's
//! c-ares, dnspython) never call `getaddrinfo`, so the resolver hooks
//! cannot fake their names. Their DNS messages are caught where they leave
//! instead, and answered by `socksify_proto::dns` from the same fake-address
//! table the resolver hooks use:
//!
//! * UDP ([`udp`]): the send hook computes the answer at once and sends
//!   it, with a SOCKS UDP header naming the nameserver as its source, from
//!   a loopback socket of ours to the program's socket. The UDP receive
//!   path (`crate::udp`, as for a relay) unwraps it, so the program reads
//!   it from its own socket, from the nameserver's address, and `poll` or
//!   `epoll` see real readiness. A connected socket is connected in the
//!   kernel to our socket, as a proxied one is to its relay.
//! * TCP ([`tcp`]): the program's socket is connected to a loopback
//!   listener of ours, served by one thread started on the first such
//!   connect (never at load; a `fork` child starts its own).
//!
//! Bypassed names (and PTR of bypassed addresses) are forwarded, as sent,
//! to the nameserver the program addressed, over the transport it used.
//! Queries that cannot be faked (MX, TXT, SRV, PTR of a real address, …)
//! go to `SOCKSIFY_DNS_UPSTREAM` over TCP through the proxy when it is
//! set, and are answered REFUSED when it is not. Local DNS mode leaves all
//! of this alone: the program's queries go to its nameserver.

pub mod tcp;
pub mod udp;

use crate::fork_safe::ForkSafeOnce;
use crate::hosts;
use crate::own_fd::{self, OwnFd};
use crate::{fake_dns, real, runtime, socket_addr};
use libc::c_int;
use socksify_client::route::{addr_lookup, name_lookup, AddrLookup, NameLookup};
use socksify_client::tcp::WaitError;
use socksify_proto::config::Config;
use socksify_proto::dns::{self, NameAnswer, Names, Query, Reply, ReverseAnswer, Route, Transport};
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::TargetAddr;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The DNS port: only traffic to it is answered here.
pub const PORT: u16 = socksify_client::route::DNS_PORT;

/// The nameservers of `/etc/resolv.conf`, read once.
fn nameservers() -> &'static [IpAddr] {
    static LIST: ForkSafeOnce<Vec<IpAddr>> = ForkSafeOnce::new();
    LIST.get_or_init(|| {
        // Our own read of a regular file; our hooks pass it straight through.
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let list = dns::resolv_conf_nameservers(&text);
        log::debug!("nameservers answered in-process in remote DNS mode: {list:?}");
        list
    })
}

/// Whether traffic to `dst` is for the responder: remote DNS mode, port
/// 53, a nameserver of `/etc/resolv.conf`.
pub fn intercepts(config: &Config, dst: &SocketAddr) -> bool {
    socksify_client::route::answers_dns(config, nameservers(), dst)
}

/// The shim's view of names and addresses, for the responder core: the
/// resolver hooks' decisions ([`name_lookup`], [`addr_lookup`] of the client core).
struct ShimNames(&'static Config);

impl Names for ShimNames {
    fn forward(&mut self, name: &str) -> NameAnswer {
        match name_lookup(Some(self.0), name, 0, hosts::by_name) {
            NameLookup::Resolver { .. } => NameAnswer::Bypassed,
            NameLookup::Hosts(host) => NameAnswer::Hosts(host.v4, host.v6),
            // None: every fake address is held or recent (fake_dns.rs).
            NameLookup::Fake(config) => fake_dns::addrs_for(config, name).map_or(NameAnswer::Exhausted, |(v4, v6)| NameAnswer::Fake(v4, v6)),
            // Refused needs a malformed configuration, which starts no responder.
            NameLookup::NotFound | NameLookup::Refused => NameAnswer::NotFound,
        }
    }

    fn reverse(&mut self, ip: IpAddr) -> ReverseAnswer {
        match addr_lookup(Some(self.0), ip, 0) {
            AddrLookup::FakeName(config) => fake_dns::name_for(config, ip).map_or(ReverseAnswer::Unknown, ReverseAnswer::Name),
            AddrLookup::Resolver => ReverseAnswer::Bypassed,
            AddrLookup::HostsOnly => ReverseAnswer::Real,
        }
    }
}

/// The answer to `msg`, which the program sent to `nameserver` over
/// `transport`; `None` when there is nothing to answer (not a query).
pub fn answer(config: &'static Config, msg: &[u8], nameserver: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
    let reply = dns::respond(msg, &mut ShimNames(config), transport, config.dns_upstream.is_some());
    let forwarded = match reply {
        Reply::Answer(answer) => return Some(answer),
        Reply::Drop => return None,
        Reply::Forward(Route::Nameserver) => {
            log::debug!("dns responder: a bypassed name or address; asking {nameserver} directly");
            match transport {
                Transport::Udp => exchange_udp(msg, nameserver, config.timeout),
                Transport::Tcp => exchange_tcp_direct(msg, nameserver, config.timeout),
            }
        }
        Reply::Forward(Route::Upstream) => {
            let upstream = config.dns_upstream?;
            log::debug!("dns responder: asking {upstream} through the proxy");
            exchange_upstream(config, msg, upstream)
        }
    };
    match (forwarded, transport) {
        (Ok(response), Transport::Udp) => Some(Query::parse(msg).map_or(response.clone(), |q| dns::fit_udp(&q, response))),
        (Ok(response), Transport::Tcp) => Some(response),
        (Err(why), _) => {
            log::warn!("dns responder: no answer from the forwarded query ({why}); answering SERVFAIL");
            dns::servfail(msg, transport)
        }
    }
}

fn own_socket(family: c_int, ty: c_int) -> Result<OwnFd, String> {
    own_fd::socket(family, ty, 0).map_err(|e| format!("socket: {}", std::io::Error::from_raw_os_error(e)))
}

/// Waits for `events` on `fd` until `deadline`.
fn wait(fd: c_int, events: i16, deadline: Instant) -> Result<(), String> {
    match socksify_client::tcp::poll_until(&crate::tcp::RealIo, fd, events, deadline) {
        Ok(_) => Ok(()),
        Err(WaitError::TimedOut) => Err("timed out".into()),
        Err(WaitError::Errno(e)) => Err(format!("poll: {}", std::io::Error::from_raw_os_error(e))),
    }
}

/// A UDP query to `server` from a socket of ours; the first response
/// with the query's ID.
fn exchange_udp(msg: &[u8], server: SocketAddr, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let sock = own_socket(socket_addr::family_of(&server), libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)?;
    let raw = socket_addr::encode(&server, socket_addr::family_of(&server)).ok_or("no address")?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { real::connect(sock.0, &raw.0 as *const _ as *const libc::sockaddr, raw.1) } != 0 {
        return Err(format!("connect {server}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: msg is a valid buffer.
    if unsafe { real::send(sock.0, msg.as_ptr() as *const libc::c_void, msg.len(), 0) } < 0 {
        return Err(format!("send to {server}: {}", std::io::Error::last_os_error()));
    }
    let mut buf = vec![0u8; 65536];
    loop {
        wait(sock.0, libc::POLLIN, deadline)?;
        // SAFETY: reading into buf.
        let n = unsafe { real::recv(sock.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            match crate::ffi::errno() {
                libc::EAGAIN | libc::EINTR => continue,
                e => return Err(format!("recv from {server}: {}", std::io::Error::from_raw_os_error(e))),
            }
        }
        let got = &buf[..n as usize];
        if got.len() >= 2 && msg.len() >= 2 && got[..2] == msg[..2] {
            return Ok(got.to_vec());
        }
    }
}

/// `msg` as DNS over TCP carries it: its length in two bytes, then it.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

/// Sends all of `bytes` on the stream `fd`, waiting (until `deadline`)
/// while it is full.
fn send_all(fd: c_int, mut bytes: &[u8], deadline: Instant) -> Result<(), String> {
    while !bytes.is_empty() {
        // SAFETY: sending from a live buffer.
        let n = unsafe { real::send(fd, bytes.as_ptr() as *const libc::c_void, bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        match crate::ffi::errno() {
            libc::EINTR => {}
            libc::EAGAIN => wait(fd, libc::POLLOUT, deadline)?,
            e => return Err(format!("send: {}", std::io::Error::from_raw_os_error(e))),
        }
    }
    Ok(())
}

/// A DNS-over-TCP exchange on the connected stream `fd` (RFC 1035
/// 4.2.2: a two-byte length before each message).
fn exchange_stream(fd: c_int, msg: &[u8], deadline: Instant) -> Result<Vec<u8>, String> {
    send_all(fd, &framed(msg), deadline)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if got.len() >= 2 {
            let len = u16::from_be_bytes([got[0], got[1]]) as usize;
            if got.len() >= 2 + len {
                return Ok(got[2..2 + len].to_vec());
            }
        }
        wait(fd, libc::POLLIN, deadline)?;
        // SAFETY: reading into buf.
        let n = unsafe { real::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
        match n {
            0 => return Err("the server closed the connection".into()),
            n if n > 0 => got.extend_from_slice(&buf[..n as usize]),
            _ => match crate::ffi::errno() {
                libc::EAGAIN | libc::EINTR => {}
                e => return Err(format!("recv: {}", std::io::Error::from_raw_os_error(e))),
            },
        }
    }
}

/// A TCP query straight to `server` (a bypassed name: no proxy).
fn exchange_tcp_direct(msg: &[u8], server: SocketAddr, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let sock = own_socket(socket_addr::family_of(&server), libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    let raw = socket_addr::encode(&server, socket_addr::family_of(&server)).ok_or("no address")?;
    // SAFETY: raw is a valid address of the socket's family.
    if unsafe { real::connect(sock.0, &raw.0 as *const _ as *const libc::sockaddr, raw.1) } != 0 {
        if crate::ffi::errno() != libc::EINPROGRESS {
            return Err(format!("connect {server}: {}", std::io::Error::last_os_error()));
        }
        wait(sock.0, libc::POLLOUT, deadline)?;
    }
    exchange_stream(sock.0, msg, deadline)
}

/// A TCP query to `upstream` through the proxy (CONNECT), for what we
/// cannot fake.
fn exchange_upstream(config: &'static Config, msg: &[u8], upstream: SocketAddr) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + config.timeout;
    let proxy_family = runtime::proxy_addrs(config, 0).first().map_or(libc::AF_INET, socket_addr::family_of);
    let sock = own_socket(proxy_family, libc::SOCK_STREAM)?;
    crate::tcp::connect_via_proxy(sock.0, proxy_family, config, Command::Connect, &TargetAddr::Ip(upstream))
        .map_err(|e| format!("connecting to {upstream} via {}: {e}", config.chain[0]))?;
    exchange_stream(sock.0, msg, deadline)
}
