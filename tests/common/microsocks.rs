//! microsocks (Debian package `microsocks`), the small SOCKS5 server many
//! people run on a router or in a container: CONNECT only, no-auth or one
//! username/password (`-u`/`-P`), and it reads each message with a single
//! `recv`, dropping whatever else came in the same buffer. That is why the
//! shim's handshake is lock-step by default.
//!
//! It binds its outgoing connections to [`MICROSOCKS_OUT`] (`-b`), so a
//! target that sees that address proves the bytes went through it. It
//! keeps no log: the target's peer address is the whole proof.

use crate::common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// microsocks' `-b`: the source of its outgoing connections.
pub const MICROSOCKS_OUT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

pub struct Microsocks {
    child: Child,
    pub addr: SocketAddr,
    auth: Option<(String, String)>,
    _dir: TempDir,
}

impl Microsocks {
    /// No authentication.
    pub fn start() -> Microsocks {
        Self::start_with(None, None)
    }

    /// Clients must log in as `user`/`pass` (RFC 1929).
    pub fn start_with_auth(user: &str, pass: &str) -> Microsocks {
        Self::start_with(Some((user.to_owned(), pass.to_owned())), None)
    }

    /// In a mount namespace of its own whose `/etc/hosts` is `hosts`: the
    /// names in it resolve for the proxy only, never for the client.
    pub fn start_with_hosts(hosts: &str) -> Microsocks {
        Self::start_with(None, Some(hosts))
    }

    fn start_with(auth: Option<(String, String)>, hosts: Option<&str>) -> Microsocks {
        let microsocks = require_program("microsocks", "microsocks");
        let mut last_err = String::new();
        // The port is picked free and then handed over: retry if it was taken.
        for _ in 0..3 {
            let dir = TempDir::new("microsocks");
            let port = free_port(DIRECT);
            let mut args: Vec<String> =
                vec!["-i".into(), DIRECT.to_string(), "-p".into(), port.to_string(), "-b".into(), MICROSOCKS_OUT.to_string()];
            if let Some((u, p)) = &auth {
                args.extend(["-u".into(), u.clone(), "-P".into(), p.clone()]);
            }
            let mut cmd = match hosts {
                None => {
                    let mut cmd = Command::new(&microsocks);
                    cmd.args(&args);
                    cmd
                }
                Some(hosts) => {
                    let hosts_path = dir.path().join("hosts");
                    std::fs::write(&hosts_path, hosts).expect("write hosts");
                    // Private propagation: the bind mount is seen by microsocks alone.
                    let mut cmd = Command::new(require_program("unshare", "util-linux"));
                    cmd.args(["-m", "--propagation", "private", "sh", "-c", r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#, "sh"])
                        .arg(&hosts_path)
                        .arg(&microsocks)
                        .args(&args);
                    cmd
                }
            };
            let stderr = dir.path().join("stderr");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
                .process_group(0)
                .spawn()
                .expect("spawn microsocks");
            let addr = SocketAddr::new(DIRECT, port);
            if accepting(&mut child, addr) {
                return Microsocks { child, addr, auth, _dir: dir };
            }
            kill_group(&mut child);
            last_err = std::fs::read_to_string(&stderr).unwrap_or_default();
        }
        panic!("microsocks did not start: {last_err}");
    }

    /// The URL with the credentials it was started with (if any), and
    /// `tail` appended (`?pipeline=1`).
    pub fn url_with(&self, tail: &str) -> String {
        match &self.auth {
            None => format!("socks5h://{}{tail}", self.addr),
            Some((u, p)) => format!("socks5h://{}:{}@{}{tail}", percent_encode(u), percent_encode(p), self.addr),
        }
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Proxy for Microsocks {
    fn name(&self) -> &'static str {
        "microsocks"
    }
    fn url(&self) -> String {
        self.url_with("")
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(_) => MICROSOCKS_OUT,
            IpAddr::V6(_) => LOCALHOST_V6,
        }
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        format!("(microsocks keeps no log; the target saw {} for {dst})", self.out_ip(dst.ip()))
    }
    fn connect_count(&self, _dst: SocketAddr) -> usize {
        panic!("microsocks keeps no log to count CONNECTs in; count the target's peers from {MICROSOCKS_OUT} instead")
    }
    fn wait_connect_count(&self, _dst: SocketAddr, _n: usize) {
        // No log. Every case that calls this has already asserted that the
        // target saw all `n` connections come from MICROSOCKS_OUT, which
        // only microsocks binds to.
    }
}
