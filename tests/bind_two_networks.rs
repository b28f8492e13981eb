//! The bundled server's BIND on a proxy between two networks, as a real
//! FTP flow needs it: clients reach the proxy on one side, the FTP server
//! sits on the other and connects back to the address the first reply
//! names. Two network namespaces joined by a veth pair: `inside` holds the
//! proxy (listening on its 127.0.0.1, no `--bind-out`) and the client,
//! `outside` holds the peer at 10.231.0.2; the proxy's side of the link is
//! 10.231.0.1. The peer can only reach an address on the link.

mod common;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the DNS stub is for other tests
mod netns;

use common::*;
use netns::{ip, NetNs};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

const PROXY_SIDE: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);

fn read_reply(s: &mut TcpStream) -> (u8, SocketAddr) {
    let mut r = [0u8; 10];
    s.read_exact(&mut r).expect("a SOCKS5 reply");
    assert_eq!(r[3], 1, "an IPv4 address in the reply: {r:?}");
    (r[1], SocketAddr::new(Ipv4Addr::new(r[4], r[5], r[6], r[7]).into(), u16::from_be_bytes([r[8], r[9]])))
}

#[test]
fn bind_listens_on_the_side_facing_the_expected_peer() {
    let inside = NetNs::create();
    let outside = NetNs::create();
    ip(&["-n", &inside.name, "link", "add", "sxin", "type", "veth", "peer", "name", "sxout", "netns", &outside.name]);
    ip(&["-n", &inside.name, "addr", "add", &format!("{PROXY_SIDE}/24"), "dev", "sxin"]);
    ip(&["-n", &outside.name, "addr", "add", &format!("{PEER}/24"), "dev", "sxout"]);
    ip(&["-n", &inside.name, "link", "set", "sxin", "up"]);
    ip(&["-n", &outside.name, "link", "set", "sxout", "up"]);

    inside.run(|| {
        let server = Server::start(&["--listen", "127.0.0.1:0"]);
        let mut s = TcpStream::connect_timeout(&server.addr(), WAIT).expect("reach the proxy");
        s.set_read_timeout(Some(WAIT)).unwrap();
        // No authentication; BIND, expecting 10.231.0.2 (any port).
        s.write_all(&[5, 1, 0]).unwrap();
        let mut sel = [0u8; 2];
        s.read_exact(&mut sel).unwrap();
        assert_eq!(sel, [5, 0]);
        let p = PEER.octets();
        s.write_all(&[5, 2, 0, 1, p[0], p[1], p[2], p[3], 0, 0]).unwrap();
        let (code, bound) = read_reply(&mut s);
        assert_eq!(code, 0, "BIND granted");
        assert_eq!(bound.ip(), IpAddr::from(PROXY_SIDE), "the proxy must listen where the peer can reach it, not on the client's side");

        let peer_local = outside.run(|| {
            let mut peer = TcpStream::connect_timeout(&bound, WAIT).expect("the peer reaches the BIND listener");
            peer.write_all(b"from outside").unwrap();
            peer.local_addr().unwrap()
        });
        let (code, from) = read_reply(&mut s);
        assert_eq!((code, from), (0, peer_local), "the second reply names the peer");
        let mut got = [0u8; 12];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from outside");
        drop(s); // the server logs a BIND when its relay ends
        server.log.wait_line(&["cmd=bind", &format!("listen={bound}")]).expect("the server logs the BIND");
    });
}
