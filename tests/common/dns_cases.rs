//! The end-to-end cases of names resolved by the proxy, written
//! once and run against the bundled server (`tests/dns_bundled.rs`), Dante
//! (`tests/dns_dante.rs`) and inside a network namespace whose only DNS
//! server counts queries (`tests/dns_leak.rs`).
//!
//! The client machine cannot resolve [`NAME`]; only the proxy can (the
//! bundled server by `--map`, Dante by a hosts file in its own mount
//! namespace). So a page that arrives, from the proxy's outgoing address,
//! proves the name went to the proxy.
#![allow(dead_code)]

use crate::common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A name only the proxy can resolve (to 127.0.0.1).
pub const NAME: &str = "name.test";

/// The default fake pools (see `socksify_proto::config`).
pub fn is_fake(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) & 0xfffe_0000 == u32::from(Ipv4Addr::new(198, 18, 0, 0)),
        IpAddr::V6(v6) => v6.segments()[..4] == [0xfd50, 0xc5f1, 0xf1ed, 0],
    }
}

/// The bundled server that resolves [`NAME`] to 127.0.0.1.
pub fn bundled_server() -> Server {
    Server::bundled(&["--map", &format!("{NAME}=127.0.0.1")])
}

/// The hosts file of a proxy that resolves [`NAME`] to 127.0.0.1.
pub fn proxy_hosts() -> String {
    format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n::1 localhost\n")
}

/// Dante, resolving [`NAME`] from a hosts file only it sees.
pub fn dante_server() -> Dante {
    Dante::start_with_hosts(&proxy_hosts())
}

/// A proxy that can show it was asked for a name.
pub trait NameProxy: Proxy {
    /// Waits for the proxy's log of a CONNECT to `name` that reached `target`.
    fn wait_named_connect(&self, name: &str, target: SocketAddr);
}

impl NameProxy for Server {
    fn wait_named_connect(&self, name: &str, target: SocketAddr) {
        // The bundled server logs the destination as the client sent it.
        let dst = format!("dst={name}:{} ", target.port());
        self.log
            .wait_line(&["cmd=connect", &dst, "reply=succeeded"])
            .unwrap_or_else(|| panic!("socksify-server never logged a CONNECT to {name} (by name); its log:\n{}", self.log.text()));
    }
}

impl NameProxy for Dante {
    fn wait_named_connect(&self, _name: &str, target: SocketAddr) {
        // Dante logs the address it resolved the name to.
        self.wait_connect_line(target);
    }
}

/// `python3 -c ECHO_BY_NAME NAME PORT TOKEN`: `create_connection` by name,
/// prints the peer it reports, sends TOKEN, reads the echo.
pub const ECHO_BY_NAME: &str = r#"
import socket, sys
name, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.create_connection((name, port), timeout=20)
print("peer", s.getpeername()[0])
s.sendall(token)
data = b""
while len(data) < len(token):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.shutdown(socket.SHUT_WR)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("echo", "intact" if data == token else "CORRUPT")
"#;

/// `python3 -c ECHO_V6 NAME PORT TOKEN`: `getaddrinfo(AF_INET6)`, then an
/// AF_INET6 socket connects to the first answer.
pub const ECHO_V6: &str = r#"
import socket, sys
name, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
infos = socket.getaddrinfo(name, port, socket.AF_INET6, socket.SOCK_STREAM)
print("addrs", " ".join(ai[4][0] for ai in infos))
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(infos[0][4])
print("peer", s.getpeername()[0])
s.sendall(token)
data = b""
while len(data) < len(token):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.shutdown(socket.SHUT_WR)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("echo", "intact" if data == token else "CORRUPT")
"#;

/// `python3 -c ROUND_TRIP NAME PORT TOKEN`: forward, reverse and forward
/// again, then a connection to the name the reverse look-up gave.
pub const ROUND_TRIP: &str = r#"
import socket, sys
name, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
for fam in (socket.AF_INET, socket.AF_INET6):
    addr = socket.getaddrinfo(name, port, fam, socket.SOCK_STREAM)[0][4]
    print("getnameinfo", addr[0], socket.getnameinfo(addr, 0)[0])
    print("numeric", addr[0], socket.getnameinfo(addr, socket.NI_NUMERICHOST)[0])
    print("gethostbyaddr", addr[0], socket.gethostbyaddr(addr[0])[0])
h = socket.gethostbyname_ex(name)
print("gethostbyname_ex", h[0], " ".join(h[2]))
back = socket.getnameinfo(socket.getaddrinfo(name, port, socket.AF_INET)[0][4], socket.NI_NAMEREQD)[0]
s = socket.create_connection((back, port), timeout=20)
s.sendall(token)
data = b""
while len(data) < len(token):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.shutdown(socket.SHUT_WR)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("echo", "intact" if data == token else "CORRUPT")
"#;

fn assert_echo(out: &Output, target: &TcpTarget, proxy: &dyn NameProxy, token: &str) {
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "no echo:\n{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    proxy.wait_named_connect(NAME, target.addr);
    assert_eq!(target.received(), vec![token.as_bytes().to_vec()]);
}

/// The address after `label ` on the output's line starting with it.
fn field(out: &Output, label: &str) -> IpAddr {
    let line = out.stdout.lines().find(|l| l.starts_with(&format!("{label} "))).unwrap_or_else(|| panic!("no {label} line:\n{out}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap_or_else(|_| panic!("bad address in {line:?}"))
}

/// Runs `prog ARGS` under the shim; `wrap` puts a prefix in front (the leak
/// test runs everything through `ip netns exec`).
pub type Wrap<'a> = &'a dyn Fn(&str, &str) -> Run;

pub fn direct(url: &str, prog: &str) -> Run {
    Run::shimmed(url, prog)
}

pub fn curl(proxy: &dyn NameProxy, wrap: Wrap) {
    let body = token("dns-curl");
    let target = proxy.target(Serve::Http(body.clone()));
    let url = format!("http://{NAME}:{}/", target.addr.port());
    let out = wrap(&proxy.url(), "curl").args(["-sS", "--max-time", "20", "-w", "\n%{remote_ip}", &url]).run();
    out.assert_success();
    let (page, ip) = out.stdout.rsplit_once('\n').unwrap_or_else(|| panic!("no remote_ip:\n{out}"));
    assert_eq!(page, body, "curl printed something else than the page:\n{out}");
    assert!(is_fake(ip.parse().unwrap()), "curl connected to {ip}, not a fake address:\n{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    proxy.wait_named_connect(NAME, target.addr);
    assert!(out.stderr.contains(&format!("-> {NAME}:{}", target.addr.port())), "the shim's log names the flow by name:\n{out}");
}

pub fn wget(proxy: &dyn NameProxy, wrap: Wrap) {
    let body = token("dns-wget");
    let target = proxy.target(Serve::Http(body.clone()));
    let url = format!("http://{NAME}:{}/", target.addr.port());
    let out = wrap(&proxy.url(), "wget").args(["-q", "-T", "20", "-t", "1", "-O", "-", &url]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "wget printed something else than the page:\n{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    proxy.wait_named_connect(NAME, target.addr);
}

pub fn python_create_connection(proxy: &dyn NameProxy, wrap: Wrap) {
    let target = proxy.target(Serve::Echo);
    let tok = token("dns-py");
    let out = wrap(&proxy.url(), python3()).args(["-c", ECHO_BY_NAME, NAME, &target.addr.port().to_string(), &tok]).run();
    assert_echo(&out, &target, proxy, &tok);
    let peer = field(&out, "peer");
    assert!(peer.is_ipv4() && is_fake(peer), "getpeername must report the fake address connected to, got {peer}:\n{out}");
}

pub fn python_ipv6(proxy: &dyn NameProxy, wrap: Wrap) {
    let target = proxy.target(Serve::Echo);
    let tok = token("dns-py6");
    let out = wrap(&proxy.url(), python3()).args(["-c", ECHO_V6, NAME, &target.addr.port().to_string(), &tok]).run();
    assert_echo(&out, &target, proxy, &tok);
    let addrs = out.stdout.lines().find_map(|l| l.strip_prefix("addrs ")).unwrap_or_default();
    assert!(!addrs.is_empty(), "no addresses:\n{out}");
    for a in addrs.split_whitespace() {
        let ip: Ipv6Addr = a.parse().unwrap();
        assert!(
            is_fake(IpAddr::V6(ip)) && ip.to_ipv4_mapped().is_none(),
            "an AF_INET6 look-up must get an IPv6 fake address, got {a}:\n{out}"
        );
    }
    assert_eq!(field(&out, "peer"), addrs.split_whitespace().next().unwrap().parse::<IpAddr>().unwrap());
}

pub fn round_trip(proxy: &dyn NameProxy, wrap: Wrap) {
    let target = proxy.target(Serve::Echo);
    let tok = token("dns-rt");
    let out = wrap(&proxy.url(), python3()).args(["-c", ROUND_TRIP, NAME, &target.addr.port().to_string(), &tok]).run();
    assert_echo(&out, &target, proxy, &tok);
    for label in ["getnameinfo", "gethostbyaddr"] {
        let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with(&format!("{label} "))).collect();
        assert_eq!(lines.len(), 2, "one {label} per family:\n{out}");
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert!(is_fake(parts[1].parse().unwrap()), "{line}");
            assert_eq!(parts[2], NAME, "a reverse look-up of a fake address gives the name back:\n{out}");
        }
    }
    for line in out.stdout.lines().filter(|l| l.starts_with("numeric ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts[1], parts[2], "NI_NUMERICHOST gives the fake address itself:\n{out}");
    }
    let ex = out.stdout.lines().find(|l| l.starts_with("gethostbyname_ex ")).unwrap();
    let parts: Vec<&str> = ex.split_whitespace().collect();
    assert_eq!(parts[1], NAME);
    assert!(parts[2..].iter().all(|a| is_fake(a.parse().unwrap())) && parts.len() == 3, "{ex}");
}

/// `getent ahosts` and `hosts`: well-formed fake answers. (Not `ahostsv6`:
/// it sets `AI_ADDRCONFIG`, which, as in glibc, finds no IPv6 answer on a
/// machine with IPv6 on loopback only, such as the leak test's namespace.)
pub fn getent(url: &str, wrap: Wrap) {
    let out = wrap(url, "getent").args(["ahosts", NAME]).run();
    out.assert_success();
    let rows: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 6, "two addresses × STREAM, DGRAM, RAW:\n{out}");
    let first: IpAddr = rows[0][0].parse().unwrap();
    assert!(first.is_ipv4(), "AF_UNSPEC lists the IPv4 fake address first, as glibc orders 198.18/15 before a ULA:\n{out}");
    assert_eq!(rows[0].get(2), Some(&NAME), "AI_CANONNAME is the name itself:\n{out}");
    let types: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(types, ["STREAM", "DGRAM", "RAW", "STREAM", "DGRAM", "RAW"], "{out}");
    for r in &rows {
        assert!(is_fake(r[0].parse().unwrap()), "{r:?} is not a fake address:\n{out}");
    }
    assert!(rows[3][0].parse::<IpAddr>().unwrap().is_ipv6());

    // getent hosts uses gethostbyname2(AF_INET6) first.
    let out = wrap(url, "getent").args(["hosts", NAME]).run();
    out.assert_success();
    let parts: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(parts.len(), 2, "{out}");
    assert!(is_fake(parts[0].parse().unwrap()) && parts[1] == NAME, "{out}");
}
