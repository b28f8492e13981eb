//! The shim against a scripted proxy: a listener in this test that reads
//! the client's first flight and answers with exactly the bytes we choose.
//!
//! * The handshake costs one round trip: the greeting, the RFC 1929
//!   credentials and the CONNECT request all reach the proxy before it has
//!   said a word. The script reads the whole first flight *without
//!   answering*; a client that waited for the method selection before
//!   sending its request would never complete it, and the test fails.
//! * Every SOCKS5 reply code, garbage, and a proxy that hangs up reach the
//!   program as the errno SPEC.md promises.
//! * Bytes the destination sends right after the reply (a banner) are the
//!   program's, not eaten by the handshake.

mod common;

use common::{python3, shim_path};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

/// Reads from `conn` until `expected` bytes arrived or the read times out;
/// returns what arrived before any answer was sent.
fn first_flight(conn: &mut TcpStream, expected: usize) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < expected {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Runs python under the shim: connect to 192.0.2.1:7 (a documentation
/// address: only the scripted proxy "reaches" it), send "ping", print the
/// reply or the connect error's errno. Returns the client's stdout and
/// stderr and the bytes the proxy saw before it answered.
fn run(proxy_url_userinfo: &str, expected_flight: usize, answer: &'static [u8]) -> (String, String, Vec<u8>) {
    run_then(proxy_url_userinfo, expected_flight, answer, AfterAnswer::Echo)
}

/// What the scripted proxy does once it has answered.
#[derive(Clone, Copy, PartialEq)]
enum AfterAnswer {
    /// Read "ping", answer "pong".
    Echo,
    HangUp,
}

fn run_then(proxy_url_userinfo: &str, expected_flight: usize, answer: &'static [u8], after: AfterAnswer) -> (String, String, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let flight = first_flight(&mut conn, expected_flight);
        if flight.len() == expected_flight {
            conn.write_all(answer).unwrap();
            if after == AfterAnswer::HangUp {
                return flight;
            }
            let mut ping = [0u8; 4];
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if conn.read_exact(&mut ping).is_ok() {
                conn.write_all(b"pong").unwrap();
            }
        }
        flight
    });
    let script = "import socket\ntry:\n    s = socket.create_connection(('192.0.2.1', 7), timeout=10)\nexcept OSError as e:\n    print('errno', e.errno)\n    raise SystemExit\ns.sendall(b'ping')\nprint(s.recv(64).decode())";
    let out = Command::new("timeout")
        .args(["20", python3(), "-c", script])
        .env("LD_PRELOAD", shim_path())
        .env("SOCKSIFY_PROXY", format!("socks5h://{proxy_url_userinfo}127.0.0.1:{port}"))
        .env("SOCKSIFY_NO_PROXY", "")
        .env("SOCKSIFY_TIMEOUT_MS", "2000")
        .output()
        .unwrap();
    let flight = proxy.join().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string(), flight)
}

#[test]
fn no_auth_connect_is_one_round_trip() {
    // greeting 5,1,0 + request 5,1,0,1,192,0,2,1,0,7
    let answer: &[u8] = &[5, 0, 5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00];
    let (stdout, stderr, flight) = run("", 13, answer);
    assert_eq!(flight, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 7], "whole first flight before any answer; stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
}

#[test]
fn username_password_connect_is_one_round_trip() {
    // greeting 5,1,2 + auth 1,5,"alice",2,"pw" + request (10 bytes)
    let answer: &[u8] = &[5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00];
    let (stdout, stderr, flight) = run("alice:pw@", 23, answer);
    assert_eq!(&flight[..3], &[5, 1, 2]);
    assert_eq!(&flight[3..13], b"\x01\x05alice\x02pw");
    assert_eq!(&flight[13..], &[5, 1, 0, 1, 192, 0, 2, 1, 0, 7], "stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
}

const NO_AUTH_FLIGHT: usize = 13;

#[test]
fn every_reply_code_becomes_its_errno() {
    // (code, errno): not allowed → EACCES, net unreachable → ENETUNREACH,
    // host unreachable → EHOSTUNREACH, refused → ECONNREFUSED, TTL expired →
    // ETIMEDOUT, command unsupported → EOPNOTSUPP, address type unsupported →
    // EAFNOSUPPORT, general failure and unassigned → ECONNREFUSED.
    let cases: [(u8, i32, &'static [u8]); 9] = [
        (1, 111, &[5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
        (2, 13, &[5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]),
        (3, 101, &[5, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]),
        (4, 113, &[5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
        (5, 111, &[5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
        (6, 110, &[5, 0, 5, 6, 0, 1, 0, 0, 0, 0, 0, 0]),
        (7, 95, &[5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]),
        (8, 97, &[5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
        (0x42, 111, &[5, 0, 5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0]),
    ];
    for (code, errno, answer) in cases {
        let (stdout, stderr, _) = run("", NO_AUTH_FLIGHT, answer);
        assert_eq!(stdout, format!("errno {errno}"), "reply code {code}; stderr: {stderr}");
    }
}

#[test]
fn garbage_and_hang_ups_fail_the_connect() {
    // An HTTP proxy where a SOCKS one was expected: EPROTO.
    let (stdout, stderr, _) = run("", NO_AUTH_FLIGHT, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert_eq!(stdout, "errno 71", "stderr: {stderr}");
    // A proxy that refuses every method we offered: EACCES.
    let (stdout, stderr, _) = run("", NO_AUTH_FLIGHT, &[5, 0xff]);
    assert_eq!(stdout, "errno 13", "stderr: {stderr}");
    // A proxy that hangs up in the middle of its reply: ECONNREFUSED.
    let (stdout, stderr, _) = run_then("", NO_AUTH_FLIGHT, &[5, 0, 5, 0], AfterAnswer::HangUp);
    assert_eq!(stdout, "errno 111", "stderr: {stderr}");
}

#[test]
fn a_stalled_proxy_times_out() {
    // The script waits for more bytes than the client sends, so it never
    // answers; SOCKSIFY_TIMEOUT_MS=2000 bounds the wait: ETIMEDOUT.
    let (stdout, stderr, flight) = run("", NO_AUTH_FLIGHT + 1, &[]);
    assert_eq!(flight.len(), NO_AUTH_FLIGHT);
    assert_eq!(stdout, "errno 110", "stderr: {stderr}");
    assert!(stderr.contains("timed out"), "the reason is logged: {stderr}");
}

#[test]
fn bytes_after_the_reply_belong_to_the_program() {
    // The reply with a domain BND.ADDR, then a server banner in the same segment.
    let (stdout, stderr, _) = run("", NO_AUTH_FLIGHT, b"\x05\x00\x05\x00\x00\x03\x04host\x00\x50SSH-2.0-banner\n");
    assert!(stdout.starts_with("SSH-2.0-banner"), "stdout: {stdout:?}; stderr: {stderr}");
}
