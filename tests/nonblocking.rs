//! A non-blocking `connect` through the shim returns `EINPROGRESS` at once
//! and the SOCKS handshake finishes in the background (issue 19), for
//! every way programs wait: python `asyncio` (epoll), `curl --parallel`
//! (poll), node, and a C program on epoll (edge-triggered, registered
//! before and after the connect), `poll` and `select`
//! (`tests/programs/nonblock_connect.c`); and its failures come through
//! `SO_ERROR` with the SPEC's errno.
//!
//! The same overlap tests run against Dante, microsocks and `ssh -D` (10
//! connections each), and the C program covers `dup` and `fork` of a
//! connecting fd, `ppoll`/`pselect`, `syscall(SYS_close)` of one, and
//! writes to one by `sendfile`, `splice` and `pwritev2`.
//!
//! The overlap is shown structurally, never by a clock: a [`HoldingRelay`]
//! in front of the SOCKS server holds every reply of the proxy back
//! (300 ms each) and releases the first only once it has seen the
//! greeting of every connection the program makes (bounded: 10 s). A
//! program whose connects each wait for their handshake sends one
//! greeting and waits; the relay records how many greetings it had seen
//! when it released the first reply, and the tests assert all of them.
//! Every byte goes through the proxy: the targets see the server's way out
//! (127.0.0.2 bundled, 127.0.0.3 Dante, 127.0.0.4 microsocks; for `ssh -D`
//! they live in sshd's network namespace, which nothing else reaches), and
//! the servers that keep a log logged each CONNECT.

mod common;
#[path = "common/microsocks.rs"]
#[allow(dead_code)] // the plain server alone; auth and hosts are for server_microsocks.rs
mod microsocks;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone; the DNS stub is for other tests
mod netns;
#[path = "common/openssh.rs"]
#[allow(dead_code)] // the plain server alone; hosts are for server_openssh.rs
mod openssh;

use common::*;
use microsocks::Microsocks;
use openssh::OpenSsh;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the relay holds each reply of the proxy.
const HOLD: Duration = Duration::from_millis(300);
/// The longest the relay waits for the greetings before it releases the
/// first reply anyway (a program that connects one at a time gets there).
const GATE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    /// Connections that sent their first bytes (the SOCKS greeting).
    greetings: usize,
    /// `greetings` when the first reply went back to a client.
    at_first_release: Option<usize>,
    open: usize,
    max_open: usize,
}

/// A TCP relay to `upstream` (the proxy) that holds each chunk the proxy
/// sends [`HOLD`], and the first until `expect` greetings have come in
/// (or [`GATE`] has passed).
struct HoldingRelay {
    addr: SocketAddr,
    counts: Arc<(Mutex<Counts>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl HoldingRelay {
    fn start(upstream: SocketAddr, expect: usize) -> HoldingRelay {
        let listener = TcpListener::bind((DIRECT, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<(Mutex<Counts>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let c = c.clone();
                        thread::spawn(move || relay_one(client, upstream, expect, c));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HoldingRelay { addr, counts, stop }
    }

    fn url(&self) -> String {
        format!("socks5h://{}", self.addr)
    }

    /// (greetings seen at the first release, most connections open at once).
    fn overlap(&self) -> (Option<usize>, usize) {
        let c = self.counts.0.lock().unwrap();
        (c.at_first_release, c.max_open)
    }
}

impl Drop for HoldingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_one(client: TcpStream, upstream: SocketAddr, expect: usize, counts: Arc<(Mutex<Counts>, Condvar)>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, WAIT) else { return };
    for s in [&client, &server] {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    {
        let mut c = counts.0.lock().unwrap();
        c.open += 1;
        c.max_open = c.max_open.max(c.open);
    }
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up_counts = counts.clone();
    let up = thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut first = true;
        loop {
            match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if first {
                        first = false;
                        up_counts.0.lock().unwrap().greetings += 1;
                        up_counts.1.notify_all();
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = [0u8; 16384];
    let started = Instant::now();
    loop {
        match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                {
                    let (lock, cv) = &*counts;
                    let mut c = lock.lock().unwrap();
                    while c.at_first_release.is_none() && c.greetings < expect && started.elapsed() < GATE {
                        c = cv.wait_timeout(c, Duration::from_millis(50)).unwrap().0;
                    }
                    if c.at_first_release.is_none() {
                        c.at_first_release = Some(c.greetings);
                    }
                }
                thread::sleep(HOLD);
                if c_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c_out.shutdown(Shutdown::Write);
    let _ = up.join();
    counts.0.lock().unwrap().open -= 1;
}

/// The relay saw every one of the program's `n` greetings before it let
/// the first reply through: the program started all its connects without
/// waiting for any handshake.
fn assert_overlap(relay: &HoldingRelay, n: usize, out: &Output) {
    let (at_first, max_open) = relay.overlap();
    assert_eq!(at_first, Some(n), "greetings the relay had seen when the first reply went back (all {n} expected); max open {max_open}\n{out}");
    assert!(max_open >= n, "only {max_open} of {n} connections were open at once\n{out}");
}

/// Runs under the shim through `relay`, with a timeout longer than the gate.
fn through(relay: &HoldingRelay, prog: &str) -> Run {
    Run::shimmed(&relay.url(), prog).env("SOCKSIFY_TIMEOUT_MS", "60000").timeout(Duration::from_secs(120))
}

/// The SOCKS server under test, at `addr` (where the relay forwards to).
struct Under<'a> {
    proxy: &'a dyn Proxy,
    addr: SocketAddr,
}

impl Under<'_> {
    fn relay(&self, expect: usize) -> HoldingRelay {
        HoldingRelay::start(self.addr, expect)
    }

    fn target(&self, serve: Serve) -> TcpTarget {
        self.proxy.target(serve)
    }

    /// Every one of `n` connections reached the target through this server.
    fn assert_path(&self, target: &TcpTarget, n: usize) {
        target.assert_peers(n, self.proxy.out_ip(target.addr.ip()));
        self.proxy.wait_connect_count(target.addr, n);
    }
}

fn bundled(server: &Server) -> Under<'_> {
    Under { proxy: server, addr: server.addr() }
}

fn dante(d: &Dante) -> Under<'_> {
    Under { proxy: d, addr: d.addr }
}

fn microsocks(m: &Microsocks) -> Under<'_> {
    Under { proxy: m, addr: m.addr }
}

fn openssh(o: &OpenSsh) -> Under<'_> {
    Under { proxy: o, addr: o.addr }
}

const ASYNCIO: &str = r#"
import asyncio, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one(i):
    r, w = await asyncio.open_connection(host, port)
    msg = b"hello %d|" % i
    w.write(msg)
    await w.drain()
    data = await r.readexactly(len(msg))
    w.close()
    return data == msg
async def main():
    ok = await asyncio.gather(*[one(i) for i in range(n)])
    print("echoed", sum(ok))
asyncio.run(main())
"#;

/// python `asyncio`: `n` connections opened at once, each echoed.
fn asyncio(under: &Under, n: usize) {
    let relay = under.relay(n);
    let target = under.target(Serve::Echo);
    let out = through(&relay, python3()).args(["-c", ASYNCIO, &target.addr.ip().to_string(), &target.addr.port().to_string(), &n.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), format!("echoed {n}"), "{out}");
    assert_overlap(&relay, n, &out);
    under.assert_path(&target, n);
}

/// `curl --parallel`: `n` URLs fetched at once.
fn curl_parallel(under: &Under, n: usize) {
    let relay = under.relay(n);
    let target = under.target(Serve::Http("parallel page\n".into()));
    // --parallel-immediate: without it curl opens one connection first and
    // waits to see whether it can multiplex the others over it.
    let urls: Vec<String> = (0..n).map(|i| format!("http://{}/{i}", target.addr)).collect();
    let max = n.to_string();
    let out = through(&relay, "curl").args(["-sS", "--parallel", "--parallel-immediate", "--parallel-max", &max, "--max-time", "90"]).args(&urls).run();
    out.assert_success();
    assert_eq!(out.stdout.matches("parallel page\n").count(), n, "{out}");
    assert_overlap(&relay, n, &out);
    under.assert_path(&target, n);
}

const NODE: &str = r#"
const http = require('http');
const [host, port, n] = [process.argv[1], +process.argv[2], +process.argv[3]];
let ok = 0, left = n;
for (let i = 0; i < n; i++) {
  http.get({host, port, path: '/' + i, agent: false}, res => {
    let body = '';
    res.on('data', d => body += d);
    res.on('end', () => { if (body === 'node page\n') ok++; if (--left === 0) console.log('fetched', ok); });
  }).on('error', e => { console.log('error', e.code); if (--left === 0) console.log('fetched', ok); });
}
"#;

/// node: `n` `http.get`s in parallel.
fn node(under: &Under, n: usize) {
    let node = require_program("node", "nodejs");
    let relay = under.relay(n);
    let target = under.target(Serve::Http("node page\n".into()));
    let out = through(&relay, node.to_str().unwrap()).args(["-e", NODE, &target.addr.ip().to_string(), &target.addr.port().to_string(), &n.to_string()]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), format!("fetched {n}"), "{out}");
    assert_overlap(&relay, n, &out);
    under.assert_path(&target, n);
}

fn c_program() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("nonblock");
    let exe = dir.path().join("nonblock_connect");
    Run::plain("gcc").args(["-O2", "-Wall", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/nonblock_connect.c")).run().assert_success();
    (dir, exe)
}

/// The C program's MODE with `n` sockets, through the relay (which holds
/// the handshakes while it checks EALREADY, ENOTCONN, EAGAIN, SO_ERROR);
/// its output, for the mode's own checks.
fn c_mode_via(under: &Under, mode: &str, n: usize) -> Output {
    let (_dir, exe) = c_program();
    let relay = under.relay(n);
    let target = under.target(Serve::Echo);
    let out = through(&relay, exe.to_str().unwrap()).args([mode, &target.addr.ip().to_string(), &target.addr.port().to_string(), &n.to_string()]).run();
    out.assert_success();
    // `dup` uses both numbers of each socket.
    let used = if mode == "dup" { 2 * n } else { n };
    assert!(out.stdout.trim().ends_with(&format!("{mode} {used} connected, echoed")), "{out}");
    assert_overlap(&relay, n, &out);
    under.assert_path(&target, n);
    out
}

fn c_mode(mode: &str) -> Output {
    c_mode_via(&bundled(&Server::bundled(&[])), mode, 8)
}

// ------------------------------------------------ the bundled server

#[test]
fn python_asyncio_fifty_connections_at_once() {
    asyncio(&bundled(&Server::bundled(&[])), 50);
}

#[test]
fn curl_parallel_twenty_urls() {
    curl_parallel(&bundled(&Server::bundled(&[])), 20);
}

#[test]
fn node_http_get_twenty_in_parallel() {
    node(&bundled(&Server::bundled(&[])), 20);
}

#[test]
fn c_epoll_edge_triggered_registered_before_connect() {
    c_mode("epoll-before");
}

#[test]
fn c_epoll_edge_triggered_oneshot_registered_after_connect() {
    c_mode("epoll-after");
}

#[test]
fn c_poll() {
    c_mode("poll");
}

#[test]
fn c_select() {
    c_mode("select");
}

#[test]
fn c_ppoll() {
    c_mode("ppoll");
}

#[test]
fn c_pselect() {
    c_mode("pselect");
}

/// Both numbers of a dup()ed connecting socket say "connecting", and both
/// are connected (getpeername, echo) when it is done.
#[test]
fn c_dup_of_a_connecting_fd_is_the_same_connect() {
    c_mode_via(&bundled(&Server::bundled(&[])), "dup", 4);
}

/// Closing either number of a dup()ed connecting socket leaves the other's
/// connect going.
#[test]
fn c_closing_one_copy_keeps_the_other_connecting() {
    c_mode_via(&bundled(&Server::bundled(&[])), "dup-close", 4);
}

/// A fork mid-handshake: the child sees each connect failed with
/// ECONNABORTED (poll says POLLERR), the parent finishes them all.
#[test]
fn c_fork_mid_handshake_child_aborted_parent_completes() {
    let out = c_mode_via(&bundled(&Server::bundled(&[])), "fork", 4);
    assert!(out.stdout.lines().any(|l| l == "child 4 ECONNABORTED"), "{out}");
}

/// Writes by `sendfile`, `splice` and `pwritev2` while connecting say
/// EAGAIN, as `send` does: none of their bytes reach the proxy inside the
/// handshake or the target after it, which gets each "ping I" alone.
#[test]
fn c_sendfile_splice_pwritev2_while_connecting_are_eagain() {
    let server = Server::bundled(&[]);
    let under = bundled(&server);
    let (_dir, exe) = c_program();
    let relay = under.relay(4);
    let target = under.target(Serve::Echo);
    let out = through(&relay, exe.to_str().unwrap()).args(["unhooked", &target.addr.ip().to_string(), &target.addr.port().to_string(), "4"]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "unhooked 4 connected, echoed", "{out}");
    assert_overlap(&relay, 4, &out);
    under.assert_path(&target, 4);
    let mut got: Vec<String> = target.received().iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
    got.sort();
    assert_eq!(got, ["ping 0", "ping 1", "ping 2", "ping 3"], "{out}");
}

// ------------------------------------------------ Dante (out from 127.0.0.3)

#[test]
fn dante_python_asyncio() {
    asyncio(&dante(&Dante::start()), 10);
}

#[test]
fn dante_curl_parallel() {
    curl_parallel(&dante(&Dante::start()), 10);
}

#[test]
fn dante_node_http_get() {
    node(&dante(&Dante::start()), 10);
}

#[test]
fn dante_c_epoll_edge_triggered() {
    c_mode_via(&dante(&Dante::start()), "epoll-before", 8);
}

// ------------------------------------------------ microsocks (out from 127.0.0.4)

#[test]
fn microsocks_python_asyncio() {
    asyncio(&microsocks(&Microsocks::start()), 10);
}

#[test]
fn microsocks_curl_parallel() {
    curl_parallel(&microsocks(&Microsocks::start()), 10);
}

#[test]
fn microsocks_node_http_get() {
    node(&microsocks(&Microsocks::start()), 10);
}

#[test]
fn microsocks_c_epoll_edge_triggered() {
    c_mode_via(&microsocks(&Microsocks::start()), "epoll-before", 8);
}

// ------------------------------------------------ ssh -D (targets in sshd's namespace)

#[test]
fn openssh_python_asyncio() {
    asyncio(&openssh(&OpenSsh::start()), 10);
}

#[test]
fn openssh_curl_parallel() {
    curl_parallel(&openssh(&OpenSsh::start()), 10);
}

#[test]
fn openssh_node_http_get() {
    node(&openssh(&OpenSsh::start()), 10);
}

#[test]
fn openssh_c_epoll_edge_triggered() {
    c_mode_via(&openssh(&OpenSsh::start()), "epoll-before", 8);
}

/// The C program's `error` mode: what `SO_ERROR` says after the wait.
fn so_error(proxy: &str, dst: SocketAddr, timeout_ms: &str) -> Output {
    let (_dir, exe) = c_program();
    let out = Run::shimmed(proxy, &exe)
        .args(["error", &dst.ip().to_string(), &dst.port().to_string()])
        .env("SOCKSIFY_TIMEOUT_MS", timeout_ms)
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_success();
    out
}

#[test]
fn refused_destination_is_econnrefused_through_so_error() {
    let server = Server::bundled(&[]);
    let dst = SocketAddr::new(DIRECT, free_port(DIRECT));
    let out = so_error(&server.url(), dst, "10000");
    assert_eq!(out.stdout.trim(), "so_error ECONNREFUSED then 0 pollerr 1", "{out}");
}

/// A SOCKS5 server that answers every CONNECT with `reply` (a code).
fn answering(code: u8) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((DIRECT, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    thread::spawn(move || {
        for conn in listener.incoming().take(1) {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut greeting = [0u8; 3];
            let mut request = [0u8; 10];
            if conn.read_exact(&mut greeting).is_ok() && conn.write_all(&[5, 0]).is_ok() && conn.read_exact(&mut request).is_ok() {
                let _ = conn.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
                s.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (addr, served)
}

#[test]
fn unreachable_destination_is_ehostunreach_through_so_error() {
    let (proxy, served) = answering(4); // host unreachable
    let out = so_error(&format!("socks5://{proxy}"), "192.0.2.1:7".parse().unwrap(), "10000");
    assert_eq!(out.stdout.trim(), "so_error EHOSTUNREACH then 0 pollerr 1", "{out}");
    assert_eq!(served.load(Ordering::Relaxed), 1);
}

#[test]
fn dead_proxy_is_econnrefused_through_so_error() {
    let dead = free_port(DIRECT);
    let out = so_error(&format!("socks5h://127.0.0.1:{dead}"), "192.0.2.1:7".parse().unwrap(), "10000");
    assert_eq!(out.stdout.trim(), "so_error ECONNREFUSED then 0 pollerr 1", "{out}");
}

#[test]
fn stalled_proxy_is_etimedout_through_so_error() {
    let stalling = StallingProxy::start();
    let out = so_error(&format!("socks5h://{}", stalling.addr), "192.0.2.1:7".parse().unwrap(), "1500");
    assert_eq!(out.stdout.trim(), "so_error ETIMEDOUT then 0 pollerr 1", "{out}");
    assert_eq!(stalling.accepted.load(Ordering::Relaxed), 1);
}

/// The C program's `close` or `close-syscall` mode: a connect through a
/// proxy that never answers, closed mid-handshake.
fn close_mid_handshake(mode: &str) {
    let (_dir, exe) = c_program();
    let stalling = StallingProxy::start();
    let out = Run::shimmed(&format!("socks5h://{}", stalling.addr), &exe)
        .args([mode, "192.0.2.1", "7"])
        .env("SOCKSIFY_TIMEOUT_MS", "60000")
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "fds back", "{out}");
}

#[test]
fn close_mid_handshake_leaves_no_fd_behind() {
    close_mid_handshake("close");
}

/// `syscall(SYS_close, fd)` (libc's `syscall`, hooked) cancels it too.
#[test]
fn syscall_close_mid_handshake_leaves_no_fd_behind() {
    close_mid_handshake("close-syscall");
}

/// Connection after connection on one epoll loop, each registered with the
/// same `epoll_data` as the one before it and usually given the same fd
/// number (what event loops do: bench/tcpflight.c, the bench's own client,
/// 1 and 4 in flight). An epoll registration goes only when the last fd of
/// its file closes: a copy of the socket the engine still held when the
/// program closed its fd left the old registration live, and the next
/// connection on that number got the old socket's events (its write said
/// EAGAIN, its read ENOTCONN or an early EOF). Every connection must echo
/// the last octet of the proxy's outgoing address and end in EOF.
#[test]
fn one_epoll_loop_reusing_fds_and_epoll_data_through_thousands_of_connects() {
    let dir = TempDir::new("tcpflight");
    let build = |name: &str| {
        let exe = dir.path().join(name);
        Run::plain("gcc").args(["-O2", "-Wall", "-o"]).arg(&exe).arg(repo_root().join(format!("bench/{name}.c"))).run().assert_success();
        exe
    };
    let (target_exe, flight) = (build("target"), build("tcpflight"));
    /// The target process, killed however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut target = Killed(
        std::process::Command::new(&target_exe)
            .args(["127.0.0.1:0", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start bench/target"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(target.0.stdout.take().unwrap()), &mut line).unwrap();
    let port = line.split_whitespace().find_map(|w| w.strip_prefix("tcp=")).expect("tcp=PORT").trim().to_owned();
    let server = Server::bundled(&[]);
    for inflight in ["1", "4"] {
        let out = Run::shimmed(&server.url(), &flight)
            .args(["plain", "3000", inflight, &format!("127.0.0.1:{port}"), "-", "2"])
            .env("SOCKSIFY_LOG", "warn")
            .run();
        assert!(out.code == Some(0) && out.stdout.starts_with("cps="), "{inflight} in flight:\n{out}");
    }
}
