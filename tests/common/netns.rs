//! Network namespaces and a counting DNS stub, for the tests that prove
//! no DNS query leaves a program (`tests/dns_leak.rs`, `tests/dns_raw.rs`).

use crate::common::*;
use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A network namespace with lo up and a resolv.conf pointing at
/// 127.0.0.1; deleted (with its `/etc/netns` directory) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn create() -> NetNs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sxns{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let dir = ns.etc_dir();
        fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n").expect("write resolv.conf");
        ns
    }

    /// `/run/netns/NAME`, for [`in_netns`] and [`TcpTarget::start_in`].
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    pub fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }

    /// Moves the calling thread into the namespace: sockets it opens and
    /// processes it spawns live there.
    pub fn enter(&self) {
        let f = fs::File::open(self.path()).expect("open /run/netns/NAME");
        // SAFETY: setns on a namespace fd we just opened; affects this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
    }

    /// Runs `body` on a thread inside the namespace; its panic is ours.
    pub fn run<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
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
    pub fn shimmed(&self, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
        Run::shimmed(url, "ip").args(["netns", "exec", &self.name]).arg(prog.as_ref())
    }

    /// `prog` under the seccomp supervisor (`socksify-cli supervise`)
    /// inside the namespace, proxying everything through `url`.
    #[allow(dead_code)] // not every test binary that includes this file supervises
    pub fn supervised(&self, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
        Run::plain("ip")
            .args(["netns", "exec", &self.name])
            .arg(release_dir().join("socksify-cli"))
            .args(["supervise", "--"])
            .arg(prog.as_ref())
            .env("SOCKSIFY_PROXY", url)
            .env("SOCKSIFY_NO_PROXY", "")
            .env("SOCKSIFY_LOG", "info")
            .timeout(Duration::from_secs(120))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args:?} failed (the leak test needs root): {}", String::from_utf8_lossy(&out.stderr));
}

/// A DNS server on 127.0.0.1:53 (UDP and TCP) of the calling thread's
/// namespace: answers A queries for the names it knows, NODATA for their
/// other types, NXDOMAIN for the rest, and records every query as `name
/// TYPE` (`name TYPE tcp` over TCP).
pub struct DnsStub {
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl DnsStub {
    pub fn start(answers: &[(&str, Ipv4Addr)]) -> DnsStub {
        let answers: HashMap<String, Ipv4Addr> = answers.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let socket = UdpSocket::bind("127.0.0.1:53").expect("bind the DNS stub on 127.0.0.1:53");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:53").expect("bind the DNS stub on 127.0.0.1:53 (TCP)");
        listener.set_nonblocking(true).unwrap();
        let (q, st, known) = (queries.clone(), stop.clone(), answers.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Some((name, qtype, question_end)) = parse_query(&buf[..n]) else { continue };
                q.lock().unwrap().push(format!("{name} {qtype}"));
                let reply = answer(&buf[..question_end], known.get(&name.to_ascii_lowercase()), qtype);
                let _ = socket.send_to(&reply, from);
            }
        });
        let (q, st) = (queries.clone(), stop.clone());
        thread::spawn(move || {
            use std::io::{Read, Write};
            while !st.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                // Queries on one connection, each with its two-byte length.
                loop {
                    let mut len = [0u8; 2];
                    if conn.read_exact(&mut len).is_err() {
                        break;
                    }
                    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                    if conn.read_exact(&mut msg).is_err() {
                        break;
                    }
                    let Some((name, qtype, question_end)) = parse_query(&msg) else { break };
                    q.lock().unwrap().push(format!("{name} {qtype} tcp"));
                    let reply = answer(&msg[..question_end], answers.get(&name.to_ascii_lowercase()), qtype);
                    if conn.write_all(&[&(reply.len() as u16).to_be_bytes()[..], &reply].concat()).is_err() {
                        break;
                    }
                }
            }
        });
        DnsStub { queries, stop }
    }

    pub fn queries(&self) -> Vec<String> {
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
