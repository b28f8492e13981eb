//! Datagrams a proxied UDP socket must not deliver, and odd but valid
//! relay replies, against a SOCKS5 proxy scripted here (its UDP relay does
//! what the test says; the bundled server never sends such datagrams).
//!
//! The client (`tests/programs/udp_strays.c`) polls and then reads with a
//! blocking `recvfrom`, as many programs do: a datagram the shim drops must
//! not make `poll` say "readable", or the read waits with no limit.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// What the scripted proxy answers to UDP ASSOCIATE.
#[derive(Clone, Copy, PartialEq)]
enum Bound {
    /// Its relay's own address.
    Relay,
    /// `0.0.0.0:0`, "this proxy's address": the relay listens on the
    /// proxy's own port.
    Unspecified,
}

/// A SOCKS5 proxy for one UDP association. Its relay echoes `echo:X` as X
/// from the destination the client named, and answers `stray:KIND` by
/// sending the client a datagram the shim must drop (see [`stray`]).
struct ScriptedUdpProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ScriptedUdpProxy {
    fn start(bound: Bound) -> ScriptedUdpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = match bound {
            Bound::Relay => UdpSocket::bind("127.0.0.1:0").unwrap(),
            Bound::Unspecified => UdpSocket::bind(("127.0.0.1", port)).unwrap(),
        };
        relay.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let relay_port = relay.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let control = thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut greeting = [0u8; 3];
                conn.read_exact(&mut greeting).unwrap();
                assert_eq!(greeting, [5, 1, 0]);
                conn.write_all(&[5, 0]).unwrap();
                let mut request = [0u8; 10];
                conn.read_exact(&mut request).unwrap();
                assert_eq!(request[..4], [5, 3, 0, 1], "a UDP ASSOCIATE for an IPv4 address");
                let mut reply = vec![5, 0, 0, 1];
                match bound {
                    Bound::Relay => reply.extend_from_slice(&[127, 0, 0, 1]),
                    Bound::Unspecified => reply.extend_from_slice(&[0, 0, 0, 0]),
                }
                let bnd_port = if bound == Bound::Relay { relay_port } else { 0 };
                reply.extend_from_slice(&bnd_port.to_be_bytes());
                conn.write_all(&reply).unwrap();
                held.push(conn); // the association lives as long as this
            }
        });
        let st = stop.clone();
        let datagrams = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, client)) = relay.recv_from(&mut buf) else { continue };
                // The client's header: 0 0 0 ATYP=1 IP PORT (a documentation address).
                assert_eq!(buf[..4], [0, 0, 0, 1], "the shim's header");
                let header = buf[..10].to_vec();
                let payload = String::from_utf8_lossy(&buf[10..n]).into_owned();
                if let Some(text) = payload.strip_prefix("echo:") {
                    relay.send_to(&[&header[..], text.as_bytes()].concat(), client).unwrap();
                } else if let Some(kind) = payload.strip_prefix("stray:") {
                    stray(kind, &relay, &header, client);
                }
            }
        });
        ScriptedUdpProxy { port, stop, threads: vec![control, datagrams] }
    }

    fn url(&self) -> String {
        format!("socks5h://127.0.0.1:{}", self.port)
    }
}

impl Drop for ScriptedUdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `client` a datagram of `kind`: from a stranger, from the relay's
/// IP but another port, or from the relay with a header the shim rejects.
fn stray(kind: &str, relay: &UdpSocket, header: &[u8], client: SocketAddr) {
    let from_elsewhere = |ip: &str, bytes: &[u8]| {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.send_to(bytes, client).unwrap();
    };
    let with = |head: &[u8]| [head, b"stray"].concat();
    match kind {
        "stranger" => from_elsewhere("127.0.0.5", b"stray"),
        "stranger-with-header" => from_elsewhere("127.0.0.5", &with(header)),
        "relay-ip-other-port" => from_elsewhere("127.0.0.1", &with(header)),
        "bypassed" => from_elsewhere("127.0.0.7", b"direct"),
        "fragment" => relay.send_to(&with(&[&[0, 0, 1], &header[3..]].concat()), client).map(drop).unwrap(),
        "reserved" => relay.send_to(&with(&[&[0, 1, 0], &header[3..]].concat()), client).map(drop).unwrap(),
        "truncated" => relay.send_to(&header[..6], client).map(drop).unwrap(),
        "empty" => relay.send_to(&[], client).map(drop).unwrap(),
        "bad-atyp" => relay.send_to(&with(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 7]), client).map(drop).unwrap(),
        "empty-name" => relay.send_to(&with(&[0, 0, 0, 3, 0, 0, 7]), client).map(drop).unwrap(),
        "short-name" => relay.send_to(&[0, 0, 0, 3, 20, b'a', b'b'], client).map(drop).unwrap(),
        other => panic!("unknown stray kind {other}"),
    }
}

fn build(dir: &TempDir) -> std::path::PathBuf {
    let exe = dir.path().join("udp_strays");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/udp_strays.c")).run().assert_success();
    exe
}

const DROPPED: [&str; 10] = [
    "stranger",
    "stranger-with-header",
    "relay-ip-other-port",
    "fragment",
    "reserved",
    "truncated",
    "empty",
    "bad-atyp",
    "empty-name",
    "short-name",
];

/// Each kind of datagram the shim drops leaves `poll` quiet, and the good
/// datagram after it is read at once; a datagram from a bypassed source is
/// delivered as it is.
#[test]
fn dropped_datagrams_never_wake_poll() {
    let dir = TempDir::new("udp-strays");
    let exe = build(&dir);
    let proxy = ScriptedUdpProxy::start(Bound::Relay);
    let out = Run::shimmed(&proxy.url(), &exe)
        .args(["192.0.2.1", "7"])
        .args(DROPPED)
        .arg("bypassed")
        .env("SOCKSIFY_NO_PROXY", "127.0.0.7")
        .timeout(Duration::from_secs(90))
        .run();
    let mut expected = String::from("first readable ok\n");
    for kind in DROPPED {
        expected += &format!("{kind} quiet\nafter-{kind} readable ok\n");
    }
    expected += "bypassed readable got 6\nafter-bypassed readable ok\nnull addrlen -1 EFAULT\n";
    assert_eq!(out.stdout, expected, "{out}");
    out.assert_success();
}

/// A relay given as `0.0.0.0:0` (many servers answer so) is the proxy's
/// own address and port: the datagrams go there and come back, and the
/// filter still keeps out what the relay's address must not send.
#[test]
fn relay_bound_to_the_unspecified_address_is_the_proxy() {
    let dir = TempDir::new("udp-unspecified-relay");
    let exe = build(&dir);
    let proxy = ScriptedUdpProxy::start(Bound::Unspecified);
    let out =
        Run::shimmed(&proxy.url(), &exe).args(["192.0.2.1", "7", "fragment", "relay-ip-other-port"]).timeout(Duration::from_secs(60)).run();
    let expected = "first readable ok\nfragment quiet\nafter-fragment readable ok\nrelay-ip-other-port quiet\n\
                    after-relay-ip-other-port readable ok\nnull addrlen -1 EFAULT\n";
    assert_eq!(out.stdout, expected, "{out}");
    out.assert_success();
}
