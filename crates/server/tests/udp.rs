//! UDP ASSOCIATE against the real server binary: echo round trips over
//! IPv4, IPv6 and a `--map`ped name, FRAG≠0 dropped, strangers on either
//! side dropped, requests that do not name the client's port refused, and
//! the association ending with its control connection.

mod common;
use common::*;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Opens an association for `client`, naming its port the way PySocks does
/// (IP left 0, as a client behind NAT must); returns the control connection
/// and the relay address.
fn associate(server: SocketAddr, client: &UdpSocket) -> (std::net::TcpStream, SocketAddr) {
    let port = client.local_addr().unwrap().port();
    let named = if server.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], port)) } else { SocketAddr::from(([0u16; 8], port)) };
    let (control, code, relay) = request5(server, 3, &addr_bytes(named));
    assert_eq!(code, 0, "UDP ASSOCIATE accepted");
    let relay = relay.expect("relay address");
    assert_eq!(relay.ip(), server.ip(), "relay bound on the IP the client reached");
    (control, relay)
}

fn client_socket(bind: &str) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Wraps `payload` in the RFC 1928 header for `dst` with `frag`.
fn wrap(frag: u8, dst: &[u8], payload: &[u8]) -> Vec<u8> {
    [&[0, 0, frag][..], dst, payload].concat()
}

/// Receives one datagram from the relay; returns (header address bytes, payload).
fn recv_wrapped(s: &UdpSocket, relay: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let mut buf = vec![0u8; 70000];
    let (n, from) = s.recv_from(&mut buf).expect("a datagram from the relay");
    assert_eq!(from, relay);
    assert_eq!(&buf[..3], &[0, 0, 0]);
    let alen = match buf[3] {
        1 => 1 + 4 + 2,
        4 => 1 + 16 + 2,
        t => panic!("ATYP {t} in a reply"),
    };
    (buf[3..3 + alen].to_vec(), buf[3 + alen..n].to_vec())
}

#[test]
fn udp_echo_ipv4_from_bind_out_with_counts() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--bind-out", "127.0.0.2"]);
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    for msg in [&b"first"[..], b"second datagram"] {
        client.send_to(&wrap(0, &addr_bytes(echo.addr), msg), relay).unwrap();
        let (src, payload) = recv_wrapped(&client, relay);
        assert_eq!(src, addr_bytes(echo.addr), "header carries the source");
        assert_eq!(payload, msg);
    }
    let seen = echo.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(from, _)| from.ip() == "127.0.0.2".parse::<IpAddr>().unwrap()), "{seen:?}");
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=2", "datagrams_in=2", "bytes_out=20", "bytes_in=20"]);
}

#[test]
fn udp_echo_ipv6_and_mapped_name() {
    let echo6 = UdpEcho::start("[::1]:0");
    let echo4 = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--listen", "[::1]:0", "--map", "udp.test=127.0.0.1", "--bind-out", "127.0.0.2"]);
    let client = client_socket("[::1]:0");
    let (control, relay) = associate(server.addr(), &client);
    client.send_to(&wrap(0, &addr_bytes(echo6.addr), b"v6"), relay).unwrap();
    let (src, payload) = recv_wrapped(&client, relay);
    assert_eq!((src, payload), (addr_bytes(echo6.addr), b"v6".to_vec()));
    client.send_to(&wrap(0, &name_bytes("udp.test", echo4.addr.port()), b"by name"), relay).unwrap();
    let (src, payload) = recv_wrapped(&client, relay);
    assert_eq!((src, payload), (addr_bytes(echo4.addr), b"by name".to_vec()));
    assert_eq!(echo4.seen.lock().unwrap()[0].0.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=2", "datagrams_in=2"]);
}

#[test]
fn fragments_and_strangers_are_dropped() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&[]);
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    client.send_to(&wrap(1, &addr_bytes(echo.addr), b"fragment"), relay).unwrap();
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"whole"), relay).unwrap();
    let (_, payload) = recv_wrapped(&client, relay);
    assert_eq!(payload, b"whole");
    // Only the named port is the client: another port of the same IP is a stranger.
    let stranger = client_socket("127.0.0.1:0");
    stranger.send_to(&wrap(0, &addr_bytes(echo.addr), b"stranger"), relay).unwrap();
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"again"), relay).unwrap();
    let (_, payload) = recv_wrapped(&client, relay);
    assert_eq!(payload, b"again");
    let payloads: Vec<Vec<u8>> = echo.seen.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(payloads, vec![b"whole".to_vec(), b"again".to_vec()], "only whole datagrams from the client arrived");
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=2", "datagrams_in=2", "dropped=2"]);
}

#[test]
fn association_ends_with_its_control_connection() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&[]);
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"one"), relay).unwrap();
    recv_wrapped(&client, relay);
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=1"]);
    // The relay port is closed now: nothing comes back, and the echo sees nothing new.
    client.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let _ = client.send_to(&wrap(0, &addr_bytes(echo.addr), b"late"), relay);
    let mut buf = [0u8; 100];
    assert!(client.recv_from(&mut buf).is_err(), "no answer after the association ended");
    assert_eq!(echo.seen.lock().unwrap().len(), 1);
}

#[test]
fn denied_destinations_are_dropped() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--deny", &format!("127.0.0.1/32:{}", echo.addr.port())]);
    let allowed = UdpEcho::start("127.0.0.1:0");
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"denied"), relay).unwrap();
    client.send_to(&wrap(0, &addr_bytes(allowed.addr), b"allowed"), relay).unwrap();
    assert_eq!(recv_wrapped(&client, relay).1, b"allowed");
    assert!(echo.seen.lock().unwrap().is_empty());
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=1", "dropped=1"]);
}

#[test]
fn a_port_named_in_the_request_is_the_only_one_accepted() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&[]);
    let client = client_socket("127.0.0.1:0");
    let other = client_socket("127.0.0.1:0");
    let (control, code, relay) = request5(server.addr(), 3, &addr_bytes(client.local_addr().unwrap()));
    assert_eq!(code, 0);
    let relay = relay.unwrap();
    other.send_to(&wrap(0, &addr_bytes(echo.addr), b"from elsewhere"), relay).unwrap();
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"from the named port"), relay).unwrap();
    assert_eq!(recv_wrapped(&client, relay).1, b"from the named port");
    let payloads: Vec<Vec<u8>> = echo.seen.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(payloads, vec![b"from the named port".to_vec()]);
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=1", "dropped=1"]);
}

#[test]
fn bursts_and_the_largest_datagram_pass_whole_and_in_order() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--bind-out", "127.0.0.2"]);
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    // One round trip first, then a burst the relay finds queued together
    // (one batch each way).
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"first"), relay).unwrap();
    assert_eq!(recv_wrapped(&client, relay).1, b"first");
    let burst: Vec<Vec<u8>> = (0..40).map(|i| format!("datagram {i}").into_bytes()).collect();
    for msg in &burst {
        client.send_to(&wrap(0, &addr_bytes(echo.addr), msg), relay).unwrap();
    }
    for msg in &burst {
        let (src, payload) = recv_wrapped(&client, relay);
        assert_eq!((src, &payload), (addr_bytes(echo.addr), msg));
    }
    // The largest IPv4 UDP payload, header included, arrives unmodified both ways.
    let big: Vec<u8> = (0..65507 - 10).map(|i| (i % 251) as u8).collect();
    client.send_to(&wrap(0, &addr_bytes(echo.addr), &big), relay).unwrap();
    assert_eq!(recv_wrapped(&client, relay).1, big);
    assert!(echo.seen.lock().unwrap().iter().all(|(from, _)| from.ip() == "127.0.0.2".parse::<IpAddr>().unwrap()));
    drop(control);
    let bytes = 5 + burst.iter().map(Vec::len).sum::<usize>() + big.len();
    server.wait_log(&[
        "cmd=udp-associate",
        "datagrams_out=42",
        "datagrams_in=42",
        &format!("bytes_out={bytes}"),
        &format!("bytes_in={bytes}"),
        "dropped=0",
    ]);
}

#[test]
fn requests_that_do_not_name_the_clients_own_port_are_refused() {
    let server = Server::start(&[]);
    let client = client_socket("127.0.0.1:0");
    let port = client.local_addr().unwrap().port();
    // Port 0 (the first datagram from 127.0.0.1 would otherwise take the
    // association, whoever sent it) and another IP than the control
    // connection's are refused with `not allowed`.
    let refused = [
        addr_bytes(SocketAddr::from(([0, 0, 0, 0], 0))),
        addr_bytes(SocketAddr::from(([127, 0, 0, 1], 0))),
        name_bytes("0", 0),
        addr_bytes(SocketAddr::from(([127, 0, 0, 9], port))),
    ];
    for dst in &refused {
        let (_control, code, _) = request5(server.addr(), 3, dst);
        assert_eq!(code, 2, "UDP ASSOCIATE naming {dst:?} is not allowed");
    }
    server.wait_log(&["cmd=udp-associate", "reply=not-allowed", "port 0"]);
    server.wait_log(&["cmd=udp-associate", "reply=not-allowed", "names 127.0.0.9"]);
    // The client's own IP and port, 0 and its port, or a name (PySocks
    // sends "0") and its port are accepted.
    let accepted =
        [addr_bytes(SocketAddr::from(([127, 0, 0, 1], port))), addr_bytes(SocketAddr::from(([0, 0, 0, 0], port))), name_bytes("0", port)];
    for dst in &accepted {
        let (_control, code, _) = request5(server.addr(), 3, dst);
        assert_eq!(code, 0, "{dst:?}");
    }
}

#[test]
fn only_peers_the_client_sent_to_are_let_back_in() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--bind-out", "127.0.0.2"]);
    let client = client_socket("127.0.0.1:0");
    let (control, relay) = associate(server.addr(), &client);
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"hello"), relay).unwrap();
    assert_eq!(recv_wrapped(&client, relay).1, b"hello");
    // The association's outward address, as the echo saw it.
    let outward = echo.seen.lock().unwrap()[0].0;
    // Strangers write to it: one on the echo's IP but another port, one on
    // another IP. Then the client's next round trip.
    let same_ip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_ip = UdpSocket::bind("127.0.0.3:0").unwrap();
    same_ip.send_to(b"intruder on the peer's IP", outward).unwrap();
    other_ip.send_to(b"intruder elsewhere", outward).unwrap();
    client.send_to(&wrap(0, &addr_bytes(echo.addr), b"again"), relay).unwrap();
    let (src, payload) = recv_wrapped(&client, relay);
    assert_eq!((src, payload), (addr_bytes(echo.addr), b"again".to_vec()), "the strangers' datagrams were not relayed");
    drop(control);
    server.wait_log(&["cmd=udp-associate", "datagrams_out=2", "datagrams_in=2", "dropped=2"]);
}
