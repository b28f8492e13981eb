//! Hostile clients: garbage, slowloris, oversize fields, connection floods,
//! the connection caps (in all and per client address) and idle flows and
//! associations. After each, the server must still serve.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    // The per-client cap as high as the total one: this test is about the total.
    let mut server = Server::start(&["--max-conns", "2", "--max-client-conns", "2"]);
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
    // Slots free up once the held sessions end.
    serves_once_a_slot_frees(&mut server, &echo);
}

/// A full CONNECT + echo, retried (bounded) while the server still closes
/// connections at once: a slot is given back just after the session's log
/// line is written.
fn serves_once_a_slot_frees(server: &mut Server, echo: &TcpEcho) {
    let end = Instant::now() + WAIT;
    let mut s = loop {
        let mut s = dial(server.addr());
        let _ = s.write_all(&[5, 1, 0]);
        let mut b = [0u8; 2];
        if s.read_exact(&mut b).is_ok() {
            break s;
        }
        assert!(Instant::now() < end, "slots never freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    s.write_all(&[&[5, 1, 0][..], &addr_bytes(echo.addr)].concat()).unwrap();
    assert_eq!(read_reply5(&mut s).0, 0);
    echo_through(&mut s, b"served again");
    assert!(server.alive());
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

/// A TCP connection to `server` from `source` (an address of 127.0.0.0/8).
fn dial_from(source: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())?;
    sock.connect_timeout(&server.into(), WAIT)?;
    Ok(sock.into())
}

/// Whether the server has closed `s` (EOF or reset) by now, without waiting.
fn closed_now(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a one-byte buffer we own; MSG_PEEK consumes nothing.
    let n = unsafe { libc::recv(std::os::fd::AsRawFd::as_raw_fd(s), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

#[test]
fn a_flood_from_one_address_leaves_room_for_other_clients() {
    let echo = TcpEcho::start("127.0.0.1:0");
    // 64 connections in all; by default half of them per client address.
    let mut server = Server::start(&["--max-conns", "64", "--handshake-timeout-ms", "60000"]);
    // 200 silent connections from 127.0.0.5: more than the whole server holds.
    let flood: Vec<TcpStream> = (0..200).map(|_| dial_from("127.0.0.5", server.addr()).expect("flood connect")).collect();
    // And the flood goes on while the well-behaved client works.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (stop, attempts, addr) = (stop.clone(), attempts.clone(), server.addr());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) && attempts.load(Ordering::Relaxed) < 20_000 {
                attempts.fetch_add(1, Ordering::Relaxed);
                if let Ok(s) = dial_from("127.0.0.5", addr) {
                    held.push(s);
                    if held.len() > 100 {
                        held.clear();
                    }
                }
            }
        })
    };
    // The well-behaved client at 127.0.0.1: a whole CONNECT and echo, 20 times.
    let mut waits = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(echo.addr));
        assert_eq!(code, 0, "round {i}: CONNECT through the flood");
        echo_through(&mut s, b"well-behaved");
        waits.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    waits.sort();
    println!(
        "well-behaved client during the flood ({} more flood connects meanwhile): CONNECT + echo took min {:?}, median {:?}, max {:?} over {} rounds",
        attempts.load(Ordering::Relaxed),
        waits[0],
        waits[waits.len() / 2],
        waits[waits.len() - 1],
        waits.len()
    );
    // Of the first 200, the server keeps exactly 32 (64 / 2) and closed the rest.
    let end = Instant::now() + WAIT;
    while flood.iter().filter(|s| closed_now(s)).count() < 168 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(flood.iter().filter(|s| !closed_now(s)).count(), 32, "the flood holds 32 slots, no more");
    server.wait_log(&["client=127.0.0.5:", "reply=over-max-client-conns"]);
    still_serves(&mut server, &echo);
}

/// A target that accepts connections and neither reads nor writes; it
/// counts the bytes that reach it when `drain` is set.
fn silent_target(drain: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let counter = got.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in l.incoming().map_while(Result::ok) {
            if !drain {
                held.push(c);
                continue;
            }
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(WAIT));
                let mut b = [0u8; 256];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, got)
}

#[test]
fn an_idle_flow_is_closed_and_its_slot_freed() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let (silent, _) = silent_target(false);
    let mut server = Server::start(&["--max-conns", "1", "--idle-timeout-ms", "300"]);
    // A client that established a flow and then went quiet (or went away).
    let (mut quiet, code, _) = request5(server.addr(), 1, &addr_bytes(silent));
    assert_eq!(code, 0);
    assert!(closed_by_server(&mut quiet), "the idle flow is closed");
    server.wait_log(&["cmd=connect", "end=idle-timeout"]);
    // Its slot is free again: the only slot there is serves the next client.
    serves_once_a_slot_frees(&mut server, &echo);
}

#[test]
fn a_one_way_flow_is_not_idle() {
    let (sink, got) = silent_target(true);
    let server = Server::start(&["--idle-timeout-ms", "2000"]);
    let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(sink));
    assert_eq!(code, 0);
    // Bytes only towards the target for 3 s, longer than the idle timeout:
    // the other direction is silent all along, and the flow lives on.
    for _ in 0..30 {
        s.write_all(b"x").expect("the flow is still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut s));
    let line = server.wait_log(&["cmd=connect", "sent=30"]);
    assert!(!line.contains("idle"), "{line}");
    assert_eq!(got.load(Ordering::Relaxed), 30);
}

#[test]
fn an_idle_udp_association_ends() {
    let echo = UdpEcho::start("127.0.0.1:0");
    let server = Server::start(&["--udp-idle-timeout-ms", "300"]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let named = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
    let (mut control, code, relay) = request5(server.addr(), 3, &addr_bytes(named));
    assert_eq!(code, 0);
    let relay = relay.unwrap();
    client.send_to(&[&[0, 0, 0][..], &addr_bytes(echo.addr), b"once"].concat(), relay).unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = client.recv_from(&mut buf).expect("the answer");
    assert!(buf[..n].ends_with(b"once"));
    // Then nothing: the server ends the association and closes the control connection.
    assert!(closed_by_server(&mut control), "idle association ended");
    server.wait_log(&["cmd=udp-associate", "datagrams_out=1", "datagrams_in=1", "end=idle-timeout"]);
}

#[test]
fn sessions_are_not_bounded_by_a_low_soft_fd_limit() {
    // Started with a soft limit of 64 open files (hard 4096): 60 flows need
    // 120 fds, more than the soft limit; the server raises it to the hard one.
    let echo = TcpEcho::start("127.0.0.1:0");
    let mut server = Server::start_with_nofile(64, &["--quiet"]);
    let mut flows = Vec::new();
    for i in 0..60 {
        let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(echo.addr));
        assert_eq!(code, 0, "flow {i}");
        echo_through(&mut s, b"open");
        flows.push(s);
    }
    for s in &mut flows {
        echo_through(s, b"all still open");
    }
    still_serves(&mut server, &echo);
}
