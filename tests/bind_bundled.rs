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
use std::net::{IpAddr, SocketAddr, TcpStream};
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

/// The bundled server resolving [`dns_cases::NAME`] (only it can) to `ip`.
fn resolving(ip: IpAddr) -> Server {
    Server::bundled(&["--map", &format!("{}={ip}", dns_cases::NAME)])
}

#[test]
fn curl_active_ftp_by_name_forced_ipv4() {
    curl_active_by_name(&resolving(DIRECT), dns_cases::NAME, DIRECT, &["-4"]);
}

#[test]
fn curl_active_ftp_by_name_over_ipv6() {
    curl_active_by_name(&resolving(LOCALHOST_V6), dns_cases::NAME, LOCALHOST_V6, &["-6"]);
}

#[test]
fn curl_active_ftp_by_name_ipv4_socket_ipv6_proxy_side_fails_cleanly() {
    curl_active_by_name_across_families(&resolving(LOCALHOST_V6), dns_cases::NAME, &[]);
    curl_active_by_name_across_families(&resolving(LOCALHOST_V6), dns_cases::NAME, &["-4"]);
}

#[test]
fn getsockname_by_name_answers_in_the_sockets_family() {
    sockname_by_family(&resolving(DIRECT), dns_cases::NAME, DIRECT, |ip| ip.to_string(), |ip| format!("::ffff:{ip}"));
    sockname_by_family(&resolving(LOCALHOST_V6), dns_cases::NAME, LOCALHOST_V6, |_| "0.0.0.0".into(), |ip| ip.to_string());
}

/// `python3 -c SOCKNAME_V4 HOST PORT`: an AF_INET socket's `getsockname`
/// once connected.
const SOCKNAME_V4: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.recv(100)
local = s.getsockname()
print("local", len(local), local[0], local[1], flush=True)
"#;

/// A proxy reachable over IPv6 only: the shim puts an AF_INET6 socket in
/// place of the program's AF_INET one. With `SOCKSIFY_BIND=off`
/// `getsockname` reports the kernel's side, which is then IPv6: the
/// AF_INET socket is told 0.0.0.0 with that side's port, never an IPv6
/// address (which it used to be).
#[test]
fn getsockname_of_a_swapped_socket_keeps_the_programs_family() {
    let server = Server::start(&["--listen", "[::1]:0", "--bind-out", "127.0.0.2"]);
    let ftp = FtpServer::start();
    let out = Run::python(&server.url(), SOCKNAME_V4).env("SOCKSIFY_BIND", "off").arg("127.0.0.1").arg(ftp.port.to_string()).run();
    out.assert_success();
    let line = out.stdout.lines().find_map(|l| l.strip_prefix("local ")).unwrap_or_else(|| panic!("{out}"));
    let port = line.strip_prefix("2 0.0.0.0 ").unwrap_or_else(|| panic!("an AF_INET address, 0.0.0.0: {line}\n{out}"));
    let client = format!("client=[::1]:{port} cmd=connect");
    assert!(server.log.text().contains(&client), "the port is the kernel's side, toward the proxy ({client}):\n{}", server.log.text());
}
