//! The fake-address pool of remote DNS when names outnumber its addresses:
//! an address a program may still hold is never handed to another name.
//! With a pool of 254 addresses (`SOCKSIFY_FAKE_NET=198.18.0.0/24,...`),
//! a program looks up `held.test`, then 300 other names at once (so none
//! has been idle for the minimum time): the look-ups beyond the pool fail
//! with `EAI_AGAIN`, and `held.test`'s address still reaches `held.test`
//! through the proxy, not whichever name came last.

mod common;

use common::*;

const SCRIPT: &str = r#"
import socket, sys
port = int(sys.argv[1])
held = socket.getaddrinfo("held.test", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
ok = again = 0
for i in range(300):
    try:
        socket.getaddrinfo("n%d.test" % i, port, socket.AF_INET, socket.SOCK_STREAM)
        ok += 1
    except socket.gaierror as e:
        again += e.errno == socket.EAI_AGAIN
print("resolved", ok, "try-again", again)
s = socket.create_connection(held, timeout=15)
s.sendall(b"to-held")
print("echo", s.recv(16).decode())
"#;

#[test]
fn a_full_pool_fails_look_ups_instead_of_recycling_a_recent_address() {
    let server = Server::bundled(&["--map", "held.test=127.0.0.1"]);
    let target = TcpTarget::echo();
    let out = Run::python(&server.url(), SCRIPT)
        .arg(target.addr.port().to_string())
        .env("SOCKSIFY_FAKE_NET", "198.18.0.0/24,fd50:c5f1:f1ed::/64")
        .env("SOCKSIFY_LOG", "warn")
        .run();
    out.assert_success();
    // 254 addresses: held.test and 253 others; 47 look-ups must wait.
    assert_eq!(out.stdout, "resolved 253 try-again 47\necho to-held\n", "{out}");
    assert!(out.stderr.matches("fail (try again)").count() == 1, "the refusal is logged, once: {out}");
    target.assert_peers(1, BUNDLED_OUT);
    server
        .log
        .wait_line(&["cmd=connect", &format!("dst=held.test:{} ", target.addr.port()), "reply=succeeded"])
        .unwrap_or_else(|| panic!("no CONNECT to held.test in the server's log:\n{}", server.log.text()));
}
