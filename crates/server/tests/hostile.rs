//! Hostile clients: garbage, slowloris, oversize fields, connection floods
//! and the connection cap. After each, the server must still serve.

mod common;
use common::*;
use std::io::Write;

/// A full no-auth CONNECT + echo: the server still works.
fn still_serves(server: &mut Server, echo: &TcpEcho) {
    assert!(server.alive(), "server process died");
    let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(echo.addr));
    assert_eq!(code, 0);
    echo_through(&mut s, b"still here");
}

#[test]
fn garbage_is_closed_and_server_keeps_serving() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&[]);
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[5, 0], &[5, 255, 1, 2, 3], &[0xff; 4000], &[4, 1, 0]] {
        let mut s = dial(server.addr());
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        assert!(closed_by_server(&mut s), "closed after {:?}", &junk[..junk.len().min(8)]);
    }
    server.wait_log(&["cmd=handshake", "reply=closed", "garbage"]);
    still_serves(&mut server, &echo);
}

#[test]
fn slowloris_hits_the_handshake_deadline() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&["--handshake-timeout-ms", "300"]);
    // Greeting sent, then the request trickles in and stops half-way.
    let mut slow = dial(server.addr());
    slow.write_all(&[5, 1, 0]).unwrap();
    assert_eq!(read_exact(&mut slow, 2), [5, 0]);
    slow.write_all(&[5, 1]).unwrap();
    assert!(closed_by_server(&mut slow), "stalled handshake closed by the deadline");
    // A client that never sends a byte.
    let mut silent = dial(server.addr());
    assert!(closed_by_server(&mut silent));
    server.wait_log(&["cmd=handshake", "deadline"]);
    still_serves(&mut server, &echo);
}

#[test]
fn oversize_fields_are_refused() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&["--user", "u:p"]);
    // SOCKS4 user id with no terminating NUL, far past 255 bytes.
    let mut s = dial(server.addr());
    let _ = s.write_all(&[&[4, 1, 0, 80, 127, 0, 0, 1][..], &[b'x'; 3000]].concat());
    assert!(closed_by_server(&mut s));
    // SOCKS5 auth claiming 255-byte fields, then garbage forever.
    let mut s = dial(server.addr());
    s.write_all(&[5, 1, 2]).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 2]);
    let _ = s.write_all(&[&[1, 255][..], &[b'a'; 255], &[255], &[b'b'; 255]].concat());
    assert_eq!(read_exact(&mut s, 2), [1, 1], "unknown user rejected");
    assert!(closed_by_server(&mut s));
    // Still serving, with credentials.
    let mut s = dial(server.addr());
    s.write_all(&[&[5, 1, 2, 1, 1, b'u', 1, b'p', 5, 1, 0][..], &addr_bytes(echo.addr)].concat()).unwrap();
    assert_eq!(read_exact(&mut s, 4), [5, 2, 1, 0]);
    assert_eq!(read_reply5(&mut s).0, 0);
    echo_through(&mut s, b"ok");
    assert!(server.alive());
}

#[test]
fn connection_cap_closes_extra_connections_at_once() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&["--max-conns", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = dial(server.addr());
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_exact(&mut s, 2), [5, 0], "under the cap: served");
        held.push(s);
    }
    let mut over = dial(server.addr());
    let _ = over.write_all(&[5, 1, 0]);
    assert!(closed_by_server(&mut over), "over the cap: closed");
    server.wait_log(&["reply=over-max-conns"]);
    drop(held);
    // Slots free up once the held sessions end (bounded retries).
    let end = std::time::Instant::now() + WAIT;
    loop {
        let mut s = dial(server.addr());
        let _ = s.write_all(&[5, 1, 0]);
        let mut b = [0u8; 2];
        if std::io::Read::read_exact(&mut s, &mut b).is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < end, "slots never freed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    still_serves(&mut server, &echo);
}

#[test]
fn a_flood_of_connections_does_not_kill_the_server() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&["--handshake-timeout-ms", "2000", "--quiet"]);
    let mut conns = Vec::new();
    for i in 0..300 {
        let mut s = dial(server.addr());
        if i % 2 == 0 {
            let _ = s.write_all(&[5, 1]); // half a greeting, then silence
        }
        conns.push(s);
    }
    // Abrupt resets in the middle of handshakes.
    for s in conns.drain(..150) {
        let _ = socket_linger_zero(&s);
    }
    still_serves(&mut server, &echo);
    drop(conns);
    still_serves(&mut server, &echo);
    assert!(server.log_lines().is_empty(), "--quiet prints no request lines");
}

#[test]
fn clients_outside_allow_client_are_closed() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start(&["--allow-client", "127.0.0.1/32", "--listen", "127.0.0.1:0", "--listen", "[::1]:0"]);
    let v6 = server.addrs[1];
    let mut s = dial(v6);
    let _ = s.write_all(&[5, 1, 0]);
    assert!(closed_by_server(&mut s), "::1 is not in 127.0.0.1/32");
    server.wait_log(&["client=[::1]:", "reply=client-not-allowed"]);
    still_serves(&mut server, &echo);
}

/// Closes with an RST instead of a FIN (SO_LINGER 0).
fn socket_linger_zero(s: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt with a correctly sized struct on a live fd.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
