//! Names resolved by the proxy, through the bundled `socksify-server`
//! (`--map name.test=127.0.0.1`): the client cannot resolve the name, gets
//! a fake address, and the server is asked for the name (it logs
//! `dst=name.test:PORT`) and connects out from 127.0.0.2.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use common::*;
use dns_cases::{bundled_server, direct, is_fake, NAME};
use std::net::IpAddr;

#[test]
fn curl_by_name() {
    dns_cases::curl(&bundled_server(), &direct);
}

#[test]
fn wget_by_name() {
    dns_cases::wget(&bundled_server(), &direct);
}

#[test]
fn python_create_connection_by_name() {
    dns_cases::python_create_connection(&bundled_server(), &direct);
}

#[test]
fn python_getaddrinfo_inet6_then_connect() {
    dns_cases::python_ipv6(&bundled_server(), &direct);
}

#[test]
fn getnameinfo_and_gethostbyaddr_round_trip() {
    dns_cases::round_trip(&bundled_server(), &direct);
}

#[test]
fn getent_shows_fake_addresses() {
    // No connection is made: any URL will do, but use a real server anyway.
    dns_cases::getent(&bundled_server().url(), &direct);
}

#[test]
fn localhost_is_never_faked() {
    let server = bundled_server();
    let out = Run::shimmed(&server.url(), "getent").args(["ahosts", "localhost"]).run();
    out.assert_success();
    assert!(!out.stdout.is_empty(), "{out}");
    for line in out.stdout.lines() {
        let ip: IpAddr = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(ip.is_loopback(), "localhost resolved to {ip}:\n{out}");
    }
}

/// The `_r` variants write into the caller's buffer and say ERANGE when it
/// is too small; `gethostbyaddr_r` of a fake address gives the name.
const REENTRANT: &str = r#"
import ctypes, socket, sys
libc = ctypes.CDLL(None)
class hostent(ctypes.Structure):
    _fields_ = [("h_name", ctypes.c_char_p), ("h_aliases", ctypes.POINTER(ctypes.c_char_p)),
                ("h_addrtype", ctypes.c_int), ("h_length", ctypes.c_int),
                ("h_addr_list", ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)))]
name = sys.argv[1].encode()
P, SZ, INT = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
libc.gethostbyname_r.argtypes = [ctypes.c_char_p, P, P, SZ, P, P]
libc.gethostbyname2_r.argtypes = [ctypes.c_char_p, INT, P, P, SZ, P, P]
libc.gethostbyaddr_r.argtypes = [ctypes.c_char_p, ctypes.c_uint, INT, P, P, SZ, P, P]
def call(fam, size):
    ret, result, herr = hostent(), ctypes.POINTER(hostent)(), ctypes.c_int()
    buf = ctypes.create_string_buffer(size)
    if fam == socket.AF_INET:
        rc = libc.gethostbyname_r(name, ctypes.byref(ret), buf, size, ctypes.byref(result), ctypes.byref(herr))
    else:
        rc = libc.gethostbyname2_r(name, fam, ctypes.byref(ret), buf, size, ctypes.byref(result), ctypes.byref(herr))
    return rc, result, (ret, buf)
for fam in (socket.AF_INET, socket.AF_INET6):
    rc, result, _ = call(fam, 8)
    print("small", fam, rc, bool(result))
    rc, result, keep = call(fam, 1024)
    h = result.contents
    addr = bytes(h.h_addr_list[0][:h.h_length])
    print("big", fam, rc, h.h_name.decode(), h.h_addrtype, socket.inet_ntop(fam, addr), bool(h.h_addr_list[1]))
    ret, result2, herr = hostent(), ctypes.POINTER(hostent)(), ctypes.c_int()
    buf2 = ctypes.create_string_buffer(1024)
    rc = libc.gethostbyaddr_r(addr, len(addr), fam, ctypes.byref(ret), buf2, 1024, ctypes.byref(result2), ctypes.byref(herr))
    print("byaddr", fam, rc, result2.contents.h_name.decode())
"#;

#[test]
fn reentrant_gethostbyname_variants() {
    let server = bundled_server();
    let out = Run::python(&server.url(), REENTRANT).arg(NAME).run();
    out.assert_success();
    for fam in [libc::AF_INET, libc::AF_INET6] {
        assert!(out.stdout.contains(&format!("small {fam} {} False", libc::ERANGE)), "a too small buffer is ERANGE:\n{out}");
        let big = out.stdout.lines().find(|l| l.starts_with(&format!("big {fam} "))).unwrap();
        let parts: Vec<&str> = big.split_whitespace().collect();
        assert_eq!(&parts[2..5], &["0", NAME, &fam.to_string()], "{out}");
        let ip: IpAddr = parts[5].parse().unwrap();
        assert!(is_fake(ip) && ip.is_ipv6() == (fam == libc::AF_INET6), "{out}");
        assert_eq!(parts[6], "False", "one address, then the terminating null:\n{out}");
        assert!(out.stdout.contains(&format!("byaddr {fam} 0 {NAME}")), "{out}");
    }
}

/// A fork child connects by the fake address its parent resolved.
const FORK_CHILD: &str = r#"
import os, socket, sys
name, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
pid = os.fork()
if pid == 0:
    s = socket.create_connection(addr, timeout=20)
    s.sendall(token)
    s.shutdown(socket.SHUT_WR)
    data = s.recv(65536)
    os._exit(0 if data == token else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"#;

#[test]
fn fork_child_inherits_the_table() {
    let server = bundled_server();
    let target = TcpTarget::echo();
    let tok = token("dns-fork");
    let out = Run::python(&server.url(), FORK_CHILD).args([NAME, &target.addr.port().to_string(), &tok]).run();
    out.assert_success();
    assert!(out.stdout.contains("child 0"), "the child could not reach the name:\n{out}");
    target.assert_peers(1, BUNDLED_OUT);
    dns_cases::NameProxy::wait_named_connect(&server, NAME, target.addr);
}

/// Connects to an address and prints the errno (0 on success).
const CONNECT_ERRNO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(20)
print("errno", s.connect_ex((sys.argv[1], int(sys.argv[2]))))
"#;

#[test]
fn unknown_fake_address_is_unreachable_and_goes_nowhere() {
    let server = bundled_server();
    let target = TcpTarget::echo();
    // 198.18.3.3 is in the pool, but no name in this process holds it.
    let out = Run::python(&server.url(), CONNECT_ERRNO).args(["198.18.3.3", &target.addr.port().to_string()]).run();
    out.assert_success();
    assert!(out.stdout.contains(&format!("errno {}", libc::EHOSTUNREACH)), "want EHOSTUNREACH:\n{out}");
    assert!(!server.log.text().contains("cmd=connect"), "nothing may reach the proxy:\n{}", server.log.text());
}

#[test]
fn fake_pool_wins_over_a_bypass_rule_covering_it() {
    let server = bundled_server();
    let target = TcpTarget::echo();
    let tok = token("dns-cidr");
    let out = Run::python(&server.url(), dns_cases::ECHO_BY_NAME)
        .env("SOCKSIFY_NO_PROXY", "198.18.0.0/15,fd50::/16")
        .args([NAME, &target.addr.port().to_string(), &tok])
        .run();
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    dns_cases::NameProxy::wait_named_connect(&server, NAME, target.addr);
}

#[test]
fn fake_net_can_be_overridden() {
    let server = bundled_server();
    let out = Run::shimmed(&server.url(), "getent").env("SOCKSIFY_FAKE_NET", "100.64.0.0/10,fd00:5eed::/64").args(["ahosts", NAME]).run();
    out.assert_success();
    let addrs: Vec<&str> = out.stdout.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(addrs.first(), Some(&"100.64.0.1"), "{out}");
    assert_eq!(addrs.last(), Some(&"fd00:5eed::1"), "{out}");
}

#[test]
fn a_name_the_proxy_resolves_to_ipv6() {
    // The client gets an IPv4 fake address for name6.test; the server maps
    // the name to ::1, so the connection arrives over IPv6 at a target on
    // ::1 (the server's log names the flow by name).
    let server = Server::bundled(&["--map", "name6.test=::1"]);
    let target = TcpTarget::start(LOCALHOST_V6, Serve::Echo);
    let tok = token("dns-v6-map");
    let out = dns_cases::direct(&server.url(), python3())
        .args(["-c", dns_cases::ECHO_BY_NAME, "name6.test", &target.addr.port().to_string(), &tok])
        .run();
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    assert_eq!(target.received(), vec![tok.as_bytes().to_vec()]);
    server
        .log
        .wait_line(&["cmd=connect", &format!("dst=name6.test:{} ", target.addr.port()), "reply=succeeded"])
        .unwrap_or_else(|| panic!("no CONNECT by name in the server's log:\n{}", server.log.text()));
}
