//! Helpers shared by the end-to-end tests: each test starts real processes
//! (the bundled `socksify-server`, Dante's `danted`, `curl`, `python3`, `nc`)
//! on loopback and checks what a user would check: the bytes arrived, they
//! took the proxy's path, and nothing went out directly.
//!
//! What this module promises:
//! - every process it starts is killed when its guard ([`Server`], [`Dante`],
//!   [`TcpTarget`], [`StallingProxy`]) is dropped, also when a test panics;
//! - every wait is bounded ([`WAIT`] for start-up and logs, [`Run::timeout`]
//!   for client programs, read timeouts on every socket);
//! - all traffic stays on 127.0.0.0/8 and ::1. Proof of path: the bundled
//!   server connects out from [`BUNDLED_OUT`] (`--bind-out`), Dante from
//!   [`DANTE_OUT`] (`external:`); a [`TcpTarget`] records the peer address of
//!   every connection it accepts, so a test can assert it came from the proxy
//!   and not from 127.0.0.1 (a direct connection).
//!
//! Artifacts come from `cargo build --release --workspace` (see
//! [`release_dir`]); nothing here links the shim.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on every start-up and on waiting for a log line.
pub const WAIT: Duration = Duration::from_secs(15);
/// Source address of the bundled server's outgoing connections (`--bind-out`).
pub const BUNDLED_OUT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Dante's `external:` address for IPv4 destinations.
pub const DANTE_OUT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Where a direct (unproxied) connection from a test client comes from.
pub const DIRECT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
/// The system account `scripts/test` creates for Dante's username method
/// (Dante checks the system password database).
pub const DANTE_USER: &str = "socksifytest";
pub const DANTE_PASS: &str = "s3cret pw";

// ---------------------------------------------------------------- artifacts

/// The repository root (where `Cargo.toml` of the workspace is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/release` of this build: the test binary lives in
/// `target/release/deps/`, so its grandparent is the right directory even
/// with a custom `CARGO_TARGET_DIR`.
pub fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    let dir = deps.parent().expect("deps has a parent");
    if dir.file_name().is_some_and(|n| n == "release") {
        dir.to_path_buf()
    } else {
        repo_root().join("target/release")
    }
}

fn artifact(name: &str) -> PathBuf {
    let path = release_dir().join(name);
    assert!(path.is_file(), "{} is missing: run cargo build --release --workspace first", path.display());
    path
}

/// `target/release/libsocksify.so`.
pub fn shim_path() -> PathBuf {
    artifact("libsocksify.so")
}

/// `target/release/socksify-server`.
pub fn server_path() -> PathBuf {
    artifact("socksify-server")
}

/// `scripts/socksify`.
pub fn wrapper_path() -> PathBuf {
    repo_root().join("scripts/socksify")
}

/// The Debian `python3` (`/usr/bin/python3`) when present: version managers'
/// `python3` shims are shell scripts that would run under the shim too.
pub fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Finds `name` in `$PATH` or `/usr/sbin`, `/sbin` (Dante lives there);
/// panics naming the Debian package when absent.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} not found: install the Debian package {package} (scripts/test does)");
}

// ---------------------------------------------------------------- small tools

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("socksify-{tag}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A TCP port on `ip` that nothing listens on right now (bound, then freed).
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0)).expect("bind port 0").local_addr().unwrap().port()
}

/// Polls `f` every 20 ms until it returns `Some`, at most `limit`.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A unique payload, so one test's bytes can't be mistaken for another's.
pub fn token(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("socksify-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Formats `addr` as a URL host: IPv6 in brackets.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// Waits (bounded by [`WAIT`]) until a server `child` started accepts TCP
/// connections on `addr`; false if it exits first or never does, or if
/// the socket listening there is not its own (the port was picked free and
/// then handed to it: another test's process may have taken it first).
pub fn accepting(child: &mut Child, addr: SocketAddr) -> bool {
    let up = wait_until(WAIT, || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        let inode = listening_inode(addr)?;
        Some(group_has_socket(child.id(), inode))
    });
    up == Some(true)
}

/// The inode of the TCP socket listening on `addr` in this network
/// namespace: this thread's, which a test may have moved into one of its
/// own (`/proc/thread-self/net/tcp{,6}`; a wildcard listener counts).
fn listening_inode(addr: SocketAddr) -> Option<u64> {
    let port = format!("{:04X}", addr.port());
    // The kernel prints each 32-bit word of an address in host (little-endian) order.
    let hex = |octets: &[u8]| octets.chunks(4).map(|w| w.iter().rev().map(|b| format!("{b:02X}")).collect::<String>()).collect::<String>();
    let wanted: Vec<String> = match addr.ip() {
        IpAddr::V4(ip) => vec![hex(&ip.octets()), hex(&[0; 4]), hex(&ip.to_ipv6_mapped().octets()), hex(&[0; 16])],
        IpAddr::V6(ip) => vec![hex(&ip.octets()), hex(&[0; 16])],
    };
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"].iter().filter_map(|f| fs::read_to_string(f).ok()).find_map(|table| {
        table.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (ip, p) = cols.get(1)?.split_once(':')?;
            let listening = cols.get(3) == Some(&"0A");
            (listening && p == port && wanted.iter().any(|w| w == ip)).then(|| cols.get(9)?.parse().ok()).flatten()
        })
    })
}

/// Whether a process of `leader`'s process group (or `leader` itself) has
/// socket `inode` open.
fn group_has_socket(leader: u32, inode: u64) -> bool {
    let link = format!("socket:[{inode}]");
    let in_group = |pid: &str| {
        pid == leader.to_string()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2).map(|g| g == leader.to_string())))
                .unwrap_or(false)
    };
    let Ok(procs) = fs::read_dir("/proc") else { return false };
    procs.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && in_group(pid)).any(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().filter_map(Result::ok).any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
    })
}

/// Sends SIGKILL to the whole process group `pgid` and reaps `child`.
pub fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain syscall; the group was created for this child only
    // (process_group(0)), so no unrelated process is signalled.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Collects a child's output stream in the background, line by line.
#[derive(Clone, Default)]
pub struct LineLog(Arc<Mutex<String>>);

impl LineLog {
    pub fn spawn_reader(stream: impl Read + Send + 'static) -> LineLog {
        let log = LineLog::default();
        log.also_read(stream);
        log
    }

    /// Collects `stream` into this log too (a child's stderr next to its
    /// stdout), line by line.
    pub fn also_read(&self, stream: impl Read + Send + 'static) {
        let sink = self.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
                buf.clear();
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded by [`WAIT`]) for a line containing every one of `needles`.
    pub fn wait_line(&self, needles: &[&str]) -> Option<String> {
        wait_until(WAIT, || self.text().lines().find(|l| needles.iter().all(|n| l.contains(n))).map(str::to_owned))
    }
}

// ---------------------------------------------------------------- bundled server

/// A running `socksify-server`, killed on drop.
pub struct Server {
    child: Child,
    /// The bound address of each `--listen`, in order (from its stdout).
    pub addrs: Vec<SocketAddr>,
    /// Its stderr: one line per request.
    pub log: LineLog,
}

impl Server {
    /// Starts `socksify-server ARGS` and waits for one `listening ADDR:PORT`
    /// line per `--listen` (one if none is given).
    pub fn start(args: &[&str]) -> Server {
        let listeners = args.iter().filter(|a| **a == "--listen" || a.starts_with("--listen=")).count().max(1);
        let mut child = Command::new(server_path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn socksify-server");
        let log = LineLog::spawn_reader(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, addrs: Vec::new(), log };
        let deadline = Instant::now() + WAIT;
        while server.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "socksify-server {args:?} did not print {listeners} `listening` lines within {WAIT:?}; stderr:\n{}",
                    server.log.text()
                ),
            };
            let addr = line
                .strip_prefix("listening ")
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected stdout line from socksify-server: {line:?}"));
            server.addrs.push(addr);
        }
        server
    }

    /// The usual test server: 127.0.0.1 on a free port, outgoing connections
    /// from [`BUNDLED_OUT`], plus `extra` arguments.
    pub fn bundled(extra: &[&str]) -> Server {
        let mut args = vec!["--listen", "127.0.0.1:0", "--bind-out", "127.0.0.2"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// [`Server::bundled`], on a fixed `ADDR:PORT` (to restart a server
    /// where its clients expect it).
    pub fn bundled_on(listen: &str) -> Server {
        Server::start(&["--listen", listen, "--bind-out", "127.0.0.2"])
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// `socks5h://127.0.0.1:PORT` (the first listener).
    pub fn url(&self) -> String {
        format!("socks5h://{}", self.addr())
    }

    /// `socks5h://USER:PASS@127.0.0.1:PORT` with both parts percent-encoded.
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("socks5h://{}:{}@{}", percent_encode(user), percent_encode(pass), self.addr())
    }

    /// Waits for the request log line of a CONNECT to `dst` and returns it.
    pub fn wait_connect_line(&self, dst: SocketAddr) -> String {
        let dst = format!("dst={dst}");
        self.log
            .wait_line(&["cmd=connect", &dst])
            .unwrap_or_else(|| panic!("socksify-server never logged a CONNECT to {dst}; its log:\n{}", self.log.text()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------- Dante

/// A running Dante `danted` on 127.0.0.1 (free port), configured in a temp
/// dir, connecting out from [`DANTE_OUT`] (IPv4) and ::1 (IPv6). The whole
/// process group (Dante forks helpers) is killed on drop.
pub struct Dante {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Dante {
    /// No authentication.
    pub fn start() -> Dante {
        Dante::start_with(false, None)
    }

    /// `socksmethod: username`: clients must log in as [`DANTE_USER`].
    pub fn start_with_auth() -> Dante {
        let out = Command::new("id").arg(DANTE_USER).output().expect("run id");
        assert!(out.status.success(), "system user {DANTE_USER} is missing: scripts/test creates it for Dante's username method");
        Dante::start_with(true, None)
    }

    /// Starts danted, in a mount namespace of its own whose `/etc/hosts`
    /// is `hosts` when given.
    /// Without `bind` in its `socks pass` rule: Dante refuses every BIND.
    pub fn start_without_bind() -> Dante {
        Dante::start_configured(false, None, false)
    }

    fn start_with(auth: bool, hosts: Option<&str>) -> Dante {
        Dante::start_configured(auth, hosts, true)
    }

    fn start_configured(auth: bool, hosts: Option<&str>, bind: bool) -> Dante {
        let danted = require_program("danted", "dante-server");
        let unshare = hosts.map(|_| require_program("unshare", "util-linux"));
        let mut last_err = String::new();
        // The port is picked free and then handed to Dante: retry if another
        // process took it in between.
        for _ in 0..3 {
            let dir = TempDir::new("dante");
            let port = free_port(DIRECT);
            let log_path = dir.path().join("sockd.log");
            let conf = dir.path().join("sockd.conf");
            let pid_file = dir.path().join("sockd.pid");
            fs::write(&conf, dante_config(port, &log_path, auth, bind)).expect("write sockd.conf");
            let mut cmd = match (hosts, &unshare) {
                (Some(hosts), Some(unshare)) => {
                    let hosts_path = dir.path().join("hosts");
                    fs::write(&hosts_path, hosts).expect("write hosts");
                    // Private propagation: the bind mount is seen by danted alone.
                    let script = r#"mount --bind "$1" /etc/hosts && exec "$2" -f "$3" -N 1 -p "$4""#;
                    let mut cmd = Command::new(unshare);
                    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
                        .arg(&hosts_path)
                        .arg(&danted)
                        .arg(&conf)
                        .arg(&pid_file);
                    cmd
                }
                _ => {
                    let mut cmd = Command::new(&danted);
                    cmd.arg("-f").arg(&conf).args(["-N", "1", "-p"]).arg(&pid_file);
                    cmd
                }
            };
            let mut child =
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).spawn().expect("spawn danted");
            let addr = SocketAddr::new(DIRECT, port);
            if accepting(&mut child, addr) {
                return Dante { child, addr, log_path, _dir: dir };
            }
            kill_group(&mut child);
            last_err = fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("danted did not start; its log:\n{last_err}");
    }

    /// `socks5h://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("socks5h://{}", self.addr)
    }

    /// `socks5h://socksifytest:s3cret%20pw@127.0.0.1:PORT`.
    pub fn url_with_auth(&self) -> String {
        format!("socks5h://{}:{}@{}", percent_encode(DANTE_USER), percent_encode(DANTE_PASS), self.addr)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for Dante's `pass(...)` line of a CONNECT to `dst` (Dante writes
    /// addresses as `IP.PORT`) and returns it.
    pub fn wait_connect_line(&self, dst: SocketAddr) -> String {
        let dst = format!("{}.{}", dst.ip(), dst.port());
        wait_until(WAIT, || {
            self.log().lines().find(|l| l.contains("pass(") && l.contains("tcp/connect") && l.contains(&dst)).map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("danted never logged a CONNECT to {dst}; its log:\n{}", self.log()))
    }
}

impl Drop for Dante {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn dante_config(port: u16, log: &Path, auth: bool, bind: bool) -> String {
    let method = if auth { "username" } else { "none" };
    let bind = if bind { "bind " } else { "" };
    format!(
        "logoutput: {log}
internal: 127.0.0.1 port = {port}
external: {DANTE_OUT}
external: ::1
socksmethod: {method}
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 127.0.0.0/8 to: 0/0
  log: error
}}
client pass {{
  from: ::1/128 to: 0/0
  log: error
}}
socks pass {{
  from: 0/0 to: 0/0
  command: {bind}connect bindreply udpassociate udpreply
  log: connect disconnect error
}}
",
        log = log.display()
    )
}

// ---------------------------------------------------------------- either proxy

/// What a test needs from a SOCKS server, bundled or Dante, so one test
/// body can run against both.
pub trait Proxy {
    /// Short name for messages: `bundled` or `dante`.
    fn name(&self) -> &'static str;
    /// `socks5h://127.0.0.1:PORT`.
    fn url(&self) -> String;
    /// The source address of its outgoing connections to `dst`'s family.
    fn out_ip(&self, dst: IpAddr) -> IpAddr;
    /// Waits for the log line naming a CONNECT to `dst`, panics if none.
    fn wait_connect_line(&self, dst: SocketAddr) -> String;
    /// How many CONNECTs to `dst` it has logged so far.
    fn connect_count(&self, dst: SocketAddr) -> usize;
    /// Waits until it has logged `n` CONNECTs to `dst`; panics otherwise.
    fn wait_connect_count(&self, dst: SocketAddr, n: usize) {
        let seen = wait_until(WAIT, || (self.connect_count(dst) >= n).then_some(()));
        assert!(seen.is_some(), "{} logged {} CONNECTs to {dst}, expected {n}", self.name(), self.connect_count(dst));
    }
    /// A target on `ip` this proxy reaches: on this machine's loopback, or
    /// (OpenSSH) inside the network namespace only the proxy can reach.
    fn target_on(&self, ip: IpAddr, serve: Serve) -> TcpTarget {
        TcpTarget::start(ip, serve)
    }
    /// [`Proxy::target_on`] 127.0.0.1.
    fn target(&self, serve: Serve) -> TcpTarget {
        self.target_on(DIRECT, serve)
    }
}

impl Proxy for Server {
    fn name(&self) -> &'static str {
        "bundled"
    }
    fn url(&self) -> String {
        Server::url(self)
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        if dst.is_ipv4() {
            BUNDLED_OUT
        } else {
            LOCALHOST_V6
        }
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        Server::wait_connect_line(self, dst)
    }
    fn connect_count(&self, dst: SocketAddr) -> usize {
        let dst = format!("dst={dst} ");
        self.log.text().lines().filter(|l| l.contains("cmd=connect") && l.contains(&dst)).count()
    }
}

impl Proxy for Dante {
    fn name(&self) -> &'static str {
        "dante"
    }
    fn url(&self) -> String {
        Dante::url(self)
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        if dst.is_ipv4() {
            DANTE_OUT
        } else {
            LOCALHOST_V6
        }
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        Dante::wait_connect_line(self, dst)
    }
    fn connect_count(&self, dst: SocketAddr) -> usize {
        // Dante logs `tcp/connect [:` when a session opens, `]:` when it ends.
        let dst = format!(" {}.{}", dst.ip(), dst.port());
        self.log().lines().filter(|l| l.contains("pass(") && l.contains("tcp/connect [:") && l.ends_with(&dst)).count()
    }
}

// ---------------------------------------------------------------- targets

/// What a [`TcpTarget`] does with each connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Sends back every byte it reads, until the client closes.
    Echo,
    /// Reads one HTTP request head and answers `200 OK` with the body.
    Http(String),
}

/// One accepted connection, as the target saw it.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The peer address: the proxy's outgoing address when proxied.
    pub peer: SocketAddr,
    /// Every byte the client sent (complete once the connection ended).
    pub received: Arc<Mutex<Vec<u8>>>,
}

/// A TCP server on `ip`:0 in a thread that records every peer it accepts.
/// Stops accepting on drop; connection threads end with their clients (every
/// read has a timeout).
pub struct TcpTarget {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    stop: Arc<AtomicBool>,
    /// The network namespace (`/run/netns/NAME`) it listens in, if not ours.
    netns: Option<PathBuf>,
}

impl TcpTarget {
    pub fn start(ip: IpAddr, serve: Serve) -> TcpTarget {
        Self::start_in(None, ip, serve)
    }

    /// A target listening inside the network namespace `netns`
    /// (`/run/netns/NAME`): nothing in this one can reach it directly.
    pub fn start_in(netns: Option<&Path>, ip: IpAddr, serve: Serve) -> TcpTarget {
        Self::start_at(netns, SocketAddr::new(ip, 0), serve)
    }

    /// A target on a fixed `addr` (a sentinel where a well-known server
    /// would be, e.g. the default proxy 127.0.0.1:1080 inside a network
    /// namespace of the test's own, where the port is surely free).
    pub fn start_at(netns: Option<&Path>, addr: SocketAddr, serve: Serve) -> TcpTarget {
        let listener = in_netns(netns, || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind target {addr}: {e}")));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, stp) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
                        acc.lock().unwrap().push(Accepted { peer, received: received.clone() });
                        let serve = serve.clone();
                        thread::spawn(move || serve_one(stream, serve, received));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpTarget { addr, accepted, stop, netns: netns.map(Path::to_path_buf) }
    }

    /// Echo server on 127.0.0.1.
    pub fn echo() -> TcpTarget {
        TcpTarget::start(DIRECT, Serve::Echo)
    }

    /// HTTP server on 127.0.0.1 answering every request with `body`.
    pub fn http(body: &str) -> TcpTarget {
        TcpTarget::start(DIRECT, Serve::Http(body.to_owned()))
    }

    /// Every connection accepted so far. First makes sure the accept thread
    /// has caught up: it connects a sentinel of its own and waits until that
    /// is accepted (the backlog is first in, first out), so a connection a
    /// client made just before exiting is never missed.
    pub fn accepted(&self) -> Vec<Accepted> {
        let sentinel = in_netns(self.netns.as_deref(), || TcpStream::connect_timeout(&self.addr, WAIT).expect("connect sentinel to target"));
        let me = sentinel.local_addr().unwrap();
        let seen = wait_until(WAIT, || self.accepted.lock().unwrap().iter().any(|a| a.peer == me).then_some(()));
        assert!(seen.is_some(), "target {} did not accept its own sentinel connection", self.addr);
        let mut list = self.accepted.lock().unwrap();
        list.retain(|a| a.peer != me);
        list.clone()
    }

    /// Peer addresses of all connections accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.accepted().iter().map(|a| a.peer).collect()
    }

    /// Asserts that exactly `n` connections arrived, all from `from`.
    pub fn assert_peers(&self, n: usize, from: IpAddr) {
        let peers = self.peers();
        assert_eq!(peers.len(), n, "target {} expected {n} connections, saw {peers:?}", self.addr);
        for p in &peers {
            assert_eq!(p.ip(), from, "target {} saw a connection from {p}, expected {from} (the proxy's way out)", self.addr);
        }
    }

    /// Asserts that no connection ever arrived.
    pub fn assert_untouched(&self) {
        let peers = self.peers();
        assert!(peers.is_empty(), "target {} must not be contacted, but saw {peers:?}", self.addr);
    }

    /// What each accepted connection has sent so far, in accept order (an
    /// echo target records bytes before echoing them, an HTTP target the
    /// request before answering it).
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.accepted().iter().map(|a| a.received.lock().unwrap().clone()).collect()
    }
}

/// Runs `f` on a thread moved into the network namespace `netns` (sockets
/// it opens live there), or right here when `None`.
pub fn in_netns<R: Send>(netns: Option<&Path>, f: impl FnOnce() -> R + Send) -> R {
    let Some(path) = netns else { return f() };
    thread::scope(|s| {
        s.spawn(|| {
            let ns = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns on a namespace fd we just opened; affects this thread only.
            let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(mut stream: TcpStream, serve: Serve, received: Arc<Mutex<Vec<u8>>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
    let mut buf = [0u8; 16384];
    match serve {
        Serve::Echo => loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.lock().unwrap().extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        },
        Serve::Http(body) => {
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut r = received.lock().unwrap();
                        r.extend_from_slice(&buf[..n]);
                        if r.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let response =
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = stream.write_all(response.as_bytes());
            let _ = stream.shutdown(Shutdown::Write);
            // Drain until the client closes, so it never sees a reset.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// A "proxy" that accepts TCP connections and never answers: the shim's
/// handshake must time out. Holds the connections until dropped.
pub struct StallingProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl StallingProxy {
    pub fn start() -> StallingProxy {
        let listener = TcpListener::bind((DIRECT, 0)).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stp, acc) = (stop.clone(), accepted.clone());
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StallingProxy { addr, stop, accepted }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- client programs

/// What a client program did.
#[derive(Debug)]
pub struct Output {
    /// `None` when killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Output {
    /// Panics with everything the program printed unless it exited 0.
    pub fn assert_success(&self) -> &Output {
        assert!(self.code == Some(0), "{} failed:\n{self}", self.what);
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit={:?} timed_out={}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.timed_out, self.stdout, self.stderr)
    }
}

/// A client program to run, optionally under the shim, with a hard timeout.
pub struct Run {
    prog: OsString,
    args: Vec<OsString>,
    env: HashMap<String, Option<String>>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    dir: Option<PathBuf>,
}

impl Run {
    /// `prog` without the shim.
    pub fn plain(prog: impl Into<OsString>) -> Run {
        Run { prog: prog.into(), args: Vec::new(), env: HashMap::new(), stdin: None, timeout: Duration::from_secs(30), dir: None }
    }

    /// `prog` under the shim: `LD_PRELOAD=target/release/libsocksify.so`,
    /// `SOCKSIFY_PROXY=proxy`, `SOCKSIFY_NO_PROXY=""` (the default would
    /// bypass loopback, where all test targets live) and `SOCKSIFY_LOG=info`.
    pub fn shimmed(proxy: &str, prog: impl Into<OsString>) -> Run {
        Run::plain(prog)
            .env("LD_PRELOAD", shim_path().to_str().expect("utf-8 path"))
            .env("SOCKSIFY_PROXY", proxy)
            .env("SOCKSIFY_NO_PROXY", "")
            .env("SOCKSIFY_LOG", "info")
    }

    /// `python3 -c CODE` under the shim.
    pub fn python(proxy: &str, code: &str) -> Run {
        Run::shimmed(proxy, python3()).arg("-c").arg(code)
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Run {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Run {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.insert(k.to_owned(), Some(v.to_owned()));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Run {
        self.env.insert(k.to_owned(), None);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Run {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Run {
        self.timeout = t;
        self
    }

    /// Runs the program in `dir` instead of the test's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Run {
        self.dir = Some(dir.into());
        self
    }

    /// Runs the program in its own process group; kills the group when the
    /// timeout expires.
    pub fn run(self) -> Output {
        let what = format!("{} {:?}", self.prog.to_string_lossy(), self.args);
        let mut cmd = Command::new(&self.prog);
        cmd.args(&self.args).process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        // Variables a developer may have set must not leak into a test.
        for k in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "SOCKSIFY_PROXY",
            "SOCKSIFY_NO_PROXY",
            "SOCKSIFY_LOG",
            "SOCKSIFY_TIMEOUT_MS",
            "SOCKSIFY_PIPELINE",
            "SOCKSIFY_UDP",
            "SOCKSIFY_DNS",
            "SOCKSIFY_FAKE_NET",
            "LD_PRELOAD",
            "SOCKSIFY_LIB",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        if let Some(data) = self.stdin {
            let mut sin = child.stdin.take().unwrap();
            thread::spawn(move || {
                let _ = sin.write_all(&data);
            });
        }
        let out = LineLog::spawn_reader(child.stdout.take().unwrap());
        let err = LineLog::spawn_reader(child.stderr.take().unwrap());
        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                kill_group(&mut child);
                break child.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(10));
        };
        // Let the readers drain what the program wrote before it exited
        // (bounded: a grandchild holding the pipe must not hang the test).
        let _ = wait_until(Duration::from_secs(2), || Arc::strong_count(&out.0).eq(&1).then_some(()));
        let _ = wait_until(Duration::from_secs(2), || Arc::strong_count(&err.0).eq(&1).then_some(()));
        // Whatever the program left behind in its process group (a forked
        // child stuck somewhere) goes too: no test leaves processes.
        // SAFETY: plain syscall on the group made for this program alone.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        Output { code: status.code(), timed_out, stdout: out.text(), stderr: err.text(), what }
    }
}

// ---------------------------------------------------------------- names resolved by the proxy

impl Dante {
    /// Like [`Dante::start`], but `danted` runs in a mount namespace of its
    /// own whose `/etc/hosts` is `hosts`: the names in it resolve for the
    /// proxy only, never for the client (which must send them by name).
    pub fn start_with_hosts(hosts: &str) -> Dante {
        Dante::start_with(false, Some(hosts))
    }
}

// ---------------------------------------------------------------- building test programs

/// `gcc FLAGS OUT SRC`, which must succeed.
pub fn gcc(flags: &[&str], out: &Path, src: &Path) {
    let status = Command::new(require_program("gcc", "gcc")).args(flags).arg(out).arg(src).status().expect("run gcc");
    assert!(status.success(), "gcc {flags:?} {} failed (libc6-dev installed?)", src.display());
}

/// `go build` of a stdlib-only package (the test programs) with no network: the module cache,
/// build cache and home are in `work`; `cgo` picks static or cgo-linked.
pub fn go_build(pkg: &Path, out: &Path, work: &Path, cgo: bool) {
    let go = require_program("go", "golang-go");
    let o = Command::new(go)
        .args(["build", "-o"])
        .arg(out)
        .arg(".")
        .current_dir(pkg)
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .env("GOCACHE", work.join("gocache"))
        .env("GOPATH", work.join("gopath"))
        .env("HOME", work)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go build");
    assert!(o.status.success(), "go build failed: {}", String::from_utf8_lossy(&o.stderr));
}

pub fn is_static(path: &Path) -> bool {
    let out = Command::new("readelf").arg("-l").arg(path).output().expect("readelf (binutils)");
    !String::from_utf8_lossy(&out.stdout).contains("program interpreter")
}
