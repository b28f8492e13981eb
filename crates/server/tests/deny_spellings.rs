//! `--deny 127.0.0.0/8 --deny ::1` means this host's loopback however the
//! client spells it: the unspecified address of either family (which the
//! kernel connects to loopback), v4-mapped IPv6, and names that resolve to
//! any of these. Every command is checked: SOCKS5 CONNECT, UDP datagrams,
//! BIND (its expected peer, and the peer that connects) and SOCKS4/4a
//! CONNECT. The targets listen on 127.0.0.1 and ::1 (same port) and record
//! every connection and datagram.

mod common;
use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};

const DENY_LOOPBACK: [&str; 4] = ["--deny", "127.0.0.0/8", "--deny", "::1"];

/// TCP echoes on 127.0.0.1:P and [::1]:P, the same port P.
fn tcp_targets() -> (TcpEcho, TcpEcho) {
    for _ in 0..50 {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        if let Ok(v6) = TcpListener::bind(("::1", v4.local_addr().unwrap().port())) {
            return (TcpEcho::serve(v4), TcpEcho::serve(v6));
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// UDP sockets on 127.0.0.1:P and [::1]:P that nobody reads: whatever
/// reaches them stays queued for the test to find.
fn udp_targets() -> (UdpSocket, UdpSocket) {
    for _ in 0..50 {
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(v6) = UdpSocket::bind(("::1", v4.local_addr().unwrap().port())) {
            return (v4, v6);
        }
    }
    panic!("no UDP port free on both 127.0.0.1 and ::1");
}

/// Every way to name this host's loopback at `port`, as SOCKS5 address
/// bytes (ATYP 1, 4 or 3), with a label for the failure message.
fn loopback_spellings(port: u16) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for ip in ["127.0.0.1", "127.9.9.9", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:127.9.9.9"] {
        out.push((format!("address {ip}"), addr_bytes(SocketAddr::new(ip.parse().unwrap(), port))));
    }
    for name in ["0", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "localhost", "LOCALHOST", "127.1", "2130706433"] {
        out.push((format!("name {name:?}"), name_bytes(name, port)));
    }
    out
}

#[test]
fn connect_to_every_spelling_of_loopback_is_not_allowed() {
    let (v4, v6) = tcp_targets();
    let server = Server::start(&DENY_LOOPBACK);
    let mut let_through = Vec::new();
    for (label, dst) in loopback_spellings(v4.addr.port()) {
        let (_s, code, _) = request5(server.addr(), 1, &dst);
        if code != 2 {
            let_through.push(format!("{label}: reply {code}"));
        }
    }
    assert!(let_through.is_empty(), "CONNECT must answer 2 (not allowed) for every spelling; got {let_through:#?}");
    assert!(v4.peer_ips().is_empty() && v6.peer_ips().is_empty(), "the target saw {:?} {:?}", v4.peer_ips(), v6.peer_ips());
    server.wait_log(&["cmd=connect", &format!("dst=0:{}", v4.addr.port()), "reply=not-allowed"]);
}

#[test]
fn socks4_and_socks4a_connect_to_loopback_spellings_are_rejected() {
    let (v4, v6) = tcp_targets();
    let server = Server::start(&DENY_LOOPBACK);
    let p = v4.addr.port().to_be_bytes();
    let mut requests: Vec<(String, Vec<u8>)> = vec![
        ("SOCKS4 0.0.0.0".into(), [&[4, 1, p[0], p[1], 0, 0, 0, 0][..], b"u\0"].concat()),
        ("SOCKS4 127.0.0.1".into(), [&[4, 1, p[0], p[1], 127, 0, 0, 1][..], b"u\0"].concat()),
    ];
    for name in ["0", "0.0.0.0", "::", "::ffff:127.0.0.1", "localhost"] {
        let req = [&[4, 1, p[0], p[1], 0, 0, 0, 1][..], b"u\0", name.as_bytes(), b"\0"].concat();
        requests.push((format!("SOCKS4a {name:?}"), req));
    }
    let mut let_through = Vec::new();
    for (label, req) in requests {
        let mut s = dial(server.addr());
        s.write_all(&req).unwrap();
        let reply = read_exact(&mut s, 8);
        if reply[1] != 91 {
            let_through.push(format!("{label}: reply {}", reply[1]));
        }
    }
    assert!(let_through.is_empty(), "SOCKS4 must answer 91 for every spelling; got {let_through:#?}");
    assert!(v4.peer_ips().is_empty() && v6.peer_ips().is_empty(), "the target saw {:?} {:?}", v4.peer_ips(), v6.peer_ips());
}

#[test]
fn udp_datagrams_to_every_spelling_of_loopback_are_dropped() {
    let (v4, v6) = udp_targets();
    let server = Server::start(&DENY_LOOPBACK);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let named = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
    let (control, code, relay) = request5(server.addr(), 3, &addr_bytes(named));
    assert_eq!(code, 0, "UDP ASSOCIATE accepted");
    let spellings = loopback_spellings(v4.local_addr().unwrap().port());
    for (label, dst) in &spellings {
        let datagram = [&[0, 0, 0][..], dst, label.as_bytes()].concat();
        client.send_to(&datagram, relay.unwrap()).unwrap();
    }
    drop(control);
    // The association's log line counts what it did with each datagram.
    let line = server.wait_log(&["cmd=udp-associate", "reply=succeeded", "dropped="]);
    let mut arrived = Vec::new();
    for target in [&v4, &v6] {
        target.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = target.recv_from(&mut buf) {
            arrived.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(arrived.is_empty(), "datagrams reached the loopback target: {arrived:#?}");
    let field = |key: &str| line.split(' ').find_map(|kv| kv.strip_prefix(key)).map(str::to_owned);
    assert_eq!(field("datagrams_out="), Some("0".into()), "log: {line}");
    assert_eq!(field("dropped="), Some(spellings.len().to_string()), "log: {line}");
}

#[test]
fn bind_expecting_a_loopback_spelling_is_not_allowed() {
    let server = Server::start(&DENY_LOOPBACK);
    let mut let_through = Vec::new();
    for (label, dst) in loopback_spellings(0) {
        // BIND's 0.0.0.0 and :: mean "any peer", not loopback: judged below.
        if label == "address 0.0.0.0" || label == "address ::" || label == "address ::ffff:0.0.0.0" {
            continue;
        }
        let (_s, code, _) = request5(server.addr(), 2, &dst);
        if code != 2 {
            let_through.push(format!("{label}: reply {code}"));
        }
    }
    assert!(let_through.is_empty(), "BIND must answer 2 (not allowed) for every spelling; got {let_through:#?}");
}

#[test]
fn bind_for_any_peer_does_not_accept_a_denied_peer() {
    let server = Server::start(&DENY_LOOPBACK);
    let (mut s, code, bound) = request5(server.addr(), 2, &addr_bytes(SocketAddr::from(([0, 0, 0, 0], 0))));
    assert_eq!(code, 0, "BIND for any peer is accepted");
    let bound = bound.unwrap();
    // A peer on loopback (denied) connects: the server closes it unserved.
    let mut peer = TcpStream::connect_timeout(&bound, WAIT).unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert!(closed_by_server(&mut peer), "the denied peer is closed");
    // The client gives up: its second reply is a failure, not a peer.
    s.shutdown(Shutdown::Write).unwrap();
    let (code, from) = read_reply5(&mut s);
    assert_ne!(code, 0, "a peer from loopback was handed to the client: {from:?}");
    server.wait_log(&["cmd=bind", "reply=general-failure"]);
}

#[test]
fn an_allowed_address_is_allowed_in_every_spelling() {
    let (v4, v6) = tcp_targets();
    let port = v4.addr.port();
    // Only loopback on the target's port is open; "any" reaches loopback.
    let p = port.to_string();
    let server = Server::start(&["--allow", &format!("127.0.0.1/32:{p}"), "--allow", &format!("[::1]:{p}"), "--deny", "*"]);
    for (ip, target) in [("0.0.0.0", &v4), ("::ffff:0.0.0.0", &v4), ("::ffff:127.0.0.1", &v4), ("::", &v6)] {
        let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(SocketAddr::new(ip.parse().unwrap(), port)));
        assert_eq!(code, 0, "CONNECT {ip} is allowed like the loopback it reaches");
        echo_through(&mut s, ip.as_bytes());
        assert_eq!(target.peer_ips().len(), 1, "{ip} reached {}", target.addr);
        target.peers.lock().unwrap().clear();
    }
    let (_s, code, _) = request5(server.addr(), 1, &addr_bytes(SocketAddr::from(([127, 0, 0, 2], port))));
    assert_eq!(code, 2, "what the rules do not open stays closed");
}

#[test]
fn a_datagram_to_any_is_answered_from_the_loopback_it_reached() {
    // A datagram to 0.0.0.0 goes to 127.0.0.1, and its answer (which comes
    // from 127.0.0.1) is let back in as the peer the client sent to.
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&[]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let named = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
    let (control, code, relay) = request5(server.addr(), 3, &addr_bytes(named));
    assert_eq!(code, 0);
    let any = SocketAddr::from(([0, 0, 0, 0], echo.addr.port()));
    client.send_to(&[&[0, 0, 0][..], &addr_bytes(any), b"to any"].concat(), relay.unwrap()).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = client.recv_from(&mut buf).expect("the answer from 127.0.0.1 comes back");
    assert_eq!(&buf[3..n], [&addr_bytes(echo.addr)[..], b"to any"].concat(), "from the address reached");
    drop(control);
}
