//! SOCKS BIND through the bundled `socksify-server` (`--bind-out
//! 127.0.0.2`: it listens for BINDs there): active FTP with curl and
//! python's ftplib, remote DNS, passive mode, the listener calls one by
//! one, and a local server that must stay local.

#[path = "common/bind_cases.rs"]
mod bind_cases;
mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use bind_cases::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[test]
fn curl_active_ftp_download() {
    curl_active_download(&Server::bundled(&[]), "127.0.0.1", "127.0.0.1");
}

#[test]
fn curl_active_ftp_download_by_a_name_only_the_proxy_knows() {
    // The BIND request names the expected peer as the program did: by name.
    curl_active_download(&dns_cases::bundled_server(), dns_cases::NAME, dns_cases::NAME);
}

#[test]
fn curl_active_ftp_upload() {
    curl_active_upload(&Server::bundled(&[]));
}

#[test]
fn python_ftplib_active_mode() {
    python_ftplib_active(&Server::bundled(&[]));
}

#[test]
fn python_ftplib_active_mode_over_ipv6() {
    // ftplib binds an AF_INET6 v6-only wildcard socket; the proxy listens
    // on IPv4 only, so the shim swaps it for an IPv4 one for the BIND and
    // still reports IPv6 addresses to the program.
    python_ftplib_active_on(&Server::bundled(&[]), LOCALHOST_V6, "[::1]");
}

#[test]
fn passive_mode_stays_plain_connects() {
    curl_passive(&Server::bundled(&[]));
}

#[test]
fn bind_off_keeps_the_listener_local() {
    bind_off_keeps_listeners_local(&Server::bundled(&[]));
}

#[test]
fn listener_calls_blocking_select_poll_epoll() {
    listener_api(&Server::bundled(&[]));
}

/// A server on a fixed port, in a program that also has a proxied
/// connection: it stays a local listener, reached directly.
const FIXED_PORT_SERVER: &str = r#"
import socket, sys
host, port, fixed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctl = socket.create_connection((host, port), timeout=20)
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", fixed))
lst.listen(5)
print("listening", *lst.getsockname(), flush=True)
lst.settimeout(20)
conn, peer = lst.accept()
conn.settimeout(20)
print("peer", *peer, flush=True)
conn.sendall(conn.recv(100).upper())
conn.close()
"#;

/// A free port below the kernel's ephemeral range: no outgoing connection
/// (the client's own attempts included) can take it meanwhile.
fn port_outside_the_ephemeral_range() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let start = (std::process::id() % span as u32) as u16;
    (0..span)
        .map(|i| 10_000 + (start + i) % span)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

#[test]
fn a_local_server_on_a_fixed_port_stays_local() {
    let server = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let fixed = port_outside_the_ephemeral_range();
    // The local client: tries until the program listens (bounded).
    let client = in_thread(move || {
        let addr = SocketAddr::new(DIRECT, fixed);
        let mut s = wait_until(WAIT, || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())?;
        s.set_read_timeout(Some(WAIT)).ok()?;
        let me = s.local_addr().ok()?;
        s.write_all(b"hello").ok()?;
        let mut back = [0u8; 5];
        s.read_exact(&mut back).ok()?;
        Some((me, back))
    });
    let out = Run::python(&server.url(), FIXED_PORT_SERVER)
        .arg(target.addr.ip().to_string())
        .arg(target.addr.port().to_string())
        .arg(fixed.to_string())
        .run();
    out.assert_success();
    let (me, back) = client.recv_timeout(WAIT).expect("client thread").expect("the local client got through");
    assert_eq!(&back, b"HELLO", "{out}");
    assert!(out.stdout.contains(&format!("listening 0.0.0.0 {fixed}\n")), "getsockname is the real one:\n{out}");
    assert!(out.stdout.contains(&format!("peer {} {}\n", me.ip(), me.port())), "the client came directly:\n{out}");
    target.assert_peers(1, BUNDLED_OUT);
    assert!(server.bind_lines().is_empty(), "{:?}", server.bind_lines());
}
