//! socksify through shadowsocks-libev's `ss-local` (SOCKS5, CONNECT and,
//! with `-u`, UDP ASSOCIATE), tunnelling to its `ss-server`, both started
//! by the test (see `tests/common/shadowsocks.rs`): `ss-server` and the
//! targets live in a network namespace of their own, so a target that sees
//! a connection or a datagram proves the path, and `ss-server`'s log names
//! each destination. Not here: `nc -N`, which half-closes before the echo
//! is back: shadowsocks-libev closes both directions on the client's FIN
//! (`nc -N -X 5 -x` through `ss-local`, without socksify, gets nothing back
//! either).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone; the DNS stub is for other tests
mod netns;
#[path = "common/shadowsocks.rs"]
mod shadowsocks;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use dns_cases::NameProxy;
use shadowsocks::{Options, Shadowsocks};
use std::net::{IpAddr, SocketAddr};
use udp_cases::{Answer, UdpLog, UdpTarget};

impl NameProxy for Shadowsocks {
    fn wait_named_connect(&self, name: &str, target: SocketAddr) {
        // ss-server logs the destination as the client sent it: the name.
        self.wait_connect(name, target.port());
    }
}

impl UdpLog for Shadowsocks {
    fn udp_target_on(&self, ip: IpAddr, answer: Answer) -> UdpTarget {
        UdpTarget::start_in(Some(&self.netns_path()), ip, answer)
    }
    /// ss-local logs no end of an association: this waits until it has
    /// logged relaying `datagrams` datagrams to `dst`, and ss-server its
    /// first datagram there.
    fn wait_association_end(&self, dst: SocketAddr, datagrams: usize) -> String {
        self.wait_datagrams(&dst.ip().to_string(), dst.port(), datagrams)
    }
    fn association_lines(&self) -> Vec<String> {
        self.associations()
    }
    /// ss-local logs no end of an association, only its start: the cases
    /// that count associations (one for a socket and its `dup`, two when
    /// the control connection was replaced) get the number accepted.
    fn ended_associations(&self) -> usize {
        self.associations().len()
    }
}

// ---------------------------------------------------------------- TCP

#[test]
fn curl_fetches_a_page() {
    tcp_cases::curl(&Shadowsocks::start());
}

#[test]
fn python_blocking_socket() {
    tcp_cases::python_blocking(&Shadowsocks::start());
}

#[test]
fn python_nonblocking_socket_with_select() {
    tcp_cases::python_nonblocking(&Shadowsocks::start());
}

#[test]
fn python_asyncio_open_connection() {
    tcp_cases::python_asyncio(&Shadowsocks::start());
}

#[test]
fn ipv6_target() {
    tcp_cases::ipv6_target(&Shadowsocks::start());
}

#[test]
fn getpeername_reports_the_target() {
    tcp_cases::getpeername(&Shadowsocks::start());
}

#[test]
fn fifty_concurrent_connections() {
    tcp_cases::concurrent_50(&Shadowsocks::start());
}

#[test]
fn names_resolved_by_ss_server() {
    let ss = Shadowsocks::start_with_hosts(&dns_cases::proxy_hosts());
    dns_cases::curl(&ss, &dns_cases::direct);
    dns_cases::python_create_connection(&ss, &dns_cases::direct);
}

/// A destination nobody listens on: ss-local answers "succeeded" at once
/// (the shadowsocks protocol carries no answer from ss-server), so the
/// program's `connect` succeeds; when ss-server's connect is refused, both
/// ends close: the program's first read is end-of-file. Nothing goes direct.
#[test]
fn refused_destination_connects_then_reads_eof() {
    let ss = Shadowsocks::start();
    let port = in_netns(Some(&ss.netns_path()), || free_port(DIRECT));
    let direct = std::net::TcpListener::bind((DIRECT, port)).ok();
    let out = Run::python(&ss.url(), tcp_cases::CONNECT_THEN_READ).args(["127.0.0.1", &port.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "errno 0 read 0", "{out}");
    ss.wait_connect("127.0.0.1", port);
    if let Some(direct) = direct {
        direct.set_nonblocking(true).unwrap();
        assert!(direct.accept().is_err(), "the same port on this side was contacted: a direct connection");
    }
}

#[test]
fn pipelined_opt_in() {
    tcp_cases::python_blocking(&tcp_cases::Pipelined(&Shadowsocks::start()));
}

// ---------------------------------------------------------------- UDP

#[test]
fn udp_python_sendto_recvfrom_ipv4() {
    udp_cases::sendto_recvfrom(&Shadowsocks::start(), DIRECT);
}

#[test]
fn udp_python_sendto_recvfrom_ipv6() {
    udp_cases::sendto_recvfrom(&Shadowsocks::start(), LOCALHOST_V6);
}

#[test]
fn udp_python_connected_send_recv_getpeername() {
    udp_cases::connected(&Shadowsocks::start());
}

#[test]
fn udp_python_sendmsg_recvmsg_peek_trunc() {
    udp_cases::sendmsg_recvmsg(&Shadowsocks::start());
}

/// With `--mtu 65535` on both ends (their UDP buffers are sized from it).
#[test]
fn udp_datagram_of_60000_bytes() {
    udp_cases::big_datagram(&Shadowsocks::start_with(Options { mtu: Some(65535), ..Options::default() }));
}

/// `python3 -c SEND_ONE HOST PORT SIZE SECONDS`: one datagram of SIZE
/// bytes, then waits up to SECONDS for an answer: prints `sent N`, then
/// `back N` or `nothing back`.
const SEND_ONE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]))
print("sent", s.sendto(bytes(int(sys.argv[3])), (sys.argv[1], int(sys.argv[2]))))
try:
    print("back", len(s.recvfrom(65535)[0]))
except TimeoutError:
    print("nothing back")
"#;

/// Without `--mtu`, shadowsocks-libev reads datagrams into a buffer of
/// about 2.7 kB and drops a larger one (`fragmentation, MTU at least be:
/// N` in ss-local's log; the datagram arrives cut and ss-server rejects it):
/// the program's `sendto` succeeds and no answer comes. Nothing goes
/// direct, and a datagram that fits goes through.
#[test]
fn udp_datagram_above_shadowsocks_buffer_is_dropped_by_it() {
    let ss = Shadowsocks::start();
    let target = ss.udp_echo();
    let direct = std::net::UdpSocket::bind((DIRECT, target.addr.port())).ok();
    // (A short wait where nothing can come back; a long one where it must.)
    let send = |size: usize, wait: &str| {
        Run::python(&ss.url(), SEND_ONE).args(["127.0.0.1", &target.addr.port().to_string(), &size.to_string(), wait]).run()
    };
    let out = send(3000, "2");
    out.assert_success();
    assert_eq!(out.stdout, "sent 3000\nnothing back\n", "{out}");
    assert!(ss.local_log.wait_line(&["fragmentation, MTU at least be"]).is_some(), "{}", ss.local_log.text());
    target.assert_peers(0, DIRECT);
    let out = send(2000, "20");
    out.assert_success();
    assert_eq!(out.stdout, "sent 2000\nback 2000\n", "{out}");
    target.assert_peers(1, ss.out_ip(DIRECT));
    if let Some(direct) = direct {
        direct.set_nonblocking(true).unwrap();
        assert!(direct.recv_from(&mut [0u8; 16]).is_err(), "a datagram went direct");
    }
}

#[test]
fn udp_thousand_round_trips_in_order() {
    udp_cases::round_trips(&Shadowsocks::start());
}

#[test]
fn udp_dig_against_a_dns_responder() {
    udp_cases::dig(&Shadowsocks::start());
}

#[test]
fn udp_nslookup_against_a_dns_responder() {
    udp_cases::nslookup(&Shadowsocks::start());
}

#[test]
fn udp_association_closes_with_the_socket() {
    udp_cases::association_closes_with_socket(&Shadowsocks::start());
}

#[test]
fn udp_datagram_not_from_the_relay_is_dropped() {
    udp_cases::injected_datagram_dropped(&Shadowsocks::start());
}

#[test]
fn udp_block_refuses_with_eperm() {
    udp_cases::blocked(&Shadowsocks::start());
}

#[test]
fn udp_control_connection_closed_behind_our_back() {
    udp_cases::control_closed_behind_our_back(&Shadowsocks::start());
}

#[test]
fn udp_dup_shares_the_association() {
    udp_cases::dup_shares_the_association(&Shadowsocks::start());
}

/// Remote DNS: the datagram to the fake address carries the name, which
/// only ss-server can resolve (its hosts file); both ends log it by name.
#[test]
fn udp_fake_address_sends_the_name() {
    let ss = Shadowsocks::start_with_hosts(&dns_cases::proxy_hosts());
    let target = ss.udp_echo();
    let out = Run::python(&ss.url(), udp_cases::FAKE).arg(dns_cases::NAME).arg(target.addr.port().to_string()).run();
    out.assert_success();
    assert_eq!(out.stdout, "fake True\nby-name True\n", "{out}");
    target.assert_peers(1, ss.out_ip(DIRECT));
    ss.wait_datagrams(dns_cases::NAME, target.addr.port(), 1);
}

/// `ss-local` without `-u` still answers UDP ASSOCIATE with "succeeded"
/// and names its own port as the relay, where nothing listens for UDP: the
/// program's `sendto` succeeds and no answer ever comes. Nothing goes
/// direct: a UDP target on this side's 127.0.0.1, where a direct datagram
/// would land, receives nothing.
#[test]
fn udp_without_dash_u_is_lost_never_direct() {
    let ss = Shadowsocks::start_with(Options { no_udp: true, ..Options::default() });
    let direct = UdpTarget::echo(DIRECT);
    let out = Run::python(&ss.url(), SEND_ONE).args(["127.0.0.1", &direct.addr.port().to_string(), "100", "2"]).run();
    out.assert_success();
    assert_eq!(out.stdout, "sent 100\nnothing back\n", "{out}");
    assert!(out.stderr.contains(&format!("relay {}", ss.addr)), "ss-local names its own port as the relay:\n{out}");
    let accepted = wait_until(WAIT, || (!ss.associations().is_empty()).then_some(()));
    assert!(accepted.is_some(), "ss-local accepted the UDP ASSOCIATE:\n{}", ss.local_log.text());
    direct.assert_peers(0, DIRECT);
}

#[test]
fn udp_c_rcvtimeo_dontwait_epoll_recvmmsg() {
    udp_cases::c_calls(&Shadowsocks::start());
}

#[test]
fn udp_bypassed_and_proxied_destinations_from_one_socket() {
    udp_cases::bypassed_and_proxied_from_one_socket(&Shadowsocks::start());
}

#[test]
fn tcp_sendto_msg_fastopen_is_a_proxied_connect() {
    udp_cases::tcp_fast_open(&Shadowsocks::start());
}
