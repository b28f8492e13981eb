//! `socksify --check`: against the bundled server (good, credentials it does
//! not need, wrong password, no password, dead port, a chain, SOCKS4),
//! servers that are not SOCKS (silent, an SSH banner, an HTTP answer), a
//! scripted proxy without UDP ASSOCIATE, and with the proxy taken from
//! curl's `ALL_PROXY`. The exit status says whether the configuration
//! works, the last line why, and a CONNECT the check reports as done really
//! reached the target through the proxy (the target sees the proxy's
//! address).
//!
//! The one check of the default proxy (127.0.0.1:1080) runs in a network
//! namespace of its own (root, as CI runs), so that it never talks to a
//! SOCKS server the machine runs there.

mod common;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone; the DNS stub is for other tests
mod netns;

use common::*;
use netns::NetNs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// `scripts/socksify ARGS --check [DEST]`.
fn check(args: &[&str], dest: Option<SocketAddr>) -> Output {
    let mut run = Run::plain(wrapper_path()).args(args).arg("--check");
    if let Some(dest) = dest {
        run = run.arg(dest.to_string());
    }
    run.run()
}

/// The verdict: the last line, which must be the only `ok:`/`FAIL:` line.
fn verdict(out: &Output) -> &str {
    let verdicts: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("ok: ") || l.starts_with("FAIL: ")).collect();
    assert_eq!(verdicts.len(), 1, "exactly one verdict line:\n{out}");
    assert_eq!(out.stdout.lines().last(), Some(verdicts[0]), "the verdict is the last line:\n{out}");
    verdicts[0]
}

/// The line of step `name` (`  resolved  ok   ...`), for hop lines in order.
fn steps<'a>(out: &'a Output, name: &str) -> Vec<&'a str> {
    out.stdout.lines().filter(|l| l.split_whitespace().next() == Some(name) && l.starts_with("  ")).collect()
}

fn assert_step(out: &Output, name: &str, mark: &str) {
    let lines = steps(out, name);
    assert!(!lines.is_empty(), "no {name} step:\n{out}");
    for l in lines {
        assert_eq!(l.split_whitespace().nth(1), Some(mark), "step {name} should be {mark}:\n{out}");
    }
}

#[test]
fn a_working_proxy_with_a_password_passes_every_step() {
    let server = Server::bundled(&["--user", "alice:right pw"]);
    let target = TcpTarget::echo();
    let out = check(&["-x", &server.url(), "-U", "alice:right pw"], Some(target.addr));
    assert_eq!(out.code, Some(0), "{out}");
    for step in ["resolved", "connected", "methods", "auth", "connect", "udp"] {
        assert_step(&out, step, "ok");
    }
    assert!(steps(&out, "methods")[0].contains("chosen username/password"), "{out}");
    assert!(steps(&out, "udp")[0].contains("UDP ASSOCIATE offered"), "{out}");
    assert!(verdict(&out).starts_with("ok: the configuration works"), "{out}");
    assert!(!out.stdout.contains("right pw"), "the password must never be printed:\n{out}");
    // The CONNECT really went through the proxy to the target.
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(target.addr);
}

#[test]
fn without_a_destination_the_proxy_connects_to_itself() {
    let server = Server::bundled(&[]);
    let out = check(&["-x", &server.url()], None);
    assert_eq!(out.code, Some(0), "{out}");
    assert_step(&out, "auth", "--");
    assert!(steps(&out, "connect")[0].contains(&format!("CONNECT {} (the proxy's own address) succeeded", server.addr())), "{out}");
    server.wait_connect_line(server.addr());
}

#[test]
fn a_wrong_password_is_explained_in_one_line() {
    let server = Server::bundled(&["--user", "alice:right"]);
    let target = TcpTarget::echo();
    let out = check(&["-x", &server.url(), "-U", "alice:wrong"], Some(target.addr));
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "auth", "FAIL");
    let v = verdict(&out);
    assert!(v.starts_with("FAIL: wrong user name or password:") && v.contains("\"alice\""), "{out}");
    assert!(steps(&out, "connect").is_empty(), "no CONNECT after a failed authentication:\n{out}");
    target.assert_untouched();
}

#[test]
fn a_proxy_that_wants_a_password_and_gets_none_says_so() {
    let server = Server::bundled(&["--user", "alice:right"]);
    let out = check(&["-x", &server.url()], None);
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "methods", "FAIL");
    assert!(verdict(&out).contains("it wants a user name and password; give them with -U USER:PASS"), "{out}");
}

#[test]
fn a_dead_port_fails_at_connected() {
    let port = free_port(DIRECT);
    let out = check(&["-x", &format!("socks5h://127.0.0.1:{port}")], None);
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "resolved", "ok");
    assert_step(&out, "connected", "FAIL");
    assert!(verdict(&out).contains(&format!("nothing listens at 127.0.0.1:{port} (connection refused)")), "{out}");
}

#[test]
fn credentials_work_with_a_server_that_takes_none_and_with_one_that_wants_them() {
    // As the library: with credentials both methods are offered and the
    // server's choice is followed, so a server without authentication
    // works too (the credentials are then not sent).
    let open = Server::bundled(&[]);
    let guarded = Server::bundled(&["--user", "alice:pw"]);
    let target = TcpTarget::echo();
    let by_option = ["-x".to_owned(), open.url(), "-U".to_owned(), "alice:pw".to_owned()];
    let in_url = ["-x".to_owned(), format!("socks5h://alice:pw@{}", open.addr())];
    for args in [&by_option[..], &in_url[..]] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = check(&args, Some(target.addr));
        assert_eq!(out.code, Some(0), "{out}");
        assert!(steps(&out, "methods")[0].contains("chosen no authentication"), "{out}");
        assert_step(&out, "auth", "--");
        assert!(steps(&out, "auth")[0].contains("the server chose no authentication"), "{out}");
        assert!(verdict(&out).starts_with("ok: the configuration works"), "{out}");
    }
    target.assert_peers(2, BUNDLED_OUT);
    let out = check(&["-x", &guarded.url(), "-U", "alice:pw"], Some(target.addr));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(steps(&out, "methods")[0].contains("chosen username/password"), "{out}");
    assert_step(&out, "auth", "ok");
    target.assert_peers(3, BUNDLED_OUT);
    guarded.wait_connect_line(target.addr);
}

#[test]
fn a_silent_server_fails_within_the_timeout_with_a_hint() {
    // Accepts and never answers, as an HTTP proxy waiting for a request line.
    let stalled = StallingProxy::start();
    let out =
        Run::plain(wrapper_path()).env("SOCKSIFY_TIMEOUT_MS", "300").args(["-x", &format!("socks5h://{}", stalled.addr), "--check"]).run();
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "methods", "FAIL");
    assert!(steps(&out, "methods")[0].contains("no answer within 300 ms"), "{out}");
    assert!(
        verdict(&out).contains("no answer to the SOCKS greeting within 300 ms: is this a SOCKS server? an HTTP proxy waits for a request"),
        "{out}"
    );
}

/// A TCP server that is not SOCKS: it sends `banner` on accept (as sshd),
/// or `answer` once the client has sent something (as an HTTP server),
/// then closes. Stops on drop.
struct NotSocks {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl NotSocks {
    fn start(banner: &'static [u8], answer: &'static [u8]) -> NotSocks {
        let listener = TcpListener::bind((DIRECT, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = (|| -> std::io::Result<()> {
                            conn.set_nonblocking(false)?;
                            conn.set_read_timeout(Some(WAIT))?;
                            conn.write_all(banner)?;
                            let _ = conn.read(&mut [0u8; 64])?;
                            conn.write_all(answer)
                        })();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        NotSocks { addr, stop }
    }
}

impl Drop for NotSocks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_ssh_server_is_named_with_the_way_to_get_a_socks_port() {
    let sshd = NotSocks::start(b"SSH-2.0-OpenSSH_9.2\r\n", b"Invalid SSH identification string.\r\n");
    let out = check(&["-x", &format!("socks5h://{}", sshd.addr)], None);
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "methods", "FAIL");
    let v = verdict(&out);
    assert!(v.contains("the server sent 'SSH-2.0-OpenSSH_9.2': this is an SSH server, not its SOCKS port; use ssh -D PORT"), "{out}");
}

#[test]
fn an_http_server_is_named() {
    let http = NotSocks::start(b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let out = check(&["-x", &format!("socks5h://{}", http.addr)], None);
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "methods", "FAIL");
    let v = verdict(&out);
    assert!(v.contains("the server sent 'HTTP/1.1 400 Bad Request': this is an HTTP server"), "{out}");
}

#[test]
fn a_refused_destination_names_the_reply() {
    let server = Server::bundled(&["--deny", "127.0.0.0/8"]);
    let target = TcpTarget::echo();
    let out = check(&["-x", &server.url()], Some(target.addr));
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "connect", "FAIL");
    assert!(verdict(&out).contains("connection not allowed by ruleset (reply 2): its rules do not allow this destination"), "{out}");
    target.assert_untouched();
}

#[test]
fn a_chain_is_checked_hop_by_hop() {
    let first = Server::bundled(&["--user", "alice:pw"]);
    let second = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let chain = format!("socks5://alice:pw@{},{}", first.addr(), second.url());
    let out = check(&["-x", &chain], Some(target.addr));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("hop 1/2: ") && out.stdout.contains("hop 2/2: "), "{out}");
    let connects = steps(&out, "connect");
    assert_eq!(connects.len(), 2, "{out}");
    assert!(connects[0].contains(&format!("CONNECT {} (hop 2) succeeded", second.addr())), "{out}");
    assert!(connects[1].contains(&format!("CONNECT {} (the destination) succeeded", target.addr)), "{out}");
    assert!(steps(&out, "connected")[1].contains("through hop 1"), "{out}");
    // Each hop is asked about UDP (the second through the first), though
    // the library sends no UDP through a chain, and the verdict says so.
    let udp = steps(&out, "udp");
    assert_eq!(udp.len(), 2, "{out}");
    assert!(
        udp.iter().all(|l| l.contains("UDP ASSOCIATE offered") && l.contains("unused: the library sends no UDP through a chain")),
        "{out}"
    );
    assert!(
        verdict(&out).contains("through a chain of 2 proxies; UDP programs will get an error: UDP through a chain is not supported"),
        "{out}"
    );
    // Each hop did its part: the first reached the second, the second the target.
    first.wait_connect_line(second.addr());
    second.wait_connect_line(target.addr);
    target.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn socks4_has_no_methods_and_no_udp() {
    let server = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let out = check(&["-x", &format!("socks4://{}", server.addr())], Some(target.addr));
    assert_eq!(out.code, Some(0), "{out}");
    assert_step(&out, "methods", "--");
    assert!(steps(&out, "connect")[0].contains("granted"), "{out}");
    assert!(steps(&out, "udp")[0].contains("SOCKS4 has no UDP"), "{out}");
    target.assert_peers(1, BUNDLED_OUT);
}

/// A strictly lock-step SOCKS5 proxy without UDP ASSOCIATE (as `ssh -D`):
/// no authentication; CONNECT succeeds (nothing is relayed), UDP ASSOCIATE
/// is answered "command not supported"; a client that sends its request
/// before the method selection is hung up on. Stops on drop.
struct NoUdpProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl NoUdpProxy {
    fn start() -> NoUdpProxy {
        let listener = TcpListener::bind((DIRECT, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        thread::spawn(move || {
                            let _ = answer_without_udp(conn);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        NoUdpProxy { addr, stop }
    }
}

impl Drop for NoUdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer_without_udp(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(WAIT))?;
    let mut greeting = [0u8; 3];
    conn.read_exact(&mut greeting)?;
    assert_eq!(greeting, [5, 1, 0], "the check offers exactly no-auth");
    // Out of turn: the client did not wait for the method selection. (It
    // came in the same write as the greeting, so it is here already.)
    conn.set_nonblocking(true)?;
    if conn.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) {
        return Ok(());
    }
    conn.set_nonblocking(false)?;
    conn.write_all(&[5, 0])?;
    // VER CMD RSV ATYP=1 ADDR(4) PORT(2): the check sends IPv4 here.
    let mut request = [0u8; 10];
    conn.read_exact(&mut request)?;
    let rep = if request[1] == 1 { 0 } else { 7 };
    conn.write_all(&[5, rep, 0, 1, 127, 0, 0, 1, 0, 0])?;
    let mut rest = [0u8; 1];
    let _ = conn.read(&mut rest);
    Ok(())
}

#[test]
fn a_proxy_without_udp_associate_works_for_tcp_and_says_udp_will_fail() {
    let proxy = NoUdpProxy::start();
    let out = check(&["-x", &format!("socks5://{}", proxy.addr)], Some("127.0.0.1:9".parse().unwrap()));
    assert_eq!(out.code, Some(0), "TCP works, so the configuration does:\n{out}");
    assert_step(&out, "udp", "--");
    assert!(steps(&out, "udp")[0].contains("not offered: command not supported (7)"), "{out}");
    assert!(verdict(&out).contains("UDP ASSOCIATE is not offered: UDP programs will get an error"), "{out}");
}

#[test]
fn the_proxy_comes_from_all_proxy_when_socksify_proxy_is_unset() {
    let server = Server::bundled(&["--user", "alice:pw"]);
    let target = TcpTarget::echo();
    let url = format!("socks5h://alice:pw@{}", server.addr());
    let out = Run::plain(wrapper_path()).env("ALL_PROXY", &url).args(["--check", &target.addr.to_string()]).run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.lines().next().unwrap().contains("(from ALL_PROXY, as SOCKSIFY_PROXY is unset)"), "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    // SOCKSIFY_PROXY wins: a dead one fails although ALL_PROXY works.
    let dead = format!("socks5h://127.0.0.1:{}", free_port(DIRECT));
    let out = Run::plain(wrapper_path()).env("ALL_PROXY", &url).env("SOCKSIFY_PROXY", &dead).arg("--check").run();
    assert_eq!(out.code, Some(1), "{out}");
}

#[test]
fn an_http_all_proxy_is_ignored_with_a_warning() {
    // The default proxy is checked: in this namespace nothing listens there.
    let ns = NetNs::create();
    let out = ns.run(|| {
        Run::plain(wrapper_path())
            .env("ALL_PROXY", "http://bob:hunter2@127.0.0.1:3128")
            .env("SOCKSIFY_TIMEOUT_MS", "1000")
            .arg("--check")
            .run()
    });
    let warnings: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("ALL_PROXY holds a URL of scheme http://, ignored"), "{out}");
    assert!(out.stdout.contains("proxy socks5h://127.0.0.1:1080 (the default"), "{out}");
    assert!(!out.stdout.contains("hunter2"), "{out}");
    assert_eq!(out.code, Some(1), "{out}");
    assert!(verdict(&out).starts_with("FAIL: nothing listens at 127.0.0.1:1080"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["--check", "no-port"][..], &["--check", "a:1", "b:2"], &["--version", "x"], &["--frobnicate"]] {
        let out = Run::plain(wrapper_path()).args(args).run();
        assert_eq!(out.code, Some(2), "{args:?}:\n{out}");
        assert!(out.stdout.is_empty(), "{args:?}:\n{out}");
    }
}

#[test]
fn version_names_the_library_in_use() {
    let out = Run::plain(wrapper_path()).arg("--version").run();
    out.assert_success();
    let shim = std::fs::canonicalize(shim_path()).unwrap();
    assert_eq!(out.stdout, format!("socksify {}\nlibrary {}\n", env!("CARGO_PKG_VERSION"), shim.display()), "{out}");
}

#[test]
fn a_pipelined_proxy_is_checked_pipelined() {
    // The bundled server takes a pipelined first flight.
    let server = Server::bundled(&["--user", "alice:pw"]);
    let target = TcpTarget::echo();
    let out = check(&["-x", &format!("socks5://alice:pw@{}?pipeline=1", server.addr())], Some(target.addr));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(steps(&out, "flight")[0].contains("pipelined"), "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    // A strictly lock-step server hangs up on it, as it would on the
    // library: the check says so, and passes without ?pipeline=1.
    let strict = NoUdpProxy::start();
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let out = check(&["-x", &format!("socks5://{}?pipeline=1", strict.addr)], Some(dest));
    assert_eq!(out.code, Some(1), "{out}");
    assert_step(&out, "methods", "FAIL");
    assert!(verdict(&out).contains("closed the connection"), "{out}");
    let out = check(&["-x", &format!("socks5://{}", strict.addr)], Some(dest));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(steps(&out, "flight").is_empty(), "{out}");
}

#[test]
fn a_proxy_by_name_is_resolved_and_each_address_tried() {
    // localhost may be ::1 and 127.0.0.1; the server listens on 127.0.0.1
    // only, so an earlier ::1 attempt fails first, as in the library.
    let server = Server::bundled(&[]);
    let out = check(&["-x", &format!("socks5h://localhost:{}", server.addr().port())], None);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(steps(&out, "resolved")[0].contains("localhost is ") && steps(&out, "resolved")[0].contains("127.0.0.1"), "{out}");
    let connected = steps(&out, "connected");
    assert!(connected.last().unwrap().contains(&format!("ok   {}", server.addr())), "{out}");
    assert!(!out.stdout.contains("FAIL"), "a failed first address is not a failure:\n{out}");
}

#[test]
fn a_malformed_configuration_fails_in_one_line_naming_the_variable() {
    let out = Run::plain(wrapper_path()).env("SOCKSIFY_PROXY", "socks5h//oops").arg("--check").run();
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(verdict(&out).starts_with("FAIL: the configuration is malformed: SOCKSIFY_PROXY: "), "{out}");
}
