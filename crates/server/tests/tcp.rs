//! CONNECT (SOCKS5, SOCKS4, SOCKS4a), authentication, pipelining, reply
//! codes and BIND, against the real server binary on loopback.

mod common;
use common::*;
use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};

#[test]
fn connect_ipv4_arrives_from_bind_out_and_is_logged() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--bind-out", "127.0.0.2"]);
    let (mut s, code, bound) = request5(server.addr(), 1, &addr_bytes(echo.addr));
    assert_eq!(code, 0);
    assert_eq!(bound.unwrap().ip(), "127.0.0.2".parse::<IpAddr>().unwrap(), "BND.ADDR is the outgoing address");
    echo_through(&mut s, b"hello through socks");
    assert_eq!(echo.peer_ips(), vec!["127.0.0.2".parse::<IpAddr>().unwrap()], "target saw the proxy, not the client");
    drop(s);
    let dst = format!("dst={}", echo.addr);
    server.wait_log(&["cmd=connect", &dst, "reply=succeeded", "sent=19", "received=19", "ms="]);
}

#[test]
fn connect_ipv6_and_mapped_domain() {
    let echo6 = TcpEcho::start("[::1]:0");
    let echo4 = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--listen", "[::1]:0", "--bind-out", "127.0.0.2", "--map", "echo.test=127.0.0.1"]);
    assert!(server.addr().is_ipv6());
    let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(echo6.addr));
    assert_eq!(code, 0);
    echo_through(&mut s, b"over ipv6");
    assert_eq!(echo6.peer_ips(), vec!["::1".parse::<IpAddr>().unwrap()]);
    let (mut s, code, _) = request5(server.addr(), 1, &name_bytes("Echo.Test", echo4.addr.port()));
    assert_eq!(code, 0);
    echo_through(&mut s, b"by name");
    drop(s);
    assert_eq!(echo4.peer_ips(), vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
    server.wait_log(&["cmd=connect", &format!("dst=Echo.Test:{}", echo4.addr.port()), "reply=succeeded"]);
}

#[test]
fn pipelined_handshake_with_auth_and_early_payload_loses_nothing() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--user", "alice:s3cret", "--bind-out", "127.0.0.2"]);
    let mut s = dial(server.addr());
    let mut flight = vec![5, 1, 2, 1, 5];
    flight.extend_from_slice(b"alice");
    flight.push(6);
    flight.extend_from_slice(b"s3cret");
    flight.extend_from_slice(&[5, 1, 0]);
    flight.extend_from_slice(&addr_bytes(echo.addr));
    flight.extend_from_slice(b"early bytes");
    s.write_all(&flight).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 2], "username/password chosen");
    assert_eq!(read_exact(&mut s, 2), [1, 0], "credentials accepted");
    assert_eq!(read_reply5(&mut s).0, 0);
    assert_eq!(read_exact(&mut s, 11), b"early bytes");
    echo_through(&mut s, b"and later ones");
    drop(s);
    server.wait_log(&["cmd=connect", "reply=succeeded", "user=alice"]);
}

#[test]
fn wrong_password_and_no_auth_are_refused_when_users_are_configured() {
    let server = Server::start(&["--user", "alice:s3cret", "--user", "bob:pw"]);
    let mut s = dial(server.addr());
    s.write_all(&[5, 1, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'n', b'o']).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 2]);
    assert_ne!(read_exact(&mut s, 2)[1], 0, "bad password rejected");
    assert!(closed_by_server(&mut s));

    let mut s = dial(server.addr());
    s.write_all(&[5, 1, 0]).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 0xff], "no-auth refused");
    assert!(closed_by_server(&mut s));

    // The second user works.
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut s = dial(server.addr());
    s.write_all(&[5, 1, 2, 1, 3, b'b', b'o', b'b', 2, b'p', b'w']).unwrap();
    assert_eq!(read_exact(&mut s, 4), [5, 2, 1, 0]);
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(&addr_bytes(echo.addr));
    s.write_all(&req).unwrap();
    assert_eq!(read_reply5(&mut s).0, 0);
    echo_through(&mut s, b"bob's bytes");
    server.wait_log(&["reply=auth-failed", "alice"]);
}

#[test]
fn reply_codes_refused_denied_unknown_command_unresolvable() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--deny", "127.0.0.3/32", "--deny", "0.0.0.0/0:25"]);
    let port = refused_port();
    let refused = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(request5(server.addr(), 1, &addr_bytes(refused)).1, 5, "connection refused");
    let denied = SocketAddr::from(([127, 0, 0, 3], echo.addr.port()));
    assert_eq!(request5(server.addr(), 1, &addr_bytes(denied)).1, 2, "denied by --deny 127.0.0.3/32");
    assert_eq!(request5(server.addr(), 1, &addr_bytes(SocketAddr::from(([127, 0, 0, 1], 25)))).1, 2, "port rule");
    assert_eq!(request5(server.addr(), 9, &addr_bytes(echo.addr)).1, 7, "unknown command");
    assert_eq!(request5(server.addr(), 1, &name_bytes("nothing.invalid", 80)).1, 4, "unresolvable name");
    assert!(echo.peer_ips().is_empty(), "nothing reached the target");
    server.wait_log(&["dst=127.0.0.3:", "reply=not-allowed"]);
    server.wait_log(&[&format!("dst=127.0.0.1:{port}"), "reply=connection-refused"]);
    server.wait_log(&["dst=nothing.invalid:80", "reply=host-unreachable"]);
}

#[test]
fn bad_atyp_reply_code_is_8() {
    let server = Server::start(&[]);
    let mut s = dial(server.addr());
    s.write_all(&[5, 1, 0, 5, 1, 0, 5, 1, 2, 3, 4, 0, 80]).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 0]);
    assert_eq!(read_exact(&mut s, 2), [5, 8]);
}

#[test]
fn socks4_and_socks4a_connect() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--bind-out", "127.0.0.2", "--map", "four.test=127.0.0.1"]);
    let port = echo.addr.port().to_be_bytes();
    let mut s = dial(server.addr());
    s.write_all(&[&[4, 1, port[0], port[1], 127, 0, 0, 1][..], b"user\0"].concat()).unwrap();
    let reply = read_exact(&mut s, 8);
    assert_eq!(&reply[..2], &[0, 90]);
    echo_through(&mut s, b"socks4");
    let mut s = dial(server.addr());
    s.write_all(&[&[4, 1, port[0], port[1], 0, 0, 0, 1][..], b"\0four.test\0", b"pipelined"].concat()).unwrap();
    assert_eq!(&read_exact(&mut s, 8)[..2], &[0, 90]);
    assert_eq!(read_exact(&mut s, 9), b"pipelined");
    assert_eq!(echo.peer_ips(), vec!["127.0.0.2".parse::<IpAddr>().unwrap(); 2]);
    drop(s);
    server.wait_log(&["cmd=connect", &format!("dst=four.test:{}", echo.addr.port()), "socks=4"]);
    // A refused SOCKS4 connect is 91.
    let p = refused_port().to_be_bytes();
    let mut s = dial(server.addr());
    s.write_all(&[4, 1, p[0], p[1], 127, 0, 0, 1, 0]).unwrap();
    assert_eq!(&read_exact(&mut s, 8)[..2], &[0, 91]);
}

#[test]
fn socks4_is_refused_when_users_are_configured() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--user", "a:b"]);
    let port = echo.addr.port().to_be_bytes();
    let mut s = dial(server.addr());
    s.write_all(&[4, 1, port[0], port[1], 127, 0, 0, 1, b'a', 0]).unwrap();
    assert_eq!(&read_exact(&mut s, 8)[..2], &[0, 91]);
    assert!(echo.peer_ips().is_empty());
}

#[test]
fn half_close_keeps_the_other_direction_open() {
    // A target that reads to EOF, then answers with the byte count.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut c, &mut all).unwrap();
        c.write_all(format!("got {}", all.len()).as_bytes()).unwrap();
    });
    let server = Server::start(&[]);
    let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(target));
    assert_eq!(code, 0);
    s.write_all(&vec![b'x'; 100_000]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut answer).unwrap();
    assert_eq!(answer, b"got 100000");
    t.join().unwrap();
    server.wait_log(&["sent=100000", "received=10"]);
}

#[test]
fn bind_accepts_one_connection_with_two_replies() {
    let server = Server::start(&["--bind-out", "127.0.0.2"]);
    let (mut s, code, bound) = request5(server.addr(), 2, &addr_bytes(SocketAddr::from(([0, 0, 0, 0], 0))));
    assert_eq!(code, 0);
    let bound = bound.unwrap();
    assert_eq!(bound.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    let mut peer = TcpStream::connect_timeout(&bound, WAIT).unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let (code, from) = read_reply5(&mut s);
    assert_eq!((code, from), (0, Some(peer.local_addr().unwrap())));
    peer.write_all(b"from peer").unwrap();
    assert_eq!(read_exact(&mut s, 9), b"from peer");
    s.write_all(b"to peer").unwrap();
    assert_eq!(read_exact(&mut peer, 7), b"to peer");
    drop((s, peer));
    server.wait_log(&["cmd=bind", "reply=succeeded"]);
}
