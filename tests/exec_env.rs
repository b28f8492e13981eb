//! Everything a program starts stays proxied, even a child started with a
//! cleared environment (`env -i`, python's `subprocess.run(..., env={})`,
//! `execle(..., empty)`, `posix_spawn(..., empty)`, a program that empties
//! its own environment first): the exec hooks give the child back
//! `LD_PRELOAD` and the configuration, and the child's curl reaches the
//! target through the bundled server (the target sees the proxy's outgoing
//! address, 127.0.0.2, never 127.0.0.1). A child that sets a `SOCKSIFY_*`
//! variable of its own keeps it. Name look-ups of such a child are proved
//! in a network namespace whose only nameserver counts queries.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
mod netns;

use common::*;
use netns::{DnsStub, NetNs};
use std::path::PathBuf;

/// `tests/programs/exec_cleared.c`, built once per test into `dir`.
fn exec_cleared(dir: &TempDir) -> PathBuf {
    let exe = dir.path().join("exec_cleared");
    Run::plain("gcc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(repo_root().join("tests/programs/exec_cleared.c"))
        .run()
        .assert_success();
    exe
}

fn curl() -> String {
    require_program("curl", "curl").to_str().unwrap().to_owned()
}

/// Runs `run` (a shimmed program that starts curl for `target`'s page in
/// a cleared environment); the page must arrive through the proxy.
fn assert_through_proxy(run: Run, target: &TcpTarget, body: &str) {
    let out = run.run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn env_i_and_python_env_empty_children_go_through_the_proxy() {
    let server = Server::bundled(&[]);
    let url = |t: &TcpTarget| format!("http://{}/", t.addr);
    let body = token("env-i");

    let target = TcpTarget::http(&body);
    assert_through_proxy(Run::shimmed(&server.url(), "env").args(["-i", &curl(), "-sS", &url(&target)]), &target, &body);

    let target = TcpTarget::http(&body);
    let code = format!("import subprocess, sys\nsys.exit(subprocess.run(['{}', '-sS', '{}'], env={{}}).returncode)", curl(), url(&target));
    assert_through_proxy(Run::python(&server.url(), &code), &target, &body);

    // A grandchild: a shell with a cleared environment starts another.
    let target = TcpTarget::http(&body);
    let script = format!("env -i /bin/sh -c 'env -i {} -sS {}'", curl(), url(&target));
    let out = Run::shimmed(&server.url(), "env").args(["-i", "/bin/sh", "-c", &script]).run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    assert_eq!(out.stderr.matches("lacked LD_PRELOAD").count(), 3, "each cleared exec is logged at info:\n{out}");
}

#[test]
fn every_exec_and_spawn_call_gives_the_child_the_shim_back() {
    let dir = TempDir::new("exec-cleared");
    let exe = exec_cleared(&dir);
    let server = Server::bundled(&[]);
    let body = token("exec");
    let modes = [
        "execve",
        "execvpe",
        "execle",
        "execl",
        "execlp",
        "execvp",
        "fexecve",
        "execveat",
        "syscall",
        "posix_spawn",
        "posix_spawnp",
        "vfork",
    ];
    for mode in modes {
        let target = TcpTarget::http(&body);
        let prog = if mode.ends_with('p') || mode == "execvpe" { "curl".to_owned() } else { curl() };
        let run = Run::shimmed(&server.url(), &exe).args([mode, &prog, "-sS", &format!("http://{}/", target.addr)]);
        let out = run.run();
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), body.as_str()), "{mode}:\n{out}");
        let peers = target.peers();
        assert!(peers.len() == 1 && peers[0].ip() == BUNDLED_OUT, "{mode}: the target saw {peers:?}, not one connection from the proxy");
    }
}

#[test]
fn a_program_that_empties_its_environment_keeps_its_proxy() {
    // The configuration is what the program was started with, not what
    // is left of its environment at its first connect.
    let server = Server::bundled(&[]);
    let target = TcpTarget::echo();
    let code = format!(
        "import os, socket\nos.environ.clear()\ns = socket.create_connection(('{}', {}), timeout=10)\ns.sendall(b'x')\nprint(s.recv(1).decode())",
        target.addr.ip(),
        target.addr.port()
    );
    let out = Run::python(&server.url(), &code).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "x", "{out}");
    target.assert_peers(1, BUNDLED_OUT);
}

#[test]
fn a_childs_own_socksify_variable_is_kept() {
    // The child names a bypass of its own: it goes direct, as it asked.
    let server = Server::bundled(&[]);
    let body = token("own");
    let target = TcpTarget::http(&body);
    let out = Run::shimmed(&server.url(), "env")
        .args(["-i", "SOCKSIFY_NO_PROXY=127.0.0.0/8", &curl(), "-sS", &format!("http://{}/", target.addr)])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    target.assert_peers(1, DIRECT);
}

#[test]
fn a_cleared_childs_name_look_ups_do_not_leak() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        // Control: the stub is this namespace's resolver and counts.
        let out = Run::plain("ip").args(["netns", "exec", &ns.name, "getent", "hosts", dns_cases::NAME]).run();
        assert_ne!(out.code, Some(0), "{out}");
        let before = stub.queries().len();
        assert!(before > 0, "the control look-up must reach the stub");

        let server = dns_cases::bundled_server();
        let out = ns.shimmed(&server.url(), "env").args(["-i", "getent", "hosts", dns_cases::NAME]).run();
        out.assert_success();
        let parts: Vec<&str> = out.stdout.split_whitespace().collect();
        assert!(parts.len() == 2 && dns_cases::is_fake(parts[0].parse().unwrap()), "a fake address for the name:\n{out}");
        let leaked = stub.queries()[before..].to_vec();
        assert!(leaked.is_empty(), "the env -i child sent DNS queries: {leaked:?}");
    });
}
