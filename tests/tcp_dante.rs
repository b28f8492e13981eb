//! TCP through a third-party SOCKS server, Dante's `danted` (Debian package
//! dante-server), configured by the test in a temp dir: the same cases as
//! `tcp_bundled.rs`. Dante connects out from 127.0.0.3 (`external:`), so a
//! target that sees 127.0.0.3 proves the bytes went through it.

mod common;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;

use common::*;

#[test]
fn curl_fetches_a_page() {
    tcp_cases::curl(&Dante::start());
}

#[test]
fn python_blocking_socket() {
    tcp_cases::python_blocking(&Dante::start());
}

#[test]
fn python_nonblocking_socket_with_select() {
    tcp_cases::python_nonblocking(&Dante::start());
}

#[test]
fn python_asyncio_open_connection() {
    tcp_cases::python_asyncio(&Dante::start());
}

#[test]
fn netcat_openbsd() {
    tcp_cases::netcat(&Dante::start());
}

#[test]
fn username_password_auth() {
    // Dante checks the system password database: scripts/test creates the
    // account; its password has a space, percent-encoded in the URL.
    let dante = Dante::start_with_auth();
    let good = dante.url_with_auth();
    let bad = format!("socks5h://{}:wrong@{}", DANTE_USER, dante.addr);
    tcp_cases::auth(&dante, &good, &bad);
}

#[test]
fn ipv6_target_through_ipv4_proxy() {
    tcp_cases::ipv6_target(&Dante::start());
}

#[test]
fn getpeername_reports_the_target() {
    tcp_cases::getpeername(&Dante::start());
}

#[test]
fn fifty_concurrent_connections() {
    tcp_cases::concurrent_50(&Dante::start());
}

#[test]
fn pipelined_opt_in() {
    // Dante reads what arrives and parses it as it goes: known good.
    let dante = Dante::start();
    tcp_cases::python_blocking(&tcp_cases::Pipelined(&dante));
    tcp_cases::curl(&tcp_cases::Pipelined(&dante));
}

#[test]
fn pipelined_opt_in_with_username_password() {
    let dante = Dante::start_with_auth();
    let good = format!("{}?pipeline=1", dante.url_with_auth());
    let bad = format!("socks5h://{}:wrong@{}?pipeline=1", DANTE_USER, dante.addr);
    tcp_cases::auth(&dante, &good, &bad);
}
