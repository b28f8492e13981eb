//! Children between `vfork` (or `posix_spawn`) and `exec` share their
//! parent's memory, and no fork handler runs for them: the fds they close
//! or `dup2` over are their own copies, and the parent's proxied sockets
//! must carry on untouched. Python's `subprocess` uses `vfork`.

mod common;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use std::time::Duration;
use udp_cases::UdpTarget;

/// A C program spawns children that `close_range`, `close`/`dup2`/`dup3`
/// and `closefrom` every inherited fd before `execve` (and, with
/// `posix_spawn`, file actions that do the same); after each kind the
/// parent's unconnected UDP socket still gets clean payloads from the real
/// source, its connected UDP socket's datagrams still arrive, its TCP
/// socket still reports the destination, and no fd (a control connection
/// opened again) was added.
#[test]
fn vfork_children_leave_the_parents_sockets_alone() {
    let dir = TempDir::new("vfork");
    let exe = dir.path().join("vfork_close");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/vfork_close.c")).run().assert_success();
    let server = Server::bundled(&[]);
    let echo = UdpTarget::echo(DIRECT);
    let tcp = TcpTarget::echo();
    let out = Run::shimmed(&server.url(), &exe)
        .args([DIRECT.to_string(), echo.addr.port().to_string(), tcp.addr.port().to_string()])
        .timeout(Duration::from_secs(90))
        .run();
    out.assert_success();
    let mut expected = String::from("before udp ok connected ok tcp 0 ok\n");
    for kind in ["posix_spawn", "vfork-close_range", "vfork-close-dup2", "vfork-closefrom"] {
        expected += &format!("after {kind} udp ok connected ok tcp ok fds +0\n");
    }
    assert_eq!(out.stdout, expected, "{out}");
    // Every datagram went through the proxy: two before, two after each kind.
    echo.assert_peers(10, BUNDLED_OUT);
    tcp.assert_peers(1, BUNDLED_OUT);
}

/// `subprocess.run` 20 times between a datagram sent and its reply read:
/// the reply is the payload (not the relay's SOCKS header), from the echo;
/// the connected socket's datagram arrives; `getpeername` is the
/// destination; the program holds no more fds than before.
#[test]
fn python_subprocess_leaves_the_parents_sockets_alone() {
    let server = Server::bundled(&[]);
    let echo = UdpTarget::echo(DIRECT);
    let tcp = TcpTarget::echo();
    let script = r#"
import os, socket, subprocess, sys
echo, tcp = ("127.0.0.1", int(sys.argv[1])), ("127.0.0.1", int(sys.argv[2]))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(10); c.connect(echo)
t = socket.create_connection(tcp, timeout=10)
def check(tag):
    u.sendto(tag.encode(), echo)
    got = u.recvfrom(1024)
    c.send(tag.encode())
    try:
        cgot = c.recv(1024)
    except socket.timeout:
        cgot = "lost"
    print(tag, "udp", got == (tag.encode(), echo) or got, "connected", cgot == tag.encode() or cgot, "tcp", t.getpeername() == tcp or t.getpeername())
check("before")
fds = len(os.listdir("/proc/self/fd"))
u.sendto(b"pending", echo)
for i in range(20):
    subprocess.run(["/bin/true"], check=True)
print("pending", u.recvfrom(1024) == (b"pending", echo))
check("after")
print("fds", len(os.listdir("/proc/self/fd")) - fds)
"#;
    let out = Run::python(&server.url(), script).args([echo.addr.port().to_string(), tcp.addr.port().to_string()]).run();
    out.assert_success();
    assert_eq!(
        out.stdout, "before udp True connected True tcp True\npending True\nafter udp True connected True tcp True\nfds 0\n",
        "{out}"
    );
    echo.assert_peers(5, BUNDLED_OUT);
    tcp.assert_peers(1, BUNDLED_OUT);
}
