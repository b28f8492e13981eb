//! Socket calls handed pointers that point nowhere: the kernel answers
//! `EFAULT`, and so must the shim's hooks, never a SIGSEGV inside the
//! program (`tests/programs/wild_pointers.c`): `connect`, `sendto`,
//! `recvfrom` (address and length), `recv`, `recvmsg`, `sendmsg` and
//! `getpeername` (address and length), on a proxied TCP connection and a UDP
//! socket with an association, with a pointer into the first page and one
//! into a page just unmapped; and, for the calls that write there, a
//! read-only page (readable: only the kernel's write check refuses it).

mod common;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use std::time::Duration;
use udp_cases::UdpTarget;

#[test]
fn bad_pointers_are_efault_never_a_crash() {
    let dir = TempDir::new("wild-pointers");
    let exe = dir.path().join("wild_pointers");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/wild_pointers.c")).run().assert_success();
    let server = Server::bundled(&[]);
    let echo = UdpTarget::echo(DIRECT);
    let tcp = TcpTarget::echo();
    let out = Run::shimmed(&server.url(), &exe)
        .args([DIRECT.to_string(), echo.addr.port().to_string(), tcp.addr.port().to_string()])
        .timeout(Duration::from_secs(60))
        .run();
    // What the kernel answers without the shim: every call EFAULT.
    let plain = Run::plain(&exe).args([DIRECT.to_string(), echo.addr.port().to_string(), tcp.addr.port().to_string()]).run();
    plain.assert_success();
    assert!(!plain.stdout.contains("succeeded"), "test setup: the kernel fails every call:\n{plain}");
    out.assert_success();
    assert_eq!(out.stdout, plain.stdout, "the shim answers as the kernel does");
    let calls = out.stdout.lines().filter(|l| l.ends_with(" EFAULT")).count();
    assert_eq!(calls, 2 * 10 + 2 + 4, "{out}");
    assert!(out.stdout.ends_with("udp after 5 still\nalive\n"), "{out}");
}
