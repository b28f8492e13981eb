//! TCP through the bundled `socksify-server`, end to end: real programs run
//! under `LD_PRELOAD=libsocksify.so`; the server connects out from 127.0.0.2,
//! so a target that sees 127.0.0.2 proves the bytes went through it.

mod common;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;

use common::*;

#[test]
fn curl_fetches_a_page() {
    tcp_cases::curl(&Server::bundled(&[]));
}

#[test]
fn python_blocking_socket() {
    tcp_cases::python_blocking(&Server::bundled(&[]));
}

#[test]
fn python_nonblocking_socket_with_select() {
    tcp_cases::python_nonblocking(&Server::bundled(&[]));
}

#[test]
fn python_asyncio_open_connection() {
    tcp_cases::python_asyncio(&Server::bundled(&[]));
}

#[test]
fn netcat_openbsd() {
    tcp_cases::netcat(&Server::bundled(&[]));
}

#[test]
fn username_password_auth() {
    // Characters that must be percent-encoded in the URL and decoded by the shim.
    let (user, pass) = ("al ice", "p@ss:w/rd%é");
    let server = Server::bundled(&["--user", &format!("{user}:{pass}")]);
    let good = server.url_with(user, pass);
    let bad = server.url_with(user, "wrong");
    tcp_cases::auth(&server, &good, &bad);
}

#[test]
fn username_password_required_when_configured() {
    // A server with users refuses a client that offers no credentials.
    let server = Server::bundled(&["--user", "alice:secret"]);
    let target = TcpTarget::echo();
    let out =
        Run::python(&server.url(), tcp_cases::CONNECT_ERRNO).args([target.addr.ip().to_string(), target.addr.port().to_string()]).run();
    out.assert_success();
    assert!(
        out.stdout.contains("errno 13") || out.stdout.contains("errno 111"),
        "no credentials against a server that wants them must fail with EACCES or ECONNREFUSED:\n{out}"
    );
    target.assert_untouched();
}

#[test]
fn ipv6_target_through_ipv4_proxy() {
    tcp_cases::ipv6_target(&Server::bundled(&[]));
}

#[test]
fn getpeername_reports_the_target() {
    tcp_cases::getpeername(&Server::bundled(&[]));
}

#[test]
fn fifty_concurrent_connections() {
    tcp_cases::concurrent_50(&Server::bundled(&[]));
}

#[test]
fn proxy_on_ipv6_loopback() {
    // An AF_INET6 client reaches an IPv6 target through a proxy on [::1].
    let server = Server::start(&["--listen", "[::1]:0", "--bind-out", "127.0.0.2"]);
    tcp_cases::ipv6_target(&server);
}

/// `python3 -c OPTIONS_CARRIED HOST PORT [bind]`: an AF_INET socket with
/// options, flags and close-on-exec set as a program would, connected
/// (non-blocking, then `select`); prints what the socket has afterwards and
/// the echo. With `bind`, the socket is bound to 127.0.0.1:0 first.
const OPTIONS_CARRIED: &str = r#"
import os, select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if sys.argv[3:] == ["bind"]:
    s.bind(("127.0.0.1", 0))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 50000)
s.set_inheritable(True)
s.setblocking(False)
rc = s.connect_ex((host, port))
if rc not in (0, 115):
    print("errno", rc)
    sys.exit(0)
select.select([], [s], [], 20)
print("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
print("nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
print("keepalive", s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
print("keepidle", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))
print("rcvbuf", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
print("inheritable", s.get_inheritable())
print("blocking", s.getblocking(), bool(__import__("fcntl").fcntl(s.fileno(), __import__("fcntl").F_GETFL) & os.O_NONBLOCK))
print("peer", *s.getpeername()[:2])
s.setblocking(True)
s.settimeout(20)
s.sendall(b"swapped")
print("echo", s.recv(64).decode())
"#;

#[test]
fn ipv4_socket_reaches_an_ipv6_only_proxy_with_its_options() {
    // The proxy listens on [::1] only: the program's AF_INET socket cannot
    // reach it, so an AF_INET6 socket takes its place, with what the
    // program set on it.
    let server = Server::start(&["--listen", "[::1]:0", "--bind-out", "127.0.0.2"]);
    let target = TcpTarget::echo();
    let out = Run::python(&server.url(), OPTIONS_CARRIED).args([target.addr.ip().to_string(), target.addr.port().to_string()]).run();
    out.assert_success();
    for want in ["so_error 0", "nodelay 1", "keepalive 1", "keepidle 77", "rcvbuf 100000", "inheritable True", "blocking False True"] {
        assert!(out.stdout.lines().any(|l| l == want), "{want:?} not carried over:\n{out}");
    }
    assert!(out.stdout.contains(&format!("peer {} {}\n", target.addr.ip(), target.addr.port())), "{out}");
    assert!(out.stdout.contains("echo swapped"), "{out}");
    assert!(out.stderr.contains("replaced by one of that family"), "the shim says what it did:\n{out}");
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(target.addr);
    // curl's AF_INET socket, the issue's case.
    let body = token("swap-curl");
    let web = TcpTarget::http(&body);
    let out = Run::shimmed(&server.url(), "curl").args(["-sS", "--max-time", "20", &format!("http://{}/", web.addr)]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    web.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn bound_ipv4_socket_and_an_ipv6_only_proxy_fail_without_leaking() {
    // A socket bound to an IPv4 address has no IPv6 equivalent: it is not
    // replaced, the connect fails, and nothing goes direct.
    let server = Server::start(&["--listen", "[::1]:0", "--bind-out", "127.0.0.2"]);
    let target = TcpTarget::echo();
    let out = Run::python(&server.url(), OPTIONS_CARRIED)
        .args([target.addr.ip().to_string(), target.addr.port().to_string(), "bind".into()])
        .run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), format!("errno {}", libc::EAFNOSUPPORT), "{out}");
    target.assert_untouched();
}

#[test]
fn ipv6_only_socket_reaches_an_ipv4_only_proxy() {
    // An AF_INET6 socket with IPV6_V6ONLY cannot use a v4-mapped address:
    // an AF_INET socket takes its place for the IPv4 proxy.
    let server = Server::bundled(&[]);
    let target = TcpTarget::start(LOCALHOST_V6, Serve::Echo);
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(20)
s.connect((sys.argv[1], int(sys.argv[2])))
print("nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
print("peer", *s.getpeername()[:2])
s.sendall(b"six-to-four")
print("echo", s.recv(64).decode())
"#;
    let out = Run::python(&server.url(), script).args(["::1".to_string(), target.addr.port().to_string()]).run();
    out.assert_success();
    assert!(out.stdout.contains("nodelay 1\n"), "{out}");
    assert!(out.stdout.contains(&format!("peer ::1 {}\n", target.addr.port())), "{out}");
    assert!(out.stdout.contains("echo six-to-four"), "{out}");
    assert_eq!(target.received(), vec![b"six-to-four".to_vec()]);
    // The server logged the CONNECT: the bytes went through it (the target
    // on ::1 sees the server's own ::1, so the log is the proof here).
    server.wait_connect_line(target.addr);
}

#[test]
fn socks4_and_socks4a_urls() {
    let server = Server::bundled(&[]);
    for scheme in ["socks4", "socks4a"] {
        let target = TcpTarget::echo();
        let tok = token(scheme);
        let url = format!("{scheme}://{}", server.addr());
        let out = tcp_cases::run_echo(&url, tcp_cases::ECHO_BLOCKING, &target, &tok, 5000);
        out.assert_success();
        assert!(out.stdout.contains("echo intact"), "{scheme}: {out}");
        let line = server.wait_connect_line(target.addr);
        assert!(line.contains("socks=4"), "{scheme}: the server must have spoken SOCKS4: {line}");
        target.assert_peers(1, BUNDLED_OUT);
    }
}

#[test]
fn chain_of_two_proxies() {
    // SOCKSIFY_PROXY=first,second: the first hop (out from 127.0.0.2)
    // connects to the second (out from 127.0.0.3), which reaches the target.
    let first = Server::bundled(&[]);
    let second = Server::start(&["--listen", "127.0.0.1:0", "--bind-out", "127.0.0.3"]);
    let target = TcpTarget::echo();
    let tok = token("chain");
    let url = format!("{},{}", first.url(), second.url());
    let out = tcp_cases::run_echo(&url, tcp_cases::ECHO_BLOCKING, &target, &tok, 5000);
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    target.assert_peers(1, "127.0.0.3".parse().unwrap());
    let line = second.wait_connect_line(target.addr);
    assert!(line.contains("client=127.0.0.2:"), "the second hop must be reached through the first: {line}");
    first.wait_connect_line(second.addr());
}

#[test]
fn proxy_given_by_host_name() {
    // `localhost` is resolved with libc's own resolver (never faked): it
    // names ::1 first, where nothing listens, then 127.0.0.1; the shim tries
    // each address until the proxy answers.
    let server = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let tok = token("proxy-by-name");
    let url = format!("socks5h://localhost:{}", server.addr().port());
    let out = tcp_cases::run_echo(&url, tcp_cases::ECHO_BLOCKING, &target, &tok, 5000);
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    server.wait_connect_line(target.addr);
    target.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn connect_through_libc_syscall_function() {
    // Some programs call libc's syscall(SYS_connect, ...) instead of
    // connect(); that still goes through the proxy, and a successful
    // connect leaves errno as the program set it.
    let server = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let script = r#"
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_connect = 42  # x86_64
s = socket.socket()
addr = struct.pack("!HH4s8x", socket.AF_INET, int(sys.argv[2]), socket.inet_aton(sys.argv[1]))
addr = struct.pack("=H", socket.AF_INET) + addr[2:]
buf = ctypes.create_string_buffer(addr, len(addr))
ctypes.set_errno(0)
rc = libc.syscall(ctypes.c_long(SYS_connect), ctypes.c_long(s.fileno()), buf, ctypes.c_long(len(addr)))
print("rc", rc, "errno", ctypes.get_errno())
s.sendall(b"via-syscall")
print("echo", s.recv(64).decode())
"#;
    let out = Run::python(&server.url(), script).args([target.addr.ip().to_string(), target.addr.port().to_string()]).run();
    out.assert_success();
    assert!(out.stdout.contains("rc 0 errno 0") && out.stdout.contains("echo via-syscall"), "{out}");
    server.wait_connect_line(target.addr);
    target.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn pipelined_opt_in() {
    // Our own server parses what arrives as it goes: known good, one round trip.
    let server = Server::bundled(&[]);
    tcp_cases::python_blocking(&tcp_cases::Pipelined(&server));
    tcp_cases::curl(&tcp_cases::Pipelined(&server));
}

#[test]
fn pipelined_opt_in_with_username_password_and_a_chain() {
    let first = Server::bundled(&["--user", "alice:pw"]);
    let second = Server::start(&["--listen", "127.0.0.1:0", "--bind-out", "127.0.0.3"]);
    let target = TcpTarget::echo();
    let tok = token("pipelined-chain");
    // SOCKSIFY_PIPELINE=1 opts every SOCKS5 hop in.
    let url = format!("{},{}", first.url_with("alice", "pw"), second.url());
    let out = Run::python(&url, tcp_cases::ECHO_BLOCKING)
        .args([target.addr.ip().to_string(), target.addr.port().to_string(), tok.clone(), "5000".into()])
        .env("SOCKSIFY_PIPELINE", "1")
        .run();
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    target.assert_peers(1, "127.0.0.3".parse().unwrap());
    second.wait_connect_line(target.addr);
    first.wait_connect_line(second.addr());
}
