//! Failure semantics, end to end: when the proxy is down, misconfigured,
//! stalled or says no, the program sees a clean error, and nothing reaches
//! the target directly (the target records every connection it accepts).

mod common;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;

use common::*;

fn connect_errno(proxy_url: &str, target: &TcpTarget) -> Run {
    Run::python(proxy_url, tcp_cases::CONNECT_ERRNO).args([target.addr.ip().to_string(), target.addr.port().to_string()])
}

#[test]
fn proxy_down_is_connection_refused_and_nothing_leaks() {
    let target = TcpTarget::echo();
    let dead = free_port(DIRECT);
    let out = connect_errno(&format!("socks5h://127.0.0.1:{dead}"), &target).run();
    out.assert_success();
    assert!(out.stdout.contains("errno 111\n"), "a proxy nobody listens on must give ECONNREFUSED:\n{out}");
    target.assert_untouched();
}

#[test]
fn proxy_down_nonblocking_connect_fails_too() {
    // Non-blocking connect: the error may come at once or through SO_ERROR,
    // but it must come, and the target must see nothing.
    let target = TcpTarget::echo();
    let dead = free_port(DIRECT);
    let code = r#"
import errno, select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
rc = s.connect_ex((sys.argv[1], int(sys.argv[2])))
if rc == errno.EINPROGRESS:
    select.select([], [s], [], 20)
    rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
print("errno", rc)
"#;
    let out = Run::python(&format!("socks5h://127.0.0.1:{dead}"), code)
        .args([target.addr.ip().to_string(), target.addr.port().to_string()])
        .run();
    out.assert_success();
    assert!(out.stdout.contains("errno 111\n"), "a proxy nobody listens on must give ECONNREFUSED:\n{out}");
    target.assert_untouched();
}

#[test]
fn malformed_proxy_url_is_reported_once_and_nothing_leaks() {
    for bad in ["socks5h://127.0.0.1:notaport", "http://127.0.0.1:1080", "127.0.0.1:1080", "socks5h://[::1:1080"] {
        let target = TcpTarget::echo();
        // Two connects: the configuration is reported once, both fail.
        let code = r#"
import socket, sys
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        print("errno 0")
    except OSError as e:
        print("errno", e.errno)
    s.close()
"#;
        let out = Run::python(bad, code).args([target.addr.ip().to_string(), target.addr.port().to_string()]).run();
        out.assert_success();
        let errnos: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(errnos.len(), 2, "{out}");
        for e in &errnos {
            assert!(*e != "errno 0", "SOCKSIFY_PROXY={bad:?}: connect must fail, it succeeded:\n{out}");
        }
        let mentions = out.stderr.lines().filter(|l| l.contains("SOCKSIFY_PROXY")).count();
        assert_eq!(mentions, 1, "SOCKSIFY_PROXY={bad:?}: want exactly one stderr line naming SOCKSIFY_PROXY:\n{out}");
        target.assert_untouched();
    }
}

#[test]
fn stalled_proxy_times_out() {
    let stall = StallingProxy::start();
    let target = TcpTarget::echo();
    let out = connect_errno(&format!("socks5h://{}", stall.addr), &target).env("SOCKSIFY_TIMEOUT_MS", "500").run();
    out.assert_success();
    assert!(out.stdout.contains("errno 110\n"), "a proxy that never answers must give ETIMEDOUT:\n{out}");
    assert!(stall.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the shim never reached the stalling proxy");
    target.assert_untouched();
}

#[test]
fn denied_destination_is_refused() {
    let target = TcpTarget::echo();
    let rule = format!("{}", target.addr);
    let server = Server::bundled(&["--deny", &rule]);
    let out = connect_errno(&server.url(), &target).run();
    out.assert_success();
    assert!(
        out.stdout.contains("errno 13\n") || out.stdout.contains("errno 111\n"),
        "a destination the server denies must give EACCES or ECONNREFUSED:\n{out}"
    );
    target.assert_untouched();
    let line = server.wait_connect_line(target.addr);
    assert!(!line.contains("reply=succeeded"), "the server must have refused: {line}");
}

#[test]
fn unreachable_target_is_connection_refused() {
    // The server reaches out and gets RST: SOCKS reply 5 → ECONNREFUSED.
    let server = Server::bundled(&[]);
    let port = free_port(DIRECT);
    let out = Run::python(&server.url(), tcp_cases::CONNECT_ERRNO).args(["127.0.0.1".to_string(), port.to_string()]).run();
    out.assert_success();
    assert!(out.stdout.contains("errno 111\n"), "a refused destination must give ECONNREFUSED:\n{out}");
    let line = server.wait_connect_line(format!("127.0.0.1:{port}").parse().unwrap());
    assert!(!line.contains("reply=succeeded"), "{line}");
}

#[test]
fn bypassed_destination_goes_direct() {
    // The other side of the coin: SOCKSIFY_NO_PROXY covering the target
    // sends it direct (peer 127.0.0.1); a proxied one still goes through.
    let server = Server::bundled(&[]);
    let direct = TcpTarget::echo();
    let proxied = TcpTarget::echo();
    let code = r#"
import socket, sys
for port in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
    s.sendall(b"hello")
    s.shutdown(socket.SHUT_WR)
    print(port, s.recv(100).decode())
"#;
    let out = Run::python(&server.url(), code)
        .env("SOCKSIFY_NO_PROXY", &direct.addr.to_string())
        .args([direct.addr.port().to_string(), proxied.addr.port().to_string()])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, format!("{} hello\n{} hello\n", direct.addr.port(), proxied.addr.port()), "{out}");
    direct.assert_peers(1, DIRECT);
    proxied.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(proxied.addr);
    assert_eq!(server.connect_count(direct.addr), 0, "a bypassed destination must not go through the proxy");
}

/// A panic inside the shim (forced with the test hook
/// `SOCKSIFY_DEBUG_PANIC`) is caught at the FFI boundary: the program gets
/// an error, keeps running, and nothing reaches a destination directly.
#[test]
fn a_panic_in_a_hook_fails_the_call_and_leaks_nothing() {
    let server = Server::bundled(&[]);
    let script = r#"
import socket, sys
host, port, uport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
try:
    s.connect((host, port))
    print("tcp connected")
except OSError as e:
    print("tcp errno", e.errno)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
try:
    u.sendto(b"leak?", (host, uport))
    u.recvfrom(64)  # the echo: the association stays open until it is back
    print("udp echoed")
except OSError as e:
    print("udp errno", e.errno)
print("still running")
"#;
    // (site that panics, what the program sees, TCP connections the target sees)
    for (site, expected, tcp_via_proxy) in [("connect", "tcp errno 111", 0), ("udp-send", "udp errno 101", 1)] {
        let target = TcpTarget::echo();
        let udp_target = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = udp_target.local_addr().unwrap().port();
        // Echoes one datagram and reports where it came from (bounded wait).
        let udp_echo = std::thread::spawn(move || {
            udp_target.set_read_timeout(Some(std::time::Duration::from_secs(8))).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = udp_target.recv_from(&mut buf).ok()?;
            udp_target.send_to(&buf[..n], from).unwrap();
            Some(from)
        });
        let out = Run::python(&server.url(), script)
            .args([target.addr.ip().to_string(), target.addr.port().to_string(), udp_port.to_string()])
            .env("SOCKSIFY_DEBUG_PANIC", site)
            .run();
        out.assert_success();
        assert!(out.stdout.contains("still running"), "{site}: {out}");
        assert!(out.stdout.contains(expected), "{site}: the call must fail: {out}");
        assert!(out.stderr.contains("internal error (panic)"), "{site}: the panic is reported: {out}");
        // The call that did not panic went through the proxy; the one that
        // did reached nothing.
        target.assert_peers(tcp_via_proxy, BUNDLED_OUT);
        if site == "udp-send" {
            // Nothing was sent; unblock the echo thread with a datagram of our own.
            let probe = std::net::UdpSocket::bind("127.0.0.9:0").unwrap();
            probe.send_to(b"probe", ("127.0.0.1", udp_port)).unwrap();
            assert_eq!(
                udp_echo.join().unwrap().map(|a| a.ip()),
                Some("127.0.0.9".parse().unwrap()),
                "udp-send panicked, yet a datagram arrived"
            );
        } else {
            assert!(out.stdout.contains("udp echoed"), "the datagram of the connect run goes through the proxy: {out}");
            assert_eq!(udp_echo.join().unwrap().map(|a| a.ip()), Some(BUNDLED_OUT), "the datagram must come from the proxy");
        }
    }
}
