//! The shim against a scripted proxy: a listener in this test that plays a
//! list of steps, each "read exactly these bytes, then answer with those",
//! as a strict RFC 1928 server would.
//!
//! * Lock-step by default: after each step's bytes the script checks that
//!   nothing more is waiting (a client that sent its request before the
//!   method selection arrived would fail here; microsocks drops such bytes
//!   and hangs). With `?pipeline=1` the greeting, the RFC 1929 credentials
//!   and the CONNECT request all reach the proxy before it says a word: one
//!   round trip.
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

/// One step of the script: the bytes the client must have sent (all of
/// them, and nothing ahead of them), and the answer.
type Step = (&'static [u8], &'static [u8]);

/// What the scripted proxy saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every byte the client sent before the script ended.
    bytes: Vec<u8>,
    /// Set when a step's bytes came with more behind them (or less arrived).
    out_of_turn: Option<String>,
}

/// Reads exactly `n` bytes (bounded by a read timeout).
fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = vec![0u8; n];
    let mut at = 0;
    while at < n {
        match conn.read(&mut got[at..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => at += k,
        }
    }
    got.truncate(at);
    got
}

/// Whatever else arrives within a short grace period: in lock-step, a
/// client waits for our answer, so this must be empty. (The wait is a
/// bound on catching a misbehaving client, never a limit on a correct one.)
fn extra_bytes(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    let mut buf = [0u8; 512];
    match conn.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// What the scripted proxy does once the script is played.
#[derive(Clone, Copy, PartialEq)]
enum AfterScript {
    /// Read "ping", answer "pong".
    Echo,
    HangUp,
}

/// Runs python under the shim: connect to 192.0.2.1:7 (a documentation
/// address: only the scripted proxy "reaches" it), send "ping", print the
/// reply or the connect error's errno. Returns the client's stdout and
/// stderr and what the proxy saw.
fn run(url_tail: &str, script: &'static [Step], after: AfterScript) -> (String, String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut seen = Seen::default();
        for (i, (expect, answer)) in script.iter().enumerate() {
            let got = read_n(&mut conn, expect.len());
            seen.bytes.extend_from_slice(&got);
            if got.len() < expect.len() {
                seen.out_of_turn = Some(format!("step {i}: only {} of {} bytes arrived", got.len(), expect.len()));
                return seen;
            }
            let extra = extra_bytes(&mut conn);
            if !extra.is_empty() {
                seen.bytes.extend_from_slice(&extra);
                seen.out_of_turn = Some(format!("step {i}: {} bytes arrived before our answer: {extra:?}", extra.len()));
                return seen;
            }
            if !answer.is_empty() {
                conn.write_all(answer).unwrap();
            }
        }
        if after == AfterScript::Echo {
            let mut ping = [0u8; 4];
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if conn.read_exact(&mut ping).is_ok() {
                conn.write_all(b"pong").unwrap();
            }
        }
        seen
    });
    let client = "import socket\ntry:\n    s = socket.create_connection(('192.0.2.1', 7), timeout=10)\nexcept OSError as e:\n    print('errno', e.errno)\n    raise SystemExit\ns.sendall(b'ping')\nprint(s.recv(64).decode())";
    let out = Command::new("timeout")
        .args(["20", python3(), "-c", client])
        .env("LD_PRELOAD", shim_path())
        .env("SOCKSIFY_PROXY", format!("socks5h://{url_tail}").replace("PORT", &port.to_string()))
        .env("SOCKSIFY_NO_PROXY", "")
        .env("SOCKSIFY_TIMEOUT_MS", "2000")
        .env_remove("SOCKSIFY_PIPELINE")
        .output()
        .unwrap();
    let seen = proxy.join().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string(), seen)
}

const GREETING: &[u8] = &[5, 1, 0];
const REQUEST: &[u8] = &[5, 1, 0, 1, 192, 0, 2, 1, 0, 7];
const REPLY_OK: &[u8] = &[5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00];
const NO_AUTH: &[u8] = &[5, 0];

#[test]
fn no_auth_connect_is_lock_step() {
    let (stdout, stderr, seen) = run("127.0.0.1:PORT", &[(GREETING, NO_AUTH), (REQUEST, REPLY_OK)], AfterScript::Echo);
    assert_eq!(seen.out_of_turn, None, "stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
}

#[test]
fn username_password_is_lock_step() {
    // Both methods offered, the server picks username/password, then the
    // credentials, and only after their status the request.
    const CREDS: &[u8] = b"\x01\x05alice\x02pw";
    let script: &[Step] = &[(&[5, 2, 0, 2], &[5, 2]), (CREDS, &[1, 0]), (REQUEST, REPLY_OK)];
    let (stdout, stderr, seen) = run("alice:pw@127.0.0.1:PORT", script, AfterScript::Echo);
    assert_eq!(seen.out_of_turn, None, "stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
    // A wrong password: status 1 fails the connect with EACCES, no request sent.
    let script: &[Step] = &[(&[5, 2, 0, 2], &[5, 2]), (CREDS, &[1, 1])];
    let (stdout, stderr, seen) = run("alice:pw@127.0.0.1:PORT", script, AfterScript::HangUp);
    assert_eq!(seen.out_of_turn, None, "stderr: {stderr}");
    assert_eq!(stdout, "errno 13", "stderr: {stderr}");
    assert!(stderr.contains("rejected the username/password"), "the reason is logged: {stderr}");
}

#[test]
fn pipelined_no_auth_connect_is_one_round_trip() {
    // greeting 5,1,0 + request, before any answer.
    const FLIGHT: &[u8] = &[5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 7];
    const ANSWER: &[u8] = &[5, 0, 5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00];
    let (stdout, stderr, seen) = run("127.0.0.1:PORT?pipeline=1", &[(FLIGHT, ANSWER)], AfterScript::Echo);
    assert_eq!(seen.out_of_turn, None, "stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
}

#[test]
fn pipelined_username_password_is_one_round_trip() {
    // greeting 5,1,2 + auth 1,5,"alice",2,"pw" + request (10 bytes)
    const FLIGHT: &[u8] = b"\x05\x01\x02\x01\x05alice\x02pw\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x07";
    const ANSWER: &[u8] = &[5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 9, 0x10, 0x00];
    let (stdout, stderr, seen) = run("alice:pw@127.0.0.1:PORT?pipeline=1", &[(FLIGHT, ANSWER)], AfterScript::Echo);
    assert_eq!(seen.out_of_turn, None, "stderr: {stderr}");
    assert_eq!(stdout, "pong", "stderr: {stderr}");
}

#[test]
fn every_reply_code_becomes_its_errno() {
    // (code, errno): not allowed → EACCES, net unreachable → ENETUNREACH,
    // host unreachable → EHOSTUNREACH, refused → ECONNREFUSED, TTL expired →
    // ETIMEDOUT, command unsupported → EOPNOTSUPP, address type unsupported →
    // EAFNOSUPPORT, general failure and unassigned → ECONNREFUSED.
    let cases: [(u8, i32, &'static [u8]); 9] = [
        (1, 111, &[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
        (2, 13, &[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]),
        (3, 101, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]),
        (4, 113, &[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
        (5, 111, &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
        (6, 110, &[5, 6, 0, 1, 0, 0, 0, 0, 0, 0]),
        (7, 95, &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]),
        (8, 97, &[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
        (0x42, 111, &[5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0]),
    ];
    for (code, errno, reply) in cases {
        let script: &'static [Step] = Box::leak(Box::new([(GREETING, NO_AUTH), (REQUEST, reply)]));
        let (stdout, stderr, _) = run("127.0.0.1:PORT", script, AfterScript::HangUp);
        assert_eq!(stdout, format!("errno {errno}"), "reply code {code}; stderr: {stderr}");
    }
}

#[test]
fn garbage_and_hang_ups_fail_the_connect() {
    // An HTTP proxy where a SOCKS one was expected: EPROTO.
    let (stdout, stderr, _) = run("127.0.0.1:PORT", &[(GREETING, b"HTTP/1.1 400 Bad Request\r\n\r\n")], AfterScript::HangUp);
    assert_eq!(stdout, "errno 71", "stderr: {stderr}");
    // A proxy that refuses every method we offered: EACCES.
    let (stdout, stderr, _) = run("127.0.0.1:PORT", &[(GREETING, &[5, 0xff])], AfterScript::HangUp);
    assert_eq!(stdout, "errno 13", "stderr: {stderr}");
    // A proxy that hangs up in the middle of its reply: ECONNREFUSED.
    let (stdout, stderr, _) = run("127.0.0.1:PORT", &[(GREETING, NO_AUTH), (REQUEST, &[5, 0])], AfterScript::HangUp);
    assert_eq!(stdout, "errno 111", "stderr: {stderr}");
}

#[test]
fn a_stalled_proxy_times_out() {
    // The script never answers the greeting; SOCKSIFY_TIMEOUT_MS=2000
    // bounds the wait: ETIMEDOUT, and the request was never sent.
    let (stdout, stderr, seen) = run("127.0.0.1:PORT", &[(GREETING, b""), (REQUEST, b"")], AfterScript::HangUp);
    assert_eq!(seen.bytes, GREETING, "stderr: {stderr}");
    assert_eq!(stdout, "errno 110", "stderr: {stderr}");
    assert!(stderr.contains("timed out"), "the reason is logged: {stderr}");
}

#[test]
fn bytes_after_the_reply_belong_to_the_program() {
    // The reply with a domain BND.ADDR, then a server banner in the same segment.
    let script: &[Step] = &[(GREETING, NO_AUTH), (REQUEST, b"\x05\x00\x00\x03\x04host\x00\x50SSH-2.0-banner\n")];
    let (stdout, stderr, _) = run("127.0.0.1:PORT", script, AfterScript::HangUp);
    assert!(stdout.starts_with("SSH-2.0-banner"), "stdout: {stdout:?}; stderr: {stderr}");
}
