//! shadowsocks-libev (Debian's `shadowsocks-libev`): `ss-local` is the
//! SOCKS5 server on the user's machine (CONNECT, and UDP ASSOCIATE with
//! `-u`; no authentication), `ss-server` the far end it tunnels to,
//! encrypted (chacha20-ietf-poly1305), TCP and UDP.
//!
//! The test starts both. `ss-server` runs inside a network namespace of its
//! own ([`NetNs`]; with a mount namespace when it is given a hosts file)
//! where the targets listen: nothing on this side can reach them except
//! through it. `ss-local` runs here, on 127.0.0.1, and reaches `ss-server`
//! through a [`Bridge`]: a port of the namespace's loopback opened on this
//! side, for TCP and UDP, run by the test itself. Both log with `-v`:
//! `ss-server` names every destination it connects to (`connect to
//! HOST:PORT`) or sends a datagram to (`[udp] cache miss: HOST:PORT <->
//! ...`), `ss-local` every UDP ASSOCIATE it accepts and every datagram it
//! relays (`[udp] cache miss|hit: HOST:PORT <-> CLIENT`). No system file,
//! unit or port is used: the package's own service (port 8388 in the
//! system's namespace, when systemd starts it) is left alone.

use crate::common::*;
use crate::netns::NetNs;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// `ss-server`'s address inside its namespace (nothing else listens there).
const SERVER_PORT: u16 = 8388;
const PASSWORD: &str = "socksify-test";
const METHOD: &str = "chacha20-ietf-poly1305";

/// How to start the pair; `Options::default()` is what most users run:
/// UDP relay on (`-u`), shadowsocks' default buffer size.
#[derive(Default)]
pub struct Options<'a> {
    /// `ss-server` resolves names from this hosts file (in its own mount
    /// namespace): they resolve for the far side only, never for the client.
    pub hosts: Option<&'a str>,
    /// `ss-local` without `-u` (TCP only).
    pub no_udp: bool,
    /// `--mtu` for both ends: their UDP buffers are sized from it (without
    /// it, datagrams above about 2.7 kB are dropped).
    pub mtu: Option<u32>,
}

pub struct Shadowsocks {
    local: Child,
    server: Child,
    /// `ss-local`'s SOCKS5 listener (and, with `-u`, its UDP relay).
    pub addr: SocketAddr,
    /// `ss-server -v`'s output.
    pub server_log: LineLog,
    /// `ss-local -v`'s output.
    pub local_log: LineLog,
    _bridge: Bridge,
    _dir: TempDir,
    // Dropped last: ss-server and the targets live in it.
    ns: NetNs,
}

impl Shadowsocks {
    pub fn start() -> Shadowsocks {
        Self::start_with(Options::default())
    }

    /// [`Options::hosts`].
    pub fn start_with_hosts(hosts: &str) -> Shadowsocks {
        Self::start_with(Options { hosts: Some(hosts), ..Options::default() })
    }

    pub fn start_with(options: Options) -> Shadowsocks {
        let Options { hosts, no_udp, mtu } = options;
        let mtu: Vec<String> = mtu.map(|m| vec!["--mtu".to_owned(), m.to_string()]).unwrap_or_default();
        let ss_server = require_program("ss-server", "shadowsocks-libev");
        let ss_local = require_program("ss-local", "shadowsocks-libev");
        let ns = NetNs::create();
        let dir = TempDir::new("shadowsocks");
        let hosts_path = dir.path().join("hosts");
        std::fs::write(&hosts_path, hosts.unwrap_or("")).expect("write hosts");
        let script = r#"{ [ -z "$1" ] || mount --bind "$2" /etc/hosts; } && shift 2 && exec "$@""#;
        let (mut server, server_log) = spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
                .arg(if hosts.is_some() { "hosts" } else { "" })
                .arg(&hosts_path)
                .arg(&ss_server)
                .args(["-s", "127.0.0.1", "-p", &SERVER_PORT.to_string(), "-k", PASSWORD, "-m", METHOD, "-u", "-v"])
                .args(&mtu),
        );
        let listening = format!("udp server listening at 127.0.0.1:{SERVER_PORT}");
        if server_log.wait_line(&[&listening]).is_none() {
            kill_group(&mut server);
            panic!("ss-server did not start; its log:\n{}", server_log.text());
        }
        let bridge = Bridge::open(&ns.path(), SocketAddr::new(DIRECT, SERVER_PORT));
        // ss-local's port is picked free and then handed to it: retry if taken.
        let mut last_err = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::new(DIRECT, free_port(DIRECT));
            let (mut local, local_log) = spawn_logged(
                Command::new(&ss_local)
                    .args(["-s", &bridge.addr.ip().to_string(), "-p", &bridge.addr.port().to_string()])
                    .args(["-b", &addr.ip().to_string(), "-l", &addr.port().to_string(), "-k", PASSWORD, "-m", METHOD, "-v"])
                    .args(if no_udp { None } else { Some("-u") })
                    .args(&mtu),
            );
            if accepting(&mut local, addr) {
                return Shadowsocks { local, server, addr, server_log, local_log, _bridge: bridge, _dir: dir, ns };
            }
            kill_group(&mut local);
            last_err = local_log.text();
        }
        kill_group(&mut server);
        panic!("ss-local did not start: {last_err}\nss-server's log:\n{}", server_log.text());
    }

    /// `/run/netns/NAME`: where the targets must listen.
    pub fn netns_path(&self) -> PathBuf {
        self.ns.path()
    }

    /// `socks5h://127.0.0.1:PORT` and `tail` (`?pipeline=1`).
    pub fn url_with(&self, tail: &str) -> String {
        format!("socks5h://{}{tail}", self.addr)
    }

    /// ss-server's lines of a connection to `host:port`, as the client
    /// named it (an address, `[v6]`, or a name).
    pub fn connects_to(&self, host: &str, port: u16) -> Vec<String> {
        let wanted = format!("] connect to {host}:{port}");
        self.server_log.text().lines().filter(|l| l.ends_with(&wanted)).map(str::to_owned).collect()
    }

    /// Waits for ss-server's line of a connection to `host:port`.
    pub fn wait_connect(&self, host: &str, port: u16) -> String {
        wait_until(WAIT, || self.connects_to(host, port).into_iter().next()).unwrap_or_else(|| {
            panic!(
                "ss-server never logged a connection to {host}:{port}; its log:\n{}\nss-local:\n{}",
                self.server_log.text(),
                self.local_log.text()
            )
        })
    }

    /// ss-local's lines of the datagrams it relayed to `host:port` (one per
    /// datagram: the first `cache miss`, the others `cache hit`), where
    /// `host` is as the client named it (an address, IPv6 without
    /// brackets, or a name).
    pub fn datagrams_to(&self, host: &str, port: u16) -> Vec<String> {
        let wanted = [format!("[udp] cache miss: {host}:{port} <-> "), format!("[udp] cache hit: {host}:{port} <-> ")];
        self.local_log.text().lines().filter(|l| wanted.iter().any(|w| l.contains(w))).map(str::to_owned).collect()
    }

    /// Waits until ss-local has relayed `n` datagrams to `host:port`
    /// ([`Shadowsocks::datagrams_to`]) and ss-server has sent the first
    /// there; returns ss-server's line.
    pub fn wait_datagrams(&self, host: &str, port: u16, n: usize) -> String {
        let relayed = wait_until(WAIT, || (self.datagrams_to(host, port).len() >= n).then_some(()));
        assert!(
            relayed.is_some(),
            "ss-local relayed {:?} to {host}:{port}, expected {n} datagrams; its log:\n{}",
            self.datagrams_to(host, port),
            self.local_log.text()
        );
        let sent = format!("[udp] cache miss: {host}:{port} <-> ");
        self.server_log
            .wait_line(&[&sent])
            .unwrap_or_else(|| panic!("ss-server never logged a datagram to {host}:{port}; its log:\n{}", self.server_log.text()))
    }

    /// ss-local's `udp assc request accepted` lines: one per UDP ASSOCIATE.
    pub fn associations(&self) -> Vec<String> {
        self.local_log.text().lines().filter(|l| l.contains("udp assc request accepted")).map(str::to_owned).collect()
    }
}

/// Spawns `cmd` in a process group of its own, with one log of its stdout
/// and stderr (shadowsocks-libev logs to stdout, errors to stderr).
fn spawn_logged(cmd: &mut Command) -> (Child, LineLog) {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn().expect("spawn shadowsocks");
    let log = LineLog::spawn_reader(child.stdout.take().unwrap());
    log.also_read(child.stderr.take().unwrap());
    (child, log)
}

impl Drop for Shadowsocks {
    fn drop(&mut self) {
        kill_group(&mut self.local);
        kill_group(&mut self.server);
    }
}

impl Proxy for Shadowsocks {
    fn name(&self) -> &'static str {
        "shadowsocks"
    }
    fn url(&self) -> String {
        self.url_with("")
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        // ss-server's loopback inside the namespace, which nothing here can reach.
        match dst {
            IpAddr::V4(_) => DIRECT,
            IpAddr::V6(_) => LOCALHOST_V6,
        }
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        self.wait_connect(&url_host(dst.ip()), dst.port())
    }
    fn connect_count(&self, dst: SocketAddr) -> usize {
        self.connects_to(&url_host(dst.ip()), dst.port()).len()
    }
    fn target_on(&self, ip: IpAddr, serve: Serve) -> TcpTarget {
        TcpTarget::start_in(Some(&self.netns_path()), ip, serve)
    }
}

/// A port of a network namespace's loopback, opened on this side: TCP
/// connections and UDP datagrams to [`Bridge::addr`] (127.0.0.1 here) are
/// carried to `inner` (in the namespace), and what comes back to their
/// senders. It is how `ss-local` reaches `ss-server` (which speaks TCP and
/// UDP on one port) without an interface in this namespace. Its threads
/// stop when it is dropped: every read has a timeout or is shut down.
pub struct Bridge {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Both ends of every carried connection, shut down on drop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Bridge {
    pub fn open(netns: &Path, inner: SocketAddr) -> Bridge {
        // TCP and UDP on one port: bind both here, retry if the UDP port is taken.
        let (listener, udp) = (0..20)
            .find_map(|_| {
                let listener = TcpListener::bind((DIRECT, 0)).expect("bind bridge");
                let udp = UdpSocket::bind(listener.local_addr().unwrap()).ok()?;
                Some((listener, udp))
            })
            .expect("a port free for both TCP and UDP");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (st, list, ns) = (stop.clone(), streams.clone(), netns.to_path_buf());
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((outer, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                outer.set_nonblocking(false).unwrap();
                let Ok(inner) = in_netns(Some(&ns), || TcpStream::connect_timeout(&inner, WAIT)) else { continue };
                let mut l = list.lock().unwrap();
                l.extend([outer.try_clone().unwrap(), inner.try_clone().unwrap()]);
                drop(l);
                for (from, to) in [(outer.try_clone().unwrap(), inner.try_clone().unwrap()), (inner, outer)] {
                    thread::spawn(move || pipe(from, to));
                }
            }
        });
        let (st, ns) = (stop.clone(), netns.to_path_buf());
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let udp = Arc::new(udp);
        thread::spawn(move || {
            // One socket in the namespace per sender here, so replies find their way back.
            let mut inside: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else { continue };
                let sock = inside.entry(from).or_insert_with(|| {
                    let sock = in_netns(Some(&ns), || {
                        let s = UdpSocket::bind((DIRECT, 0)).expect("bind bridge socket in the namespace");
                        s.connect(inner).expect("connect bridge socket");
                        s
                    });
                    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let sock = Arc::new(sock);
                    let (back, outer, st) = (sock.clone(), udp.clone(), st.clone());
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !st.load(Ordering::Relaxed) {
                            if let Ok(n) = back.recv(&mut buf) {
                                let _ = outer.send_to(&buf[..n], from);
                            }
                        }
                    });
                    sock
                });
                let _ = sock.send(&buf[..n]);
            }
        });
        Bridge { addr, stop, streams }
    }
}

/// Copies `from` to `to` until end-of-file, then passes the FIN on.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
