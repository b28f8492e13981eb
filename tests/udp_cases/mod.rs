//! The end-to-end UDP cases, written once and run against every
//! SOCKS server (`tests/udp_bundled.rs`, `tests/udp_dante.rs`).
//!
//! Each case runs a real client (`python3`, `dig`) under the shim and
//! asserts what a user would: the datagrams came back intact and in order,
//! the target saw them come from the proxy's outgoing address (never
//! 127.0.0.1, which would be a direct send), and the proxy logged the
//! association. [`UdpTarget`] records the source of every datagram it gets;
//! [`UdpTarget::sync`] makes sure everything sent before is recorded.
#![allow(dead_code)]

use crate::common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const SENTINEL: &[u8] = b"socksify-udp-sentinel";

/// What a [`UdpTarget`] answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// The datagram, back to its sender.
    Echo,
    /// A DNS response: `A 192.0.2.77` for whatever was asked.
    Dns,
}

/// A datagram a [`UdpTarget`] received: its source and bytes.
pub type Datagram = (SocketAddr, Vec<u8>);

/// A UDP server on loopback (own thread), killed on drop.
pub struct UdpTarget {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    /// Every datagram but the sentinels, with its source.
    datagrams: Arc<Mutex<Vec<Datagram>>>,
    sentinels: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// The network namespace (`/run/netns/NAME`) it listens in, if not ours.
    netns: Option<PathBuf>,
}

impl UdpTarget {
    pub fn start(ip: IpAddr, answer: Answer) -> UdpTarget {
        Self::start_in(None, ip, answer)
    }

    /// A target listening inside the network namespace `netns`
    /// (`/run/netns/NAME`): nothing in this one can reach it directly.
    pub fn start_in(netns: Option<&Path>, ip: IpAddr, answer: Answer) -> UdpTarget {
        let sock = in_netns(netns, || UdpSocket::bind((ip, 0)).expect("bind udp target"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let sentinels = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, d, s, st) = (peers.clone(), datagrams.clone(), sentinels.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if &buf[..n] == SENTINEL {
                    *s.lock().unwrap() += 1;
                    continue;
                }
                p.lock().unwrap().push(from);
                d.lock().unwrap().push((from, buf[..n].to_vec()));
                let reply = match answer {
                    Answer::Echo => buf[..n].to_vec(),
                    Answer::Dns => dns_answer(&buf[..n]),
                };
                let _ = sock.send_to(&reply, from);
            }
        });
        UdpTarget { addr, peers, datagrams, sentinels, stop, thread: Some(thread), netns: netns.map(Path::to_path_buf) }
    }

    pub fn echo(ip: IpAddr) -> UdpTarget {
        UdpTarget::start(ip, Answer::Echo)
    }

    /// Sends a sentinel from the test itself and waits until it is seen:
    /// every datagram sent to the target before is recorded by then.
    pub fn sync(&self) {
        let before = *self.sentinels.lock().unwrap();
        let any: SocketAddr = if self.addr.is_ipv4() { "127.0.0.1:0".parse().unwrap() } else { "[::1]:0".parse().unwrap() };
        let sock = in_netns(self.netns.as_deref(), || UdpSocket::bind(any).unwrap());
        let seen = wait_until(WAIT, || {
            sock.send_to(SENTINEL, self.addr).unwrap();
            thread::sleep(Duration::from_millis(5));
            (*self.sentinels.lock().unwrap() > before).then_some(())
        });
        assert!(seen.is_some(), "the UDP target at {} stopped answering", self.addr);
    }

    /// Sources of the datagrams received (sentinels aside).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.sync();
        self.peers.lock().unwrap().clone()
    }

    /// Every datagram that arrived (sentinels aside), with its source.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.datagrams.lock().unwrap().clone()
    }

    /// Asserts that exactly `n` datagrams arrived, all from `from`.
    pub fn assert_peers(&self, n: usize, from: IpAddr) {
        let peers = self.peers();
        assert_eq!(peers.len(), n, "datagrams at {}: {peers:?}", self.addr);
        assert!(peers.iter().all(|p| p.ip() == from), "datagrams must come from the proxy {from}, got {peers:?}");
    }
}

impl Drop for UdpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A DNS response to `query`: its ID and question, one `A 192.0.2.77`.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    if query.len() < 12 {
        return Vec::new();
    }
    let mut end = 12;
    while end < query.len() && query[end] != 0 {
        end += query[end] as usize + 1;
    }
    let qend = (end + 5).min(query.len());
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..qend]);
    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
    out
}

/// What the proxy's log says about UDP associations.
pub trait UdpLog: Proxy {
    /// A UDP target on `ip` this proxy reaches: on this machine's loopback,
    /// or (shadowsocks) inside the network namespace only the proxy can reach.
    fn udp_target_on(&self, ip: IpAddr, answer: Answer) -> UdpTarget {
        UdpTarget::start(ip, answer)
    }
    /// [`UdpLog::udp_target_on`] 127.0.0.1, echoing.
    fn udp_echo(&self) -> UdpTarget {
        self.udp_target_on(DIRECT, Answer::Echo)
    }
    /// Waits for the line of an ended association that carried datagrams
    /// to `dst`; returns it.
    fn wait_association_end(&self, dst: SocketAddr, datagrams: usize) -> String;
    /// Every UDP-association line so far.
    fn association_lines(&self) -> Vec<String>;
    /// How many associations have ended so far.
    fn ended_associations(&self) -> usize;
    /// Waits until `n` associations have ended; panics otherwise.
    fn wait_ended_associations(&self, n: usize) {
        let seen = wait_until(WAIT, || (self.ended_associations() >= n).then_some(()));
        assert!(
            seen.is_some(),
            "{} logged {} ended associations, expected {n}: {:?}",
            self.name(),
            self.ended_associations(),
            self.association_lines()
        );
    }
}

impl UdpLog for Server {
    fn wait_association_end(&self, _dst: SocketAddr, datagrams: usize) -> String {
        let out = format!("datagrams_out={datagrams} ");
        let inn = format!("datagrams_in={datagrams} ");
        self.log.wait_line(&["cmd=udp-associate", "reply=succeeded", &out, &inn]).unwrap_or_else(|| {
            panic!("socksify-server never logged an association with {datagrams} datagrams each way; its log:\n{}", self.log.text())
        })
    }
    fn association_lines(&self) -> Vec<String> {
        self.log.text().lines().filter(|l| l.contains("cmd=udp-associate")).map(str::to_owned).collect()
    }
    fn ended_associations(&self) -> usize {
        // The server writes an association's line when it ends.
        self.association_lines().len()
    }
}

impl UdpLog for Dante {
    fn wait_association_end(&self, dst: SocketAddr, _datagrams: usize) -> String {
        // Dante: `pass(1): udp/udpassociate ]: ... -> CLIENT RELAY -> ..., N/M -> OUT DST.PORT -> N/M: local client closed`.
        let dst = format!(" {}.{} ", dst.ip(), dst.port());
        wait_until(WAIT, || self.log().lines().find(|l| l.contains("udp/udpassociate ]:") && l.contains(&dst)).map(str::to_owned))
            .unwrap_or_else(|| panic!("danted never logged the end of an association to {dst}; its log:\n{}", self.log()))
    }
    fn association_lines(&self) -> Vec<String> {
        self.log().lines().filter(|l| l.contains("udpassociate")).map(str::to_owned).collect()
    }
    fn ended_associations(&self) -> usize {
        self.log().lines().filter(|l| l.contains("udp/udpassociate ]:")).count()
    }
}

fn host(ip: IpAddr) -> String {
    ip.to_string()
}

fn python(proxy: &dyn UdpLog, code: &str, target: &UdpTarget, extra: &[&str]) -> Output {
    Run::python(&proxy.url(), code)
        .arg(host(target.addr.ip()))
        .arg(target.addr.port().to_string())
        .args(extra.iter().copied())
        .timeout(Duration::from_secs(40))
        .run()
}

/// `sendto`/`recvfrom`: prints `ECHO SRC_IP SRC_PORT` and the socket's port.
pub const SENDTO: &str = r#"
import socket, sys
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
s.sendto(token.encode(), (host, port))
data, addr = s.recvfrom(65535)
print(data.decode(), addr[0], addr[1])
print("sock", s.getsockname()[1])
"#;

pub fn sendto_recvfrom(proxy: &dyn UdpLog, ip: IpAddr) {
    let target = proxy.udp_target_on(ip, Answer::Echo);
    let tok = token("udp-sendto");
    let out = python(proxy, SENDTO, &target, &[&tok]);
    out.assert_success();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(format!("{tok} {} {}", ip, target.addr.port()).as_str()), "{out}");
    let own_port: u16 = lines.next().and_then(|l| l.strip_prefix("sock ")).and_then(|p| p.parse().ok()).expect("sock line");
    target.assert_peers(1, proxy.out_ip(ip));
    assert_ne!(target.peers()[0].port(), own_port, "the target saw the client's own socket: sent directly");
    proxy.wait_association_end(target.addr, 1);
}

/// `connect`, `send`, `recv`, `getpeername` on a UDP socket.
pub const CONNECTED: &str = r#"
import socket, sys
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
s.connect((host, port))
print("peer", *s.getpeername()[:2])
s.send(token.encode())
print("recv", s.recv(65535).decode())
s.send(b"again")
print("read", s.recv(65535).decode())
# connect(AF_UNSPEC) dissolves the association's peer, as in the kernel.
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
unspec = ctypes.create_string_buffer(16)  # all zero: sa_family = AF_UNSPEC
print("unspec", libc.connect(s.fileno(), unspec, 16))
try:
    s.getpeername()
    print("still connected")
except OSError as e:
    print("peer", errno.errorcode[e.errno])
"#;

pub fn connected(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let tok = token("udp-connected");
    let out = python(proxy, CONNECTED, &target, &[&tok]);
    out.assert_success();
    let want = format!("peer 127.0.0.1 {}\nrecv {tok}\nread again\nunspec 0\npeer ENOTCONN\n", target.addr.port());
    assert_eq!(out.stdout, want, "{out}");
    target.assert_peers(2, proxy.out_ip(DIRECT));
    proxy.wait_association_end(target.addr, 2);
}

/// `sendmsg`/`recvmsg`, `MSG_PEEK`, `MSG_TRUNC` and the returned lengths.
pub const MSG: &str = r#"
import socket, sys
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
n = s.sendmsg([token[:5].encode(), token[5:].encode()], [], 0, (host, port))
print("sent", n == len(token))
data, anc, flags, addr = s.recvmsg(65535, 256)
print("msg", data.decode(), addr[0], addr[1], flags & socket.MSG_TRUNC)
s.sendto(b"0123456789" * 10, (host, port))
peek, addr = s.recvfrom(65535, socket.MSG_PEEK)
data, flags_unused = s.recvfrom(65535)
print("peek", peek == data, len(data), addr[1])
s.sendto(b"abcdefghij" * 10, (host, port))
data, anc, flags, addr = s.recvmsg(10)
print("trunc", data.decode(), bool(flags & socket.MSG_TRUNC))
s.sendto(b"x" * 50, (host, port))
import ctypes, select
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(8)
# settimeout made the fd non-blocking: wait for readiness (poll) first.
select.select([s], [], [], 15)
full = libc.recv(s.fileno(), buf, 8, socket.MSG_TRUNC)
print("full", full)
s.setblocking(False)
try:
    s.recvfrom(100)
    print("more")
except BlockingIOError:
    print("eagain")
"#;

pub fn sendmsg_recvmsg(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let tok = token("udp-msg");
    let out = python(proxy, MSG, &target, &[&tok]);
    out.assert_success();
    let p = target.addr.port();
    let want = format!("sent True\nmsg {tok} 127.0.0.1 {p} 0\npeek True 100 {p}\ntrunc abcdefghij True\nfull 50\neagain\n");
    assert_eq!(out.stdout, want, "{out}");
    target.assert_peers(4, proxy.out_ip(DIRECT));
    proxy.wait_association_end(target.addr, 4);
}

/// One 60000-byte datagram there and back.
pub const BIG: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
payload = bytes(i % 251 for i in range(60000))
print("sent", s.sendto(payload, (host, port)))
data, addr = s.recvfrom(65535)
print("back", len(data), data == payload)
"#;

pub fn big_datagram(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = python(proxy, BIG, &target, &[]);
    out.assert_success();
    assert_eq!(out.stdout, "sent 60000\nback 60000 True\n", "{out}");
    target.assert_peers(1, proxy.out_ip(DIRECT));
}

/// 1000 request/response round trips, each checked in order.
pub const ROUND_TRIPS: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
for i in range(1000):
    m = b"seq-%d" % i
    s.sendto(m, (host, port))
    data, addr = s.recvfrom(100)
    if data != m:
        print("out of order at", i, data)
        sys.exit(1)
print("ok", i + 1)
"#;

pub fn round_trips(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = python(proxy, ROUND_TRIPS, &target, &[]);
    out.assert_success();
    assert_eq!(out.stdout, "ok 1000\n", "{out}");
    target.assert_peers(1000, proxy.out_ip(DIRECT));
}

/// `dig` (BIND 9: libuv, connected UDP, `sendmmsg` through `syscall()`,
/// `recvmsg`) against a DNS responder.
pub fn dig(proxy: &dyn UdpLog) {
    require_program("dig", "bind9-dnsutils");
    let target = proxy.udp_target_on(DIRECT, Answer::Dns);
    let out = Run::shimmed(&proxy.url(), "dig")
        .args(["@127.0.0.1", "-p", &target.addr.port().to_string(), "socksify-test.example", "+short", "+time=10", "+tries=1"])
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "192.0.2.77", "{out}");
    target.assert_peers(1, proxy.out_ip(DIRECT));
    proxy.wait_association_end(target.addr, 1);
}

/// Closing the socket ends the association: the hidden control connection
/// goes with it (counted in /proc/self/fd) and the proxy logs the end.
pub const CLOSE: &str = r#"
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def sockets():
    n = 0
    for f in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink("/proc/self/fd/" + f).startswith("socket:")
        except OSError:
            pass
    return n
before = sockets()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
s.sendto(b"hello", (host, port))
s.recvfrom(100)
during = sockets() - before
s.close()
after = sockets() - before
print("during", during, "after", after)
sys.stdout.flush()
"#;

pub fn association_closes_with_socket(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = python(proxy, CLOSE, &target, &[]);
    out.assert_success();
    assert_eq!(out.stdout, "during 2 after 0\n", "the socket and its control connection, then neither: {out}");
    assert!(out.stderr.contains("closed with its socket"), "{out}");
    proxy.wait_association_end(target.addr, 1);
}

/// A datagram sent straight to the program's socket (not via the relay)
/// is dropped: the program reads the relayed answer, then nothing.
pub const INJECT: &str = r#"
import os, socket, subprocess, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
s.sendto(b"one", (host, port))
print(s.recvfrom(100)[0].decode())
me = s.getsockname()[1]
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
inject = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'evil', ('127.0.0.1', %d))" % me
subprocess.run([sys.executable, "-c", inject], env=env, check=True)
s.sendto(b"two", (host, port))
data, addr = s.recvfrom(100)
print(data.decode(), addr[0], addr[1] == port)
s.setblocking(False)
try:
    print("unexpected", s.recvfrom(100))
except BlockingIOError:
    print("nothing more")
"#;

pub fn injected_datagram_dropped(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = Run::python(&proxy.url(), INJECT)
        .arg("127.0.0.1")
        .arg(target.addr.port().to_string())
        .env("SOCKSIFY_LOG", "debug")
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "one\ntwo 127.0.0.1 True\nnothing more\n", "{out}");
    // The socket filter drops it in the kernel (tests/udp_strays.rs); the
    // shim would log it if it ever reached a read.
    assert!(!out.stderr.contains("socket filter"), "the filter is in place: {out}");
    target.assert_peers(2, proxy.out_ip(DIRECT));
}

/// `SOCKSIFY_UDP=block`: `sendto` and `connect` fail with `EPERM`, nothing
/// reaches the target or the proxy.
pub const BLOCKED: &str = r#"
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for what, call in (("sendto", lambda: s.sendto(b"x", (host, port))), ("connect", lambda: s.connect((host, port)))):
    try:
        call()
        print(what, "went through")
    except OSError as e:
        print(what, errno.errorcode.get(e.errno))
"#;

pub fn blocked(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = Run::python(&proxy.url(), BLOCKED)
        .arg("127.0.0.1")
        .arg(target.addr.port().to_string())
        .env("SOCKSIFY_UDP", "block")
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "sendto EPERM\nconnect EPERM\n", "{out}");
    assert!(out.stderr.contains("SOCKSIFY_UDP=block"), "the refusal is logged: {out}");
    target.assert_peers(0, proxy.out_ip(DIRECT));
    assert!(proxy.association_lines().is_empty(), "no association: {:?}", proxy.association_lines());
}

/// Under `proxy`, a dead proxy fails the send; nothing goes direct.
pub fn proxy_down_never_direct() {
    let target = UdpTarget::echo(DIRECT);
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port(DIRECT));
    let out = Run::python(&format!("socks5://{dead}"), BLOCKED)
        .arg("127.0.0.1")
        .arg(target.addr.port().to_string())
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "sendto ECONNREFUSED\nconnect ECONNREFUSED\n", "{out}");
    target.assert_peers(0, DIRECT);
}

/// The hidden control connection, which the program never opened: its
/// `close` answers `EBADF` (the association carries on); replaced behind
/// the shim's back (`dup2` over its number), the next datagram opens a new
/// association; `close_range` over it leaves it open.
pub const CONTROL_CLOSED: &str = r#"
import errno, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
def hidden():
    out = []
    for f in os.listdir("/proc/self/fd"):
        try:
            if int(f) != s.fileno() and os.readlink("/proc/self/fd/" + f).startswith("socket:"):
                out.append(int(f))
        except OSError:
            pass
    return out
def echo(m):
    s.sendto(m, (host, port))
    print(s.recvfrom(100)[0].decode())
echo(b"one")
ctrl = hidden()
print("hidden", len(ctrl))
try:
    os.close(ctrl[0])
    print("closed")
except OSError as e:
    print("close", errno.errorcode[e.errno])
echo(b"two")
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, ctrl[0])
echo(b"three")
ctrl = [fd for fd in hidden()]
print("hidden", len(ctrl))
os.closerange(s.fileno() + 1, max(ctrl) + 10)
print("hidden after close_range", hidden() == ctrl)
echo(b"four")
"#;

pub fn control_closed_behind_our_back(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = python(proxy, CONTROL_CLOSED, &target, &[]);
    out.assert_success();
    assert_eq!(out.stdout, "one\nhidden 1\nclose EBADF\ntwo\nthree\nhidden 1\nhidden after close_range True\nfour\n", "{out}");
    target.assert_peers(4, proxy.out_ip(DIRECT));
    // The first association carried "one" and "two" and ended when dup2
    // replaced its control connection; the second carried "three" and
    // "four" and ended with the process.
    proxy.wait_ended_associations(2);
    assert_eq!(proxy.ended_associations(), 2, "{:?}", proxy.association_lines());
}

/// A name resolved by the proxy (remote DNS): `getaddrinfo` gives a fake
/// address, the datagram carries the name (ATYP 3; the bundled server maps
/// it with `--map`: had the fake address gone out, nothing would arrive),
/// and the reply is reported from the fake address the program used.
pub const FAKE: &str = r#"
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
print("fake", addr[0].startswith("198.18.") or addr[0].startswith("198.19."))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
s.sendto(b"by-name", addr)
data, src = s.recvfrom(100)
print(data.decode(), src == addr)
"#;

pub fn fake_address_sends_the_name(proxy: &Server, name: &str, target: &UdpTarget) {
    let out = Run::python(&proxy.url(), FAKE).arg(name).arg(target.addr.port().to_string()).timeout(Duration::from_secs(40)).run();
    out.assert_success();
    assert_eq!(out.stdout, "fake True\nby-name True\n", "{out}");
    target.assert_peers(1, proxy.out_ip(DIRECT));
    proxy.wait_association_end(target.addr, 1);
}

/// `dup` of a UDP socket shares its association: the copy receives the
/// unwrapped reply; closing the original leaves the copy working.
pub const DUP: &str = r#"
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"one", (host, port))
d = s.dup()
d.settimeout(15)
print(d.recvfrom(100)[0].decode())
s.close()
d.sendto(b"two", (host, port))
data, addr = d.recvfrom(100)
print(data.decode(), addr[1] == port)
"#;

pub fn dup_shares_the_association(proxy: &dyn UdpLog) {
    let target = proxy.udp_echo();
    let out = python(proxy, DUP, &target, &[]);
    out.assert_success();
    assert_eq!(out.stdout, "one\ntwo True\n", "{out}");
    target.assert_peers(2, proxy.out_ip(DIRECT));
    proxy.wait_ended_associations(1);
    assert_eq!(proxy.ended_associations(), 1, "one association for both fds: {:?}", proxy.association_lines());
}

/// `sendto(..., MSG_FASTOPEN)` on a TCP socket: a proxied connect, then
/// the bytes (the target sees the proxy's address).
pub const FASTOPEN: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(15)
print("sent", s.sendto(b"fast-open", socket.MSG_FASTOPEN, (host, port)))
print("peer", *s.getpeername())
print("echo", s.recv(100).decode())
"#;

pub fn tcp_fast_open(proxy: &dyn UdpLog) {
    let target = proxy.target(Serve::Echo);
    let out =
        Run::python(&proxy.url(), FASTOPEN).arg("127.0.0.1").arg(target.addr.port().to_string()).timeout(Duration::from_secs(40)).run();
    out.assert_success();
    assert_eq!(out.stdout, format!("sent 9\npeer 127.0.0.1 {}\necho fast-open\n", target.addr.port()), "{out}");
    target.assert_peers(1, proxy.out_ip(DIRECT));
}

/// SO_RCVTIMEO, MSG_DONTWAIT, epoll readiness and recvmmsg on a proxied
/// socket (`tests/programs/udp_calls.c`, built here with gcc).
pub fn c_calls(proxy: &dyn UdpLog) {
    let dir = TempDir::new("udp-calls");
    let exe = dir.path().join("udp_calls");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/udp_calls.c")).run().assert_success();
    let target = proxy.udp_echo();
    let out = Run::shimmed(&proxy.url(), &exe)
        .args([host(target.addr.ip()), target.addr.port().to_string()])
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    let expected = "first 4 from_target 1\ndontwait EAGAIN\nrcvtimeo EAGAIN waited_enough 1\nepoll_idle 0\nepoll_ready 1 in 1\nafter_epoll 4 poll\nrecvmmsg 3 good 3\n";
    assert_eq!(out.stdout, expected, "{out}");
    target.assert_peers(5, proxy.out_ip(DIRECT));
}

/// `nslookup -port=N NAME 127.0.0.1`: BIND's other resolver tool, which
/// asks for A and AAAA (the responder answers each with `A 192.0.2.77`).
pub fn nslookup(proxy: &dyn UdpLog) {
    require_program("nslookup", "bind9-dnsutils");
    let target = proxy.udp_target_on(DIRECT, Answer::Dns);
    let out = Run::shimmed(&proxy.url(), "nslookup")
        .args([&format!("-port={}", target.addr.port()), "-timeout=10", "-retry=1", "socksify-test.example", "127.0.0.1"])
        .timeout(Duration::from_secs(40))
        .run();
    assert!(out.stdout.contains("Address: 192.0.2.77"), "{out}");
    let peers = target.peers();
    assert!(!peers.is_empty() && peers.iter().all(|p| p.ip() == proxy.out_ip(DIRECT)), "every query through the proxy: {peers:?}");
}

/// One socket alternates between a bypassed destination and a proxied one:
/// each datagram takes its own route every time (the shim remembers an
/// fd's last direct destination; that must never carry over to another).
pub const ALTERNATE: &str = r#"
import socket, sys
host, direct_port, proxied_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(15)
for i in range(5):
    for port in (direct_port, proxied_port, direct_port):
        s.sendto(b"alt-%d" % i, (host, port))
        data, src = s.recvfrom(100)
        assert src == (host, port), src
print("alternated")
"#;

pub fn bypassed_and_proxied_from_one_socket(proxy: &dyn UdpLog) {
    let proxied = proxy.udp_echo();
    // (A proxied target in a namespace of its own may have the same port.)
    let direct = (0..10).map(|_| UdpTarget::echo(DIRECT)).find(|d| d.addr.port() != proxied.addr.port()).expect("a port of its own");
    let out = Run::python(&proxy.url(), ALTERNATE)
        .args([host(DIRECT), direct.addr.port().to_string(), proxied.addr.port().to_string()])
        .env("SOCKSIFY_NO_PROXY", &format!("127.0.0.1:{}", direct.addr.port()))
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert!(out.stdout.contains("alternated"), "{out}");
    direct.assert_peers(10, DIRECT);
    proxied.assert_peers(5, proxy.out_ip(DIRECT));
}

/// The proxy goes away while the program runs and comes back on the same
/// port: the shim notices the association's control connection closed and
/// opens a new association; no datagram ever goes direct.
pub const SERVER_RESTART: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def echo(tag, tries):
    s.settimeout(1)
    for _ in range(tries):
        try:
            s.sendto(tag, (host, port))
            if s.recvfrom(100)[0] == tag:
                return True
        except OSError:
            pass
    return False
print("before", echo(b"before", 5))
sys.stdout.flush()
sys.stdin.readline()  # the test restarts the proxy, then says go
print("after", echo(b"after", 15))
"#;

pub fn server_restart_reopens_the_association() {
    let target = UdpTarget::echo(DIRECT);
    // An address of its own (no other test listens there), so no other
    // test's process can take the port while the proxy is down.
    let ip: std::net::IpAddr = "127.0.0.61".parse().unwrap();
    let port = free_port(ip);
    let listen = format!("{ip}:{port}");
    let first = Server::bundled_on(&listen);
    let url = first.url();
    /// Kills the program however the test ends.
    struct Program(std::process::Child);
    impl Drop for Program {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut program = Program(
        // Bounded by itself: two short retry loops, and a readline that a
        // dropped stdin ends.
        std::process::Command::new(python3())
            .args(["-c", SERVER_RESTART, "127.0.0.1", &target.addr.port().to_string()])
            .env("LD_PRELOAD", shim_path())
            .env("SOCKSIFY_PROXY", &url)
            .env("SOCKSIFY_NO_PROXY", "")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(program.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    assert_eq!(line.trim(), "before True");
    drop(first); // the proxy dies: its relay and the control connection go
    let second = Server::bundled_on(&listen);
    std::io::Write::write_all(program.0.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    drop(program); // its association ends, and the server logs it
    assert_eq!(line.trim(), "after True", "the shim must open a new association with the restarted proxy");
    second
        .log
        .wait_line(&["cmd=udp-associate", "reply=succeeded"])
        .unwrap_or_else(|| panic!("the restarted proxy never logged an association:\n{}", second.log.text()));
    let peers = target.peers();
    assert!(peers.len() >= 2 && peers.iter().all(|p| p.ip() == BUNDLED_OUT), "only the proxy may reach the target: {peers:?}");
}
