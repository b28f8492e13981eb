//! SOCKS BIND under the seccomp supervisor (`socksify --supervise`): a
//! static C client in active FTP mode (`tests/programs/supervise/ftpactive.c`:
//! listen on the control connection's address, port 0, advertise what
//! `getsockname` says, accept the data connection) against the FTP server
//! of the BIND tests, through the bundled server, in a network namespace of
//! its own (lo only). The FTP server records the far end of each data
//! connection and refuses a PORT address other than the control peer's:
//! the file arrives only if the client advertised the proxy's BIND listener
//! (127.0.0.2, the bundled server's `--bind-out`), and the data connection
//! came from there. The same through Dante (127.0.0.3), which also checks
//! that the peer is the one the BIND request named. Needs root, gcc,
//! python3-pyftpdlib and dante-server.

#[path = "common/bind_cases.rs"]
mod bind_cases;
mod common;
#[allow(dead_code)]
#[path = "common/netns.rs"]
mod netns;

use bind_cases::{BindProxy, FtpServer};
use common::*;
use netns::NetNs;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The static C client and the static Go client (`goclient ftpactive`).
struct Clients {
    _dir: TempDir,
    c: PathBuf,
    go: PathBuf,
}

fn clients() -> &'static Clients {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        let dir = TempDir::new("supervise-bind-programs");
        let c = dir.path().join("ftpactive");
        let src = repo_root().join("tests/programs/supervise");
        gcc(&["-static", "-O2", "-o"], &c, &src.join("ftpactive.c"));
        let go = dir.path().join("goclient");
        go_build(&src.join("goclient"), &go, dir.path(), false);
        Clients { _dir: dir, c, go }
    })
}

/// `prog` under the supervisor inside the namespace, proxying everything.
fn supervised(ns: &NetNs, url: &str, prog: impl AsRef<std::ffi::OsStr>) -> Run {
    ns.supervised(url, prog)
}

/// The C client fetches a file in active mode (`mode`: see ftpactive.c)
/// through the proxy `start` starts; asserts it came through the proxy's
/// BIND; the client's stderr.
fn active_download<P: BindProxy>(start: impl FnOnce() -> P + Send, mode: &str) -> String {
    active_download_with(start, |ftp| vec!["127.0.0.1".into(), ftp.port.to_string(), "file.txt".into(), mode.into()], &clients().c)
}

/// The same with the program `prog` and its arguments from `args`.
fn active_download_with<P: BindProxy>(start: impl FnOnce() -> P + Send, args: impl FnOnce(&FtpServer) -> Vec<String> + Send, prog: &PathBuf) -> String {
    let ns = NetNs::create();
    ns.run(|| {
        let server = start();
        let out = server.out_ip(DIRECT);
        let ftp = FtpServer::start();
        let tok = token("active-ftp");
        let body: String = (0..5000).map(|i| format!("{i:06} {tok}\n")).collect();
        std::fs::write(ftp.path("file.txt"), &body).unwrap();
        let run = supervised(&ns, &server.url(), prog).args(args(&ftp)).run();
        assert!(run.code == Some(0), "{run}\n{}", ftp.log());
        assert!(run.stdout == body, "the file's bytes, exactly ({} of {}):\n{}", run.stdout.len(), body.len(), run.stderr);
        // The client advertised where the proxy listened, and the data
        // connection came through there.
        let binds = server.bind_lines();
        assert_eq!(binds.len(), 1, "one BIND ({}): {binds:?}", server.name());
        let advertised = run.stderr.lines().find_map(|l| l.strip_prefix("advertised ")).expect("the client says what it advertised");
        let advertised: std::net::SocketAddr = advertised.parse().expect("IP:PORT");
        assert_eq!(advertised.ip(), out, "{run}");
        assert!(server.listened_on(&binds[0], advertised), "the proxy listened there: {binds:?}\n{run}");
        // The expected peer: the far end of the control connection.
        assert!(server.expects(&binds[0], &DIRECT.to_string()), "the BIND names the FTP server: {binds:?}");
        let data = ftp.data_peers();
        assert_eq!(data.len(), 1, "one data connection:\n{}", ftp.log());
        assert_eq!(data[0], advertised, "{}", ftp.log());
        for (control, verb) in ftp.commands() {
            assert_eq!(control.ip(), out, "{verb} came from {control}, not through the proxy");
        }
        // accept reports the peer (the FTP server), as the proxy named it.
        assert!(run.stderr.contains(&format!("accepted from {DIRECT}:")), "{run}");
        run.stderr
    })
}

#[test]
fn static_client_active_ftp_through_the_bundled_server() {
    active_download(|| Server::bundled(&[]), "plain");
}

/// Go's net package: `ListenTCP` (bind, listen, getsockname), `AcceptTCP`
/// (accept4 after the netpoller says the listener is readable).
#[test]
fn static_go_client_active_ftp_through_the_bundled_server() {
    active_download_with(|| Server::bundled(&[]), |ftp| vec!["ftpactive".into(), ftp.addr().to_string(), "file.txt".into()], &clients().go);
}

/// Dante checks that the peer is the one the BIND request named.
#[test]
fn static_client_active_ftp_through_dante() {
    active_download(Dante::start, "plain");
}

/// The address asked for before `listen`: the BIND runs then.
#[test]
fn getsockname_before_listen_runs_the_bind() {
    active_download(|| Server::bundled(&[]), "early");
}

/// A non-blocking listener: `EAGAIN` before the peer, `poll` says when it
/// came, the accepted socket is blocking (plain `accept`), and the spent
/// listener has nothing more (`EAGAIN`).
#[test]
fn non_blocking_accept_and_poll() {
    let stderr = active_download(|| Server::bundled(&[]), "poll");
    assert!(stderr.contains(&format!("early accept: errno {}\n", libc::EAGAIN)), "{stderr}");
    assert!(stderr.contains(&format!("second accept: errno {}\n", libc::EAGAIN)), "{stderr}");
    assert!(!stderr.contains("accepted socket is non-blocking"), "{stderr}");
}
