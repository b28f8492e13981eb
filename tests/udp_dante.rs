//! UDP through a third-party SOCKS server, Dante's `danted` (UDP
//! ASSOCIATE): the same cases as `udp_bundled.rs`. Dante sends from
//! 127.0.0.3 (`external:`), so a target that sees 127.0.0.3 proves the
//! datagram went through it.

mod common;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;

#[test]
fn python_sendto_recvfrom_ipv4() {
    udp_cases::sendto_recvfrom(&Dante::start(), DIRECT);
}

#[test]
fn python_sendto_recvfrom_ipv6() {
    udp_cases::sendto_recvfrom(&Dante::start(), LOCALHOST_V6);
}

#[test]
fn python_connected_send_recv_getpeername() {
    udp_cases::connected(&Dante::start());
}

#[test]
fn python_sendmsg_recvmsg_peek_trunc() {
    udp_cases::sendmsg_recvmsg(&Dante::start());
}

#[test]
fn datagram_of_60000_bytes() {
    udp_cases::big_datagram(&Dante::start());
}

#[test]
fn thousand_round_trips_in_order() {
    udp_cases::round_trips(&Dante::start());
}

#[test]
fn dig_against_a_dns_responder() {
    udp_cases::dig(&Dante::start());
}

#[test]
fn association_closes_with_the_socket() {
    udp_cases::association_closes_with_socket(&Dante::start());
}

#[test]
fn datagram_not_from_the_relay_is_dropped() {
    udp_cases::injected_datagram_dropped(&Dante::start());
}

#[test]
fn udp_block_refuses_with_eperm() {
    udp_cases::blocked(&Dante::start());
}

#[test]
fn control_connection_closed_behind_our_back() {
    udp_cases::control_closed_behind_our_back(&Dante::start());
}

#[test]
fn dup_shares_the_association() {
    udp_cases::dup_shares_the_association(&Dante::start());
}

#[test]
fn tcp_sendto_msg_fastopen_is_a_proxied_connect() {
    udp_cases::tcp_fast_open(&Dante::start());
}

#[test]
fn c_rcvtimeo_dontwait_epoll_recvmmsg() {
    udp_cases::c_calls(&Dante::start());
}

#[test]
fn nslookup_against_a_dns_responder() {
    udp_cases::nslookup(&Dante::start());
}
