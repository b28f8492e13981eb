//! The shim inside a busy process: threads connecting while the process
//! forks, children that connect through the proxy right after the fork, and
//! signals interrupting the handshake. Nothing deadlocks, nothing fails,
//! and every connection still goes through the proxy.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

/// 8 threads make 20 proxied connections each while the main thread forks
/// 20 times; each child makes one proxied connection and exits. A fork
/// that copied a lock held by another thread would hang the child (and the
/// program's alarm would end it); a broken table would fail the echo.
#[test]
fn fork_while_threads_connect() {
    let dir = TempDir::new("fork-threads");
    let exe = dir.path().join("fork_threads");
    let source = repo_root().join("tests/programs/fork_threads.c");
    let built = Run::plain("gcc").args(["-O2", "-pthread", "-o"]).arg(&exe).arg(&source).run();
    built.assert_success();
    let server = Server::bundled(&["--quiet"]);
    let target = TcpTarget::echo();
    let out = Run::shimmed(&server.url(), &exe)
        .args([target.addr.ip().to_string(), target.addr.port().to_string()])
        .env("SOCKSIFY_LOG", "warn")
        .timeout(Duration::from_secs(90))
        .run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "threads ok 160 children ok 20", "{out}");
    target.assert_peers(8 * 20 + 20, BUNDLED_OUT);
}

/// A 5 ms interval timer keeps interrupting the program while a slow proxy
/// takes 150 ms to answer each step: the shim retries EINTR inside the
/// handshake, so `connect` still succeeds and the bytes arrive.
#[test]
fn signals_during_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 3];
        conn.read_exact(&mut greeting).unwrap();
        thread::sleep(Duration::from_millis(150));
        conn.write_all(&[5, 0]).unwrap();
        let mut request = [0u8; 10];
        conn.read_exact(&mut request).unwrap();
        thread::sleep(Duration::from_millis(150));
        conn.write_all(&[5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00]).unwrap();
        let mut ping = [0u8; 4];
        conn.read_exact(&mut ping).unwrap();
        conn.write_all(b"pong").unwrap();
    });
    let script = r#"
import signal, socket
hits = 0
def on_alarm(sig, frame):
    global hits
    hits += 1
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
s = socket.create_connection(("192.0.2.1", 7), timeout=10)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
s.sendall(b"ping")
print("reply", s.recv(4).decode(), "signals", hits)
"#;
    let out = Run::python(&format!("socks5h://127.0.0.1:{port}"), script).env("SOCKSIFY_TIMEOUT_MS", "5000").run();
    proxy.join().unwrap();
    out.assert_success();
    assert!(out.stdout.starts_with("reply pong signals "), "{out}");
    let hits: u32 = out.stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(hits >= 1, "the timer must have fired during the 300 ms handshake: {out}");
}

/// A signal handler closes 299 proxied UDP sockets, one every 200 µs, while
/// the program keeps sending through the shim: `close` is async-signal-safe,
/// and the shim must not wait for a lock the interrupted code holds.
#[test]
fn close_from_a_signal_handler() {
    let dir = TempDir::new("signal-close");
    let exe = dir.path().join("signal_close");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/signal_close.c")).run().assert_success();
    // 300 associations at once, each with its control connection: more
    // than the server's default per-client cap (256).
    let server = Server::bundled(&["--quiet", "--max-client-conns", "1000"]);
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let out = Run::shimmed(&server.url(), &exe)
        .args(["127.0.0.1".to_string(), port.to_string()])
        .env("SOCKSIFY_LOG", "warn")
        .timeout(Duration::from_secs(60))
        .run();
    assert!(!out.timed_out, "the program hung: {out}");
    out.assert_success();
    assert_eq!(out.stdout.trim(), "closed 299", "{out}");
    // Every socket's first datagram went through the proxy.
    echo.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    let (_, from) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(from.ip(), BUNDLED_OUT);
}

/// A signal handler calls `connect` while the interrupted connect waits
/// inside the shim for a proxy that never answers: the handler's connect
/// fails with EINTR, and nothing reaches the target directly.
#[test]
fn connect_from_a_signal_handler_inside_the_shim() {
    let dir = TempDir::new("signal-connect");
    let exe = dir.path().join("signal_connect");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/signal_connect.c")).run().assert_success();
    let proxy = StallingProxy::start();
    let target = TcpTarget::echo();
    let out = Run::shimmed(&format!("socks5h://{}", proxy.addr), &exe)
        .args([target.addr.ip().to_string(), target.addr.port().to_string()])
        .env("SOCKSIFY_TIMEOUT_MS", "3000")
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_success();
    // main: ETIMEDOUT from the stalled proxy; handler: -1 with EINTR.
    assert_eq!(out.stdout.trim(), "main 110 handler -1 4", "{out}");
    target.assert_untouched();
}
