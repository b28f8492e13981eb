//! Programs that resolve names themselves leak no DNS query either (issue
//! 11): `dig` (UDP and `+tcp`), `host`, node's `dns.resolve4`/`resolve6`
//! (c-ares) and python's dnspython send their own DNS messages to the
//! resolv.conf nameserver, and in remote mode the shim answers them
//! in-process from its fake-address table.
//!
//! Set-up of `tests/dns_leak.rs`: a network namespace whose only
//! nameserver (127.0.0.1:53, from its resolv.conf) is a stub that counts
//! every query, and knows [`NAME`] as 127.0.0.1 (so a leaked query would
//! also show as a real address). The bundled server (outgoing from
//! 127.0.0.2) maps [`NAME`] to the echo target; a target that saw
//! 127.0.0.2 and a server log line `dst=name.test:PORT` prove that the
//! name went through the proxy. `dig` and `host` never connect, and the
//! fake table belongs to one process, so for them the proof is the fake
//! answer, the PTR round trip inside one run, and zero queries; node and
//! dnspython connect to what they resolved, in the same process.
//! Needs root (CI runs as root).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
mod netns;

use common::*;
use dns_cases::{is_fake, NameProxy, NAME};
use netns::{DnsStub, NetNs};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `node -e NODE_RESOLVE NAME PORT TOKEN`: c-ares `resolve4`, `resolve6`
/// and `reverse`, then a connection to the IPv4 answer, echoing TOKEN.
const NODE_RESOLVE: &str = r#"
const dns = require('dns'), net = require('net');
const [name, port, token] = process.argv.slice(1);
const fail = (what, e) => { console.log(what, 'error', e.code || e); process.exit(2); };
dns.resolve4(name, (e, a4) => {
  if (e) fail('resolve4', e);
  console.log('A', a4.join(' '));
  dns.resolve6(name, (e, a6) => {
    if (e) fail('resolve6', e);
    console.log('AAAA', a6.join(' '));
    dns.reverse(a4[0], (e, names) => {
      if (e) fail('reverse', e);
      console.log('PTR', names.join(' '));
      const s = net.connect({ host: a4[0], port: +port });
      let data = '';
      s.on('connect', () => s.end(token));
      s.on('data', d => data += d);
      s.on('end', () => console.log('echo', data === token ? 'intact' : 'CORRUPT'));
      s.on('error', e => fail('connect', e));
    });
  });
});
"#;

/// `python3 -c DNSPYTHON NAME PORT TOKEN`: dnspython's stub resolver
/// (UDP, then TCP, then PTR), a connection to the IPv6 answer, and an MX
/// query, whose outcome is printed; and the process's thread count after
/// the UDP and after the TCP queries.
const DNSPYTHON: &str = r#"
import os, socket, sys
import dns.resolver, dns.reversename
name, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
r = dns.resolver.Resolver()
r.lifetime = 20
a = r.resolve(name, "A")[0].address
print("A", a)
aaaa = r.resolve(name, "AAAA")[0].address
print("AAAA", aaaa)
print("threads-after-udp", len(os.listdir("/proc/self/task")))
print("A-tcp", r.resolve(name, "A", tcp=True)[0].address)
print("threads-after-tcp", len(os.listdir("/proc/self/task")))
print("PTR", r.resolve(dns.reversename.from_address(aaaa), "PTR")[0].target.to_text(omit_final_dot=True))
s = socket.create_connection((aaaa, port), timeout=20)
s.sendall(token)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("echo", "intact" if data == token else "CORRUPT")
try:
    r.resolve(name, "MX")
    print("MX answered")
except dns.resolver.NoNameservers as e:
    print("MX refused" if "REFUSED" in str(e) else "MX failed: %s" % e)
"#;

/// `python3 -c DNSPYTHON_PLAIN NAME`: dnspython's A answer, nothing more.
const DNSPYTHON_PLAIN: &str = r#"
import sys, dns.resolver
print("A", dns.resolver.Resolver().resolve(sys.argv[1], "A")[0].address)
"#;

/// The words after `label ` on the line that starts with it.
fn line<'a>(out: &'a Output, label: &str) -> Vec<&'a str> {
    let l = out.stdout.lines().find(|l| l.starts_with(&format!("{label} "))).unwrap_or_else(|| panic!("no {label} line:\n{out}"));
    l.split_whitespace().skip(1).collect()
}

fn fake(text: &str, out: &Output) -> IpAddr {
    let ip: IpAddr = text.trim().parse().unwrap_or_else(|_| panic!("{text:?} is not an address:\n{out}"));
    assert!(is_fake(ip), "{ip} is not a fake address:\n{out}");
    ip
}

fn assert_through_proxy(out: &Output, target: &TcpTarget, server: &Server, token: &str) {
    out.assert_success();
    assert_eq!(line(out, "echo"), ["intact"], "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_named_connect(NAME, target.addr);
    assert_eq!(target.received(), vec![token.as_bytes().to_vec()]);
}

#[test]
fn programs_with_their_own_resolver_send_no_dns_queries_in_remote_mode() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        // Control: without the shim, dig asks the stub and gets its answer.
        let out = Run::plain("ip").args(["netns", "exec", &ns.name, "dig", "+short", "+tries=1", NAME]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.1", "the stub must be the namespace's resolver:\n{out}");
        let before = stub.queries().len();
        assert!(before > 0);

        let server = dns_cases::bundled_server();
        let url = server.url();

        // dig over UDP, several questions in one process: A, AAAA, and the
        // PTR of the fake address gives the name back.
        let out = ns.shimmed(&url, "dig").args(["+short", "+tries=1", NAME, "A", NAME, "AAAA", "-x", "198.18.0.1"]).run();
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(fake(lines[0], &out), IpAddr::from(Ipv4Addr::new(198, 18, 0, 1)), "{out}");
        assert!(fake(lines[1], &out).is_ipv6(), "{out}");
        assert_eq!(lines[2], format!("{NAME}."), "PTR of the fake address:\n{out}");

        // dig over TCP (+tcp): our loopback listener answers.
        let out = ns.shimmed(&url, "dig").args(["+tcp", "+short", "+tries=1", NAME]).run();
        out.assert_success();
        fake(&out.stdout, &out);

        // host: A, AAAA, and MX, which we cannot fake: REFUSED, said once.
        let out = ns.shimmed(&url, "host").args(["-W", "5", NAME]).run();
        let a = line(&out, &format!("{NAME} has address"));
        fake(a.last().unwrap(), &out);
        let aaaa = line(&out, &format!("{NAME} has IPv6 address"));
        assert!(fake(aaaa.last().unwrap(), &out).is_ipv6());
        assert!(out.stdout.contains("REFUSED"), "host's MX query is refused:\n{out}");

        // An MX and a TXT query: REFUSED (no SOCKSIFY_DNS_UPSTREAM).
        for ty in ["MX", "TXT"] {
            let out = ns.shimmed(&url, "dig").args(["+tries=1", ty, NAME]).run();
            assert!(out.stdout.contains("status: REFUSED"), "{ty}:\n{out}");
        }

        // node (c-ares): resolve4, resolve6, reverse, then connect by the answer.
        let target = TcpTarget::echo();
        let tok = token("dns-node");
        let node = require_program("node", "nodejs");
        let out = ns.shimmed(&url, &node).args(["-e", NODE_RESOLVE, NAME, &target.addr.port().to_string(), &tok]).run();
        assert_through_proxy(&out, &target, &server, &tok);
        fake(line(&out, "A")[0], &out);
        assert!(fake(line(&out, "AAAA")[0], &out).is_ipv6());
        assert_eq!(line(&out, "PTR"), [NAME], "{out}");

        // dnspython: UDP, TCP, PTR, connect to the IPv6 answer, MX refused.
        let target = TcpTarget::echo();
        let tok = token("dns-dnspython");
        let out = ns.shimmed(&url, python3()).args(["-c", DNSPYTHON, NAME, &target.addr.port().to_string(), &tok]).run();
        assert_through_proxy(&out, &target, &server, &tok);
        let a = fake(line(&out, "A")[0], &out);
        assert_eq!(fake(line(&out, "A-tcp")[0], &out), a, "one name, one address, over UDP and TCP:\n{out}");
        assert_eq!(line(&out, "PTR"), [NAME], "{out}");
        assert_eq!(line(&out, "MX"), ["refused"], "{out}");
        // UDP answers need no thread; DNS over TCP starts one, on first use.
        assert_eq!(line(&out, "threads-after-udp"), ["1"], "{out}");
        assert_eq!(line(&out, "threads-after-tcp"), ["2"], "{out}");

        let leaked = stub.queries()[before..].to_vec();
        eprintln!("remote mode: the stub saw {} queries from dig, host, node and dnspython (control run: {before})", leaked.len());
        assert!(leaked.is_empty(), "remote mode leaked DNS queries: {leaked:?}");
    });
}

#[test]
fn local_mode_and_bypassed_names_ask_the_nameserver() {
    let ns = NetNs::create();
    ns.run(|| {
        let bypassed = "direct.local.test";
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST), (bypassed, Ipv4Addr::new(127, 0, 0, 9))]);
        let server = dns_cases::bundled_server();
        let local_url = server.url().replace("socks5h://", "socks5://");
        let count = |name: &str| stub.queries().iter().filter(|q| q.starts_with(&format!("{name} "))).count();

        // socks5://: the programs' own queries reach the stub, as without us.
        let out = ns.shimmed(&local_url, "dig").args(["+short", "+tries=1", NAME]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.1", "{out}");
        assert_eq!(count(NAME), 1);
        let out = ns.shimmed(&local_url, "host").args(["-W", "5", "-t", "A", NAME]).run();
        assert!(out.stdout.contains(&format!("{NAME} has address 127.0.0.1")), "{out}");
        assert_eq!(count(NAME), 2);
        let node = require_program("node", "nodejs");
        let js = "require('dns').resolve4(process.argv[1], (e, a) => console.log('A', e ? e.code : a.join(' ')))";
        let out = ns.shimmed(&local_url, &node).args(["-e", js, NAME]).run();
        assert_eq!(line(&out, "A"), ["127.0.0.1"], "{out}");
        assert_eq!(count(NAME), 3);
        let out = ns.shimmed(&local_url, python3()).args(["-c", DNSPYTHON_PLAIN, NAME]).run();
        assert_eq!(line(&out, "A"), ["127.0.0.1"], "{out}");
        assert_eq!(count(NAME), 4);

        // socks5h:// with SOCKSIFY_NO_PROXY naming the domain: bypassed names
        // are asked of the nameserver (and get its real answer), others not.
        let out = ns.shimmed(&server.url(), "dig").env("SOCKSIFY_NO_PROXY", ".local.test").args(["+short", "+tries=1", bypassed]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.9", "{out}");
        assert_eq!(count(bypassed), 1);
        let out =
            ns.shimmed(&server.url(), "dig").env("SOCKSIFY_NO_PROXY", ".local.test").args(["+tcp", "+short", "+tries=1", bypassed]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.9", "{out}");
        assert!(stub.queries().contains(&format!("{bypassed} 1 tcp")), "forwarded over TCP, as the program asked: {:?}", stub.queries());
        let out =
            ns.shimmed(&server.url(), python3()).env("SOCKSIFY_NO_PROXY", ".local.test").args(["-c", DNSPYTHON_PLAIN, bypassed]).run();
        assert_eq!(line(&out, "A"), ["127.0.0.9"], "{out}");
        assert_eq!(count(bypassed), 3);
        assert_eq!(count(NAME), 4, "no query for a name the proxy resolves");
        // ... and local mode over TCP too.
        let out = ns.shimmed(&local_url, "dig").args(["+tcp", "+short", "+tries=1", NAME]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.1", "{out}");
        assert!(stub.queries().contains(&format!("{NAME} 1 tcp")), "{:?}", stub.queries());
    });
}

/// A DNS-over-TCP server that answers every query with one MX record
/// (`10 mail.upstream.test`) and records the peer of each connection.
struct TcpUpstream {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TcpUpstream {
    fn start() -> TcpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let seen = peers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                seen.lock().unwrap().push(conn.peer_addr().unwrap());
                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if conn.read_exact(&mut q).is_err() || q.len() < 12 {
                    continue;
                }
                // Header and question only (no OPT), then one MX record.
                let end = 12 + q[12..].iter().position(|&b| b == 0).unwrap() + 1 + 4;
                let mut a = q[..end].to_vec();
                a[2] = 0x80 | (q[2] & 0x01);
                a[3] = 0x80;
                a[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
                a.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60]);
                let rdata = [&[0u8, 10][..], b"\x04mail\x08upstream\x04test\x00"].concat();
                a.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                a.extend_from_slice(&rdata);
                let _ = conn.write_all(&[&(a.len() as u16).to_be_bytes()[..], &a].concat());
            }
        });
        TcpUpstream { addr, peers }
    }
}

#[test]
fn queries_we_cannot_fake_go_to_the_upstream_through_the_proxy() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let server = dns_cases::bundled_server();
        let upstream = TcpUpstream::start();
        for transport in ["+notcp", "+tcp"] {
            let out = ns
                .shimmed(&server.url(), "dig")
                .env("SOCKSIFY_DNS_UPSTREAM", &upstream.addr.to_string())
                .args([transport, "+short", "+tries=1", "MX", NAME])
                .run();
            out.assert_success();
            assert_eq!(out.stdout.trim(), "10 mail.upstream.test.", "{transport}: the upstream's answer:\n{out}");
        }
        let peers = upstream.peers.lock().unwrap().clone();
        assert_eq!(peers.len(), 2, "one connection per query: {peers:?}");
        assert!(peers.iter().all(|p| p.ip() == BUNDLED_OUT), "the upstream is reached through the proxy: {peers:?}");
        server.wait_connect_line(upstream.addr);
        assert_eq!(stub.queries(), [] as [String; 0], "nothing reaches the nameserver");
    });
}

/// `python3 -c FORK_TCP NAME OTHER PORT TOKEN`: dnspython over TCP in the
/// parent (which starts the shim's DNS-over-TCP thread), then, in a forked
/// child, over TCP again for OTHER, a name the parent never looked up, and
/// a connection to its answer; then the parent asks again.
const FORK_TCP: &str = r#"
import os, socket, sys, dns.resolver
name, other, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
r = dns.resolver.Resolver()
r.lifetime = 20
print("parent", r.resolve(name, "A", tcp=True)[0].address, flush=True)
pid = os.fork()
if pid == 0:
    try:
        a = r.resolve(other, "A", tcp=True)[0].address
        print("child", a, flush=True)
        s = socket.create_connection((a, port), timeout=20)
        s.sendall(token)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        print("echo", "intact" if data == token else "CORRUPT", flush=True)
        os._exit(0)
    except Exception as e:
        print("child error", repr(e), flush=True)
        os._exit(1)
_, status = os.waitpid(pid, 0)
print("status", status)
print("parent-again", r.resolve(name, "AAAA", tcp=True)[0].address)
"#;

#[test]
fn dns_over_tcp_works_in_a_fork_child_from_its_own_table() {
    let ns = NetNs::create();
    ns.run(|| {
        let other = "child.test";
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST), (other, Ipv4Addr::LOCALHOST)]);
        let server = Server::bundled(&["--map", &format!("{NAME}=127.0.0.1"), "--map", &format!("{other}=127.0.0.1")]);
        let target = TcpTarget::echo();
        let tok = token("dns-fork");
        let out = ns.shimmed(&server.url(), python3()).args(["-c", FORK_TCP, NAME, other, &target.addr.port().to_string(), &tok]).run();
        out.assert_success();
        fake(line(&out, "parent")[0], &out);
        // The child's answer comes from the child's table: connecting to it
        // reaches the proxy by name (an answer from the parent's thread
        // would be an address the child does not know).
        fake(line(&out, "child")[0], &out);
        assert_eq!(line(&out, "echo"), ["intact"], "{out}");
        assert_eq!(line(&out, "status"), ["0"], "{out}");
        assert!(fake(line(&out, "parent-again")[0], &out).is_ipv6(), "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_named_connect(other, target.addr);
        assert_eq!(stub.queries(), [] as [String; 0], "nothing reaches the nameserver");
    });
}

#[test]
fn an_ipv6_nameserver_is_answered_too() {
    let ns = NetNs::create();
    std::fs::write(ns.etc_dir().join("resolv.conf"), "nameserver ::1\noptions timeout:2 attempts:1\n").unwrap();
    ns.run(|| {
        // Anything reaching [::1]:53, over UDP or TCP, is counted.
        let udp = std::net::UdpSocket::bind("[::1]:53").expect("bind [::1]:53");
        udp.set_nonblocking(true).unwrap();
        let tcp = TcpListener::bind("[::1]:53").expect("bind [::1]:53 (TCP)");
        tcp.set_nonblocking(true).unwrap();
        let server = dns_cases::bundled_server();
        for args in [&["+short", "+tries=1", NAME, "AAAA"][..], &["+tcp", "+short", "+tries=1", NAME][..]] {
            let out = ns.shimmed(&server.url(), "dig").args(args).run();
            out.assert_success();
            fake(&out.stdout, &out);
        }
        let target = TcpTarget::echo();
        let tok = token("dns-v6-nameserver");
        let out = ns.shimmed(&server.url(), python3()).args(["-c", DNSPYTHON, NAME, &target.addr.port().to_string(), &tok]).run();
        assert_through_proxy(&out, &target, &server, &tok);
        assert!(udp.recv_from(&mut [0u8; 512]).is_err(), "a datagram reached the IPv6 nameserver");
        assert!(tcp.accept().is_err(), "a connection reached the IPv6 nameserver");
    });
}

/// `python3 -c CLOSED_LISTENER NAME`: DNS over TCP, then `os.closerange`
/// closes every fd above 2 (the shim's listener among them, behind its
/// back), then DNS over TCP again; then the thread count once it settles.
const CLOSED_LISTENER: &str = r#"
import os, sys, time, dns.resolver
name = sys.argv[1]
r = dns.resolver.Resolver()
r.lifetime = 20
print("first", r.resolve(name, "A", tcp=True)[0].address, flush=True)
os.closerange(3, 65536)
print("second", r.resolve(name, "A", tcp=True)[0].address, flush=True)
deadline = time.monotonic() + 20
while len(os.listdir("/proc/self/task")) > 2 and time.monotonic() < deadline:
    time.sleep(0.05)
print("threads", len(os.listdir("/proc/self/task")))
"#;

#[test]
fn a_listener_closed_behind_our_back_is_replaced() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let out = ns.shimmed("socks5h://127.0.0.1:1080", python3()).args(["-c", CLOSED_LISTENER, NAME]).run();
        out.assert_success();
        let first = fake(line(&out, "first")[0], &out);
        assert_eq!(fake(line(&out, "second")[0], &out), first, "{out}");
        assert_eq!(line(&out, "threads"), ["2"], "the old server thread ended, a new one serves:\n{out}");
        assert_eq!(stub.queries(), [] as [String; 0]);
    });
}
