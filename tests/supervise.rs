//! The seccomp supervisor (`socksify --supervise`, `socksify-cli
//! supervise`): programs `LD_PRELOAD` cannot reach go through the proxy.
//!
//! Each test makes a network namespace of its own (lo only) whose
//! resolv.conf names a DNS stub the test runs there, counting queries; the
//! proxy, the targets and the supervised programs all live in it. A target
//! that sees the proxy's outgoing address (the bundled server binds to
//! 127.0.0.2, Dante to 127.0.0.3, microsocks to 127.0.0.4) proves the path;
//! a stub that saw nothing proves no DNS query left.
//!
//! The programs: a static Go HTTP client (`CGO_ENABLED=0`: Go's own
//! resolver and raw system calls), a static C program, a static musl one
//! (musl's resolver: unconnected `sendto`/`recvfrom`), a dynamic one that
//! calls connect with the `syscall` instruction, a shell that forks and
//! execs them, and Go with 200 connections at once. Needs root, gcc, musl-gcc
//! and Debian's golang-go (scripts/test installs them).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[allow(dead_code)] // this binary uses part of each helper module
#[path = "common/microsocks.rs"]
mod microsocks;
#[allow(dead_code)]
#[path = "common/netns.rs"]
mod netns;

use common::*;
use dns_cases::{NameProxy, NAME};
use microsocks::Microsocks;
use netns::{DnsStub, NetNs};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

impl NameProxy for Microsocks {
    fn wait_named_connect(&self, _name: &str, _target: SocketAddr) {
        // No log: the target's peer, 127.0.0.4, for a name only microsocks
        // resolves, has been checked.
    }
}

fn cli_path() -> PathBuf {
    release_dir().join("socksify-cli")
}

/// The test programs, built once per test binary.
struct Programs {
    _dir: TempDir,
    go_client: PathBuf,
    static_c: PathBuf,
    raw_asm: PathBuf,
    musl_get: PathBuf,
    /// muslget.c built against glibc, dynamically: glibc's resolver.
    gai_get: PathBuf,
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let dir = TempDir::new("supervise-programs");
        let src = repo_root().join("tests/programs/supervise");
        let static_c = dir.path().join("sxconn");
        gcc(&["-static", "-O2", "-o"], &static_c, &src.join("sxconn.c"));
        let raw_asm = dir.path().join("rawconnect");
        gcc(&["-O2", "-o"], &raw_asm, &src.join("rawconnect.c"));
        let musl_get = dir.path().join("muslget");
        let status = Command::new(require_program("musl-gcc", "musl-tools"))
            .args(["-static", "-O2", "-o"])
            .arg(&musl_get)
            .arg(src.join("muslget.c"))
            .status()
            .expect("run musl-gcc");
        assert!(status.success(), "musl-gcc failed");
        let gai_get = dir.path().join("gaiget");
        gcc(&["-O2", "-o"], &gai_get, &src.join("muslget.c"));
        let go_client = dir.path().join("goclient");
        go_build(&src.join("goclient"), &go_client, dir.path(), false);
        for p in [&static_c, &go_client, &musl_get] {
            assert!(is_static(p), "test setup: {} should be statically linked", p.display());
        }
        for p in [&raw_asm, &gai_get] {
            assert!(!is_static(p), "test setup: {} should be dynamic", p.display());
        }
        Programs { _dir: dir, go_client, static_c, raw_asm, musl_get, gai_get }
    })
}

/// `prog` under the supervisor inside the namespace, proxying everything.
fn supervised(ns: &NetNs, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
    ns.supervised(url, prog)
}

/// The Go client fetches a page by address and by a name only the proxy
/// resolves; the stub sees no query.
fn go_fetches_by_ip_and_name(ns: &NetNs, stub: &DnsStub, proxy: &impl NameProxy) {
    let before = stub.queries().len();
    let body = token("go-ip");
    let target = proxy.target(Serve::Http(body.clone()));
    let url = format!("http://{}/", target.addr);
    let out = supervised(ns, &proxy.url(), &programs().go_client).args(["get", &url]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));

    let body = token("go-name");
    let target = proxy.target(Serve::Http(body.clone()));
    let url = format!("http://{NAME}:{}/", target.addr.port());
    let out = supervised(ns, &proxy.url(), &programs().go_client).args(["get", &url]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, proxy.out_ip(target.addr.ip()));
    assert!(out.stderr.contains(&format!("tcp -> {NAME}:{}", target.addr.port())), "the name must go to the proxy:\n{out}");
    proxy.wait_named_connect(NAME, target.addr);
    let leaked = stub.queries()[before..].to_vec();
    assert!(leaked.is_empty(), "{}: DNS queries left the supervised Go program: {leaked:?}", proxy.name());
}

/// The stub counts: a plain (unsupervised) Go look-up reaches it.
fn assert_stub_counts(ns: &NetNs, stub: &DnsStub) {
    let out = Run::plain("ip").args(["netns", "exec", &ns.name]).arg(&programs().go_client).args(["get", &format!("http://{NAME}:9/")]).run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(stub.queries().iter().any(|q| q.starts_with(NAME)), "the stub must be the namespace's resolver, saw {:?}", stub.queries());
}

#[test]
fn static_go_through_the_bundled_server_by_ip_and_by_name() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        go_fetches_by_ip_and_name(&ns, &stub, &server);
        assert_stub_counts(&ns, &stub);
    });
}

#[test]
fn static_go_through_dante_by_ip_and_by_name() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let dante = dns_cases::dante_server();
        go_fetches_by_ip_and_name(&ns, &stub, &dante);
    });
}

#[test]
fn static_go_through_microsocks_by_ip_and_by_name() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let ms = Microsocks::start_with_hosts(&dns_cases::proxy_hosts());
        go_fetches_by_ip_and_name(&ns, &stub, &ms);
    });
}

#[test]
fn static_c_program_connects_through_the_proxy() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("static-c");
        let target = TcpTarget::http(&body);
        let out = supervised(&ns, &server.url(), &programs().static_c).args(["http", "127.0.0.1", &target.addr.port().to_string()]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr);
        // getpeername reports the destination, not the proxy.
        assert!(out.stderr.contains(&format!("peer {}\n", target.addr)), "{out}");
    });
}

/// An IPv6-only proxy and the program's `AF_INET` socket: the supervisor
/// connects a socket of the other family through the proxy and puts it in
/// the program's place. The page arrives, the target saw only the proxy
/// (the namespace has no other way there), `getpeername` reports the
/// destination as the `AF_INET` address the program asked for, and
/// `getsockname` answers in `AF_INET` too.
#[test]
fn an_ipv6_only_proxy_serves_an_af_inet_static_client() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled_on("[::1]:0");
        let body = token("family-swap");
        let target = TcpTarget::http(&body);
        let out = supervised(&ns, &server.url(), &programs().static_c).args(["http", "127.0.0.1", &target.addr.port().to_string()]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr);
        assert!(out.stderr.contains(&format!("peer {}\n", target.addr)), "{out}");
        assert!(out.stderr.contains("reachable only over IPv6: the socket was replaced"), "{out}");
        // getsockname answers in the program's family too.
        assert!(out.stderr.contains(&format!("local family {} length 16\n", libc::AF_INET)), "{out}");
    });
}

#[test]
fn raw_syscall_instruction_in_a_dynamic_program_is_seen() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("raw-asm");
        let target = TcpTarget::http(&body);
        let out = supervised(&ns, &server.url(), &programs().raw_asm).args(["127.0.0.1", &target.addr.port().to_string()]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        target.assert_peers(1, BUNDLED_OUT);
    });
}

#[test]
fn children_forked_and_execed_are_supervised_too() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("fork-exec");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let prog = programs().static_c.display().to_string();
        // sh forks a child per command; two run at once.
        let script = format!("{prog} http 127.0.0.1 {port} & {prog} http 127.0.0.1 {port}; wait; {prog} fork 127.0.0.1 {port} 3");
        let out = supervised(&ns, &server.url(), "sh").args(["-c", &script]).run();
        out.assert_success();
        assert_eq!(out.stdout.matches(&body).count(), 5, "{out}");
        target.assert_peers(5, BUNDLED_OUT);
    });
}

#[test]
fn two_hundred_go_connections_at_once() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = TcpTarget::echo();
        let out = supervised(&ns, &server.url(), &programs().go_client).args(["many", &target.addr.to_string(), "200"]).run();
        out.assert_success();
        assert_eq!(out.stdout.trim(), "ok 200", "{out}");
        target.assert_peers(200, BUNDLED_OUT);
    });
}

#[test]
fn bypassed_destinations_go_direct() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("bypass");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let out = supervised(&ns, &server.url(), &programs().static_c)
            .env("SOCKSIFY_NO_PROXY", &format!("127.0.0.1:{port}"))
            .args(["http", "127.0.0.1", &port])
            .run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        target.assert_peers(1, DIRECT);
        assert!(!server.log.text().contains("cmd=connect"), "a bypassed destination reached the proxy:\n{}", server.log.text());
    });
}

/// With `SOCKSIFY_UDP=block` (UDP through the proxy: tests/supervise_udp.rs).
#[test]
fn udp_to_a_proxied_destination_is_refused_with_eperm() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let port = sink.local_addr().unwrap().port().to_string();
        let out = supervised(&ns, &server.url(), &programs().static_c).env("SOCKSIFY_UDP", "block").args(["udp", "127.0.0.1", &port]).run();
        assert!(out.stdout.contains("sendto: errno 1"), "sendto must fail with EPERM:\n{out}");
        assert!(out.stdout.contains("connect: errno 1"), "connect must fail with EPERM:\n{out}");
        let mut buf = [0u8; 64];
        assert!(sink.recv_from(&mut buf).is_err(), "a datagram went out directly");
    });
}

/// glibc's getaddrinfo sorts the addresses it got (RFC 6724) after a UDP
/// `connect` to each, fake ones included. Under the supervisor such a
/// connect opens the socket's UDP association (no datagram is sent) and
/// succeeds quietly: no "refused" line, and the name still goes to the
/// proxy with no DNS query leaving.
#[test]
fn glibc_address_sorting_probes_succeed_quietly() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        let body = token("gai-sort");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let out = supervised(&ns, &server.url(), &programs().gai_get).args([NAME, &port]).env("SOCKSIFY_LOG", "debug").run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        // The probes were made (the supervisor saw them) and said nothing above debug.
        assert!(out.stderr.contains("udp socket connected to 198.18."), "glibc probed no fake address:\n{out}");
        assert!(!out.stderr.contains("refused"), "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_named_connect(NAME, target.addr);
        assert!(stub.queries().is_empty(), "DNS queries left the program: {:?}", stub.queries());
    });
}

/// io_uring's connect and sends never pass a seccomp filter: under the
/// supervisor, setting up a ring fails with ENOSYS (it works without).
#[test]
fn io_uring_setup_fails_with_enosys() {
    let plain = Run::plain(&programs().static_c).args(["uring", "-", "-"]).run();
    let out = Run::plain(cli_path()).args(["supervise", "--"]).arg(&programs().static_c).args(["uring", "-", "-"]).run();
    assert_eq!(out.stdout.trim(), "io_uring_setup: errno 38", "{out}");
    // Without the supervisor the call reaches the kernel: it works, or fails
    // for a reason of the kernel's own (io_uring disabled: EPERM).
    assert_ne!(plain.stdout.trim(), "io_uring_setup: errno 38", "test setup: this kernel has no io_uring at all:\n{plain}");
}

/// Local DNS mode: the program's own queries reach the nameserver (the
/// stub counts them) and the proxy is given the address.
#[test]
fn local_dns_mode_resolves_with_the_nameserver_and_proxies_the_address() {
    local_dns_mode_case("go-local-dns", |ns, url, port| {
        supervised(ns, url, &programs().go_client).env("SOCKSIFY_DNS", "local").args(["get", &format!("http://{NAME}:{port}/")]).run()
    });
}

/// Local DNS mode, for the program `run(ns, proxy URL, target port)`
/// starts: it asks the nameserver (the stub counts the query), gets the
/// target's page, and the address it was given is proxied.
fn local_dns_mode_case(tag: &str, run: impl FnOnce(&NetNs, &str, u16) -> Output + Send) {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, std::net::Ipv4Addr::LOCALHOST)]);
        let server = Server::bundled(&[]);
        let body = token(tag);
        let target = TcpTarget::http(&body);
        let out = run(&ns, &server.url(), target.addr.port());
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr);
        assert!(stub.queries().iter().any(|q| q.starts_with(NAME)), "local mode asks the nameserver, saw {:?}", stub.queries());
    });
}

/// A supervisor that may not read the program (not root, and the program
/// made itself undumpable) fails its connects with EACCES: it never lets
/// the kernel run a call it could not look at.
#[test]
fn calls_the_supervisor_cannot_read_fail_never_go_direct() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let target = TcpTarget::http(&token("nodump"));
        let out = Run::plain("ip")
            .args(["netns", "exec", &ns.name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cli_path())
            .args(["supervise", "--"])
            .arg(&programs().static_c)
            .args(["nodump", "127.0.0.1", &target.addr.port().to_string()])
            .env("SOCKSIFY_PROXY", &server.url())
            .env("SOCKSIFY_NO_PROXY", "")
            .run();
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("connect: Permission denied"), "{out}");
        assert!(out.stderr.contains("cannot read the memory"), "the supervisor says why:\n{out}");
        target.assert_untouched();
    });
}

/// The supervisor dies between two connects: the second fails with
/// ENOSYS, and nothing reaches the target directly.
#[test]
fn when_the_supervisor_dies_notified_calls_fail_with_enosys() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("enosys");
        let target = TcpTarget::http(&body);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(cli_path())
            .args(["supervise", "--"])
            .arg(&programs().static_c)
            .args(["twice", "127.0.0.1", &target.addr.port().to_string()])
            .env("SOCKSIFY_PROXY", server.url())
            .env("SOCKSIFY_NO_PROXY", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the supervisor");
        let lines = LineLog::spawn_reader(child.stdout.take().unwrap());
        let first = lines.wait_line(&["first:"]);
        let mut stdin = child.stdin.take().unwrap();
        // `ip netns exec` execs the supervisor: this pid is the supervisor.
        // SAFETY: a signal to the process we spawned.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = child.wait();
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let second = lines.wait_line(&["second:"]);
        kill_group(&mut child);
        assert!(first.as_deref().is_some_and(|l| l.contains(&body)), "first connect must work; output:\n{}", lines.text());
        assert_eq!(second.as_deref(), Some("second: errno 38"), "output:\n{}", lines.text());
        target.assert_peers(1, BUNDLED_OUT);
    });
}

/// A child that outlives the program (a shell's background job, here
/// waiting on a FIFO the test opens only after the supervised run has
/// returned) keeps a working supervisor: its connect goes through the
/// proxy. The run returns the program's own status without waiting for
/// it, and the supervisor exits once the child has (its stderr closes).
#[test]
fn a_child_that_outlives_the_program_is_still_supervised() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("daemon");
        let target = TcpTarget::http(&body);
        let dir = TempDir::new("supervise-daemon");
        let fifo = dir.path().join("go");
        let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0, "mkfifo");
        let daemon_out = dir.path().join("daemon.out");
        let script = format!(
            "( timeout 60 cat {} >/dev/null; exec {} http 127.0.0.1 {} ) >{} 2>&1 </dev/null & exit 3",
            fifo.display(),
            programs().static_c.display(),
            target.addr.port(),
            daemon_out.display()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(cli_path())
            .args(["supervise", "--", "sh", "-c", &script])
            .env("SOCKSIFY_PROXY", server.url())
            .env("SOCKSIFY_NO_PROXY", "")
            .env("SOCKSIFY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn the supervisor");
        let group = GroupGuard(child.id() as libc::pid_t);
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
            let _ = tx.send(text);
        });
        let status = wait_until(Duration::from_secs(60), || child.try_wait().unwrap()).expect("the supervised run never returned");
        assert_eq!(status.code(), Some(3), "the program's own status");
        target.assert_untouched(); // the child still waits for us
        let released = wait_until(Duration::from_secs(30), || {
            std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).ok()
        });
        released.expect("the child never opened the FIFO").write_all(b"go\n").unwrap();
        let got = wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&daemon_out).ok().filter(|t| t.contains(&body) || t.contains("connect:"))
        });
        let log = rx.recv_timeout(Duration::from_secs(60)).expect("the supervisor never exited");
        assert!(got.as_deref().is_some_and(|t| t.contains(&body)), "the child's output: {got:?}\nthe supervisor's: {log}");
        target.assert_peers(1, BUNDLED_OUT);
        assert!(log.contains(&format!("tcp -> {}", target.addr)), "the supervisor served the child:\n{log}");
        drop(group);
    });
}

/// Kills a process group when dropped (a failed test leaves nothing).
struct GroupGuard(libc::pid_t);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: a signal to the group made for this test's child alone.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// The wrapper supervises a static program by itself, and `--supervise`
/// does it for any.
#[test]
fn the_wrapper_supervises_static_programs() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let body = token("wrapper-static");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let wrap = |args: &[&str]| {
            Run::plain("ip")
                .args(["netns", "exec", &ns.name])
                .arg(wrapper_path())
                .args(["-x", &server.url(), "-n", ""])
                .args(args)
                .env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
                .timeout(Duration::from_secs(60))
        };
        let static_c = programs().static_c.display().to_string();
        let out = wrap(&["--", &static_c, "http", "127.0.0.1", &port]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        let raw = programs().raw_asm.display().to_string();
        let out = wrap(&["--supervise", "--", &raw, "127.0.0.1", &port]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        target.assert_peers(2, BUNDLED_OUT);
    });
}

/// Where the supervisor cannot run (here: already under a seccomp
/// listener, which the kernel allows once per process), the wrapper still
/// refuses a static program and says why.
#[test]
fn the_wrapper_refuses_a_static_program_where_the_supervisor_cannot_run() {
    let out = Run::plain(cli_path())
        .args(["supervise", "--"])
        .arg(wrapper_path())
        .args(["-x", "socks5h://127.0.0.1:9", "--"])
        .arg(&programs().static_c)
        .args(["http", "127.0.0.1", "9"])
        .env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
        .run();
    assert_eq!(out.code, Some(126), "{out}");
    assert!(out.stderr.contains("statically linked") && out.stderr.contains("supervisor cannot run here"), "{out}");
}

/// A name `SOCKSIFY_NO_PROXY` bypasses is resolved by the nameserver (the
/// stub answers it, through the supervisor) and the address it gives is
/// reached directly, as under the shim.
#[test]
fn bypassed_names_resolve_with_the_nameserver_and_go_direct() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[("intranet.test", std::net::Ipv4Addr::LOCALHOST)]);
        let server = Server::bundled(&[]);
        let body = token("go-bypassed-name");
        let target = TcpTarget::http(&body);
        let url = format!("http://intranet.test:{}/", target.addr.port());
        let out = supervised(&ns, &server.url(), &programs().go_client).env("SOCKSIFY_NO_PROXY", "intranet.test").args(["get", &url]).run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, DIRECT);
        assert!(stub.queries().iter().any(|q| q.starts_with("intranet.test")), "the nameserver answers a bypassed name, saw {:?}", stub.queries());
        assert!(!server.log.text().contains("cmd=connect"), "a bypassed name reached the proxy:\n{}", server.log.text());
    });
}

/// The default `SOCKSIFY_NO_PROXY` bypasses loopback, where the
/// namespace's nameserver is (as systemd-resolved's 127.0.0.53 is on many
/// machines): its queries are still answered by the supervisor, and the
/// name still goes to the proxy.
#[test]
fn a_bypassed_loopback_nameserver_is_still_answered_here() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        let body = token("go-default-bypass");
        let target = TcpTarget::http(&body);
        let url = format!("http://{NAME}:{}/", target.addr.port());
        let out = supervised(&ns, &server.url(), &programs().go_client).env_remove("SOCKSIFY_NO_PROXY").args(["get", &url]).run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_named_connect(NAME, target.addr);
        assert!(stub.queries().is_empty(), "DNS queries left the supervised program: {:?}", stub.queries());
    });
}

/// `dig` (its own resolver, connected UDP) and `dig +tcp` (DNS over TCP)
/// get fake addresses from the supervisor; the stub sees nothing.
#[test]
fn dns_over_udp_and_tcp_is_answered_by_the_supervisor() {
    let dig = require_program("dig", "dnsutils");
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        for transport in ["+notcp", "+tcp"] {
            let out = supervised(&ns, "socks5h://127.0.0.1:9", &dig).args([transport, "+short", "+tries=1", "+time=5", NAME]).run();
            out.assert_success();
            let ip: std::net::IpAddr = out.stdout.trim().parse().unwrap_or_else(|_| panic!("{transport}: one address expected:\n{out}"));
            assert!(dns_cases::is_fake(ip), "{transport}: {ip} is not a fake address:\n{out}");
        }
        assert!(stub.queries().is_empty(), "DNS queries left the supervised dig: {:?}", stub.queries());
    });
}

/// What the issue calls done: `socksify ./static-go-tool ...`, with the
/// wrapper's defaults, reaches a name through the proxy with no DNS leak.
#[test]
fn the_wrapper_runs_a_static_go_tool_by_name_with_no_dns_leak() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        let body = token("wrapper-go-name");
        let target = TcpTarget::http(&body);
        let url = format!("http://{NAME}:{}/", target.addr.port());
        let out = Run::plain("ip")
            .args(["netns", "exec", &ns.name])
            .arg(wrapper_path())
            .args(["-x", &server.url()])
            .arg(&programs().go_client)
            .args(["get", &url])
            .env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
            .timeout(Duration::from_secs(120))
            .run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_named_connect(NAME, target.addr);
        assert!(stub.queries().is_empty(), "DNS queries left the Go tool: {:?}", stub.queries());
    });
}

/// musl's resolver (static Alpine-style programs) sends each query with an
/// unconnected `sendto` to the nameserver and takes the answer with
/// `recvfrom`, keeping only answers whose source is a nameserver: the
/// supervisor answers it, the name goes to the proxy, the stub sees nothing.
#[test]
fn static_musl_program_resolves_a_name_through_the_proxy_with_no_dns_leak() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        let body = token("musl-name");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let out = supervised(&ns, &server.url(), &programs().musl_get).args([NAME, &port]).run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        assert!(out.stderr.contains(&format!("tcp -> {NAME}:{port}")), "the name must go to the proxy:\n{out}");
        server.wait_named_connect(NAME, target.addr);
        assert!(stub.queries().is_empty(), "DNS queries left the musl program: {:?}", stub.queries());
    });
}

/// Local DNS mode: musl's queries go to the nameserver (the stub answers
/// and counts them), and the address it gave is proxied.
#[test]
fn static_musl_program_in_local_dns_mode_asks_the_nameserver() {
    local_dns_mode_case("musl-local-dns", |ns, url, port| {
        supervised(ns, url, &programs().musl_get).env("SOCKSIFY_DNS", "local").args([NAME, &port.to_string()]).run()
    });
}

/// A name `SOCKSIFY_NO_PROXY` bypasses, asked by musl's resolver: the
/// supervisor forwards it to the nameserver (the stub answers it) and the
/// address it gives is reached directly.
#[test]
fn static_musl_program_resolves_a_bypassed_name_with_the_nameserver() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[("intranet.test", std::net::Ipv4Addr::LOCALHOST)]);
        let server = Server::bundled(&[]);
        let body = token("musl-bypassed-name");
        let target = TcpTarget::http(&body);
        let out = supervised(&ns, &server.url(), &programs().musl_get)
            .env("SOCKSIFY_NO_PROXY", "intranet.test")
            .args(["intranet.test", &target.addr.port().to_string()])
            .run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        target.assert_peers(1, DIRECT);
        assert!(stub.queries().iter().any(|q| q.starts_with("intranet.test")), "the nameserver answers a bypassed name, saw {:?}", stub.queries());
        assert!(!server.log.text().contains("cmd=connect"), "a bypassed name reached the proxy:\n{}", server.log.text());
    });
}

/// A name `/etc/hosts` lists gets the file's address under the
/// supervisor, as under the shim, even where the program asks DNS first
/// (`hosts: dns files`: Go's resolver and glibc's; musl always reads the
/// file first). The proxy, which cannot resolve the name, is given the
/// address; no query leaves.
#[test]
fn names_in_etc_hosts_get_the_file_address() {
    const HOSTS_NAME: &str = "filehost.test";
    let ns = NetNs::create();
    std::fs::write(ns.etc_dir().join("hosts"), format!("127.0.0.1 localhost\n127.0.0.1 {HOSTS_NAME}\n::1 localhost\n")).unwrap();
    std::fs::write(ns.etc_dir().join("nsswitch.conf"), "hosts: dns files\n").unwrap();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = Server::bundled(&[]);
        let body = token("hosts-name");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let url = format!("http://{HOSTS_NAME}:{port}/");
        let p = programs();
        let mut failed = Vec::new();
        for (what, run) in [
            ("static Go", supervised(&ns, &server.url(), &p.go_client).args(["get", &url])),
            ("static musl", supervised(&ns, &server.url(), &p.musl_get).args([HOSTS_NAME, &port])),
            ("dynamic glibc", supervised(&ns, &server.url(), &p.gai_get).args([HOSTS_NAME, &port])),
        ] {
            let out = run.run();
            if out.code != Some(0) || out.stdout != body {
                failed.push(format!("{what}: {out}"));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        target.assert_peers(3, BUNDLED_OUT);
        let log = server.log.text();
        assert_eq!(log.matches(&format!("dst={} ", target.addr)).count(), 3, "the proxy must be given the file's address:\n{log}");
        assert!(stub.queries().is_empty(), "DNS queries left: {:?}", stub.queries());
    });
}

/// A cgo-linked (dynamic) Go program: LD_PRELOAD reaches its libc, but
/// Go's net package makes its own connect system calls. The wrapper runs
/// it under the supervisor by itself: by address and by a name only the
/// proxy resolves, the target sees the proxy and the stub no query. Under
/// a bare LD_PRELOAD the shim says, once, that it will be bypassed.
#[test]
fn dynamic_go_is_supervised_by_the_wrapper_and_warned_about_under_ld_preload() {
    let dir = TempDir::new("supervise-cgo");
    let go_cgo = dir.path().join("goclient-cgo");
    go_build(&repo_root().join("tests/programs/supervise/goclient"), &go_cgo, dir.path(), true);
    assert!(!is_static(&go_cgo), "test setup: the cgo build should be dynamic");
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        let server = dns_cases::bundled_server();
        let wrapped = |url: &str| {
            Run::plain("ip")
                .args(["netns", "exec", &ns.name])
                .arg(wrapper_path())
                .args(["-x", &server.url(), "-n", "", "-v", "--"])
                .arg(&go_cgo)
                .args(["get", url])
                .env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
                .timeout(Duration::from_secs(120))
        };
        for host in [None, Some(NAME)] {
            let body = token("go-cgo");
            let target = TcpTarget::http(&body);
            let url = format!("http://{}:{}/", host.map_or(target.addr.ip().to_string(), str::to_owned), target.addr.port());
            let out = wrapped(&url).run();
            out.assert_success();
            assert_eq!(out.stdout, body, "{out}");
            assert!(out.stderr.contains("is a Go program") && out.stderr.contains("under the seccomp supervisor"), "-v says why:\n{out}");
            target.assert_peers(1, BUNDLED_OUT);
        }
        assert!(stub.queries().is_empty(), "DNS queries left the Go program: {:?}", stub.queries());

        // (`env` sets LD_PRELOAD for the Go program alone: a preloaded
        // parent would start it under the supervisor, as tested below.)
        let target = TcpTarget::http("x");
        let out = Run::plain("ip")
            .args(["netns", "exec", &ns.name, "env", &format!("LD_PRELOAD={}", shim_path().display())])
            .arg(&go_cgo)
            .args(["get", &format!("http://{}/", target.addr)])
            .env("SOCKSIFY_PROXY", &server.url())
            .env("SOCKSIFY_NO_PROXY", "")
            .env("SOCKSIFY_LOG", "warn")
            .run();
        let warning = "this is a Go program: Go's net package makes its own connect system calls";
        assert_eq!(out.stderr.matches(warning).count(), 1, "one warning under a bare LD_PRELOAD:\n{out}");
    });
}

/// A program under `LD_PRELOAD` that starts one `LD_PRELOAD` cannot
/// follow (a shell running a static C client, python running the static
/// Go client, a cleared environment too): the exec hook starts the child
/// under the supervisor next to the library, and the target sees the
/// proxy. With no supervisor next to the library, the exec fails
/// (EACCES, one line) and nothing reaches the target.
#[test]
fn static_and_go_children_of_a_preloaded_program_are_supervised() {
    let ns = NetNs::create();
    ns.run(|| {
        let server = Server::bundled(&[]);
        let shimmed = |prog: &str| ns.shimmed(&server.url(), prog).timeout(Duration::from_secs(120));
        let body = token("static-child");
        let target = TcpTarget::http(&body);
        let port = target.addr.port().to_string();
        let script = format!("{} http 127.0.0.1 {port}", programs().static_c.display());
        let out = shimmed("sh").args(["-c", &script]).run();
        out.assert_success();
        assert!(out.stdout.trim_end().ends_with(&body), "{out}");
        assert!(out.stderr.contains("statically linked, LD_PRELOAD cannot follow it: running it under the seccomp supervisor"), "{out}");
        target.assert_peers(1, BUNDLED_OUT);

        let target = TcpTarget::http(&body);
        let code = format!(
            "import subprocess, sys\nsys.exit(subprocess.run(['{}', 'get', 'http://{}/'], env={{}}).returncode)",
            programs().go_client.display(),
            target.addr
        );
        let out = shimmed(python3()).args(["-c", &code]).run();
        out.assert_success();
        assert_eq!(out.stdout, body, "{out}");
        assert!(out.stderr.contains("is a Go program"), "{out}");
        target.assert_peers(1, BUNDLED_OUT);

        // The library alone, without socksify-cli beside it: refused.
        let lonely = TempDir::new("lonely-shim");
        let lib = lonely.path().join("libsocksify.so");
        std::fs::copy(shim_path(), &lib).unwrap();
        let target = TcpTarget::http(&body);
        let script = format!("{} http 127.0.0.1 {}; echo exit=$?", programs().static_c.display(), target.addr.port());
        let out = shimmed("sh").args(["-c", &script]).env("LD_PRELOAD", lib.to_str().unwrap()).run();
        assert!(out.stdout.contains("exit=126"), "the shell could not run it:\n{out}");
        assert!(out.stderr.contains("error: refusing to start") && out.stderr.contains("socksify-cli) is missing"), "{out}");
        target.assert_untouched();
    });
}
