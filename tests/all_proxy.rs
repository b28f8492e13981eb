//! curl's convention: with `SOCKSIFY_PROXY` unset, a SOCKS URL in
//! `all_proxy`/`ALL_PROXY` is the proxy (logged at info, so `-v` shows it);
//! an `http://` one is ignored with a one-line warning, and nothing goes
//! direct because of it.
//!
//! That last test reaches the default proxy, 127.0.0.1:1080: it runs in a
//! network namespace of its own (root, as CI runs), where that port is a
//! recording sentinel of the test's, so a SOCKS server the machine runs on
//! 1080 neither breaks it nor makes it pass.

mod common;
#[path = "common/netns.rs"]
#[allow(dead_code)] // the namespace alone; the DNS stub is for other tests
mod netns;

use common::*;
use netns::NetNs;
use std::net::SocketAddr;

/// Python under the shim connects to `target`, sends a token and prints
/// the echo; the proxy comes from `var`=`value` only.
fn python_via(var: &str, value: &str, target: &TcpTarget, payload: &str) -> Output {
    let code = format!(
        "import socket\ns = socket.create_connection(('{}', {}), timeout=10)\ns.sendall(b'{payload}')\nprint(s.recv(100).decode())",
        target.addr.ip(),
        target.addr.port()
    );
    Run::plain(python3())
        .args(["-c", &code])
        .env("LD_PRELOAD", shim_path().to_str().unwrap())
        .env("SOCKSIFY_NO_PROXY", "")
        .env("SOCKSIFY_LOG", "info")
        .env(var, value)
        .run()
}

#[test]
fn a_socks_all_proxy_is_used_and_logged_at_info() {
    for var in ["ALL_PROXY", "all_proxy"] {
        let server = Server::bundled(&[]);
        let target = TcpTarget::echo();
        let payload = token("all-proxy");
        let out = python_via(var, &server.url(), &target, &payload);
        out.assert_success();
        assert_eq!(out.stdout.trim(), payload, "{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr);
        let note = format!("info: proxy {} from {var} (SOCKSIFY_PROXY is unset)", server.url());
        assert_eq!(out.stderr.matches(&note).count(), 1, "one info line names the variable:\n{out}");
    }
}

#[test]
fn the_wrapper_says_so_at_v_and_puts_u_credentials_into_it() {
    let server = Server::bundled(&["--user", "alice:pw"]);
    let target = TcpTarget::echo();
    let payload = token("all-proxy-wrapper");
    let code = format!(
        "import socket\ns = socket.create_connection(('{}', {}), timeout=10)\ns.sendall(b'{payload}')\nprint(s.recv(100).decode())",
        target.addr.ip(),
        target.addr.port()
    );
    let out =
        Run::plain(wrapper_path()).env("ALL_PROXY", &server.url()).args(["-U", "alice:pw", "-n", "", "-v", python3(), "-c", &code]).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), payload, "{out}");
    target.assert_peers(1, BUNDLED_OUT);
    // -U turned curl's URL into SOCKSIFY_PROXY, with the credentials.
    let out = Run::plain(wrapper_path()).env("ALL_PROXY", &server.url()).args(["-U", "alice:pw", "printenv", "SOCKSIFY_PROXY"]).run();
    out.assert_success();
    assert_eq!(out.stdout, format!("socks5h://alice:pw@{}\n", server.addr()), "{out}");
}

#[test]
fn an_http_all_proxy_is_ignored_with_one_warning_and_nothing_goes_direct() {
    let ns = NetNs::create();
    ns.run(|| {
        // The default proxy's address, in this namespace: ours, recording.
        let default_proxy = TcpTarget::start_at(None, SocketAddr::from(([127, 0, 0, 1], 1080)), Serve::Echo);
        let target = TcpTarget::echo();
        let out = python_via("ALL_PROXY", "http://bob:hunter2@127.0.0.1:3128", &target, "x");
        let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.contains("ALL_PROXY holds")).collect();
        assert_eq!(warnings.len(), 1, "{out}");
        assert!(warnings[0].contains("warn: ALL_PROXY holds a URL of scheme http://, ignored"), "{out}");
        assert!(!out.stderr.contains("hunter2"), "the URL's password must not be printed:\n{out}");
        // The default proxy is used instead: it got the SOCKS5 greeting
        // (and, echoing it, failed the handshake); the target saw nothing.
        let greetings = default_proxy.received();
        assert!(greetings.len() == 1 && greetings[0].first() == Some(&5), "the default proxy got no SOCKS5 greeting: {greetings:?}\n{out}");
        target.assert_untouched();
    });
}

/// curl reads ALL_PROXY itself: left in its environment, curl would speak
/// SOCKS to the proxy on its own, without -U's credentials, and the shim
/// would see only a connection to the proxy. The wrapper takes a SOCKS
/// ALL_PROXY as the proxy and removes it from the program's environment:
/// curl through a server that requires the credentials gets the page, and
/// the proxy's log shows the user's CONNECT to the target.
#[test]
fn curl_with_a_socks_all_proxy_goes_through_the_shim_with_u_credentials() {
    let server = Server::bundled(&["--user", "alice:pw"]);
    let body = token("curl-all-proxy");
    let target = TcpTarget::http(&body);
    let curl = require_program("curl", "curl");
    let out = Run::plain(wrapper_path())
        .env("SOCKSIFY_LIB", shim_path().to_str().unwrap())
        .env("ALL_PROXY", &server.url())
        .args(["-U", "alice:pw", "-n", "", "-v"])
        .arg(&curl)
        .args(["-sS", &format!("http://{}/", target.addr)])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, body, "{out}");
    assert!(out.stderr.contains("proxy from ALL_PROXY, removed from the program's environment"), "{out}");
    assert!(out.stderr.contains(&format!("-> {} via ", target.addr)), "the shim carried it:\n{out}");
    target.assert_peers(1, BUNDLED_OUT);
    server.wait_connect_line(target.addr);
    // An http:// ALL_PROXY is the program's: it stays.
    let out = Run::plain(wrapper_path()).env("ALL_PROXY", "http://127.0.0.1:9").args(["printenv", "ALL_PROXY"]).run();
    assert_eq!(out.stdout, "http://127.0.0.1:9\n", "{out}");
}
