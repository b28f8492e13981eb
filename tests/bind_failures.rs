//! SOCKS BIND when it cannot work: the program gets an errno from `listen`
//! or `accept` (or `getsockname`, which curl asks first), and never a
//! listener of its own that the far side was never going to reach.
//!
//! Most cases run against a scripted proxy (a thread in this test) that
//! answers CONNECT with BND 127.0.0.9:4444 and each BIND as the case says;
//! the last runs curl and an FTP server against the bundled server with a
//! rule that denies the BIND.

#[path = "common/bind_cases.rs"]
mod bind_cases;
mod common;

use bind_cases::{BindProxy, FtpServer};
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the scripted proxy does with a BIND request.
#[derive(Clone, Copy)]
enum OnBind {
    /// First reply with this code (not 0).
    Refuse(u8),
    /// First reply succeeded (BND 127.0.0.9:5555), then a second reply
    /// with this code.
    SecondReply(u8),
    /// First reply succeeded, then the first `n` bytes of a successful
    /// second reply, then the proxy hangs up.
    HangUpAfter(usize),
    /// A name as the expected peer: "address type not supported" (8); an
    /// address: both replies succeed.
    RefuseNames,
}

const FIRST_OK: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 9, 0x15, 0xb3]; // 127.0.0.9:5555
const CONNECT_OK: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 9, 0x11, 0x5c]; // 127.0.0.9:4444
const SECOND_OK: [u8; 10] = [5, 0, 0, 1, 192, 0, 2, 1, 0, 20]; // the peer 192.0.2.1:20

/// A SOCKS5 proxy on 127.0.0.1 that plays [`OnBind`]; records the
/// destination bytes (ATYP and what follows) of every BIND request.
struct ScriptedBindProxy {
    port: u16,
    binds: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ScriptedBindProxy {
    fn start(on_bind: OnBind) -> ScriptedBindProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let binds: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let seen = binds.clone();
        thread::spawn(move || {
            // Ends with the test process; each connection is bounded by timeouts.
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                thread::spawn(move || serve(conn, on_bind, seen));
            }
        });
        ScriptedBindProxy { port, binds }
    }

    fn url(&self) -> String {
        format!("socks5://127.0.0.1:{}", self.port)
    }
}

fn read_exact(conn: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    conn.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn serve(mut conn: TcpStream, on_bind: OnBind, binds: Arc<Mutex<Vec<Vec<u8>>>>) -> Option<()> {
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    read_exact(&mut conn, 3)?; // 5 1 0: no authentication
    conn.write_all(&[5, 0]).ok()?;
    let head = read_exact(&mut conn, 4)?;
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        _ => *read_exact(&mut conn, 1)?.first()? as usize + 2,
    };
    let mut dst = vec![head[3]];
    if head[3] == 3 {
        dst.push(rest as u8 - 2);
    }
    dst.extend(read_exact(&mut conn, rest)?);
    match (head[1], on_bind) {
        (1, _) => conn.write_all(&CONNECT_OK).ok()?,
        (2, OnBind::Refuse(code)) => {
            binds.lock().unwrap().push(dst);
            conn.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).ok()?;
            return Some(());
        }
        (2, OnBind::SecondReply(code)) => {
            binds.lock().unwrap().push(dst);
            conn.write_all(&FIRST_OK).ok()?;
            let mut second = SECOND_OK;
            second[1] = code;
            conn.write_all(&second).ok()?;
        }
        (2, OnBind::RefuseNames) => {
            let name = dst[0] == 3;
            binds.lock().unwrap().push(dst);
            if name {
                conn.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).ok()?;
                return Some(());
            }
            conn.write_all(&FIRST_OK).ok()?;
            conn.write_all(&SECOND_OK).ok()?;
        }
        (2, OnBind::HangUpAfter(n)) => {
            binds.lock().unwrap().push(dst);
            conn.write_all(&FIRST_OK).ok()?;
            conn.write_all(&SECOND_OK[..n]).ok()?;
            return Some(()); // dropped: closed
        }
        _ => return None,
    }
    // Hold the connection until the client closes it.
    let mut sink = [0u8; 64];
    while conn.read(&mut sink).ok()? > 0 {}
    Some(())
}

/// `python3 -c LISTENER MODE`: a control connection to 192.0.2.1:21 (only
/// the scripted proxy "reaches" it), a listener bound to the address the
/// shim reports for it, then `listen` and two `accept`s (MODE `blocking`
/// or `nonblocking`, with `select`). Prints each call's outcome and
/// whether the kernel has the socket listening.
const LISTENER: &str = r#"
import select, socket, sys
ctl = socket.create_connection(("192.0.2.1", 21), timeout=10)
ip = ctl.getsockname()[0]
print("control-local", ip)
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind((ip, 0))
try:
    lst.listen(1)
    print("listen ok", *lst.getsockname())
except OSError as e:
    print("listen errno", e.errno)
if sys.argv[1] == "nonblocking":
    lst.setblocking(False)
    print("readable", bool(select.select([lst], [], [], 10)[0]))
for i in (1, 2):
    try:
        c, p = lst.accept()
        print("accept ok", *p)
    except OSError as e:
        print("accept errno", e.errno)
print("kernel-listening", lst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
"#;

fn run_listener(proxy: &ScriptedBindProxy, mode: &str) -> Output {
    let out = Run::python(&proxy.url(), LISTENER).arg(mode).run();
    out.assert_success();
    assert!(out.stdout.contains("control-local 127.0.0.9\n"), "the control connection reports the proxy's side:\n{out}");
    let binds = proxy.binds.lock().unwrap().clone();
    assert_eq!(binds, [vec![1, 192, 0, 2, 1, 0, 0]], "one BIND, naming the control connection's far end, port 0:\n{out}");
    assert!(out.stdout.ends_with("kernel-listening 0\n"), "never a local listener:\n{out}");
    out
}

#[test]
fn bind_refused_by_the_proxy_fails_listen() {
    // 7: command not supported → EOPNOTSUPP; 2: not allowed → EACCES.
    for (code, errno) in [(7u8, libc::EOPNOTSUPP), (2, libc::EACCES)] {
        let proxy = ScriptedBindProxy::start(OnBind::Refuse(code));
        let out = run_listener(&proxy, "blocking");
        assert!(out.stdout.contains(&format!("listen errno {errno}\n")), "reply {code}:\n{out}");
        // Never listening, so accept says what the kernel says of such a socket.
        assert!(out.stdout.contains(&format!("accept errno {}\n", libc::EINVAL)), "reply {code}:\n{out}");
        assert!(!out.stdout.contains("accept ok"), "{out}");
    }
}

#[test]
fn peer_refused_by_the_proxy_fails_accept() {
    for mode in ["blocking", "nonblocking"] {
        let proxy = ScriptedBindProxy::start(OnBind::SecondReply(2));
        let out = run_listener(&proxy, mode);
        assert!(out.stdout.contains("listen ok 127.0.0.9 5555\n"), "{mode}:\n{out}");
        let errno = format!("accept errno {}\n", libc::EACCES);
        assert_eq!(out.stdout.matches(&errno).count(), 2, "{mode}: both accepts fail so:\n{out}");
    }
}

#[test]
fn proxy_hanging_up_fails_accept() {
    // Before the second reply, and in the middle of it.
    for (n, mode) in [(0, "blocking"), (0, "nonblocking"), (4, "blocking"), (4, "nonblocking")] {
        let proxy = ScriptedBindProxy::start(OnBind::HangUpAfter(n));
        let out = run_listener(&proxy, mode);
        let errno = format!("accept errno {}\n", libc::ECONNABORTED);
        assert_eq!(out.stdout.matches(&errno).count(), 2, "{n} bytes, {mode}:\n{out}");
    }
}

/// `SOCKSIFY_BIND=always` with no proxied connection (any peer), against a
/// proxy that never answers: `listen` fails with ETIMEDOUT.
#[test]
fn stalled_proxy_times_out_listen() {
    let proxy = StallingProxy::start();
    let code = r#"
import socket
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
try:
    lst.listen(1)
    print("listen ok")
except OSError as e:
    print("listen errno", e.errno)
print("kernel-listening", lst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
"#;
    let out = Run::python(&format!("socks5://{}", proxy.addr), code).env("SOCKSIFY_BIND", "always").env("SOCKSIFY_TIMEOUT_MS", "300").run();
    out.assert_success();
    assert_eq!(out.stdout, format!("listen errno {}\nkernel-listening 0\n", libc::ETIMEDOUT), "{out}");
}

/// curl against the bundled server with a rule that denies the BIND
/// (destination 127.0.0.1 port 0, the expected peer): curl fails cleanly
/// before it advertises any address, and the FTP server never sees a
/// data connection.
#[test]
fn curl_with_bind_denied_fails_cleanly() {
    let server = Server::bundled(&["--deny", "127.0.0.1:0"]);
    let ftp = FtpServer::start();
    std::fs::write(ftp.path("file.bin"), b"never sent").unwrap();
    let out = Run::shimmed(&server.url(), "curl")
        .args(["-sS", "--max-time", "25", "-P", "-", "-o", "/dev/null"])
        .arg(ftp.url("127.0.0.1", "file.bin"))
        .run();
    // 30: CURLE_FTP_PORT_FAILED.
    assert_eq!(out.code, Some(30), "{out}");
    assert!(ftp.data_peers().is_empty(), "{}", ftp.log());
    let verbs = ftp.verbs();
    assert!(!verbs.iter().any(|v| v == "EPRT" || v == "PORT" || v == "RETR"), "curl must stop before advertising anything: {verbs:?}");
    let lines = server.bind_lines();
    assert!(lines.len() == 1 && lines[0].contains("reply=not-allowed"), "{lines:?}");
}

/// Remote DNS: the control connection went to a name, so the BIND names
/// it too; a proxy that takes no name there ("address type not
/// supported") is asked again for any peer, and the BIND works.
#[test]
fn a_proxy_refusing_a_name_in_bind_is_asked_for_any_peer() {
    let proxy = ScriptedBindProxy::start(OnBind::RefuseNames);
    let code = r#"
import socket
ctl = socket.create_connection(("ftp.test", 21), timeout=10)
lst = socket.socket()
lst.bind((ctl.getsockname()[0], 0))
lst.listen(1)
print("listen ok", *lst.getsockname())
c, p = lst.accept()
print("accept ok", *p)
"#;
    let out = Run::python(&format!("socks5h://127.0.0.1:{}", proxy.port), code).run();
    out.assert_success();
    assert_eq!(out.stdout, "listen ok 127.0.0.9 5555\naccept ok 192.0.2.1 20\n", "{out}");
    let mut name = vec![3, 8];
    name.extend_from_slice(b"ftp.test");
    name.extend_from_slice(&[0, 0]);
    assert_eq!(*proxy.binds.lock().unwrap(), [name, vec![1, 0, 0, 0, 0, 0, 0]], "by name first, then any peer:\n{out}");
}
