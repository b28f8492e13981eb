//! UDP through a SOCKS server that has no UDP ASSOCIATE (microsocks,
//! OpenSSH's `ssh -D`): the program's `sendto` fails with a clear errno,
//! and no datagram ever leaves directly.

use crate::common::*;
use std::net::UdpSocket;
use std::time::Duration;

/// `python3 -c SEND HOST PORT`: one `sendto`; prints `sent N` or `errno N`.
pub const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    print("sent", s.sendto(b"must-not-leak", (sys.argv[1], int(sys.argv[2]))))
except OSError as e:
    print("errno", e.errno)
"#;

/// A `sendto` through `url` fails with `errno`, and a UDP target on this
/// machine's 127.0.0.1 (where a direct datagram would land) gets nothing.
pub fn udp_refused(url: &str, errno: i32) {
    let target = UdpSocket::bind((DIRECT, 0)).expect("bind UDP target");
    let port = target.local_addr().unwrap().port();
    let out = Run::python(url, SEND).args(["127.0.0.1", &port.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), format!("errno {errno}"), "{out}");
    assert!(out.stderr.contains("UDP ASSOCIATE"), "the shim says why:\n{out}");
    target.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    let got = target.recv_from(&mut buf);
    assert!(got.is_err(), "a datagram went direct: {got:?}");
}
