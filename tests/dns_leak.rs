//! No DNS leaks, measured. Each test makes a network namespace of its own
//! (lo only), whose `/etc/netns/NAME/resolv.conf` names a DNS stub the test
//! runs inside it on 127.0.0.1:53: the only resolver any program there can
//! reach, and it counts every query. The bundled server, the targets and
//! the clients (`ip netns exec NAME ...`) all live in the namespace.
//!
//! Remote mode (`socks5h://`): curl, wget, python, getent and reverse
//! look-ups all work, and the stub sees zero queries. Local mode
//! (`socks5://`, `SOCKSIFY_DNS=local`) and bypassed names resolve through
//! the stub. A control run without the shim shows the stub does count.
//! Namespaces and `/etc/netns` entries are removed by Drop guards, also
//! when a test fails. Needs root (CI runs as root).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use common::*;
use dns_cases::{is_fake, NAME};
use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A network namespace with lo up and a resolv.conf pointing at
/// 127.0.0.1; deleted (with its `/etc/netns` directory) on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> NetNs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sxdns{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let dir = ns.etc_dir();
        fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n").expect("write resolv.conf");
        ns
    }

    fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }

    /// Moves the calling thread into the namespace: sockets it opens and
    /// processes it spawns live there.
    fn enter(&self) {
        let f = fs::File::open(format!("/run/netns/{}", self.name)).expect("open /run/netns/NAME");
        // SAFETY: setns on a namespace fd we just opened; affects this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
    }

    /// Runs `body` on a thread inside the namespace; its panic is ours.
    fn run<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        thread::scope(|s| {
            match s
                .spawn(|| {
                    self.enter();
                    body()
                })
                .join()
            {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `prog` under the shim inside the namespace, with its resolv.conf.
    fn shimmed(&self, url: &str, prog: &str) -> Run {
        Run::shimmed(url, "ip").args(["netns", "exec", &self.name, prog])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args:?} failed (the leak test needs root): {}", String::from_utf8_lossy(&out.stderr));
}

/// A DNS server on 127.0.0.1:53 (UDP) of the calling thread's namespace:
/// answers A queries for the names it knows, NODATA for their other types,
/// NXDOMAIN for the rest, and records every query as `name TYPE`.
struct DnsStub {
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl DnsStub {
    fn start(answers: &[(&str, Ipv4Addr)]) -> DnsStub {
        let answers: HashMap<String, Ipv4Addr> = answers.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let socket = UdpSocket::bind("127.0.0.1:53").expect("bind the DNS stub on 127.0.0.1:53");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (queries.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Some((name, qtype, question_end)) = parse_query(&buf[..n]) else { continue };
                q.lock().unwrap().push(format!("{name} {qtype}"));
                let reply = answer(&buf[..question_end], answers.get(&name.to_ascii_lowercase()), qtype);
                let _ = socket.send_to(&reply, from);
            }
        });
        DnsStub { queries, stop }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (name, QTYPE, end of the question) of a one-question query.
fn parse_query(msg: &[u8]) -> Option<(String, u16, usize)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).into_owned());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn answer(query: &[u8], known: Option<&Ipv4Addr>, qtype: u16) -> Vec<u8> {
    let mut out = query.to_vec();
    let rcode = if known.is_some() { 0 } else { 3 };
    out[2] = 0x80 | (query[2] & 0x01); // QR, keep RD
    out[3] = 0x80 | rcode; // RA
    let answers = u16::from(known.is_some() && qtype == 1);
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..12].fill(0);
    if let (Some(ip), 1) = (known, answers) {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    out
}

#[test]
fn remote_mode_sends_no_dns_queries() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        // Control: without the shim, a look-up reaches the stub.
        let out = Run::plain("ip").args(["netns", "exec", &ns.name, "getent", "hosts", NAME]).run();
        assert_ne!(out.code, Some(0), "the stub does not know {NAME}:\n{out}");
        let control = stub.queries();
        assert!(control.iter().any(|q| q.starts_with(NAME)), "the stub must be the namespace's resolver, saw {control:?}");
        let before = control.len();

        let server = dns_cases::bundled_server();
        let wrap = |url: &str, prog: &str| ns.shimmed(url, prog);
        dns_cases::curl(&server, &wrap);
        dns_cases::wget(&server, &wrap);
        dns_cases::python_create_connection(&server, &wrap);
        dns_cases::python_ipv6(&server, &wrap);
        dns_cases::round_trip(&server, &wrap);
        dns_cases::getent(&server.url(), &wrap);

        let leaked = stub.queries()[before..].to_vec();
        eprintln!("remote mode: the stub saw {} queries from the shimmed programs (control run: {})", leaked.len(), before);
        assert!(leaked.is_empty(), "remote mode leaked DNS queries: {leaked:?}");
    });
}

#[test]
fn local_mode_resolves_with_the_system_resolver() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let server = dns_cases::bundled_server();
        let local_url = server.url().replace("socks5h://", "socks5://");

        // socks5:// : the name is resolved here, the proxy gets an address.
        let body = token("dns-local");
        let target = TcpTarget::http(&body);
        let url = format!("http://{NAME}:{}/", target.addr.port());
        let out = ns.shimmed(&local_url, "curl").args(["-sS", "--max-time", "20", "-w", "\n%{remote_ip}", &url]).run();
        out.assert_success();
        let (page, ip) = out.stdout.rsplit_once('\n').unwrap();
        assert_eq!(page, body, "{out}");
        assert!(!is_fake(ip.parse().unwrap()), "local mode must not fake:\n{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr); // dst=127.0.0.1:PORT, an address
        let after_curl = stub.queries().len();
        assert!(after_curl > 0, "local mode resolves through the system resolver");

        // SOCKSIFY_DNS=local overrides socks5h://.
        let echo = TcpTarget::echo();
        let tok = token("dns-local-env");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_DNS", "local")
            .args(["-c", dns_cases::ECHO_BY_NAME, NAME, &echo.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        assert!(out.stdout.contains("peer 127.0.0.1") && out.stdout.contains("echo intact"), "{out}");
        echo.assert_peers(1, BUNDLED_OUT);
        let queries = stub.queries();
        eprintln!("local mode: the stub saw {} queries: {queries:?}", queries.len());
        assert!(queries.len() > after_curl, "SOCKSIFY_DNS=local resolves through the system resolver: {queries:?}");
        assert!(queries.iter().all(|q| q.starts_with(&format!("{NAME} "))), "only {NAME} was looked up: {queries:?}");
        assert!(!server.log.text().contains(&format!("dst={NAME}:")), "local mode never sends the name:\n{}", server.log.text());
    });
}

#[test]
fn bypassed_names_resolve_locally_and_connect_directly() {
    let ns = NetNs::create();
    ns.run(|| {
        let bypassed = "direct.local.test";
        let stub = DnsStub::start(&[(bypassed, Ipv4Addr::LOCALHOST)]);
        let server = dns_cases::bundled_server();
        let target = TcpTarget::echo();
        let tok = token("dns-bypass");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_NO_PROXY", ".local.test")
            .args(["-c", dns_cases::ECHO_BY_NAME, bypassed, &target.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        assert!(out.stdout.contains("peer 127.0.0.1") && out.stdout.contains("echo intact"), "{out}");
        target.assert_peers(1, DIRECT);
        assert!(!server.log.text().contains("cmd=connect"), "a bypassed name never reaches the proxy:\n{}", server.log.text());
        let queries = stub.queries();
        assert!(queries.iter().any(|q| q.starts_with(bypassed)), "a bypassed name is resolved by the system resolver: {queries:?}");

        // The same rule leaves other names to the proxy, without a query.
        let before = queries.len();
        let echo = TcpTarget::echo();
        let tok = token("dns-bypass-other");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_NO_PROXY", ".local.test")
            .args(["-c", dns_cases::ECHO_BY_NAME, NAME, &echo.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        echo.assert_peers(1, BUNDLED_OUT);
        let peer: IpAddr = out.stdout.lines().find_map(|l| l.strip_prefix("peer ")).unwrap().parse().unwrap();
        assert!(is_fake(peer), "{out}");
        assert_eq!(stub.queries()[before..], [] as [String; 0], "no query for a proxied name");
    });
}
