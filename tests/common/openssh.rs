//! OpenSSH dynamic forwarding, `ssh -N -D 127.0.0.1:PORT`, the SOCKS proxy
//! of everyone who has an SSH account somewhere: SOCKS4, SOCKS4a and
//! SOCKS5 without authentication, CONNECT only.
//!
//! The test starts its own `sshd` with a throw-away host key and client key,
//! inside a network namespace of its own ([`NetNs`]) and a mount namespace
//! (a tmpfs `/run` for sshd's privilege-separation directory, and
//! optionally a hosts file): no system file is touched. The `ssh` client
//! runs here and reaches that sshd through `ip netns exec NS nc` as its
//! `ProxyCommand`; its `-D` listener is on this machine's 127.0.0.1. The
//! targets listen inside the namespace, where nothing on this side can
//! reach them except through sshd: a target that sees a connection proves
//! the path. sshd's debug log names every forwarded destination.

use crate::common::*;
use crate::netns::NetNs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct OpenSsh {
    sshd: Child,
    ssh: Child,
    /// The `-D` listener.
    pub addr: SocketAddr,
    /// sshd's stderr (`-e`, LogLevel DEBUG1).
    pub log: LineLog,
    ssh_log: LineLog,
    _dir: TempDir,
    // Dropped last: the processes above live in it.
    ns: NetNs,
}

impl OpenSsh {
    pub fn start() -> OpenSsh {
        Self::start_with(None)
    }

    /// sshd resolves names from `hosts` (in its own mount namespace): they
    /// resolve for the proxy only, never for the client.
    pub fn start_with_hosts(hosts: &str) -> OpenSsh {
        Self::start_with(Some(hosts))
    }

    fn start_with(hosts: Option<&str>) -> OpenSsh {
        let sshd_bin = require_program("sshd", "openssh-server");
        let ssh_bin = require_program("ssh", "openssh-client");
        let keygen = require_program("ssh-keygen", "openssh-client");
        let ns = NetNs::create();
        let dir = TempDir::new("openssh");
        let path = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key"] {
            let out = Command::new(&keygen).args(["-q", "-t", "ed25519", "-N", "", "-C", "socksify-test", "-f"]).arg(path(key)).output();
            let out = out.expect("run ssh-keygen");
            assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).expect("write authorized_keys");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("run id").stdout).unwrap().trim().to_owned();
        let config = format!(
            "Port 22
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {pid}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowUsers {user}
LogLevel DEBUG1
",
            host_key = path("host_key").display(),
            authorized = path("authorized_keys").display(),
            pid = path("sshd.pid").display(),
        );
        std::fs::write(path("sshd_config"), config).expect("write sshd_config");
        let hosts_path = path("hosts");
        std::fs::write(&hosts_path, hosts.unwrap_or("")).expect("write hosts");
        // sshd wants /run/sshd; a tmpfs /run of its own mount namespace has it.
        let script = r#"mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd &&
            { [ -z "$1" ] || mount --bind "$2" /etc/hosts; } && exec "$3" -D -e -f "$4""#;
        let mut sshd = Command::new("ip")
            .args(["netns", "exec", &ns.name, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(if hosts.is_some() { "hosts" } else { "" })
            .arg(&hosts_path)
            .arg(&sshd_bin)
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn sshd");
        let log = LineLog::spawn_reader(sshd.stderr.take().unwrap());
        if log.wait_line(&["Server listening on 127.0.0.1 port 22"]).is_none() {
            kill_group(&mut sshd);
            panic!("sshd did not start; its log:\n{}", log.text());
        }
        // The -D port is picked free and then handed to ssh: retry if taken.
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port(DIRECT);
            let addr = SocketAddr::new(DIRECT, port);
            let mut ssh = Command::new(&ssh_bin)
                .args(["-F", "/dev/null", "-N", "-D", &addr.to_string(), "-i"])
                .arg(path("client_key"))
                .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
                .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"])
                .arg("-o")
                .arg(format!("ProxyCommand=ip netns exec {} nc 127.0.0.1 22", ns.name))
                .args(["-l", &user, "sshd-in-namespace"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .expect("spawn ssh");
            let ssh_log = LineLog::spawn_reader(ssh.stderr.take().unwrap());
            if accepting(&mut ssh, addr) {
                return OpenSsh { sshd, ssh, addr, log, ssh_log, _dir: dir, ns };
            }
            kill_group(&mut ssh);
            last_err = ssh_log.text();
        }
        kill_group(&mut sshd);
        panic!("ssh -D did not start: {last_err}\nsshd's log:\n{}", log.text());
    }

    /// `/run/netns/NAME`: where the targets must listen.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns.name))
    }

    /// `SCHEME://127.0.0.1:PORT` (`socks4`, `socks4a`, `socks5`, `socks5h`).
    pub fn url_as(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// sshd's debug lines for forwarded connections to `host` port `port`.
    pub fn forwards_to(&self, host: &str, port: u16) -> Vec<String> {
        let target = format!("target {host} port {port}");
        self.log.text().lines().filter(|l| l.contains("server_request_direct_tcpip") && l.ends_with(&target)).map(str::to_owned).collect()
    }

    /// Waits for sshd's log of a forward to `host` port `port`.
    pub fn wait_forward(&self, host: &str, port: u16) -> String {
        wait_until(WAIT, || self.forwards_to(host, port).into_iter().next()).unwrap_or_else(|| {
            panic!("sshd never logged a forward to {host} port {port}; its log:\n{}\nssh:\n{}", self.log.text(), self.ssh_log.text())
        })
    }
}

impl Drop for OpenSsh {
    fn drop(&mut self) {
        kill_group(&mut self.ssh);
        kill_group(&mut self.sshd);
    }
}

impl Proxy for OpenSsh {
    fn name(&self) -> &'static str {
        "openssh"
    }
    fn url(&self) -> String {
        self.url_as("socks5h")
    }
    fn out_ip(&self, dst: IpAddr) -> IpAddr {
        // sshd's loopback inside the namespace, which nothing here can reach.
        match dst {
            IpAddr::V4(_) => DIRECT,
            IpAddr::V6(_) => LOCALHOST_V6,
        }
    }
    fn wait_connect_line(&self, dst: SocketAddr) -> String {
        self.wait_forward(&dst.ip().to_string(), dst.port())
    }
    fn connect_count(&self, dst: SocketAddr) -> usize {
        self.forwards_to(&dst.ip().to_string(), dst.port()).len()
    }
    fn target_on(&self, ip: IpAddr, serve: Serve) -> TcpTarget {
        TcpTarget::start_in(Some(&self.netns_path()), ip, serve)
    }
}
