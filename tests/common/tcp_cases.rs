//! The end-to-end TCP cases, written once and run against every
//! SOCKS server (`tests/tcp_bundled.rs`, `tests/tcp_dante.rs`).
//!
//! Each case runs a real client under the shim and asserts what a user
//! would: the payload arrived intact, the target saw the connection come
//! from the proxy's outgoing address (never 127.0.0.1, which would be a
//! direct connection), and the proxy's log names the flow.
#![allow(dead_code)]

use crate::common::*;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `python3 -c ECHO_CLIENT HOST PORT TOKEN SIZE`: one blocking connect, sends
/// SIZE bytes (TOKEN repeated) from a thread while reading the echo back.
/// Prints `peer IP PORT`, `sock IP PORT` and `echo intact` or `echo CORRUPT`.
///
/// The echo clients shut down their sending side only once the whole echo
/// is back: microsocks does not relay half-closed connections (a FIN from
/// either side closes both), and that is the server's choice, not ours.
pub const ECHO_BLOCKING: &str = r#"
import socket, sys, threading
host, port, token, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
payload = (token * (size // len(token) + 1))[:size]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.connect((host, port))
print("peer", *s.getpeername()[:2])
print("sock", *s.getsockname()[:2])
s.settimeout(20)
t = threading.Thread(target=s.sendall, args=(payload,))
t.start()
data = bytearray()
while len(data) < size:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
t.join()
s.shutdown(socket.SHUT_WR)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("echo", "intact" if bytes(data) == payload else "CORRUPT %d/%d bytes" % (len(data), size))
"#;

/// Non-blocking socket: `connect_ex` (0 or EINPROGRESS), `select` for
/// writability, `SO_ERROR`, then the echo exchange driven by `select`.
pub const ECHO_NONBLOCKING: &str = r#"
import errno, fcntl, os, select, socket, sys
host, port, token, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
payload = (token * (size // len(token) + 1))[:size]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
rc = s.connect_ex((host, port))
print("connect_ex", errno.errorcode.get(rc, rc))
if rc not in (0, errno.EINPROGRESS):
    sys.exit(1)
_, w, _ = select.select([], [s], [], 20)
if not w:
    print("never writable")
    sys.exit(1)
print("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
print("nonblocking", bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK))
out = memoryview(payload)
data = bytearray()
shut = False
while True:
    r, w, _ = select.select([s], [s] if len(out) else [], [], 20)
    if not r and not w:
        print("stalled")
        sys.exit(1)
    if w and len(out):
        try:
            out = out[s.send(out[:65536]):]
        except BlockingIOError:
            pass
    if r:
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
    if not len(out) and not shut and len(data) >= size:
        s.shutdown(socket.SHUT_WR)
        shut = True
print("echo", "intact" if bytes(data) == payload else "CORRUPT %d/%d bytes" % (len(data), size))
"#;

/// `asyncio.open_connection`, write, `write_eof`, read to the end.
pub const ECHO_ASYNCIO: &str = r#"
import asyncio, sys
host, port, token, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
payload = (token * (size // len(token) + 1))[:size]
async def main():
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
    w.write(payload)
    await w.drain()
    data = await asyncio.wait_for(r.readexactly(size), 20)
    w.write_eof()
    data += await asyncio.wait_for(r.read(), 20)
    w.close()
    print("echo", "intact" if data == payload else "CORRUPT %d/%d bytes" % (len(data), size))
asyncio.run(main())
"#;

/// N threads each connect (blocking), wait until all N are connected, then
/// exchange a message of their own. Prints `ok N` and one `fail ...` per
/// failed thread.
pub const ECHO_CONCURRENT: &str = r#"
import socket, sys, threading
host, port, token, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
barrier = threading.Barrier(n, timeout=25)
results = [None] * n
def worker(i):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, port))
        s.settimeout(20)
        barrier.wait()
        msg = ("%s-%d|" % (token, i)).encode() * 100
        s.sendall(msg)
        data = b""
        while len(data) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        results[i] = True if data == msg else "thread %d: echo differs (%d bytes)" % (i, len(data))
    except Exception as e:
        results[i] = "thread %d: %r" % (i, e)
        barrier.abort()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok", sum(1 for r in results if r is True))
for r in results:
    if r is not True:
        print("fail", r)
"#;

/// Connects (blocking) and prints `errno N` (0 on success).
pub const CONNECT_ERRNO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("errno 0")
except OSError as e:
    print("errno", e.errno)
"#;

/// Connects (blocking), then reads once: prints `errno N read M` (the
/// connect's errno, 0 on success, then how many bytes the first read got:
/// 0 is end-of-file).
pub const CONNECT_THEN_READ: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(20)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as e:
    print("errno", e.errno)
    raise SystemExit
try:
    print("errno 0 read", len(s.recv(100)))
except OSError as e:
    print("errno 0 read-errno", e.errno)
"#;

/// A proxy reached with the handshake pipelined (`?pipeline=1`): the same
/// server, the same proof.
pub struct Pipelined<'a, P: Proxy>(pub &'a P);

impl<P: Proxy> Proxy for Pipelined<'_, P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn url(&self) -> String {
        format!("{}?pipeline=1", self.0.url())
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        self.0.out_ip(dst)
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        self.0.wait_connect_line(dst)
    }
    fn connect_count(&self, dst: SocketAddr) -> usize {
        self.0.connect_count(dst)
    }
    fn wait_connect_count(&self, dst: SocketAddr, n: usize) {
        self.0.wait_connect_count(dst, n)
    }
    fn target_on(&self, ip: IpAddr, serve: Serve) -> TcpTarget {
        self.0.target_on(ip, serve)
    }
}

/// The bytes `TOKEN` repeated to `size`, as the python clients build them.
pub fn payload(token: &str, size: usize) -> Vec<u8> {
    token.bytes().cycle().take(size).collect()
}

/// Runs one of the echo clients above against `target` through `proxy`.
pub fn run_echo(proxy_url: &str, script: &str, target: &TcpTarget, token: &str, size: usize) -> Output {
    Run::python(proxy_url, script)
        .arg(target.addr.ip().to_string())
        .arg(target.addr.port().to_string())
        .arg(token)
        .arg(size.to_string())
        .run()
}

/// The proof every case ends with: exactly one connection reached the
/// target, from the proxy's outgoing address, carrying exactly `sent`; and
/// the proxy logged the flow.
pub fn assert_proxied_once(proxy: &dyn Proxy, target: &TcpTarget, sent: &[u8]) {
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    let got = &target.received()[0];
    assert!(got == sent, "target received {} bytes, expected {} (the payload changed on the way)", got.len(), sent.len());
    let line = proxy.wait_connect_line(target.addr);
    eprintln!("{} log: {line}", proxy.name());
}

fn assert_echo_intact(out: &Output) {
    out.assert_success();
    assert!(out.stdout.contains("echo intact"), "client did not get its bytes back:\n{out}");
}

// ---------------------------------------------------------------- the cases

/// `curl` fetches a page from a local HTTP server.
pub fn curl(proxy: &dyn Proxy) {
    let body = token("curl-body");
    let target = proxy.target(Serve::Http(body.clone()));
    let path = token("path");
    let url = format!("http://{}/{path}", target.addr);
    let out = Run::shimmed(&proxy.url(), "curl").args(["-sS", "--max-time", "20", &url]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "curl printed something else than the page:\n{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    // SOCKSIFY_LOG=info: one line on stderr per proxied flow.
    let flow_lines = out.stderr.lines().filter(|l| l.contains(&target.addr.to_string())).count();
    assert_eq!(flow_lines, 1, "want exactly one shim log line naming {}:\n{out}", target.addr);
    let request = String::from_utf8_lossy(&target.received()[0]).into_owned();
    assert!(request.starts_with(&format!("GET /{path} HTTP/1.1\r\n")), "target got {request:?}");
    proxy.wait_connect_line(target.addr);
}

/// python3, blocking socket, 256 KiB echoed.
pub fn python_blocking(proxy: &dyn Proxy) {
    let target = proxy.target(Serve::Echo);
    let tok = token("blocking");
    let out = run_echo(&proxy.url(), ECHO_BLOCKING, &target, &tok, 256 * 1024);
    assert_echo_intact(&out);
    assert_proxied_once(proxy, &target, &payload(&tok, 256 * 1024));
}

/// python3, non-blocking socket + `select`: connect completes (0 or
/// EINPROGRESS then writable), `SO_ERROR` is 0, `O_NONBLOCK` survives.
pub fn python_nonblocking(proxy: &dyn Proxy) {
    let target = proxy.target(Serve::Echo);
    let tok = token("nonblocking");
    let out = run_echo(&proxy.url(), ECHO_NONBLOCKING, &target, &tok, 128 * 1024);
    assert_echo_intact(&out);
    assert!(out.stdout.contains("so_error 0\n"), "SO_ERROR after connect must be 0:\n{out}");
    assert!(out.stdout.contains("nonblocking True\n"), "the socket's O_NONBLOCK flag must be restored:\n{out}");
    assert_proxied_once(proxy, &target, &payload(&tok, 128 * 1024));
}

/// python3 `asyncio.open_connection` (non-blocking connect on an event loop).
pub fn python_asyncio(proxy: &dyn Proxy) {
    let target = proxy.target(Serve::Echo);
    let tok = token("asyncio");
    let out = run_echo(&proxy.url(), ECHO_ASYNCIO, &target, &tok, 32 * 1024);
    assert_echo_intact(&out);
    assert_proxied_once(proxy, &target, &payload(&tok, 32 * 1024));
}

/// OpenBSD `nc`: stdin to the target, the echo to stdout.
pub fn netcat(proxy: &dyn Proxy) {
    let target = proxy.target(Serve::Echo);
    let data = String::from_utf8(payload(&token("nc"), 20_000)).unwrap();
    let out = Run::shimmed(&proxy.url(), "nc")
        .args(["-N", "-n", "-w", "20", &target.addr.ip().to_string(), &target.addr.port().to_string()])
        .stdin(data.clone())
        .run();
    out.assert_success();
    assert!(out.stdout == data, "nc printed {} bytes, expected the {} it sent:\n{out}", out.stdout.len(), data.len());
    assert_proxied_once(proxy, &target, data.as_bytes());
}

/// Username/password authentication with the URL `auth_url` (credentials
/// percent-encoded in it); the same request with `bad_url` (wrong password)
/// must fail without reaching the target.
pub fn auth(proxy: &dyn Proxy, auth_url: &str, bad_url: &str) {
    let target = proxy.target(Serve::Echo);
    let tok = token("auth");
    let out = run_echo(auth_url, ECHO_BLOCKING, &target, &tok, 4096);
    assert_echo_intact(&out);
    assert_proxied_once(proxy, &target, &payload(&tok, 4096));

    let denied = proxy.target(Serve::Echo);
    let out = Run::python(bad_url, CONNECT_ERRNO).args([denied.addr.ip().to_string(), denied.addr.port().to_string()]).run();
    out.assert_success();
    assert!(
        out.stdout.contains("errno 13") || out.stdout.contains("errno 111"),
        "a wrong password must fail the connect with EACCES or ECONNREFUSED:\n{out}"
    );
    denied.assert_untouched();
}

/// An IPv6 target on ::1 from an AF_INET6 socket, through a proxy that
/// listens on IPv4. The proxy leaves from ::1 too, so the proof is: the
/// target saw a peer other than the client's own socket address (a direct
/// connection would show exactly the client's address), and the proxy
/// logged a CONNECT to [::1]:port.
pub fn ipv6_target(proxy: &dyn Proxy) {
    let target = proxy.target_on(LOCALHOST_V6, Serve::Echo);
    let tok = token("ipv6");
    // The proof needs the kernel's own address of the client socket: with
    // BIND on (the default) `getsockname` reports the proxy's side instead.
    let out = Run::python(&proxy.url(), ECHO_BLOCKING)
        .env("SOCKSIFY_BIND", "off")
        .args([target.addr.ip().to_string(), target.addr.port().to_string(), tok.clone(), 8192.to_string()])
        .run();
    assert_echo_intact(&out);
    assert!(
        out.stdout.contains(&format!("peer ::1 {}\n", target.addr.port())),
        "getpeername on the AF_INET6 socket must report the target [::1]:{}:\n{out}",
        target.addr.port()
    );
    let sock = out.stdout.lines().find_map(|l| l.strip_prefix("sock ")).expect("client printed its address").to_owned();
    let peers = target.peers();
    assert_eq!(peers.len(), 1, "target saw {peers:?}");
    let seen = format!("{} {}", peers[0].ip(), peers[0].port());
    assert_ne!(seen, sock, "the target saw the client's own socket address: the connection went direct");
    assert_eq!(peers[0].ip(), proxy.out_ip(target.addr.ip()));
    assert_eq!(target.received()[0], payload(&tok, 8192));
    proxy.wait_connect_line(target.addr);
}

/// `getpeername` on a proxied socket reports the destination the program
/// asked for, not the proxy.
pub fn getpeername(proxy: &dyn Proxy) {
    let target = proxy.target(Serve::Echo);
    let tok = token("getpeername");
    let out = run_echo(&proxy.url(), ECHO_BLOCKING, &target, &tok, 100);
    assert_echo_intact(&out);
    let want = format!("peer {} {}\n", target.addr.ip(), target.addr.port());
    assert!(out.stdout.contains(&want), "getpeername must report the target ({want:?}), not the proxy:\n{out}");
    assert_proxied_once(proxy, &target, &payload(&tok, 100));
}

/// 50 python threads connect at once (all 50 open before any sends), each
/// echoes its own message.
pub fn concurrent_50(proxy: &dyn Proxy) {
    const N: usize = 50;
    let target = proxy.target(Serve::Echo);
    let tok = token("c50");
    let out = Run::python(&proxy.url(), ECHO_CONCURRENT)
        .args([target.addr.ip().to_string(), target.addr.port().to_string(), tok.clone(), N.to_string()])
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_success();
    assert!(out.stdout.starts_with(&format!("ok {N}\n")), "not every thread got its echo:\n{out}");
    target.assert_peers(N, proxy.out_ip(target.addr.ip()));
    let mut got: Vec<Vec<u8>> = target.received();
    let mut want: Vec<Vec<u8>> = (0..N).map(|i| format!("{tok}-{i}|").repeat(100).into_bytes()).collect();
    got.sort();
    want.sort();
    assert!(got == want, "the target did not receive exactly the 50 messages");
    proxy.wait_connect_count(target.addr, N);
}
