//! Names resolved by the proxy, through Dante's `danted`: Dante runs in a
//! mount namespace of its own whose `/etc/hosts` maps name.test to
//! 127.0.0.1, so only the proxy can resolve the name. A page that arrives
//! from 127.0.0.3 (Dante's `external:`) proves the name went to Dante.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use dns_cases::{dante_server, direct};

#[test]
fn curl_by_name() {
    dns_cases::curl(&dante_server(), &direct);
}

#[test]
fn wget_by_name() {
    dns_cases::wget(&dante_server(), &direct);
}

#[test]
fn python_create_connection_by_name() {
    dns_cases::python_create_connection(&dante_server(), &direct);
}

#[test]
fn python_getaddrinfo_inet6_then_connect() {
    dns_cases::python_ipv6(&dante_server(), &direct);
}

#[test]
fn getnameinfo_and_gethostbyaddr_round_trip() {
    dns_cases::round_trip(&dante_server(), &direct);
}
