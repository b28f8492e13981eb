//! No DNS leaks, measured. Each test makes a network namespace of its own
//! (lo only), whose `/etc/netns/NAME/resolv.conf` names a DNS stub the test
//! runs inside it on 127.0.0.1:53: the only resolver any program there can
//! reach, and it counts every query. The bundled server, the targets and
//! the clients (`ip netns exec NAME ...`) all live in the namespace.
//!
//! Remote mode (`socks5h://`): curl, wget, python, getent and reverse
//! look-ups all work, and the stub sees zero queries. Local mode
//! (`socks5://`, `SOCKSIFY_DNS=local`) and bypassed names resolve through
//! the stub. A control run without the shim shows the stub does count.
//! Namespaces and `/etc/netns` entries are removed by Drop guards, also
//! when a test fails. Needs root (CI runs as root).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
mod netns;

use common::*;
use dns_cases::{is_fake, NAME};
use netns::{DnsStub, NetNs};
use std::net::{IpAddr, Ipv4Addr};

#[test]
fn remote_mode_sends_no_dns_queries() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[]);
        // Control: without the shim, a look-up reaches the stub.
        let out = Run::plain("ip").args(["netns", "exec", &ns.name, "getent", "hosts", NAME]).run();
        assert_ne!(out.code, Some(0), "the stub does not know {NAME}:\n{out}");
        let control = stub.queries();
        assert!(control.iter().any(|q| q.starts_with(NAME)), "the stub must be the namespace's resolver, saw {control:?}");
        let before = control.len();

        let server = dns_cases::bundled_server();
        let wrap = |url: &str, prog: &str| ns.shimmed(url, prog);
        dns_cases::curl(&server, &wrap);
        dns_cases::wget(&server, &wrap);
        dns_cases::python_create_connection(&server, &wrap);
        dns_cases::python_ipv6(&server, &wrap);
        dns_cases::round_trip(&server, &wrap);
        dns_cases::getent(&server.url(), &wrap);

        let leaked = stub.queries()[before..].to_vec();
        eprintln!("remote mode: the stub saw {} queries from the shimmed programs (control run: {})", leaked.len(), before);
        assert!(leaked.is_empty(), "remote mode leaked DNS queries: {leaked:?}");
    });
}

#[test]
fn local_mode_resolves_with_the_system_resolver() {
    let ns = NetNs::create();
    ns.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let server = dns_cases::bundled_server();
        let local_url = server.url().replace("socks5h://", "socks5://");

        // socks5:// : the name is resolved here, the proxy gets an address.
        let body = token("dns-local");
        let target = TcpTarget::http(&body);
        let url = format!("http://{NAME}:{}/", target.addr.port());
        let out = ns.shimmed(&local_url, "curl").args(["-sS", "--max-time", "20", "-w", "\n%{remote_ip}", &url]).run();
        out.assert_success();
        let (page, ip) = out.stdout.rsplit_once('\n').unwrap();
        assert_eq!(page, body, "{out}");
        assert!(!is_fake(ip.parse().unwrap()), "local mode must not fake:\n{out}");
        target.assert_peers(1, BUNDLED_OUT);
        server.wait_connect_line(target.addr); // dst=127.0.0.1:PORT, an address
        let after_curl = stub.queries().len();
        assert!(after_curl > 0, "local mode resolves through the system resolver");

        // SOCKSIFY_DNS=local overrides socks5h://.
        let echo = TcpTarget::echo();
        let tok = token("dns-local-env");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_DNS", "local")
            .args(["-c", dns_cases::ECHO_BY_NAME, NAME, &echo.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        assert!(out.stdout.contains("peer 127.0.0.1") && out.stdout.contains("echo intact"), "{out}");
        echo.assert_peers(1, BUNDLED_OUT);
        let queries = stub.queries();
        eprintln!("local mode: the stub saw {} queries: {queries:?}", queries.len());
        assert!(queries.len() > after_curl, "SOCKSIFY_DNS=local resolves through the system resolver: {queries:?}");
        assert!(queries.iter().all(|q| q.starts_with(&format!("{NAME} "))), "only {NAME} was looked up: {queries:?}");
        assert!(!server.log.text().contains(&format!("dst={NAME}:")), "local mode never sends the name:\n{}", server.log.text());
    });
}

#[test]
fn bypassed_names_resolve_locally_and_connect_directly() {
    let ns = NetNs::create();
    ns.run(|| {
        let bypassed = "direct.local.test";
        let stub = DnsStub::start(&[(bypassed, Ipv4Addr::LOCALHOST)]);
        let server = dns_cases::bundled_server();
        let target = TcpTarget::echo();
        let tok = token("dns-bypass");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_NO_PROXY", ".local.test")
            .args(["-c", dns_cases::ECHO_BY_NAME, bypassed, &target.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        assert!(out.stdout.contains("peer 127.0.0.1") && out.stdout.contains("echo intact"), "{out}");
        target.assert_peers(1, DIRECT);
        assert!(!server.log.text().contains("cmd=connect"), "a bypassed name never reaches the proxy:\n{}", server.log.text());
        let queries = stub.queries();
        assert!(queries.iter().any(|q| q.starts_with(bypassed)), "a bypassed name is resolved by the system resolver: {queries:?}");

        // The same rule leaves other names to the proxy, without a query.
        let before = queries.len();
        let echo = TcpTarget::echo();
        let tok = token("dns-bypass-other");
        let out = ns
            .shimmed(&server.url(), python3())
            .env("SOCKSIFY_NO_PROXY", ".local.test")
            .args(["-c", dns_cases::ECHO_BY_NAME, NAME, &echo.addr.port().to_string(), &tok])
            .run();
        out.assert_success();
        echo.assert_peers(1, BUNDLED_OUT);
        let peer: IpAddr = out.stdout.lines().find_map(|l| l.strip_prefix("peer ")).unwrap().parse().unwrap();
        assert!(is_fake(peer), "{out}");
        assert_eq!(stub.queries()[before..], [] as [String; 0], "no query for a proxied name");
    });
}
