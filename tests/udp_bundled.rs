//! UDP through the bundled `socksify-server` (UDP ASSOCIATE): real
//! programs (`python3`, `dig`) under the shim. The server sends from
//! 127.0.0.2 (`--bind-out`), so a target that sees 127.0.0.2 proves the
//! datagram went through it; the server's log counts the datagrams.

mod common;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;

#[test]
fn python_sendto_recvfrom_ipv4() {
    udp_cases::sendto_recvfrom(&Server::bundled(&[]), DIRECT);
}

#[test]
fn python_sendto_recvfrom_ipv6() {
    udp_cases::sendto_recvfrom(&Server::bundled(&[]), LOCALHOST_V6);
}

#[test]
fn python_connected_send_recv_getpeername() {
    udp_cases::connected(&Server::bundled(&[]));
}

#[test]
fn python_sendmsg_recvmsg_peek_trunc() {
    udp_cases::sendmsg_recvmsg(&Server::bundled(&[]));
}

#[test]
fn datagram_of_60000_bytes() {
    udp_cases::big_datagram(&Server::bundled(&[]));
}

#[test]
fn thousand_round_trips_in_order() {
    udp_cases::round_trips(&Server::bundled(&[]));
}

#[test]
fn dig_against_a_dns_responder() {
    udp_cases::dig(&Server::bundled(&[]));
}

#[test]
fn association_closes_with_the_socket() {
    udp_cases::association_closes_with_socket(&Server::bundled(&[]));
}

#[test]
fn datagram_not_from_the_relay_is_dropped() {
    udp_cases::injected_datagram_dropped(&Server::bundled(&[]));
}

#[test]
fn udp_block_refuses_with_eperm() {
    udp_cases::blocked(&Server::bundled(&[]));
}

#[test]
fn proxy_down_fails_the_send_never_direct() {
    udp_cases::proxy_down_never_direct();
}

#[test]
fn control_connection_closed_behind_our_back() {
    udp_cases::control_closed_behind_our_back(&Server::bundled(&[]));
}

#[test]
fn fake_address_from_remote_dns_sends_the_name() {
    let target = udp_cases::UdpTarget::echo(DIRECT);
    let server = Server::bundled(&["--map", "udp-echo.socksify.test=127.0.0.1"]);
    udp_cases::fake_address_sends_the_name(&server, "udp-echo.socksify.test", &target);
}

#[test]
fn dup_shares_the_association() {
    udp_cases::dup_shares_the_association(&Server::bundled(&[]));
}

#[test]
fn tcp_sendto_msg_fastopen_is_a_proxied_connect() {
    udp_cases::tcp_fast_open(&Server::bundled(&[]));
}

#[test]
fn c_rcvtimeo_dontwait_epoll_recvmmsg() {
    udp_cases::c_calls(&Server::bundled(&[]));
}

#[test]
fn nslookup_against_a_dns_responder() {
    udp_cases::nslookup(&Server::bundled(&[]));
}

#[test]
fn bypassed_and_proxied_destinations_from_one_socket() {
    udp_cases::bypassed_and_proxied_from_one_socket(&Server::bundled(&[]));
}

#[test]
fn a_restarted_proxy_gets_a_new_association() {
    udp_cases::server_restart_reopens_the_association();
}
