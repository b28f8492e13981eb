//! A real Tor client (Debian's `tor`) and its SocksPort, offline.
//!
//! Each [`Tor`] runs `tor` inside a network namespace of its own
//! ([`NetNs`]: loopback only), so it can reach no relay and nothing it
//! tries leaves the machine. Its SocksPort is 127.0.0.1:[`SOCKS_PORT`] of
//! that namespace; the test runs its client programs there too
//! ([`Tor::run`], [`Tor::shimmed`]), next to a counting nameserver and the
//! targets where a direct connection would land. The package's own
//! configuration and service are not used: `--defaults-torrc /dev/null`,
//! a torrc and DataDirectory in a temporary directory.
//!
//! Offline, Tor still speaks SOCKS: it accepts the handshake (no-auth, or
//! any username/password, which only selects a circuit for isolation),
//! logs the destination each client asked for (`SafeLogging 0`, the `app`
//! log domain at debug), and answers:
//! - an internal address (loopback, RFC 1918, `::1`): SOCKS5 reply 1
//!   (general failure) at once (`ClientRejectInternalAddresses`, on by
//!   default); SOCKS4 reply 91;
//! - any other destination: after `SocksTimeout` seconds without a circuit,
//!   reply 6 (TTL expired) or 1 (general failure), whichever of Tor's two
//!   checks (its once-a-second sweep, or a retry to attach the stream)
//!   notices first; SOCKS4 reply 91;
//! - UDP ASSOCIATE and BIND: reply 7 (command not supported).

use crate::common::*;
use crate::netns::NetNs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Tor's SocksPort, on 127.0.0.1 inside its namespace (each Tor has its own).
pub const SOCKS_PORT: u16 = 9050;

pub struct Tor {
    child: Child,
    /// tor's log (stdout): notices, and the `app` domain at debug.
    pub log: LineLog,
    _dir: TempDir,
    // Dropped last: tor lives in it.
    pub ns: NetNs,
}

impl Tor {
    /// Tor with `SocksTimeout 1`: a stream it cannot attach to a circuit
    /// (all of them, offline) is answered within about a second or two.
    pub fn start() -> Tor {
        Self::start_with(Some(1))
    }

    /// `socks_timeout`: Tor's `SocksTimeout` in seconds; `None` keeps Tor's
    /// default (two minutes), what a user has.
    pub fn start_with(socks_timeout: Option<u32>) -> Tor {
        let tor = require_program("tor", "tor");
        let ns = NetNs::create();
        let dir = TempDir::new("tor");
        let timeout = socks_timeout.map(|s| format!("SocksTimeout {s}\n")).unwrap_or_default();
        let torrc = format!(
            "DataDirectory {data}
SocksPort 127.0.0.1:{SOCKS_PORT}
{timeout}SafeLogging 0
Log [app]debug [*]notice stdout
AvoidDiskWrites 1
RunAsDaemon 0
",
            data = dir.path().join("data").display(),
        );
        let torrc_path = dir.path().join("torrc");
        std::fs::write(&torrc_path, torrc).expect("write torrc");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(&tor)
            .args(["--defaults-torrc", "/dev/null", "-f"])
            .arg(&torrc_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn tor");
        // Its first lines go to stdout before the torrc is read, the rest
        // because the torrc says so: one stream.
        let log = LineLog::spawn_reader(child.stdout.take().unwrap());
        let ready = format!("Opened Socks listener connection (ready) on 127.0.0.1:{SOCKS_PORT}");
        if log.wait_line(&[&ready]).is_none() {
            kill_group(&mut child);
            panic!("tor did not open its SocksPort; its log:\n{}", log.text());
        }
        Tor { child, log, _dir: dir, ns }
    }

    /// `SCHEME://127.0.0.1:9050` (`socks5h`, `socks4a`, `socks4`, ...).
    pub fn url_as(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{SOCKS_PORT}")
    }

    /// `socks5h://127.0.0.1:9050`.
    pub fn url(&self) -> String {
        self.url_as("socks5h")
    }

    /// `/run/netns/NAME`: where targets must listen.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns.name))
    }

    /// Runs `body` on a thread inside Tor's namespace (programs it spawns,
    /// sockets it opens, a `DnsStub` it starts live there).
    pub fn run<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        self.ns.run(body)
    }

    /// `prog` under the shim with `url`, in Tor's namespace, with the
    /// namespace's resolv.conf (nameserver 127.0.0.1).
    pub fn shimmed(&self, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
        self.ns.shimmed(url, prog)
    }

    /// Tor's log lines `Client asked for DEST` (DEST as Tor prints it:
    /// `name:port`, `1.2.3.4:port`, `[::1]:port`).
    pub fn asked_for(&self, dest: &str) -> usize {
        let needle = format!("Client asked for {dest}");
        self.log.text().lines().filter(|l| l.ends_with(&needle)).count()
    }

    /// Waits until Tor has logged `n` requests for `dest`; panics otherwise.
    pub fn wait_asked_for(&self, dest: &str, n: usize) {
        let seen = wait_until(WAIT, || (self.asked_for(dest) >= n).then_some(()));
        assert!(seen.is_some(), "tor logged {} requests for {dest}, expected {n}; its log:\n{}", self.asked_for(dest), self.log.text());
    }

    /// Every `Client asked for` line: all the destinations Tor was asked for.
    pub fn all_asked(&self) -> Vec<String> {
        self.log.text().lines().filter_map(|l| l.split_once("Client asked for ").map(|(_, d)| d.to_owned())).collect()
    }

    /// How many SOCKS5 greetings Tor answered with `method` (0 no-auth, 2
    /// username/password).
    pub fn accepted_method(&self, method: u8) -> usize {
        let needle = format!("socks5: accepted method {method} ");
        self.log.text().lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Tor {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
