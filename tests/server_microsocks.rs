//! socksify through microsocks (Debian's `microsocks`), the server that
//! hung every connection while the handshake was pipelined: it reads each
//! message with one `recv` and drops what else came with it. microsocks
//! binds its outgoing side to 127.0.0.4 (`-b`), so a target that sees that
//! address proves the path (it keeps no log). Not here: `nc -N`, which
//! half-closes before the echo is back, and microsocks closes both sides on
//! the first FIN.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/microsocks.rs"]
mod microsocks;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;
#[path = "common/udp_refused.rs"]
mod udp_refused;

use common::*;
use dns_cases::NameProxy;
use microsocks::{Microsocks, MICROSOCKS_OUT};
use std::net::SocketAddr;

impl NameProxy for Microsocks {
    fn wait_named_connect(&self, _name: &str, _target: SocketAddr) {
        // No log: the case has already seen the target's peer, 127.0.0.4,
        // for a name only microsocks can resolve.
    }
}

#[test]
fn curl_fetches_a_page() {
    tcp_cases::curl(&Microsocks::start());
}

#[test]
fn python_blocking_socket() {
    tcp_cases::python_blocking(&Microsocks::start());
}

#[test]
fn python_nonblocking_socket_with_select() {
    tcp_cases::python_nonblocking(&Microsocks::start());
}

#[test]
fn python_asyncio_open_connection() {
    tcp_cases::python_asyncio(&Microsocks::start());
}

#[test]
fn getpeername_reports_the_target() {
    tcp_cases::getpeername(&Microsocks::start());
}

#[test]
fn fifty_concurrent_connections() {
    tcp_cases::concurrent_50(&Microsocks::start());
}

#[test]
fn username_password_auth() {
    let ms = Microsocks::start_with_auth("alice", "s3cret pw");
    let bad = format!("socks5h://alice:wrong@{}", ms.addr);
    tcp_cases::auth(&ms, &ms.url(), &bad);
}

#[test]
fn names_resolved_by_microsocks() {
    let ms = Microsocks::start_with_hosts(&dns_cases::proxy_hosts());
    dns_cases::curl(&ms, &dns_cases::direct);
    dns_cases::python_create_connection(&ms, &dns_cases::direct);
}

#[test]
fn refused_destination_is_econnrefused() {
    let ms = Microsocks::start();
    let port = free_port(DIRECT);
    let out = Run::python(&ms.url(), tcp_cases::CONNECT_ERRNO).args(["127.0.0.1", &port.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "errno 111", "microsocks replies 5 (connection refused):\n{out}");
}

/// microsocks answers UDP ASSOCIATE with reply 7, command not supported:
/// the program's `sendto` gets EOPNOTSUPP.
#[test]
fn udp_is_refused_never_direct() {
    udp_refused::udp_refused(&Microsocks::start().url(), libc::EOPNOTSUPP);
}

/// What the README says of a server that cannot take a pipelined
/// handshake: the connect waits for `SOCKSIFY_TIMEOUT_MS` and fails with
/// ETIMEDOUT; the destination is never contacted directly.
#[test]
fn pipelining_through_microsocks_times_out_never_direct() {
    let ms = Microsocks::start();
    let target = TcpTarget::echo();
    let out = Run::python(&ms.url_with("?pipeline=1"), tcp_cases::CONNECT_ERRNO)
        .args([target.addr.ip().to_string(), target.addr.port().to_string()])
        .env("SOCKSIFY_TIMEOUT_MS", "1000")
        .run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "errno 110", "{out}");
    assert!(out.stderr.contains("timed out waiting for the SOCKS reply"), "{out}");
    target.assert_untouched();
    // The same server, lock-step: fine.
    let out = Run::python(&ms.url(), tcp_cases::CONNECT_ERRNO).args([target.addr.ip().to_string(), target.addr.port().to_string()]).run();
    assert_eq!(out.stdout.trim(), "errno 0", "{out}");
    target.assert_peers(1, MICROSOCKS_OUT);
}
