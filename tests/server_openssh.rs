//! socksify through OpenSSH's dynamic forwarding (`ssh -N -D`), started by
//! the test against its own sshd in a network namespace (see
//! `tests/common/openssh.rs`): the targets live in that namespace, so only
//! sshd can reach them, and sshd's log names each forwarded destination.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone; the DNS stub is for other tests
mod netns;
#[path = "common/openssh.rs"]
mod openssh;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;
#[path = "common/udp_refused.rs"]
mod udp_refused;

use common::*;
use dns_cases::NameProxy;
use openssh::OpenSsh;
use std::net::SocketAddr;

impl NameProxy for OpenSsh {
    fn wait_named_connect(&self, name: &str, target: SocketAddr) {
        // sshd logs the destination as the client sent it: the name.
        self.wait_forward(name, target.port());
    }
}

#[test]
fn curl_fetches_a_page() {
    tcp_cases::curl(&OpenSsh::start());
}

#[test]
fn python_blocking_socket() {
    tcp_cases::python_blocking(&OpenSsh::start());
}

#[test]
fn python_nonblocking_socket_with_select() {
    tcp_cases::python_nonblocking(&OpenSsh::start());
}

#[test]
fn python_asyncio_open_connection() {
    tcp_cases::python_asyncio(&OpenSsh::start());
}

#[test]
fn netcat_openbsd() {
    tcp_cases::netcat(&OpenSsh::start());
}

#[test]
fn ipv6_target() {
    tcp_cases::ipv6_target(&OpenSsh::start());
}

#[test]
fn getpeername_reports_the_target() {
    tcp_cases::getpeername(&OpenSsh::start());
}

#[test]
fn fifty_concurrent_connections() {
    tcp_cases::concurrent_50(&OpenSsh::start());
}

#[test]
fn names_resolved_by_sshd() {
    let ssh = OpenSsh::start_with_hosts(&dns_cases::proxy_hosts());
    dns_cases::curl(&ssh, &dns_cases::direct);
    dns_cases::python_create_connection(&ssh, &dns_cases::direct);
}

#[test]
fn socks4_and_socks4a() {
    let ssh = OpenSsh::start_with_hosts(&dns_cases::proxy_hosts());
    // SOCKS4 by address.
    let target = ssh.target(Serve::Echo);
    let tok = token("socks4");
    let out = tcp_cases::run_echo(&ssh.url_as("socks4"), tcp_cases::ECHO_BLOCKING, &target, &tok, 4096);
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    tcp_cases::assert_proxied_once(&ssh, &target, &tcp_cases::payload(&tok, 4096));
    // SOCKS4a by name: the name goes to sshd.
    let target = ssh.target(Serve::Echo);
    let tok = token("socks4a");
    let out = Run::python(&ssh.url_as("socks4a"), dns_cases::ECHO_BY_NAME)
        .args([dns_cases::NAME, &target.addr.port().to_string(), &tok])
        .run();
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "{out}");
    target.assert_peers(1, DIRECT);
    ssh.wait_forward(dns_cases::NAME, target.addr.port());
}

#[test]
fn pipelined_opt_in() {
    // OpenSSH buffers what arrives and parses it as it goes: known good.
    tcp_cases::python_blocking(&tcp_cases::Pipelined(&OpenSsh::start()));
}

/// A destination nobody listens on: ssh opens the channel first and, when
/// sshd's connect fails, closes the SOCKS connection without a reply. The
/// shim reports that as ECONNREFUSED, and nothing goes direct.
#[test]
fn refused_destination_is_econnrefused() {
    let ssh = OpenSsh::start();
    let port = in_netns(Some(&ssh.netns_path()), || free_port(DIRECT));
    let out = Run::python(&ssh.url(), tcp_cases::CONNECT_THEN_READ).args(["127.0.0.1", &port.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "errno 111", "{out}");
    assert!(out.stderr.contains("proxy closed the connection"), "the shim says why:\n{out}");
    ssh.wait_forward("127.0.0.1", port);
}

#[test]
fn udp_is_refused_never_direct() {
    let ssh = OpenSsh::start();
    udp_refused::udp_refused(&ssh.url(), libc::ECONNREFUSED);
}
