//! The end-to-end cases of SOCKS BIND (for programs that listen
//! for a connection back), written once and run against the bundled server
//! (`tests/bind_bundled.rs`) and Dante (`tests/bind_dante.rs`).
//!
//! The FTP server ([`FtpServer`], `tests/programs/ftp_server.py`) records
//! the far end of every data connection. In active mode it connects to the
//! address the client advertised: when that far end is the address the
//! proxy logged for its BIND listener (127.0.0.2 for the bundled server,
//! 127.0.0.3 for Dante), the connection came through the proxy. A client
//! listening on its own (127.0.0.1) would not even get that far: the
//! server refuses a PORT address other than its control peer's, which is
//! the proxy's.
#![allow(dead_code)]

use crate::common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;

/// A python FTP server (pyftpdlib) on 127.0.0.1, killed on drop.
pub struct FtpServer {
    child: Child,
    pub ip: IpAddr,
    pub port: u16,
    /// Its stdout: `command PEER VERB` and `data PEER` lines.
    pub out: LineLog,
    err: LineLog,
    root: TempDir,
    /// The addresses [`FtpServer::sync`] connected from: not the client's.
    ours: Mutex<Vec<SocketAddr>>,
}

impl FtpServer {
    pub fn start() -> FtpServer {
        FtpServer::start_on(DIRECT)
    }

    /// The server on `ip` (127.0.0.1 or ::1).
    pub fn start_on(ip: IpAddr) -> FtpServer {
        let python = python3();
        let has_module = Command::new(python).args(["-c", "import pyftpdlib"]).stderr(Stdio::null()).status();
        assert!(
            has_module.is_ok_and(|s| s.success()),
            "pyftpdlib is missing: install the Debian package python3-pyftpdlib (scripts/test does)"
        );
        let root = TempDir::new("ftp");
        let script = repo_root().join("tests/programs/ftp_server.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(root.path())
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn the FTP server");
        let out = LineLog::spawn_reader(child.stdout.take().unwrap());
        let err = LineLog::spawn_reader(child.stderr.take().unwrap());
        let port = out.wait_line(&["listening "]).and_then(|l| l.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()));
        let Some(port) = port else {
            kill_group(&mut child);
            panic!("the FTP server did not start; its stderr:\n{}", err.text());
        };
        FtpServer { child, ip, port, out, err, root, ours: Mutex::default() }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// `ftp://HOST:PORT/NAME`.
    pub fn url(&self, host: &str, name: &str) -> String {
        format!("ftp://{host}:{}/{name}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Makes sure every line the server printed so far has been read: its
    /// stdout is read by a thread that may lag behind. Sends a NOOP of our
    /// own (directly) and waits for its line, which comes after them.
    fn sync(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.addr(), WAIT).expect("connect to the FTP server");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let me = s.local_addr().unwrap();
        self.ours.lock().unwrap().push(me);
        let mut banner = [0u8; 512];
        let _ = s.read(&mut banner);
        s.write_all(b"NOOP\r\n").unwrap();
        let mine = format!("command {me} NOOP");
        let log = wait_until(WAIT, || Some(self.out.text()).filter(|t| t.contains(&mine)));
        let log = log.unwrap_or_else(|| panic!("the FTP server never logged our NOOP:\n{}", self.log()));
        // Our own lines are not the client's.
        let ours = self.ours.lock().unwrap();
        log.lines().filter(|l| !ours.iter().any(|a| l.contains(&format!(" {a} ")))).map(|l| format!("{l}\n")).collect()
    }

    /// The far end of every data connection so far.
    pub fn data_peers(&self) -> Vec<SocketAddr> {
        self.sync().lines().filter_map(|l| l.strip_prefix("data ")).map(|a| a.trim().parse().expect("data peer")).collect()
    }

    /// Every command so far, as (control peer, verb).
    pub fn commands(&self) -> Vec<(SocketAddr, String)> {
        let parse = |l: &str| {
            let mut it = l.strip_prefix("command ")?.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.to_owned()))
        };
        self.sync().lines().filter_map(parse).collect()
    }

    pub fn verbs(&self) -> Vec<String> {
        self.commands().into_iter().map(|(_, v)| v).collect()
    }

    pub fn log(&self) -> String {
        format!("--- stdout ---\n{}--- stderr ---\n{}", self.out.text(), self.err.text())
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// `len` bytes that are not all alike (a simple generator: every byte
/// position matters when the copy is compared).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A proxy whose log shows its BINDs.
pub trait BindProxy: Proxy {
    /// Its log lines that open a BIND (one per BIND request).
    fn bind_lines(&self) -> Vec<String>;
    /// Whether a BIND line names `listen` as the address it listened on.
    fn listened_on(&self, line: &str, listen: SocketAddr) -> bool;
    /// Whether a BIND line names `peer` (a name or address, port 0) as the expected peer.
    fn expects(&self, line: &str, peer: &str) -> bool;
}

impl BindProxy for Server {
    fn bind_lines(&self) -> Vec<String> {
        self.log.text().lines().filter(|l| l.contains("cmd=bind")).map(str::to_owned).collect()
    }
    fn listened_on(&self, line: &str, listen: SocketAddr) -> bool {
        line.contains(&format!(" listen={listen}"))
    }
    fn expects(&self, line: &str, peer: &str) -> bool {
        line.contains(&format!(" dst={peer}:0 "))
    }
}

impl BindProxy for Dante {
    fn bind_lines(&self) -> Vec<String> {
        // `tcp/bind [: CLIENT PROXY -> LISTEN EXPECTED` when a BIND opens.
        self.log().lines().filter(|l| l.contains("pass(") && l.contains("tcp/bind [:")).map(str::to_owned).collect()
    }
    fn listened_on(&self, line: &str, listen: SocketAddr) -> bool {
        line.contains(&format!("-> {}.{} ", listen.ip(), listen.port()))
    }
    fn expects(&self, line: &str, peer: &str) -> bool {
        line.ends_with(&format!(" {peer}.0"))
    }
}

/// The proxy's way out for IPv4 (where it listens for BINDs too).
fn out_v4(proxy: &impl Proxy) -> IpAddr {
    proxy.out_ip(DIRECT)
}

/// Asserts the one data connection came through `proxy`'s BIND, which
/// expected `peer`, and that the control connection came from the proxy.
fn assert_active_through(proxy: &impl BindProxy, ftp: &FtpServer, peer: &str, out: &Output) {
    let data = ftp.data_peers();
    let out_ip = proxy.out_ip(ftp.ip);
    assert_eq!(data.len(), 1, "one data connection expected ({}):\n{}\n{out}", proxy.name(), ftp.log());
    assert_eq!(data[0].ip(), out_ip, "the data connection must go to the proxy's BIND listener:\n{}\n{out}", ftp.log());
    let verbs = ftp.verbs();
    assert!(verbs.iter().any(|v| v == "EPRT" || v == "PORT"), "active mode: {verbs:?}");
    assert!(!verbs.iter().any(|v| v == "EPSV" || v == "PASV"), "active mode: {verbs:?}");
    for (control, verb) in ftp.commands() {
        assert_eq!(control.ip(), out_ip, "{verb} came from {control}, not through the proxy");
    }
    let seen = wait_until(WAIT, || proxy.bind_lines().into_iter().find(|l| proxy.listened_on(l, data[0])));
    let line = seen.unwrap_or_else(|| panic!("{} logged no BIND listening on {}: {:?}\n{out}", proxy.name(), data[0], proxy.bind_lines()));
    assert!(proxy.expects(&line, peer), "the BIND must name the expected peer {peer}: {line}");
}

/// `curl -P - ftp://HOST:PORT/file.bin`: active mode, byte for byte.
pub fn curl_active_download(proxy: &impl BindProxy, host: &str, expected_peer: &str) {
    let ftp = FtpServer::start();
    let body = payload(3 << 20);
    fs::write(ftp.path("file.bin"), &body).unwrap();
    let dir = TempDir::new("curl-active");
    let dest = dir.path().join("file.bin");
    let out = Run::shimmed(&proxy.url(), "curl")
        .args(["-sS", "--max-time", "25", "-P", "-", "-o"])
        .arg(dest.as_os_str())
        .arg(ftp.url(host, "file.bin"))
        .run();
    out.assert_success();
    assert!(fs::read(&dest).unwrap() == body, "the download differs from the file ({} bytes expected)\n{out}", body.len());
    assert_active_through(proxy, &ftp, expected_peer, &out);
    assert!(out.stderr.contains("accepted"), "the shim logs the accepted connection:\n{out}");
}

/// `curl -P - -T FILE ftp://…/up.bin`: active-mode upload, byte for byte.
pub fn curl_active_upload(proxy: &impl BindProxy) {
    let ftp = FtpServer::start();
    let body = payload(1 << 20);
    let dir = TempDir::new("curl-upload");
    let src = dir.path().join("up.bin");
    fs::write(&src, &body).unwrap();
    let out = Run::shimmed(&proxy.url(), "curl")
        .args(["-sS", "--max-time", "25", "-P", "-", "-T"])
        .arg(src.as_os_str())
        .arg(ftp.url("127.0.0.1", "up.bin"))
        .run();
    out.assert_success();
    let stored = wait_until(WAIT, || fs::read(ftp.path("up.bin")).ok().filter(|b| b.len() >= body.len()));
    assert!(stored.as_deref() == Some(&body[..]), "the upload differs from the file\n{out}\n{}", ftp.log());
    assert_active_through(proxy, &ftp, "127.0.0.1", &out);
}

/// Python's ftplib with `set_pasv(False)`: `ftplib.FTP.makeport` binds the
/// control connection's local address, port 0, and advertises it.
const FTPLIB_ACTIVE: &str = r#"
import ftplib, sys
host, port, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = ftplib.FTP()
f.connect(host, port, timeout=20)
f.login()
f.set_pasv(False)
with open(dest, "wb") as out:
    f.retrbinary("RETR file.bin", out.write)
f.quit()
print("done")
"#;

pub fn python_ftplib_active(proxy: &impl BindProxy) {
    python_ftplib_active_on(proxy, DIRECT, "127.0.0.1");
}

/// [`python_ftplib_active`] with the FTP server on `ip`; the BIND must
/// name `expected` (as the proxy logs it).
pub fn python_ftplib_active_on(proxy: &impl BindProxy, ip: IpAddr, expected: &str) {
    let ftp = FtpServer::start_on(ip);
    let body = payload(2 << 20);
    fs::write(ftp.path("file.bin"), &body).unwrap();
    let dir = TempDir::new("ftplib");
    let dest = dir.path().join("file.bin");
    let out = Run::python(&proxy.url(), FTPLIB_ACTIVE).arg(ip.to_string()).arg(ftp.port.to_string()).arg(dest.as_os_str()).run();
    out.assert_success();
    assert!(fs::read(&dest).unwrap() == body, "the download differs from the file\n{out}");
    assert_active_through(proxy, &ftp, expected, &out);
}

/// Passive mode (curl's default) stays two CONNECTs, no BIND.
pub fn curl_passive(proxy: &impl BindProxy) {
    let ftp = FtpServer::start();
    let body = payload(1 << 20);
    fs::write(ftp.path("file.bin"), &body).unwrap();
    let dir = TempDir::new("curl-passive");
    let dest = dir.path().join("file.bin");
    let out = Run::shimmed(&proxy.url(), "curl")
        .args(["-sS", "--max-time", "25", "-o"])
        .arg(dest.as_os_str())
        .arg(ftp.url("127.0.0.1", "file.bin"))
        .run();
    out.assert_success();
    assert!(fs::read(&dest).unwrap() == body, "the download differs from the file\n{out}");
    let data = ftp.data_peers();
    assert_eq!(data.len(), 1, "{}", ftp.log());
    assert_eq!(data[0].ip(), out_v4(proxy), "the passive data connection comes from the proxy:\n{}", ftp.log());
    assert!(ftp.verbs().iter().any(|v| v == "EPSV" || v == "PASV"), "{:?}", ftp.verbs());
    proxy.wait_connect_line(ftp.addr());
    assert!(proxy.bind_lines().is_empty(), "passive mode needs no BIND: {:?}", proxy.bind_lines());
}

/// `SOCKSIFY_BIND=off`: the listener stays local, so the FTP server, which
/// sees the proxy as its client, refuses the local address curl
/// advertises: no data connection, no BIND, and curl fails.
pub fn bind_off_keeps_listeners_local(proxy: &impl BindProxy) {
    let ftp = FtpServer::start();
    fs::write(ftp.path("file.bin"), payload(1000)).unwrap();
    let out = Run::shimmed(&proxy.url(), "curl")
        .env("SOCKSIFY_BIND", "off")
        .args(["-sS", "--max-time", "25", "-P", "-", "-o", "/dev/null"])
        .arg(ftp.url("127.0.0.1", "file.bin"))
        .run();
    assert!(out.code != Some(0), "curl cannot be called back without BIND:\n{out}");
    assert!(ftp.data_peers().is_empty(), "{}", ftp.log());
    assert!(proxy.bind_lines().is_empty(), "{:?}", proxy.bind_lines());
}

/// `python3 -c LISTENER_API HOST PORT MODES`: a control connection through
/// the proxy to HOST:PORT, then for each mode a listener bound to the
/// control connection's local address (which the shim reports as the
/// proxy's; `wildcard`: to 0.0.0.0), a "far side" in the same process
/// connecting to the address the listener reports (bypassed, so it goes
/// straight to the proxy's BIND listener), and `accept` in that mode:
/// `blocking`/`wildcard`, or non-blocking with `select`, `poll` or `epoll`
/// readiness (`epoll` also keeps its registration of the listener across
/// `accept`). Prints what a program sees.
pub const LISTENER_API: &str = r#"
import errno, fcntl, os, select, selectors, socket, sys
host, port, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
ctl = socket.create_connection((host, port), timeout=20)
ctl_ip = ctl.getsockname()[0]
print("control-local", ctl_ip, flush=True)

def readable(lst, mode, timeout):
    if mode == "select":
        return bool(select.select([lst], [], [], timeout)[0])
    if mode == "poll":
        p = select.poll()
        p.register(lst, select.POLLIN)
        return bool(p.poll(int(timeout * 1000)))
    sel = selectors.EpollSelector()
    sel.register(lst, selectors.EVENT_READ)
    try:
        return bool(sel.select(timeout))
    finally:
        sel.unregister(lst)
        sel.close()

def try_accept(lst):
    try:
        lst.accept()
        return "connection"
    except BlockingIOError:
        return "EAGAIN"

blocking = ("blocking", "wildcard")
for mode in modes:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("0.0.0.0" if mode == "wildcard" else ctl_ip, 0))
    lst.listen(1)
    lip, lport = lst.getsockname()
    print(mode, "listening", lip, lport, flush=True)
    try:
        print(mode, "listener-peer", lst.getpeername())
    except OSError as e:
        print(mode, "listener-peer", errno.errorcode[e.errno])
    if mode not in blocking:
        lst.setblocking(False)
        print(mode, "early-accept", try_accept(lst))
        print(mode, "early-readable", readable(lst, mode, 0))
    if mode == "epoll":
        # An event loop's registration, kept across accept.
        ep = select.epoll()
        ep.register(lst.fileno(), select.EPOLLIN)
    far = socket.create_connection((lip, lport), timeout=20)
    far.sendall(mode.encode() + b"-first")
    if mode == "epoll":
        print(mode, "readable", any(fd == lst.fileno() for fd, ev in ep.poll(20)))
    elif mode not in blocking:
        print(mode, "readable", readable(lst, mode, 20))
    conn, peer = lst.accept()
    print(mode, "conn-nonblock", fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
    conn.settimeout(20)
    print(mode, "peer", peer[0], peer[1], flush=True)
    print(mode, "far", *far.getsockname())
    print(mode, "getpeername", *conn.getpeername())
    got = b""
    while len(got) < len(mode) + 6:
        chunk = conn.recv(100)
        if not chunk:
            break
        got += chunk
    print(mode, "received", got.decode())
    conn.sendall(b"back-" + mode.encode())
    print(mode, "far-received", far.recv(100).decode())
    if mode == "epoll":
        # The connection has data; the listener's registration must not say so.
        far.sendall(b"more")
        select.select([conn], [], [], 20)
        print(mode, "listener-events", sum(1 for fd, ev in ep.poll(0) if fd == lst.fileno()))
        try:
            ep.unregister(lst.fileno())
            print(mode, "unregister ok")
        except OSError as e:
            print(mode, "unregister errno", e.errno)
        ep.close()
    if mode not in blocking:
        print(mode, "second-accept", try_accept(lst))
        print(mode, "second-readable", readable(lst, mode, 0))
    print(mode, "still-reports", *lst.getsockname())
    conn.close()
    far.close()
    lst.close()
print("done")
"#;

/// [`LISTENER_API`] through `proxy`: every call keeps its meaning.
pub fn listener_api(proxy: &impl BindProxy) {
    let target = TcpTarget::echo();
    let modes = ["blocking", "wildcard", "select", "poll", "epoll"];
    let out_ip = out_v4(proxy).to_string();
    let out = Run::python(&proxy.url(), LISTENER_API)
        // The far side in the same process goes straight to the proxy.
        .env("SOCKSIFY_NO_PROXY", &out_ip)
        .arg(target.addr.ip().to_string())
        .arg(target.addr.port().to_string())
        .arg(modes.join(","))
        .run();
    out.assert_success();
    let line = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no `{key}` line:\n{out}"))
            .split(' ')
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(line("control-local"), std::slice::from_ref(&out_ip), "a proxied connection reports the proxy's side:\n{out}");
    for mode in modes {
        let at = |what: &str| line(&format!("{mode} {what}"));
        let listening = at("listening");
        assert_eq!(listening[0], out_ip, "{mode}: getsockname reports the proxy's BIND address\n{out}");
        assert_eq!(at("listener-peer"), ["ENOTCONN"], "{mode}: a listener has no peer (not the proxy it is connected to)\n{out}");
        let listen: SocketAddr = format!("{}:{}", listening[0], listening[1]).parse().unwrap();
        let lines = proxy.bind_lines();
        assert!(lines.iter().any(|l| proxy.listened_on(l, listen)), "{mode}: no BIND on {listen} in the proxy's log: {lines:?}\n{out}");
        if mode == "epoll" {
            assert_eq!(at("listener-events"), ["0"], "the listener's epoll entry reports the connection's data\n{out}");
            assert_eq!(at("unregister"), ["ok"], "{out}");
        }
        if mode != "blocking" && mode != "wildcard" {
            assert_eq!(at("early-accept"), ["EAGAIN"], "{mode}\n{out}");
            assert_eq!(at("early-readable"), ["False"], "{mode}\n{out}");
            assert_eq!(at("readable"), ["True"], "{mode}\n{out}");
            assert_eq!(at("second-accept"), ["EAGAIN"], "{mode}: one BIND, one connection\n{out}");
            assert_eq!(at("second-readable"), ["False"], "{mode}\n{out}");
        }
        assert_eq!(at("peer"), at("far"), "{mode}: accept names the peer the proxy saw\n{out}");
        assert_eq!(at("getpeername"), at("far"), "{mode}\n{out}");
        assert_eq!(at("conn-nonblock"), ["0"], "{mode}: accept's new socket is blocking\n{out}");
        assert_eq!(at("received"), [format!("{mode}-first")], "{mode}: the peer's first bytes arrive\n{out}");
        assert_eq!(at("far-received"), [format!("back-{mode}")], "{mode}\n{out}");
        assert_eq!(at("still-reports"), listening, "{mode}\n{out}");
    }
    assert_eq!(proxy.bind_lines().len(), modes.len(), "one BIND per listener: {:?}", proxy.bind_lines());
}

/// Starts `f` in a thread and hands back its result through a channel.
pub fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// `curl FLAGS -P - ftp://NAME:PORT/file.bin`, NAME being a name only the
/// proxy resolves, to the FTP server's address (`ftp.ip`). curl connects a
/// socket of the family FLAGS pick (`-4`, `-6`; none: the fake IPv4
/// address comes first) to the fake address of that family.
fn curl_by_name(proxy: &impl BindProxy, ftp: &FtpServer, name: &str, flags: &[&str], dest: &std::path::Path) -> Output {
    Run::shimmed(&proxy.url(), "curl")
        .args(["-sS", "--max-time", "25", "-P", "-", "-o"])
        .arg(dest.as_os_str())
        .args(flags)
        .arg(ftp.url(name, "file.bin"))
        .run()
}

/// Active FTP by name where the program's socket is of the family of the
/// proxy's side (the server's, `ftp_ip`): the data connection comes
/// through the proxy's BIND, which expected the peer by name.
pub fn curl_active_by_name(proxy: &impl BindProxy, name: &str, ftp_ip: IpAddr, flags: &[&str]) {
    let ftp = FtpServer::start_on(ftp_ip);
    let body = payload(1 << 20);
    fs::write(ftp.path("file.bin"), &body).unwrap();
    let dir = TempDir::new("curl-by-name");
    let dest = dir.path().join("file.bin");
    let out = curl_by_name(proxy, &ftp, name, flags, &dest);
    out.assert_success();
    assert!(fs::read(&dest).unwrap() == body, "the download differs from the file\n{out}");
    assert_active_through(proxy, &ftp, name, &out);
}

/// Active FTP by name where curl's socket is IPv4 (its default, or `-4`:
/// the fake IPv4 address) but the proxy reaches the server, and listens
/// for the BIND, over IPv6 (`ftp_ip` is ::1). No IPv4 address names the
/// proxy's side: the control connection's `getsockname` says 0.0.0.0, and
/// the BIND fails cleanly with `EAFNOSUPPORT`, so curl stops before it
/// advertises anything. Never this machine's own address (the kernel's
/// side of the connection to the proxy), which it used to advertise.
pub fn curl_active_by_name_across_families(proxy: &impl BindProxy, name: &str, flags: &[&str]) {
    let ftp = FtpServer::start_on(LOCALHOST_V6);
    fs::write(ftp.path("file.bin"), payload(1000)).unwrap();
    let dir = TempDir::new("curl-across");
    let out = curl_by_name(proxy, &ftp, name, flags, &dir.path().join("file.bin"));
    let verbs = ftp.verbs();
    assert!(!verbs.iter().any(|v| v == "EPRT" || v == "PORT"), "nothing may be advertised: {verbs:?}\n{out}");
    // 30: CURLE_FTP_PORT_FAILED.
    assert_eq!(out.code, Some(30), "{out}");
    assert!(out.stderr.contains("getsockname() failed: Address family not supported"), "{out}");
    assert!(out.stderr.contains("an IPv6 address this IPv4 socket cannot report"), "the shim says why:\n{out}");
    assert!(ftp.data_peers().is_empty(), "{}", ftp.log());
    let out_ip = proxy.out_ip(LOCALHOST_V6);
    let commands = ftp.commands();
    assert!(!commands.is_empty(), "the control connection reached the server:\n{}\n{out}", ftp.log());
    for (control, verb) in commands {
        assert_eq!(control.ip(), out_ip, "{verb} came from {control}, not through the proxy");
    }
}

/// `python3 -c SOCKNAME_BY_FAMILY NAME PORT`: for AF_INET and AF_INET6, a
/// socket of that family connected to NAME's fake address of that family,
/// then `family ADDRESS PORT` from its `getsockname` (python decodes it by
/// the family the kernel, or the shim, wrote).
pub const SOCKNAME_BY_FAMILY: &str = r#"
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
for fam, label in ((socket.AF_INET, "inet"), (socket.AF_INET6, "inet6")):
    addr = socket.getaddrinfo(name, port, fam, socket.SOCK_STREAM)[0][4]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(addr)
    s.recv(100)  # the FTP banner
    s.sendall(b"NOOP\r\n")  # the server logs its peer: the proxy's side
    s.recv(100)
    local = s.getsockname()
    print(label, "family" if len(local) == (2 if fam == socket.AF_INET else 4) else "WRONG-FAMILY", local[0], local[1], flush=True)
    s.close()
"#;

/// [`SOCKNAME_BY_FAMILY`] against a server on `ftp_ip` that only the proxy
/// resolves `name` to: each socket is told the proxy's side of its
/// connection (the peer the server saw: address and port) in its own
/// family; `v4`/`v6` map the address the server saw to what the AF_INET
/// and AF_INET6 socket must report.
pub fn sockname_by_family(
    proxy: &impl BindProxy,
    name: &str,
    ftp_ip: IpAddr,
    v4: impl Fn(IpAddr) -> String,
    v6: impl Fn(IpAddr) -> String,
) {
    let ftp = FtpServer::start_on(ftp_ip);
    let out = Run::python(&proxy.url(), SOCKNAME_BY_FAMILY).arg(name).arg(ftp.port.to_string()).run();
    out.assert_success();
    let commands = ftp.commands();
    assert_eq!(commands.len(), 2, "one NOOP per socket:\n{}\n{out}", ftp.log());
    for (control, _) in &commands {
        assert_eq!(control.ip(), proxy.out_ip(ftp_ip), "{control}: not through the proxy\n{out}");
    }
    for ((label, expected), (control, _)) in
        [("inet", v4(commands[0].0.ip())), ("inet6", v6(commands[1].0.ip()))].into_iter().zip(&commands)
    {
        let prefix = format!("{label} ");
        let line = out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {label} line:\n{out}"));
        assert_eq!(line, format!("family {expected} {}", control.port()), "{label} socket; the server saw {control}:\n{out}");
    }
}
