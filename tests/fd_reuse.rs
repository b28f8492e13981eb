//! fd numbers the shim's state must not outlive, and sockets left as a
//! direct call would leave them (`tests/programs/fd_reuse.c`).

mod common;
#[path = "udp_cases/mod.rs"]
mod udp_cases;

use common::*;
use std::time::Duration;
use udp_cases::UdpTarget;

#[test]
fn reused_fd_numbers_and_failed_connects() {
    let dir = TempDir::new("fd-reuse");
    let exe = dir.path().join("fd_reuse");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/fd_reuse.c")).run().assert_success();
    let server = Server::bundled(&[]);
    let echo = UdpTarget::echo(DIRECT);
    let sink = TcpTarget::echo();
    let refused = free_port(DIRECT);
    let out = Run::shimmed(&server.url(), &exe)
        .args([DIRECT.to_string(), echo.addr.port().to_string(), sink.addr.port().to_string(), refused.to_string()])
        // The sink is reached directly, everything else through the proxy.
        .env("SOCKSIFY_NO_PROXY", &format!("127.0.0.1:{}", sink.addr.port()))
        .timeout(Duration::from_secs(40))
        .run();
    out.assert_success();
    assert_eq!(
        out.stdout,
        "fclose reused 1 connect 0 sent 6\nraw reused 1 connect 0 sent 9\nrefused -1 ECONNREFUSED getpeername ENOTCONN\nreconnect 0 sent 5\nudp6 connect 0 sent 3 got 3 six\n",
        "{out}"
    );
    // The TCP streams carry exactly what the program sent: no SOCKS UDP
    // header from the socket that held the number before. (The sink's
    // threads may still be reading when the program has exited: wait.)
    let want = vec![b"fclose".to_vec(), b"raw-close".to_vec(), b"again".to_vec()];
    let _ = wait_until(WAIT, || (sink.received() == want).then_some(()));
    assert_eq!(sink.received(), want);
    sink.assert_peers(3, DIRECT);
    // Every datagram went through the proxy (two associations and the udp6 one).
    echo.assert_peers(3, BUNDLED_OUT);
}

/// A proxied UDP socket closed unseen (a raw close system call), its number
/// then handed out by `socketpair`, `dup`, `fcntl(F_DUPFD)` or an
/// `SCM_RIGHTS` message: the new stream carries its bytes both ways, with
/// no `EISCONN` and nothing swallowed. Our own control connection closed
/// unseen and its number taken by a pipe: the program's `close` closes the
/// pipe (`tests/programs/stale_fds.c`).
#[test]
fn numbers_reused_by_other_fd_creators() {
    let dir = TempDir::new("stale-fds");
    let exe = dir.path().join("stale_fds");
    Run::plain("gcc").args(["-O2", "-o"]).arg(&exe).arg(repo_root().join("tests/programs/stale_fds.c")).run().assert_success();
    let server = Server::bundled(&[]);
    let echo = UdpTarget::echo(DIRECT);
    let out =
        Run::shimmed(&server.url(), &exe).args([DIRECT.to_string(), echo.addr.port().to_string()]).timeout(Duration::from_secs(60)).run();
    out.assert_success();
    let mut expected = String::new();
    for creator in ["socketpair", "dup", "fcntl", "scm_rights"] {
        expected += &format!("{creator} reused 1 send 6 recv 6 across reply 4 back\n");
    }
    expected += "pipe reused 1 close 0 closed\n";
    assert_eq!(out.stdout, expected, "{out}");
    // The five UDP sockets' pings all went through the proxy.
    echo.assert_peers(5, BUNDLED_OUT);
}
