//! A server listening beyond loopback: it refuses to start as an open proxy
//! (no --user, no --allow-client, no --open), and it denies this host
//! (loopback, link-local, its own addresses) as a destination unless a rule
//! allows it. Everything runs inside network namespaces the tests create,
//! so nothing ever listens on the machine's real interfaces.

mod common;
use common::*;
use std::net::{SocketAddr, UdpSocket};

/// The server's address inside each test namespace.
const OWN: &str = "10.200.0.1";

#[test]
fn an_open_proxy_beyond_loopback_refuses_to_start() {
    let ns = NetNs::with_address(OWN);
    for listen in ["0.0.0.0:0", "[::]:0", "10.200.0.1:0"] {
        let outcome = run_to_exit(Some(&ns), &["--listen", "127.0.0.1:0", "--listen", listen]);
        let (status, out, err) = outcome.unwrap_or_else(|| panic!("--listen {listen} with no --user/--allow-client/--open kept running"));
        assert_eq!(status.code(), Some(2), "{listen}: {err}");
        assert!(out.is_empty(), "{listen}: nothing listened, nothing announced: {out:?}");
        assert!(err.contains("open proxy") && err.contains("--open") && err.contains(listen.trim_end_matches(":0")), "{err}");
    }
    // Each of the three ways to say who may use it starts the server.
    for extra in [&["--open"][..], &["--user", "u:p"], &["--allow-client", "10.200.0.0/24"]] {
        let server = Server::start_in(&ns, &[&["--listen", "0.0.0.0:0"][..], extra].concat());
        assert!(server.addr().ip().is_unspecified(), "{extra:?}");
    }
}

#[test]
fn this_host_is_denied_beyond_loopback_unless_a_rule_allows_it() {
    let ns = NetNs::with_address(OWN);
    // --allow-client (not --open) so the old server starts too: it served these.
    let server = Server::start_in(&ns, &["--listen", "10.200.0.1:0", "--allow-client", "10.200.0.0/24"]);
    let opened = Server::start_in(&ns, &["--listen", "10.200.0.1:0", "--allow-client", "10.200.0.0/24", "--allow", "127.0.0.1/32"]);
    ns.run(|| {
        let on_lo = TcpEcho::start("127.0.0.1:0");
        let on_lo6 = TcpEcho::start("[::1]:0");
        let on_own = TcpEcho::start(&format!("{OWN}:0"));
        let destinations = [
            addr_bytes(on_lo.addr),
            addr_bytes(on_lo6.addr),
            addr_bytes(on_own.addr),
            addr_bytes(SocketAddr::from(([0, 0, 0, 0], on_lo.addr.port()))),
            addr_bytes(SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), on_lo.addr.port())),
            name_bytes("localhost", on_lo.addr.port()),
            addr_bytes(SocketAddr::from(([169, 254, 169, 254], 80))),
        ];
        for dst in &destinations {
            let (_s, code, _) = request5(server.addr(), 1, dst);
            assert_eq!(code, 2, "CONNECT to this host ({dst:?}) is not allowed");
        }
        assert!(on_lo.peer_ips().is_empty() && on_lo6.peer_ips().is_empty() && on_own.peer_ips().is_empty(), "nothing reached this host");
        server.wait_log(&["cmd=connect", "reply=not-allowed", "169.254.169.254"]);

        // A UDP datagram to loopback is dropped (the echo sees nothing, the
        // log counts the drop).
        let echo = UdpEcho::start("127.0.0.1:0");
        let client = UdpSocket::bind(format!("{OWN}:0")).unwrap();
        let named = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
        let (control, code, relay) = request5(server.addr(), 3, &addr_bytes(named));
        assert_eq!(code, 0);
        let datagram = [&[0, 0, 0][..], &addr_bytes(echo.addr), b"to loopback"].concat();
        client.send_to(&datagram, relay.unwrap()).unwrap();
        drop(control);
        server.wait_log(&["cmd=udp-associate", "datagrams_out=0", "dropped=1"]);
        assert!(echo.seen.lock().unwrap().is_empty());

        // An --allow rule opens exactly what it names.
        let (mut s, code, _) = request5(opened.addr(), 1, &addr_bytes(on_lo.addr));
        assert_eq!(code, 0, "--allow 127.0.0.1/32 opens loopback");
        echo_through(&mut s, b"allowed by a rule");
        let (_s, code, _) = request5(opened.addr(), 1, &addr_bytes(on_own.addr));
        assert_eq!(code, 2, "the server's own address stays denied");
    });
}

#[test]
fn loopback_listeners_still_reach_loopback() {
    let echo = TcpEcho::start("127.0.0.1:0");
    let server = Server::start(&[]);
    let (mut s, code, _) = request5(server.addr(), 1, &addr_bytes(echo.addr));
    assert_eq!(code, 0);
    echo_through(&mut s, b"loopback to loopback");
}
