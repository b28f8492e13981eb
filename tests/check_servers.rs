//! `socksify --check` against third-party servers: Dante (username/password,
//! UDP ASSOCIATE), microsocks (username/password, CONNECT only, drops bytes
//! sent ahead of their turn) and OpenSSH's `ssh -D` (no UDP). Each checked
//! CONNECT must reach a target that records the proxy's way out.

mod common;
#[path = "common/microsocks.rs"]
#[allow(dead_code)] // start_with_auth alone
mod microsocks;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone
mod netns;
#[path = "common/openssh.rs"]
#[allow(dead_code)] // start alone
mod openssh;

use common::*;
use microsocks::{Microsocks, MICROSOCKS_OUT};
use openssh::OpenSsh;

/// `scripts/socksify -x URL --check DEST` with a short timeout.
fn check(url: &str, dest: &TcpTarget) -> Output {
    Run::plain(wrapper_path()).env("SOCKSIFY_TIMEOUT_MS", "2000").args(["-x", url, "--check", &dest.addr.to_string()]).run()
}

fn last_line(out: &Output) -> &str {
    out.stdout.lines().last().unwrap_or_default()
}

fn step<'a>(out: &'a Output, name: &str) -> &'a str {
    out.stdout.lines().find(|l| l.starts_with("  ") && l.split_whitespace().next() == Some(name)).unwrap_or_default()
}

#[test]
fn dante_with_a_password_works_and_offers_udp() {
    let dante = Dante::start_with_auth();
    let target = TcpTarget::echo();
    let out = check(&dante.url_with_auth(), &target);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(step(&out, "auth").contains("accepted"), "{out}");
    assert!(step(&out, "udp").contains("ok   UDP ASSOCIATE offered"), "{out}");
    target.assert_peers(1, DANTE_OUT);
    dante.wait_connect_line(target.addr);
}

#[test]
fn dante_explains_a_wrong_password_in_one_line() {
    let dante = Dante::start_with_auth();
    let target = TcpTarget::echo();
    let url = format!("socks5h://{}:wrong@{}", DANTE_USER, dante.addr);
    let out = check(&url, &target);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(last_line(&out).starts_with("FAIL: wrong user name or password:"), "{out}");
    target.assert_untouched();
}

#[test]
fn microsocks_works_lock_step_and_fails_pipelined() {
    let proxy = Microsocks::start_with_auth("alice", "pw");
    let target = TcpTarget::echo();
    let out = check(&proxy.url(), &target);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(step(&out, "udp").contains("--   UDP ASSOCIATE not offered"), "{out}");
    target.assert_peers(1, MICROSOCKS_OUT);
    // It drops what arrives with the greeting: the check, sending the first
    // flight at once as the library would with ?pipeline=1, says it fails.
    let out = check(&proxy.url_with("?pipeline=1"), &target);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(step(&out, "flight").contains("pipelined"), "{out}");
    assert!(last_line(&out).starts_with("FAIL: ") && last_line(&out).contains("no answer within 2000 ms"), "{out}");
    target.assert_peers(1, MICROSOCKS_OUT);
    // And a wrong password.
    let out = check(&format!("socks5h://alice:wrong@{}", proxy.addr), &target);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(last_line(&out).starts_with("FAIL: wrong user name or password:"), "{out}");
}

#[test]
fn ssh_dynamic_forwarding_works_without_udp() {
    let ssh = OpenSsh::start();
    let target = ssh.target(Serve::Echo);
    let out = check(&ssh.url(), &target);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(step(&out, "udp").contains("--   UDP ASSOCIATE not offered"), "{out}");
    assert!(last_line(&out).contains("UDP ASSOCIATE is not offered: UDP programs will get an error"), "{out}");
    // The target lives in sshd's network namespace: only sshd reaches it.
    assert_eq!(target.peers().len(), 1, "{out}");
    ssh.wait_forward(&target.addr.ip().to_string(), target.addr.port());
    // SOCKS4 through ssh -D too.
    let out = check(&ssh.url_as("socks4"), &target);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(target.peers().len(), 2, "{out}");
}
