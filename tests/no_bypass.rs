//! Paths where a program's bytes could leave directly, or vanish while the
//! call says they were sent, under `LD_PRELOAD`: io_uring, a
//! TCP Fast Open query to a loopback nameserver, raw and ICMP sockets,
//! sockets that carry their own destination (`AF_PACKET`, `IP_HDRINCL`),
//! UDP-Lite, the calls the shim does not hook on a UDP socket connected
//! through it, and `connect(AF_UNSPEC)` on such a socket.
//!
//! A leak shows at a listener the test holds (a raw ICMP or UDP-Lite
//! socket that records every packet's payload, synchronised with a
//! sentinel of its own, or a counting nameserver); a loss shows as a call
//! that reported success for a payload the target never saw. Needs root
//! (raw sockets, network namespaces; CI runs as root).

// clippy.toml's list is the shim's (its own calls must skip its hooks);
// this test binary is never preloaded, so libc's functions are the real ones.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/netns.rs"]
mod netns;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use netns::{DnsStub, NetNs};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// `tests/programs/NAME.c`, built with gcc into `dir`.
fn build(dir: &TempDir, name: &str) -> PathBuf {
    let exe = dir.path().join(name);
    let source = repo_root().join(format!("tests/programs/{name}.c"));
    Run::plain("gcc").args(["-O2", "-Wall", "-o"]).arg(&exe).arg(source).run().assert_success();
    exe
}

/// The words after `label ` on the line that starts with it.
fn line<'a>(out: &'a Output, label: &str) -> Vec<&'a str> {
    let prefix = format!("{label} ");
    let l = out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {label} line:\n{out}"));
    l.split_whitespace().collect()
}

// ---------------------------------------------------------------- io_uring

/// io_uring's operations never pass through a hook: the shim refuses the
/// ring with ENOSYS (as the supervisor does), so a program falls back to
/// plain calls. Without the shim the same program gets a working ring.
#[test]
fn io_uring_is_refused_with_enosys() {
    let dir = TempDir::new("io-uring");
    let exe = build(&dir, "io_uring_setup");
    let plain = Run::plain(&exe).run();
    plain.assert_success();
    assert_eq!(plain.stdout, "setup ok\nenter ok\nregister reached-the-kernel\n", "without the shim the ring works:\n{plain}");

    let server = Server::bundled(&[]);
    let out = Run::shimmed(&server.url(), &exe).run();
    out.assert_success();
    assert_eq!(out.stdout, "setup -1 ENOSYS\nenter -1 ENOSYS\nregister ENOSYS\n", "{out}");
    assert_eq!(out.stderr.matches("io_uring").count(), 1, "one log line says why:\n{out}");
}

// ---------------------------------------------------------------- TCP Fast Open to a nameserver

/// `python3 -c TFO_DNS NAME`: an A query over TCP to 127.0.0.1:53, once
/// with `sendto(MSG_FASTOPEN)` and once with `connect` and `sendall`;
/// prints the first address of each answer.
const TFO_DNS: &str = r#"
import socket, struct, sys
name = sys.argv[1]
def query():
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    return struct.pack("!H", len(q)) + q
def exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
def first_a(s):
    m = exact(s, struct.unpack("!H", exact(s, 2))[0])
    if struct.unpack("!H", m[6:8])[0] == 0:
        return "none"
    i = 12
    while m[i]:
        i += m[i] + 1
    i += 5
    i += 2 if m[i] & 0xc0 else m.index(0, i) + 1 - i
    rtype, _, _, rdlen = struct.unpack("!HHIH", m[i:i + 10])
    return socket.inet_ntoa(m[i + 10:i + 14]) if rtype == 1 and rdlen == 4 else "not-a"
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.sendto(query(), socket.MSG_FASTOPEN, ("127.0.0.1", 53))  # blocking, as without a cookie it must be
s.settimeout(15)
print("fastopen", first_a(s))
c = socket.create_connection(("127.0.0.1", 53), timeout=15)
c.sendall(query())
print("connect", first_a(c))
"#;

/// A DNS query over TCP sent with `sendto(MSG_FASTOPEN)` to a loopback
/// nameserver (systemd-resolved's 127.0.0.53 style), with the default
/// `SOCKSIFY_NO_PROXY` (which bypasses loopback), is answered in-process
/// just as a plain `connect` to it is: the counting nameserver sees none.
#[test]
fn tcp_fast_open_to_a_loopback_nameserver_is_answered_in_process() {
    let name = "tfo.socksify.test";
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(name, Ipv4Addr::LOCALHOST)]);
        // Control: without the shim both queries reach the stub.
        let plain = Run::plain("ip").args(["netns", "exec", &ns.name, python3(), "-c", TFO_DNS, name]).run();
        plain.assert_success();
        assert_eq!(plain.stdout, "fastopen 127.0.0.1\nconnect 127.0.0.1\n", "{plain}");
        let before = stub.queries().len();
        assert_eq!(before, 2, "the stub saw both queries without the shim: {:?}", stub.queries());

        let server = Server::bundled(&[]);
        let out = ns.shimmed(&server.url(), python3()).args(["-c", TFO_DNS, name]).env_remove("SOCKSIFY_NO_PROXY").run();
        out.assert_success();
        for how in ["fastopen", "connect"] {
            let ip: IpAddr = line(&out, how)[0].parse().unwrap_or_else(|_| panic!("{how}: no address:\n{out}"));
            assert!(udp_cases_is_fake(ip), "{how}: {ip} is not the DNS responder's fake answer:\n{out}");
        }
        let leaked = stub.queries()[before..].to_vec();
        assert!(leaked.is_empty(), "the nameserver was asked under the shim: {leaked:?}\n{out}");
    });
}

/// Whether `ip` is in the default fake pool (198.18.0.0/15).
fn udp_cases_is_fake(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if u32::from(v4) & 0xfffe_0000 == u32::from(Ipv4Addr::new(198, 18, 0, 0)))
}

// ---------------------------------------------------------------- listeners that see leaks

/// Sockets of the test's own that record the payload of every packet they
/// get (raw ICMP sockets see every echo request in their namespace; a
/// UDP-Lite socket what is sent to it).
struct Sniffer {
    fds: Arc<Vec<OwnedFd>>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sniffer {
    fn start(fds: Vec<OwnedFd>) -> Sniffer {
        let fds = Arc::new(fds);
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, st) = (fds.clone(), seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                let mut pfds: Vec<libc::pollfd> = f.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
                // SAFETY: an array of pollfds we own, its length.
                if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) } <= 0 {
                    continue;
                }
                for p in pfds.iter().filter(|p| p.revents & libc::POLLIN != 0) {
                    // SAFETY: our buffer, its length.
                    let n = unsafe { libc::recv(p.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
                    if n > 0 {
                        s.lock().unwrap().push(buf[..n as usize].to_vec());
                    }
                }
            }
        });
        Sniffer { fds, seen, stop, thread: Some(thread) }
    }

    fn saw(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|p| p.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// Sends a sentinel with `send` and waits until it is seen: every
    /// packet sent before it is recorded by then.
    fn sync(&self, send: impl Fn(&str)) {
        let sentinel = token("sentinel");
        let seen = wait_until(WAIT, || {
            send(&sentinel);
            thread::sleep(Duration::from_millis(5));
            self.saw(&sentinel).then_some(())
        });
        assert!(seen.is_some(), "the listener never saw its sentinel");
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = &self.fds;
    }
}

fn socket(domain: i32, ty: i32, protocol: i32) -> OwnedFd {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty, protocol) };
    assert!(fd >= 0, "socket({domain}, {ty}, {protocol}): {}", std::io::Error::last_os_error());
    // SAFETY: a new fd, ours alone.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn send_to(fd: &OwnedFd, bytes: &[u8], to: SocketAddr) {
    let (storage, len) = sockaddr(to);
    // SAFETY: our buffer and address.
    let n = unsafe { libc::sendto(fd.as_raw_fd(), bytes.as_ptr() as *const libc::c_void, bytes.len(), 0, &storage as *const _ as *const libc::sockaddr, len) };
    assert!(n >= 0, "sendto {to}: {}", std::io::Error::last_os_error());
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut st as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (st, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut st as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            (st, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// An ICMP (v6: ICMPv6, whose checksum the kernel fills in) echo request
/// carrying `data`.
fn echo_request(v6: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x51, 0x51, 0, 1];
    p.extend_from_slice(data);
    if !v6 {
        let mut sum: u32 = p.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    p
}

/// Raw ICMP and ICMPv6 sockets in `ns` that see every echo request
/// delivered there, and a packet socket that sees every frame on its
/// loopback (a frame a packet socket injects is not delivered: its
/// loopback source is a martian); and two sockets to send sentinels with.
fn icmp_sniffer(ns: &NetNs) -> (Sniffer, OwnedFd, OwnedFd) {
    ns.run(|| {
        let v4 = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        let v6 = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
        let frames = socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
        let (s4, s6) = (socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6));
        (Sniffer::start(vec![v4, v6, frames]), s4, s6)
    })
}

fn sync_icmp(sniffer: &Sniffer, s4: &OwnedFd, s6: &OwnedFd) {
    sniffer.sync(|t| send_to(s4, &echo_request(false, t.as_bytes()), "127.0.0.1:0".parse().unwrap()));
    sniffer.sync(|t| send_to(s6, &echo_request(true, t.as_bytes()), "[::1]:0".parse().unwrap()));
}

// ---------------------------------------------------------------- raw and ICMP sockets

/// `python3 -c ICMP TOKEN KIND=HOST...`: for each kind of socket (raw4,
/// ping4, raw6, ping6) an echo request to HOST with `sendto`, `sendmsg`,
/// and `connect` + `send` (payload KIND-TOKEN-CALL); prints `KIND CALL
/// ok|ERRNO`, and `KIND reply ok|timeout` when the `sendto` went.
const ICMP: &str = r#"
import errno, socket, struct, sys
token = sys.argv[1]
kinds = {
    "raw4": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "ping4": (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
    "raw6": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    "ping6": (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6),
}
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def echo(v6, data):
    t = 128 if v6 else 8
    c = 0 if v6 else csum(struct.pack("!BBHHH", t, 0, 0, 0x5151, 1) + data)
    return struct.pack("!BBHHH", t, 0, c, 0x5151, 1) + data
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
for spec in sys.argv[2:]:
    kind, host = spec.split("=")
    family, ty, proto = kinds[kind]
    v6 = family == socket.AF_INET6
    s = socket.socket(family, ty, proto)
    s.settimeout(10)
    data = lambda call: ("%s-%s-%s" % (kind, token, call)).encode()
    sent = attempt(lambda: s.sendto(echo(v6, data("sendto")), (host, 0)))
    print(kind, "sendto", sent)
    print(kind, "sendmsg", attempt(lambda: s.sendmsg([echo(v6, data("sendmsg"))], [], 0, (host, 0))))
    if sent == "ok":
        want = data("sendto")
        reply = "timeout"
        try:
            while True:
                buf = s.recv(4096)
                if ty == socket.SOCK_RAW and not v6:
                    buf = buf[(buf[0] & 15) * 4:]
                if buf[0] == (129 if v6 else 0) and want in buf:
                    reply = "ok"
                    break
        except socket.timeout:
            pass
        print(kind, "reply", reply)
    c = socket.socket(family, ty, proto)
    print(kind, "connect", attempt(lambda: (c.connect((host, 0)), c.send(echo(v6, data("connect"))))))
    sys.stdout.flush()
"#;

/// A netns whose ping sockets anyone may open, with the ICMP sniffer.
fn icmp_netns() -> (NetNs, Sniffer, OwnedFd, OwnedFd) {
    let ns = NetNs::create();
    netns::ip(&["netns", "exec", &ns.name, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647"]);
    let (sniffer, s4, s6) = icmp_sniffer(&ns);
    (ns, sniffer, s4, s6)
}

/// Raw ICMP sockets and ping sockets (`SOCK_DGRAM` + `IPPROTO_ICMP`/
/// `IPPROTO_ICMPV6`), IPv4 and IPv6, to destinations that are not
/// bypassed: `sendto`, `sendmsg` and `connect` fail with EPERM, and no
/// echo request reaches the namespace's loopback.
#[test]
fn raw_and_ping_sockets_to_proxied_destinations_are_refused() {
    let (ns, sniffer, s4, s6) = icmp_netns();
    let server = ns.run(|| Server::bundled(&[]));
    let tok = token("icmp-proxied");
    let out = ns.shimmed(&server.url(), python3()).args(["-c", ICMP, &tok, "raw4=127.0.0.9", "ping4=127.0.0.9", "raw6=::1", "ping6=::1"]).run();
    out.assert_success();
    let expected: String =
        ["raw4", "ping4", "raw6", "ping6"].iter().map(|k| format!("{k} sendto EPERM\n{k} sendmsg EPERM\n{k} connect EPERM\n")).collect();
    assert_eq!(out.stdout, expected, "{out}");
    sync_icmp(&sniffer, &s4, &s6);
    assert!(!sniffer.saw(&tok), "an echo request left the program:\n{out}");
    assert!(out.stderr.contains("refused (EPERM)"), "a log line says why:\n{out}");
}

/// The same sockets to bypassed destinations (the default
/// `SOCKSIFY_NO_PROXY`: loopback) work: the echo request goes, the reply
/// comes back.
#[test]
fn raw_and_ping_sockets_to_bypassed_destinations_work() {
    let (ns, sniffer, s4, s6) = icmp_netns();
    let server = ns.run(|| Server::bundled(&[]));
    let tok = token("icmp-bypassed");
    let out = ns
        .shimmed(&server.url(), python3())
        .args(["-c", ICMP, &tok, "raw4=127.0.0.1", "ping4=127.0.0.1", "raw6=::1", "ping6=::1"])
        .env_remove("SOCKSIFY_NO_PROXY")
        .run();
    out.assert_success();
    let expected: String = ["raw4", "ping4", "raw6", "ping6"]
        .iter()
        .map(|k| format!("{k} sendto ok\n{k} sendmsg ok\n{k} reply ok\n{k} connect ok\n"))
        .collect();
    assert_eq!(out.stdout, expected, "{out}");
    sync_icmp(&sniffer, &s4, &s6);
    for k in ["raw4", "ping4", "raw6", "ping6"] {
        for call in ["sendto", "sendmsg", "connect"] {
            assert!(sniffer.saw(&format!("{k}-{tok}-{call}")), "{k} {call} did not arrive:\n{out}");
        }
    }
}

// ---------------------------------------------------------------- sockets that carry their own destination

/// `python3 -c BLIND TOKEN KIND...`: sockets whose packets carry their
/// destination inside the payload: an IPv4 packet with an echo request to
/// 127.0.0.9 (payload KIND-TOKEN) sent from each, the socket address (if
/// any) 127.0.0.1. Prints `KIND socket|setsockopt|send ok|ERRNO`.
const BLIND: &str = r#"
import errno, socket, struct, sys
token = sys.argv[1]
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def packet(data):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x5252, 1) + data
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.9"))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + icmp
def attempt(f):
    try:
        return f() or "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
for kind in sys.argv[2:]:
    data = ("%s-%s" % (kind, token)).encode()
    s = None
    def make():
        global s
        if kind == "packet":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        elif kind == "packet-dgram":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        elif kind == "ipproto-raw":
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    made = attempt(make)
    print(kind, "socket", made)
    if made != "ok":
        continue
    if kind == "hdrincl":
        opt = attempt(lambda: s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1))
        print(kind, "setsockopt", opt)
        if opt != "ok":
            continue
    if kind == "packet":
        send = lambda: s.sendto(b"\0" * 12 + b"\x08\x00" + packet(data), ("lo", 0x0800)) and None
    elif kind == "packet-dgram":
        send = lambda: s.sendto(packet(data), ("lo", 0x0800, 0, 0, b"\0" * 6)) and None
    else:
        send = lambda: s.sendto(packet(data), ("127.0.0.1", 0)) and None
    print(kind, "send", attempt(send))
"#;

const BLIND_KINDS: [&str; 4] = ["packet", "packet-dgram", "ipproto-raw", "hdrincl"];

/// `AF_PACKET` sockets, raw `IPPROTO_RAW` sockets and `IP_HDRINCL` carry
/// their destination inside the payload, where the shim does not look:
/// while anything is proxied, they are refused with EPERM (here only
/// 127.0.0.1, the address their packets are sent to, is bypassed; the
/// packet inside is for 127.0.0.9).
#[test]
fn sockets_that_carry_their_own_destination_are_refused() {
    let (ns, sniffer, s4, s6) = icmp_netns();
    let server = ns.run(|| Server::bundled(&[]));
    let tok = token("blind");
    let out = ns.shimmed(&server.url(), python3()).args(["-c", BLIND, &tok]).args(BLIND_KINDS).env("SOCKSIFY_NO_PROXY", "127.0.0.1").run();
    out.assert_success();
    assert_eq!(
        out.stdout,
        "packet socket EPERM\npacket-dgram socket EPERM\nipproto-raw socket EPERM\nhdrincl socket ok\nhdrincl setsockopt EPERM\n",
        "{out}"
    );
    sync_icmp(&sniffer, &s4, &s6);
    assert!(!sniffer.saw(&tok), "a packet left the program:\n{out}");
    assert!(out.stderr.contains("refused (EPERM)"), "a log line says why:\n{out}");

    // With everything bypassed (`*`) nothing is refused, and the listener
    // sees each packet: it would have seen a leak.
    let tok = token("blind-bypassed");
    let out = ns.shimmed(&server.url(), python3()).args(["-c", BLIND, &tok]).args(BLIND_KINDS).env("SOCKSIFY_NO_PROXY", "*").run();
    out.assert_success();
    let expected: String = BLIND_KINDS
        .iter()
        .map(|k| if *k == "hdrincl" { format!("{k} socket ok\n{k} setsockopt ok\n{k} send ok\n") } else { format!("{k} socket ok\n{k} send ok\n") })
        .collect();
    assert_eq!(out.stdout, expected, "{out}");
    sync_icmp(&sniffer, &s4, &s6);
    for k in BLIND_KINDS {
        assert!(sniffer.saw(&format!("{k}-{tok}")), "{k}'s packet did not arrive:\n{out}");
    }
}

// ---------------------------------------------------------------- UDP-Lite

/// `python3 -c UDPLITE TOKEN PROXIED_PORT BYPASSED_PORT`: a UDP-Lite socket
/// sends to 127.0.0.8 (proxied) with `sendto` and `connect` + `send`, then
/// to 127.0.0.7 (bypassed).
const UDPLITE: &str = r#"
import errno, socket, sys
token, proxied, bypassed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
print("proxied sendto", attempt(lambda: s.sendto(("sendto-" + token).encode(), ("127.0.0.8", proxied))))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
print("proxied connect", attempt(lambda: (c.connect(("127.0.0.8", proxied)), c.send(("connect-" + token).encode()))))
print("bypassed sendto", attempt(lambda: s.sendto(("bypassed-" + token).encode(), ("127.0.0.7", bypassed))))
"#;

/// UDP-Lite cannot go through a UDP relay: to a proxied destination it
/// is refused with EPERM (a log line says why); to a bypassed one it goes
/// direct.
#[test]
fn udp_lite_to_proxied_destinations_is_refused() {
    const UDPLITE_PROTO: i32 = 136;
    let listen = |ip: Ipv4Addr| {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, UDPLITE_PROTO);
        let (st, len) = sockaddr(SocketAddr::new(ip.into(), 0));
        // SAFETY: our fd and address.
        assert_eq!(unsafe { libc::bind(fd.as_raw_fd(), &st as *const _ as *const libc::sockaddr, len) }, 0);
        // SAFETY: zeroed storage and its size.
        let mut got: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut glen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        unsafe { libc::getsockname(fd.as_raw_fd(), &mut got as *mut _ as *mut libc::sockaddr, &mut glen) };
        (fd, SocketAddr::new(ip.into(), u16::from_be(got.sin_port)))
    };
    let (proxied_fd, proxied) = listen(Ipv4Addr::new(127, 0, 0, 8));
    let (bypassed_fd, bypassed) = listen(Ipv4Addr::new(127, 0, 0, 7));
    let sniffer = Sniffer::start(vec![proxied_fd, bypassed_fd]);
    let server = Server::bundled(&[]);
    let tok = token("udplite");
    let out = Run::shimmed(&server.url(), python3())
        .args(["-c", UDPLITE, &tok, &proxied.port().to_string(), &bypassed.port().to_string()])
        .env("SOCKSIFY_NO_PROXY", "127.0.0.7")
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "proxied sendto EPERM\nproxied connect EPERM\nbypassed sendto ok\n", "{out}");
    let sender = socket(libc::AF_INET, libc::SOCK_DGRAM, UDPLITE_PROTO);
    sniffer.sync(|t| send_to(&sender, t.as_bytes(), proxied));
    assert!(!sniffer.saw(&format!("sendto-{tok}")) && !sniffer.saw(&format!("connect-{tok}")), "{out}");
    assert!(sniffer.saw(&format!("bypassed-{tok}")), "the bypassed datagram went direct:\n{out}");
    assert!(out.stderr.contains("UDP-Lite") && out.stderr.contains("refused (EPERM)"), "a log line says why:\n{out}");
}

// ---------------------------------------------------------------- calls the shim does not hook

fn run_unhooked(tag: &str) -> (Output, udp_cases::UdpTarget, String) {
    let dir = TempDir::new(tag);
    let exe = build(&dir, "udp_unhooked");
    let target = udp_cases::UdpTarget::echo(DIRECT);
    let server = Server::bundled(&[]);
    let tok = token(tag);
    let out = Run::shimmed(&server.url(), &exe).args(["127.0.0.1".to_string(), target.addr.port().to_string(), tok.clone()]).run();
    out.assert_success();
    target.sync();
    (out, target, tok)
}

/// A UDP socket connected through the shim, written with calls the shim
/// does not hook (`pwritev2`, `pwritev`, `sendfile`, `splice`,
/// `vmsplice` then `splice`, `copy_file_range`): each either fails with an
/// errno or its payload reaches the target through the proxy; none reports
/// success for a datagram that is thrown away. The socket works after.
#[test]
fn unhooked_writes_on_a_proxied_udp_socket_fail_or_arrive() {
    let (out, target, tok) = run_unhooked("unhooked");
    assert_eq!(line(&out, "send echo"), ["ok"], "{out}");
    assert_eq!(line(&out, "after echo"), ["ok"], "{out}");
    let arrived = target.datagrams();
    for call in ["pwritev2", "pwritev", "sendfile", "splice", "vmsplice-splice", "copy_file_range"] {
        let words = line(&out, call);
        let rc: i64 = words[0].parse().unwrap();
        let payload = format!("{}-{tok}", call.trim_end_matches("-splice"));
        if rc >= 0 {
            let got = arrived.iter().find(|(_, d)| d == payload.as_bytes());
            assert!(got.is_some(), "{call} reported {rc} bytes sent, and the target never got them:\n{out}");
            assert_eq!(got.unwrap().0.ip(), BUNDLED_OUT, "{call} went through the proxy");
        } else {
            assert_ne!(words[1], "-", "{call}: an errno:\n{out}");
        }
    }
    assert!(arrived.iter().all(|(from, _)| from.ip() == BUNDLED_OUT), "nothing direct: {arrived:?}");
}

/// `connect(AF_UNSPEC)` dissolves a proxied UDP socket's peer; a `sendto`
/// after it still goes through the association, and its echo comes back.
#[test]
fn sendto_after_connect_af_unspec_is_carried() {
    let (out, target, tok) = run_unhooked("unspec");
    assert_eq!(line(&out, "unspec"), ["0", "-"], "{out}");
    let n = format!("unspec-{tok}").len().to_string();
    assert_eq!(line(&out, "sendto-after-unspec"), [n.as_str(), "-"], "{out}");
    assert_eq!(line(&out, "echo-after-unspec"), ["ok"], "{out}");
    let arrived = target.datagrams();
    let got = arrived.iter().find(|(_, d)| d == format!("unspec-{tok}").as_bytes()).unwrap_or_else(|| panic!("never arrived:\n{out}"));
    assert_eq!(got.0.ip(), BUNDLED_OUT, "through the proxy");
}
