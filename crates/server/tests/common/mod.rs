//! What the server's integration tests share: the real server binary under a
//! kill-on-drop guard, echo targets that record who reached them, and a
//! plain-socket SOCKS client. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `socksify-server`, killed when dropped.
pub struct Server {
    child: Child,
    pub addrs: Vec<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with `args` (add `--listen` yourself, or get
    /// `127.0.0.1:0`) and waits for its `listening` lines.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(server_command(None), args)
    }

    /// Like [`Server::start`], with the soft limit on open files at `soft`
    /// (the hard one at 4096) when the server process starts.
    pub fn start_with_nofile(soft: u64, args: &[&str]) -> Server {
        use std::os::unix::process::CommandExt;
        let mut command = server_command(None);
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: soft, rlim_max: 4096 };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Server::start_with(command, args)
    }

    /// Like [`Server::start`], inside the network namespace `ns`.
    pub fn start_in(ns: &NetNs, args: &[&str]) -> Server {
        Server::start_with(server_command(Some(ns)), args)
    }

    fn start_with(mut command: Command, args: &[&str]) -> Server {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        let listeners = args.iter().filter(|a| *a == "--listen").count();
        let mut child =
            command.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn socksify-server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child, addrs: Vec::new(), log };
        for _ in 0..listeners {
            let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no `listening` line; stderr: {:?}", server.log_lines()));
            let addr = line.strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected stdout line {line:?}"));
            server.addrs.push(addr.parse().expect("listening ADDR:PORT"));
        }
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log_lines().into_iter().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l;
            }
            assert!(Instant::now() < end, "no log line with {parts:?}; log: {:#?}", self.log_lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The server binary, run inside `ns` when given (`ip netns exec` execs
/// it, so the child is the server itself).
fn server_command(ns: Option<&NetNs>) -> Command {
    let bin = env!("CARGO_BIN_EXE_socksify-server");
    match ns {
        None => Command::new(bin),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, bin]);
            c
        }
    }
}

/// How a server run that must not start ended: its exit status, stdout and
/// stderr; `None` if it was still running after [`WAIT`] (then it is killed).
pub fn run_to_exit(ns: Option<&NetNs>, args: &[&str]) -> Option<(std::process::ExitStatus, String, String)> {
    let mut child = server_command(ns)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socksify-server");
    let end = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut out = String::new();
            let mut err = String::new();
            let _ = child.stdout.take().expect("stdout").read_to_string(&mut out);
            let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
            return Some((status, out, err));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace of the test's own, with `lo` up and also carrying
/// `addr/24` (an address beyond loopback); deleted on drop. Needs root (CI is).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn with_address(addr: &str) -> NetNs {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sxsrv{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        // On `lo` itself: no dummy/veth kernel module needed.
        ip(&["-n", &ns.name, "addr", "add", &format!("{addr}/24"), "dev", "lo"]);
        ns
    }

    /// Runs `body` on a thread inside the namespace: sockets it opens live
    /// there (and keep living there when handed to other threads).
    pub fn run<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        use std::os::fd::AsRawFd;
        std::thread::scope(|s| {
            let joined = s
                .spawn(|| {
                    let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open /run/netns/NAME");
                    // SAFETY: setns on a namespace fd we just opened; affects this thread only.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
                    body()
                })
                .join();
            joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args:?} failed (network namespaces need root): {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server that records the peer address of each connection.
pub struct TcpEcho {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TcpEcho {
    pub fn start(bind: &str) -> TcpEcho {
        TcpEcho::serve(TcpListener::bind(bind).expect("bind echo"))
    }

    /// Echoes on a listener the caller bound.
    pub fn serve(listener: TcpListener) -> TcpEcho {
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if let Ok(p) = conn.peer_addr() {
                    seen.lock().unwrap().push(p);
                }
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(WAIT));
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TcpEcho { addr, peers }
    }

    pub fn peer_ips(&self) -> Vec<std::net::IpAddr> {
        self.peers.lock().unwrap().iter().map(|p| p.ip()).collect()
    }
}

/// Datagrams a UDP echo received: (source, payload), in arrival order.
pub type Datagrams = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP echo server that records every datagram's source and payload.
pub struct UdpEcho {
    pub addr: SocketAddr,
    pub seen: Datagrams,
}

impl UdpEcho {
    pub fn start(bind: &str) -> UdpEcho {
        let sock = UdpSocket::bind(bind).expect("bind udp echo");
        let addr = sock.local_addr().unwrap();
        let seen: Datagrams = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                log.lock().unwrap().push((from, buf[..n].to_vec()));
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        UdpEcho { addr, seen }
    }
}

/// A connection to the server with read/write timeouts set.
pub fn dial(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, WAIT).expect("connect to server");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read from server");
    buf
}

/// ATYP + address + port bytes of a SocketAddr.
pub fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        SocketAddr::V4(v4) => {
            out.push(1);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(4);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
    out
}

/// ATYP 3 + name + port bytes.
pub fn name_bytes(name: &str, port: u16) -> Vec<u8> {
    let mut out = vec![3, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// Reads a SOCKS5 reply; returns (code, bound address bytes after ATYP).
pub fn read_reply5(s: &mut TcpStream) -> (u8, Option<SocketAddr>) {
    let head = read_exact(s, 4);
    assert_eq!(head[0], 5, "reply version");
    let bound = match head[3] {
        1 => {
            let b = read_exact(s, 6);
            Some(SocketAddr::from(([b[0], b[1], b[2], b[3]], u16::from_be_bytes([b[4], b[5]]))))
        }
        4 => {
            let b = read_exact(s, 18);
            let ip: [u8; 16] = b[..16].try_into().unwrap();
            Some(SocketAddr::from((ip, u16::from_be_bytes([b[16], b[17]]))))
        }
        other => panic!("unexpected ATYP {other} in reply"),
    };
    (head[1], bound)
}

/// No-auth greeting, then `cmd` to `dst` (already encoded); returns the reply.
pub fn request5(server: SocketAddr, cmd: u8, dst: &[u8]) -> (TcpStream, u8, Option<SocketAddr>) {
    let mut s = dial(server);
    s.write_all(&[5, 1, 0]).unwrap();
    assert_eq!(read_exact(&mut s, 2), [5, 0]);
    let mut req = vec![5, cmd, 0];
    req.extend_from_slice(dst);
    s.write_all(&req).unwrap();
    let (code, bound) = read_reply5(&mut s);
    (s, code, bound)
}

/// Sends `msg` through an established stream and expects it echoed back.
pub fn echo_through(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    assert_eq!(read_exact(s, msg.len()), msg);
}

/// True once the server closed `s` (EOF or reset), false if it stayed open
/// for the whole bounded wait.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// A free port that nothing listens on (bound once, then released).
pub fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
