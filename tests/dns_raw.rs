//! The resolver calls that bypass `getaddrinfo` do not leak either:
//! glibc's `getaddrinfo_a` and the raw `res_query` family run glibc's own
//! resolver, whose sockets our hooks never see. The C program
//! `tests/programs/raw_dns.c` calls `getaddrinfo_a` (GAI_WAIT, then
//! GAI_NOWAIT with a SIGEV_SIGNAL notification and `gai_suspend`) and
//! `res_query`, inside a network namespace whose only resolver is a DNS
//! stub that counts queries (the set-up of `tests/dns_leak.rs`).
//!
//! Remote mode: `getaddrinfo_a` gives fake addresses, `res_query` fails,
//! and the stub sees zero queries. Local mode (`SOCKSIFY_DNS=local`): the
//! same program resolves through the stub, which proves the stub counts.
//! Needs root (CI runs as root).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use common::*;
use dns_cases::is_fake;
use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const NAMES: [&str; 3] = ["gai-wait.raw.test", "gai-nowait.raw.test", "res-query.raw.test"];
/// glibc's `EAI_ALLDONE`: `gai_suspend` of a list with nothing in progress.
const EAI_ALLDONE: &str = "-103";
const NO_RECOVERY: &str = "3";
const ECONNREFUSED: &str = "111";

/// A network namespace with lo up and a resolv.conf pointing at
/// 127.0.0.1; deleted (with its `/etc/netns` directory) on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> NetNs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sxraw{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let dir = ns.etc_dir();
        fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n").expect("write resolv.conf");
        ns
    }

    fn etc_dir(&self) -> PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }

    /// Runs `body` on a thread inside the namespace; its panic is ours.
    fn run<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        thread::scope(|s| {
            match s
                .spawn(|| {
                    let f = fs::File::open(format!("/run/netns/{}", self.name)).expect("open /run/netns/NAME");
                    // SAFETY: setns on a namespace fd we just opened; affects this thread only.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
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
    fn shimmed(&self, url: &str, prog: &std::path::Path) -> Run {
        Run::shimmed(url, "ip").args(["netns", "exec", &self.name]).arg(prog)
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

/// `tests/programs/raw_dns.c`, built with gcc into `dir`.
fn build_program(dir: &TempDir) -> PathBuf {
    let exe = dir.path().join("raw_dns");
    let source = repo_root().join("tests/programs/raw_dns.c");
    // -lanl: getaddrinfo_a lives there before glibc 2.34; -lresolv: res_query.
    let built = Run::plain("gcc").args(["-O2", "-Wall", "-pthread", "-o"]).arg(&exe).arg(&source).args(["-lanl", "-lresolv"]).run();
    built.assert_success();
    exe
}

/// The `key=value` fields of the line of `out` that starts with `call `.
fn fields(out: &Output, call: &str) -> HashMap<String, String> {
    let line = out.stdout.lines().find(|l| l.starts_with(&format!("{call} "))).unwrap_or_else(|| panic!("no {call} line:\n{out}"));
    line.split_whitespace().skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn addr(f: &HashMap<String, String>) -> IpAddr {
    f["addr"].parse().unwrap_or_else(|_| panic!("no address in {f:?}"))
}

#[test]
fn getaddrinfo_a_and_res_query_send_no_dns_queries_in_remote_mode() {
    let dir = TempDir::new("raw-dns");
    let exe = build_program(&dir);
    let ns = NetNs::create();
    ns.run(|| {
        let known: Vec<(&str, Ipv4Addr)> = NAMES.iter().map(|n| (*n, Ipv4Addr::LOCALHOST)).collect();
        let stub = DnsStub::start(&known);
        // No proxy needs to run: faking a name needs none, and nothing connects.
        let url = "socks5h://127.0.0.1:1080";

        // Control: SOCKSIFY_DNS=local, the same program resolves through the stub.
        let out = ns.shimmed(url, &exe).env("SOCKSIFY_DNS", "local").args(NAMES).timeout(Duration::from_secs(60)).run();
        out.assert_success();
        let wait = fields(&out, "gai_wait");
        assert_eq!((wait["rc"].as_str(), wait["err"].as_str(), addr(&wait)), ("0", "0", IpAddr::from(Ipv4Addr::LOCALHOST)), "{out}");
        let nowait = fields(&out, "gai_nowait");
        assert_eq!((nowait["rc"].as_str(), nowait["err"].as_str(), addr(&nowait)), ("0", "0", IpAddr::from(Ipv4Addr::LOCALHOST)), "{out}");
        assert_eq!((nowait["signal"].as_str(), nowait["value"].as_str()), ("1", "42"), "glibc's own notification:\n{out}");
        let res = fields(&out, "res_query");
        assert!(res["rc"].parse::<i32>().unwrap() > 0, "local mode: res_query gets the stub's answer:\n{out}");
        let control = stub.queries();
        eprintln!("local mode: the stub saw {} queries: {control:?}", control.len());
        for name in NAMES {
            assert!(control.iter().any(|q| q.starts_with(&format!("{name} "))), "local mode looks {name} up through the stub: {control:?}");
        }
        let before = control.len();

        // Remote mode (socks5h://, the default): fake addresses, a refused res_query, no query.
        let out = ns.shimmed(url, &exe).args(NAMES).timeout(Duration::from_secs(60)).run();
        out.assert_success();
        let wait = fields(&out, "gai_wait");
        assert_eq!((wait["rc"].as_str(), wait["err"].as_str()), ("0", "0"), "{out}");
        assert!(is_fake(addr(&wait)), "getaddrinfo_a(GAI_WAIT) gives a fake address:\n{out}");
        let nowait = fields(&out, "gai_nowait");
        assert_eq!((nowait["rc"].as_str(), nowait["err"].as_str()), ("0", "0"), "{out}");
        assert!(["0", EAI_ALLDONE].contains(&nowait["suspend"].as_str()), "gai_suspend returns at once:\n{out}");
        assert!(is_fake(addr(&nowait)), "getaddrinfo_a(GAI_NOWAIT) gives a fake address:\n{out}");
        assert_ne!(addr(&wait), addr(&nowait), "two names, two fake addresses:\n{out}");
        assert_eq!((nowait["signal"].as_str(), nowait["value"].as_str()), ("1", "42"), "SIGEV_SIGNAL is honoured:\n{out}");
        let res = fields(&out, "res_query");
        assert_eq!((res["rc"].as_str(), res["h_errno"].as_str(), res["errno"].as_str()), ("-1", NO_RECOVERY, ECONNREFUSED), "{out}");
        assert!(out.stderr.contains("raw DNS queries are refused in remote DNS mode"), "the refusal is explained:\n{out}");
        let leaked = stub.queries()[before..].to_vec();
        eprintln!("remote mode: the stub saw {} queries from the shimmed program (local-mode control: {before})", leaked.len());
        assert!(leaked.is_empty(), "remote mode leaked DNS queries: {leaked:?}");
    });
}
