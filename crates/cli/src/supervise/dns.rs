//! Remote DNS for supervised programs: a responder of the supervisor's own
//! on loopback, over UDP and TCP. A program's socket that connects to a
//! nameserver of `/etc/resolv.conf` (port 53; Go's pure resolver, glibc's
//! static one) is connected here instead (see `calls.rs`), so its queries
//! never leave.
//!
//! The answers are the shim's: `socksify_proto::dns::respond` with the
//! supervisor's fake-address table. A/AAAA of a proxied name get its fake
//! addresses (a connect to one later sends the name to the proxy); PTR of
//! a fake address its name; a name or address `SOCKSIFY_NO_PROXY` bypasses
//! goes to the first nameserver of resolv.conf, from the supervisor (which
//! no filter sees), and the addresses it answers go direct; what cannot be faked goes to `SOCKSIFY_DNS_UPSTREAM`
//! over TCP through the proxy when it is set, and is REFUSED when not.
//! A name in `/etc/hosts` gets the file's addresses, as from the shim
//! (`socksify_proto::hosts`, the shim's parser): a program's own resolver
//! may ask DNS first (`hosts: dns files`, and Go's with any order but
//! `files` first).

use super::fake::FakeTable;
use super::Level;
use socksify_client::route::{self, AddrLookup, NameLookup};
use socksify_client::tcp::{connect_via_proxy, Libc};
use socksify_proto::config::Config;
use socksify_proto::dns::{self, NameAnswer, Names, Query, Reply, ReverseAnswer, Route, Transport};
use socksify_proto::wire::canonical_ip;
use socksify_proto::wire::socks5::Command;
use socksify_proto::wire::TargetAddr;
use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

/// Where the responder listens: per transport, one socket per family that
/// has loopback (IPv4 first).
pub struct Responder {
    udp: [Option<SocketAddr>; 2],
    tcp: [Option<SocketAddr>; 2],
    /// The UDP sockets themselves: they also send the answers to queries a
    /// program sent unconnected (see `sent_dns.rs`).
    udp_sockets: [Option<Arc<UdpSocket>>; 2],
    cx: Arc<Context>,
}

impl Responder {
    /// Answers `query` as if `to` had sent it to the responder: the answer
    /// goes out from the responder's UDP socket of `to`'s family. `then`
    /// runs once it is queued at `to` (or there is none to send); a query
    /// forwarded elsewhere is answered on a thread of its own. `None` (and
    /// `then` never runs): no UDP socket of that family.
    pub fn answer_to(&self, query: Vec<u8>, to: SocketAddr, then: impl FnOnce() + Send + 'static) -> Option<()> {
        let socket = self.udp_sockets[usize::from(to.is_ipv6())].clone()?;
        respond_udp(&self.cx, socket, query, to, then);
        Some(())
    }

    /// The address answers to `to` come from (`answer_to`).
    pub fn answers_from(&self, to: &SocketAddr) -> Option<SocketAddr> {
        self.udp[usize::from(to.is_ipv6())]
    }

    /// The responder's address for a socket of `family`: an AF_INET6
    /// socket is given the IPv6 one, or the IPv4 one v4-mapped.
    pub fn addr_for(&self, family: i32, transport: Transport) -> Option<SocketAddr> {
        let [v4, v6] = match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
        };
        match family {
            libc::AF_INET => v4,
            _ => v6.or_else(|| v4.map(|a| SocketAddr::new(IpAddr::V6(to_mapped(a.ip())), a.port()))),
        }
    }
}

fn to_mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// What the responder answers from.
pub struct Context {
    pub config: Config,
    pub fake: Arc<FakeTable>,
    /// Where bypassed names are asked: the first resolv.conf nameserver.
    pub nameserver: Option<SocketAddr>,
    /// The first hop's addresses, for `SOCKSIFY_DNS_UPSTREAM`.
    pub first_hop: Vec<SocketAddr>,
    /// Addresses the nameserver gave for bypassed names: a connect to one
    /// goes direct, as the name rule says (the shim's resolver hooks keep
    /// the same list).
    pub bypassed: Arc<BypassedAddrs>,
}

/// A bounded set of addresses; the oldest is forgotten first (a forgotten
/// address is proxied, never leaked).
#[derive(Default)]
pub struct BypassedAddrs(Mutex<(HashSet<IpAddr>, VecDeque<IpAddr>)>);

impl BypassedAddrs {
    const MAX: usize = 4096;

    fn remember(&self, ip: IpAddr) {
        let ip = canonical_ip(ip);
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(ip) {
            order.push_back(ip);
            if order.len() > Self::MAX {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0.contains(&canonical_ip(ip))
    }
}

/// The A and AAAA addresses in the answer section of DNS response `msg`.
fn answer_addrs(msg: &[u8]) -> Vec<IpAddr> {
    fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
        loop {
            let len = *msg.get(i)? as usize;
            match len {
                0 => return Some(i + 1),
                l if l & 0xc0 == 0xc0 => return Some(i + 2), // a pointer ends the name
                l => i += 1 + l,
            }
        }
    }
    fn parse(msg: &[u8]) -> Option<Vec<IpAddr>> {
        let field = |at: usize| Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]));
        let (questions, answers) = (field(4)?, field(6)?);
        let mut i = 12;
        for _ in 0..questions {
            i = skip_name(msg, i)? + 4;
        }
        let mut out = Vec::new();
        for _ in 0..answers {
            i = skip_name(msg, i)?;
            let (rtype, rdlen) = (field(i)?, field(i + 8)? as usize);
            i += 10;
            let rdata = msg.get(i..i + rdlen)?;
            match (rtype, rdlen) {
                (dns::rtype::A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
                (dns::rtype::AAAA, 16) => out.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?))),
                _ => {}
            }
            i += rdlen;
        }
        Some(out)
    }
    parse(msg).unwrap_or_default()
}

/// Starts the answering threads: per loopback family, one for UDP and one
/// accepting TCP (a thread per connection).
pub fn start(cx: Arc<Context>) -> std::io::Result<Responder> {
    let mut out = Responder { udp: [None; 2], tcp: [None; 2], udp_sockets: [None, None], cx: cx.clone() };
    for (i, ip) in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)].into_iter().enumerate() {
        if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, 0)) {
            out.udp[i] = Some(socket.local_addr()?);
            let socket = Arc::new(socket);
            out.udp_sockets[i] = Some(socket.clone());
            let cx = cx.clone();
            std::thread::spawn(move || serve(socket, &cx));
        }
        if let Ok(listener) = TcpListener::bind(SocketAddr::new(ip, 0)) {
            out.tcp[i] = Some(listener.local_addr()?);
            let cx = cx.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let cx = cx.clone();
                    std::thread::spawn(move || serve_tcp(stream, &cx));
                }
            });
        }
    }
    if out.udp.iter().chain(&out.tcp).all(Option::is_none) {
        return Err(std::io::Error::other("no loopback address to answer DNS queries on"));
    }
    Ok(out)
}

/// DNS over TCP: length-prefixed messages, answered in order, until the
/// program closes the connection or leaves it idle.
fn serve_tcp(mut stream: TcpStream, cx: &Context) {
    const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
    let _ = stream.set_read_timeout(Some(IDLE));
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut msg).is_err() {
            return;
        }
        let answer = match reply(cx, &msg, Transport::Tcp) {
            Reply::Answer(answer) => Some(answer),
            Reply::Drop => None,
            Reply::Forward(route) => forwarded(cx, &msg, route, Transport::Tcp),
        };
        if let Some(answer) = answer {
            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// The supervisor's view of names and addresses, for the responder core.
struct SupervisorNames<'a>(&'a Context);

/// The entry of `name` in `/etc/hosts` (the program's: we run in its mount
/// namespace), read on each look-up as the shim does.
fn hosts_entry(name: &str) -> Option<socksify_proto::hosts::Host> {
    socksify_proto::hosts::lookup(&std::fs::read_to_string("/etc/hosts").unwrap_or_default(), name)
}

impl Names for SupervisorNames<'_> {
    fn forward(&mut self, name: &str) -> NameAnswer {
        // The shim's decision: a name in /etc/hosts gets the file's
        // addresses (a program's own resolver may ask DNS before reading
        // the file: Go and glibc with `hosts: dns files`).
        match route::name_lookup(Some(&self.0.config), name, 0, hosts_entry) {
            NameLookup::Resolver { .. } => NameAnswer::Bypassed,
            NameLookup::Hosts(host) => NameAnswer::Hosts(host.v4, host.v6),
            NameLookup::Fake(_) => match self.0.fake.addrs_for(name) {
                Some((v4, v6)) => NameAnswer::Fake(v4, v6),
                None => NameAnswer::Exhausted,
            },
            // Refused needs a malformed configuration, which starts no supervisor.
            NameLookup::NotFound | NameLookup::Refused => NameAnswer::NotFound,
        }
    }

    fn reverse(&mut self, ip: IpAddr) -> ReverseAnswer {
        match route::addr_lookup(Some(&self.0.config), ip, 0) {
            AddrLookup::FakeName(_) => self.0.fake.name_for(ip).map_or(ReverseAnswer::Unknown, ReverseAnswer::Name),
            AddrLookup::Resolver => ReverseAnswer::Bypassed,
            AddrLookup::HostsOnly => ReverseAnswer::Real,
        }
    }
}

/// The reply to one message, as the responder core decides it.
fn reply(cx: &Context, msg: &[u8], transport: Transport) -> Reply {
    dns::respond(msg, &mut SupervisorNames(cx), transport, cx.config.dns_upstream.is_some())
}

/// The answer to a query the core forwards along `route`: what came back
/// (cut to fit a UDP client), or SERVFAIL.
fn forwarded(cx: &Context, msg: &[u8], route: Route, transport: Transport) -> Option<Vec<u8>> {
    let got = match route {
        Route::Nameserver => cx
            .nameserver
            .ok_or_else(|| "no nameserver".to_string())
            .and_then(|ns| ask_udp(msg, ns, cx))
            .inspect(|answer| answer_addrs(answer).into_iter().for_each(|ip| cx.bypassed.remember(ip))),
        Route::Upstream => cx.config.dns_upstream.ok_or_else(|| "no upstream".to_string()).and_then(|up| ask_upstream(msg, up, cx)),
    };
    match (got, transport) {
        (Ok(answer), Transport::Udp) => Some(Query::parse(msg).map_or(answer.clone(), |q| dns::fit_udp(&q, answer))),
        (Ok(answer), Transport::Tcp) => Some(answer),
        (Err(why), _) => {
            say!(Level::Warn, "dns: no answer from the forwarded query ({why}); answering SERVFAIL");
            dns::servfail(msg, transport)
        }
    }
}

fn serve(socket: Arc<UdpSocket>, cx: &Arc<Context>) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        respond_udp(cx, socket.clone(), buf[..n].to_vec(), from, || {});
    }
}

/// Sends the answer to `msg` from `socket` to `to`, then runs `then`.
fn respond_udp(cx: &Arc<Context>, socket: Arc<UdpSocket>, msg: Vec<u8>, to: SocketAddr, then: impl FnOnce() + Send + 'static) {
    match reply(cx, &msg, Transport::Udp) {
        Reply::Answer(answer) => _ = socket.send_to(&answer, to),
        Reply::Drop => {}
        Reply::Forward(route) => {
            // A round trip elsewhere: off this thread.
            let cx = cx.clone();
            std::thread::spawn(move || {
                // A panic must still run `then`: a program's send waits for it.
                let ask = std::panic::AssertUnwindSafe(|| forwarded(&cx, &msg, route, Transport::Udp));
                if let Ok(Some(answer)) = std::panic::catch_unwind(ask) {
                    let _ = socket.send_to(&answer, to);
                }
                then();
            });
            return;
        }
    }
    then();
}

/// One query to the real nameserver, from the supervisor.
fn ask_udp(msg: &[u8], server: SocketAddr, cx: &Context) -> Result<Vec<u8>, String> {
    let any: SocketAddr = if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(cx.config.timeout)).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(msg).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.recv(&mut buf).map_err(|e| format!("{server}: {e}"))?;
        if n >= 2 && msg.len() >= 2 && buf[..2] == msg[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One query over TCP through the proxy to `SOCKSIFY_DNS_UPSTREAM`.
fn ask_upstream(msg: &[u8], upstream: SocketAddr, cx: &Context) -> Result<Vec<u8>, String> {
    let family = if cx.first_hop.first().is_some_and(|a| a.is_ipv6()) { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: a fresh fd we own.
    let mut stream = unsafe { TcpStream::from_raw_fd(fd) };
    connect_via_proxy(&Libc, fd, family, &cx.config, &cx.first_hop, Command::Connect, &TargetAddr::Ip(upstream))
        .map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(cx.config.timeout)).map_err(|e| e.to_string())?;
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn reply_udp(cx: &Context, msg: &[u8]) -> Reply {
        reply(cx, msg, Transport::Udp)
    }

    fn context(no_proxy: &str) -> Context {
        let env = |k: &str| match k {
            "SOCKSIFY_PROXY" => Some("socks5h://127.0.0.1:1080".to_string()),
            "SOCKSIFY_NO_PROXY" => Some(no_proxy.to_string()),
            _ => None,
        };
        let config = Config::from_lookup(env).unwrap();
        let fake = Arc::new(FakeTable::new(&config));
        Context { config, fake, nameserver: None, first_hop: Vec::new(), bypassed: Arc::default() }
    }

    #[test]
    fn addresses_of_an_answer() {
        // A response to "a.test A" with a CNAME, an A and an AAAA record
        // (names compressed), as a nameserver sends it.
        let mut r = query("a.test", dns::rtype::A);
        r[2] |= 0x80;
        r[7] = 3;
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'b', 0xc0, 14]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        r.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        r.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(answer_addrs(&r), vec!["192.0.2.7".parse::<IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert_eq!(answer_addrs(&r[..r.len() - 3]), Vec::<IpAddr>::new(), "cut short: nothing");
    }

    #[test]
    fn names_get_the_supervisors_fake_addresses_and_bypassed_ones_are_forwarded() {
        let cx = context(".corp.test");
        let Reply::Answer(a) = reply_udp(&cx, &query("example.test", dns::rtype::A)) else { panic!("A must be answered") };
        let (v4, _) = cx.fake.addrs_for("example.test").unwrap();
        assert_eq!(&a[a.len() - 4..], &v4.octets(), "the table's address is the answer");
        let Reply::Answer(ptr) = reply_udp(
            &cx,
            &query(&format!("{}.in-addr.arpa", v4.octets().iter().rev().map(u8::to_string).collect::<Vec<_>>().join(".")), dns::rtype::PTR),
        ) else {
            panic!()
        };
        assert!(ptr.windows(7).any(|w| w == b"example"), "PTR of a fake address names it");
        assert_eq!(reply_udp(&cx, &query("git.corp.test", dns::rtype::A)), Reply::Forward(Route::Nameserver));
    }

    #[test]
    fn names_in_etc_hosts_get_their_file_addresses() {
        // With nothing bypassed, localhost is still answered as the shim
        // answers it: from /etc/hosts, loopback whatever the file says.
        let cx = context("");
        let Reply::Answer(a) = reply_udp(&cx, &query("localhost", dns::rtype::A)) else { panic!("A must be answered") };
        let v4 = Ipv4Addr::new(a[a.len() - 4], a[a.len() - 3], a[a.len() - 2], a[a.len() - 1]);
        assert!(v4.is_loopback(), "localhost got {v4}");
        assert!(cx.fake.name_for(IpAddr::V4(v4)).is_none(), "not from the fake table");
    }
}
