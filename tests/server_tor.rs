//! socksify against a real Tor client's SocksPort (Debian's `tor`), run
//! offline by the test in a network namespace of its own (see
//! `tests/common/tor.rs`): Tor reaches no relay, and nothing leaves the
//! machine. So no connection through Tor can succeed here; what a Tor user
//! checks still can be:
//! - the destination, a name above all, reaches Tor (Tor's own log says
//!   `Client asked for NAME:PORT`), and the program gets the errno the shim
//!   maps from Tor's answer;
//! - nothing leaks: no DNS query reaches the namespace's only nameserver
//!   (a counting stub, which knows every name the tests use as 127.0.0.1),
//!   and no connection or datagram reaches the target listening where a
//!   direct one would land (127.0.0.1 of the namespace);
//! - what Tor lacks (UDP ASSOCIATE) fails with a clear errno, never direct.
//!
//! Needs root (network namespaces), like `tests/dns_leak.rs`.

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/tcp_cases.rs"]
mod tcp_cases;
#[path = "common/tor.rs"]
mod tor;
#[path = "common/udp_refused.rs"]
mod udp_refused;

use common::*;
use dns_cases::{is_fake, NAME};
use netns::DnsStub;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;
use tcp_cases::CONNECT_ERRNO;
use tor::Tor;

/// Longer than Tor's answer (`SocksTimeout 1` in [`Tor::start`]), so the
/// errno the program gets is the one mapped from Tor's reply.
const SHIM_TIMEOUT_MS: &str = "30000";

/// The SOCKS5 reply codes in the shim's log lines for connections to
/// `dest` (`proxy replied: ... (N)`), one per connection.
fn replies(out: &Output, dest: &str) -> Vec<u8> {
    let to = format!("-> {dest} via ");
    out.stderr
        .lines()
        .filter(|l| l.contains(&to))
        .map(|l| {
            let code =
                l.split("proxy replied: ").nth(1).and_then(|r| r.rsplit_once('(')).and_then(|(_, c)| c.trim_end_matches(')').parse().ok());
            code.unwrap_or_else(|| panic!("not a SOCKS reply: {l}\n{out}"))
        })
        .collect()
}

/// What Tor answers a stream it could not attach to a circuit within
/// `SocksTimeout`: TTL expired (6) from its once-a-second sweep, or
/// general failure (1) from a retry to attach it, whichever runs first.
/// Returns the errno the shim maps that reply to (SPEC's table).
fn errno_of_tor_giving_up(code: u8, out: &Output) -> i32 {
    match code {
        6 => libc::ETIMEDOUT,
        1 => libc::ECONNREFUSED,
        other => panic!("Tor gave up on a stream with reply {other}, expected 6 or 1:\n{out}"),
    }
}

/// A UDP socket in the calling thread's namespace that counts what arrives.
fn udp_listener(ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = UdpSocket::bind((ip, port)).unwrap_or_else(|e| panic!("bind UDP {ip}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s
}

/// Whatever datagram reached `s` (the sender has exited: anything it sent
/// over loopback is already queued).
fn datagram(s: &UdpSocket) -> Option<(usize, std::net::SocketAddr)> {
    let mut buf = [0u8; 1500];
    s.recv_from(&mut buf).ok()
}

/// The test's target: HTTP on 127.0.0.1 of Tor's namespace, where the
/// nameserver sends [`NAME`] and where a direct connection would land.
fn direct_target(tor: &Tor) -> TcpTarget {
    TcpTarget::start_in(Some(&tor.netns_path()), DIRECT, Serve::Http("direct".into()))
}

/// Runs `body(PORT)` inside Tor's namespace, next to a nameserver that
/// counts queries (it knows [`NAME`] as 127.0.0.1) and the direct target on
/// 127.0.0.1:PORT; then asserts that nothing leaked: no DNS query, no
/// connection at the target.
fn without_leaks(tor: &Tor, body: impl FnOnce(&str) + Send) {
    tor.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let target = direct_target(tor);
        body(&target.addr.port().to_string());
        assert!(stub.queries().is_empty(), "DNS queries leaked: {:?}", stub.queries());
        target.assert_untouched();
    })
}

/// `python3 -c CONNECT_ERRNO HOST PORT` under the shim with `url`, in Tor's
/// namespace (with its resolv.conf), the shim's timeout [`SHIM_TIMEOUT_MS`].
fn python_connect(tor: &Tor, url: &str, host: &str, port: &str) -> Output {
    let out = tor.shimmed(url, python3()).env("SOCKSIFY_TIMEOUT_MS", SHIM_TIMEOUT_MS).args(["-c", CONNECT_ERRNO, host, port]).run();
    out.assert_success();
    out
}

/// python's one `connect` to NAME:PORT through `url` gets the errno of the
/// reply Tor gave up with.
fn assert_errno_of_tor_giving_up(tor: &Tor, url: &str, port: &str) {
    let out = python_connect(tor, url, NAME, port);
    let code = replies(&out, &format!("{NAME}:{port}"));
    assert_eq!(code.len(), 1, "{out}");
    assert_eq!(out.stdout.trim(), format!("errno {}", errno_of_tor_giving_up(code[0], &out)), "{out}");
}

/// curl and python by a name only Tor should see: Tor is asked for the
/// name, the program gets the errno of Tor's answer (mapped as SPEC says),
/// no DNS query reaches the nameserver, nothing reaches the target that
/// the name resolves to for anyone who asks the nameserver.
#[test]
fn names_reach_tor_and_nothing_leaks() {
    let tor = Tor::start();
    tor.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        let target = direct_target(&tor);
        let port = target.addr.port();
        let url = format!("http://{NAME}:{port}/");
        let dest = format!("{NAME}:{port}");

        // Control: without the shim, curl asks the nameserver and lands on
        // the target, so a leak would show at both.
        let out = Run::plain("ip").args(["netns", "exec", &tor.ns.name, "curl", "-sS", "-m", "10", &url]).run();
        assert_eq!(out.stdout, "direct", "the stub must be the namespace's resolver:\n{out}");
        let queries = stub.queries().len();
        assert!(queries > 0);
        assert_eq!(target.peers().len(), 1);

        // curl under the shim: the name goes to Tor, Tor gives up, curl fails.
        let out = tor.shimmed(&tor.url(), "curl").env("SOCKSIFY_TIMEOUT_MS", SHIM_TIMEOUT_MS).args(["-sS", "-m", "25", &url]).run();
        let curl_replies = replies(&out, &dest);
        assert!(!curl_replies.is_empty(), "the shim logs Tor's reply:\n{out}");
        // curl tries the name's fake IPv6 and IPv4 addresses: exit 28
        // ("timed out") for ETIMEDOUT, 7 ("couldn't connect") for ECONNREFUSED.
        let errnos: Vec<i32> = curl_replies.iter().map(|code| errno_of_tor_giving_up(*code, &out)).collect();
        let exits: Vec<i32> = errnos.iter().map(|e| if *e == libc::ETIMEDOUT { 28 } else { 7 }).collect();
        assert!(out.code.is_some_and(|c| exits.contains(&c)), "curl's exit for {errnos:?}:\n{out}");

        // python: one connect by name, its errno is the one of Tor's reply.
        assert_errno_of_tor_giving_up(&tor, &tor.url(), &port.to_string());

        // Tor was asked for the name, once per connection, and says why it gave up.
        tor.wait_asked_for(&dest, curl_replies.len() + 1);
        assert!(tor.log.text().contains(&format!("to get a connection to {dest}. Giving up.")), "{}", tor.log.text());
        assert!(tor.all_asked().iter().all(|d| d == &dest), "Tor saw only the name: {:?}", tor.all_asked());

        let leaked = stub.queries()[queries..].to_vec();
        assert!(leaked.is_empty(), "DNS queries leaked past Tor: {leaked:?}");
        assert_eq!(target.peers().len(), 1, "only the control run reached the target directly");
    });
}

/// Tor's own `SocksTimeout` is two minutes; the shim's bound (here 1 s,
/// 5 s by default) ends the wait first: ETIMEDOUT, nothing direct.
#[test]
fn shim_timeout_bounds_the_wait_for_a_circuit() {
    let tor = Tor::start_with(None);
    without_leaks(&tor, |port| {
        let out = tor.shimmed(&tor.url(), python3()).env("SOCKSIFY_TIMEOUT_MS", "1000").args(["-c", CONNECT_ERRNO, NAME, port]).run();
        out.assert_success();
        assert_eq!(out.stdout.trim(), format!("errno {}", libc::ETIMEDOUT), "{out}");
        assert!(out.stderr.contains("timed out waiting for the SOCKS reply"), "{out}");
        tor.wait_asked_for(&format!("{NAME}:{port}"), 1);
    });
}

/// Tor refuses internal destinations (`ClientRejectInternalAddresses`, on
/// by default) with reply 1, general failure: the program gets
/// ECONNREFUSED at once, and the target there sees nothing.
#[test]
fn internal_addresses_are_refused() {
    let tor = Tor::start();
    netns::ip(&["-n", &tor.ns.name, "addr", "add", "192.168.77.1/32", "dev", "lo"]);
    let lan = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 1));
    tor.run(|| {
        for ip in [DIRECT, lan, LOCALHOST_V6] {
            let target = TcpTarget::start_in(Some(&tor.netns_path()), ip, Serve::Echo);
            let dest = format!("{}:{}", url_host(ip), target.addr.port());
            let out = python_connect(&tor, &tor.url(), &ip.to_string(), &target.addr.port().to_string());
            assert_eq!(out.stdout.trim(), format!("errno {}", libc::ECONNREFUSED), "{out}");
            assert_eq!(replies(&out, &dest), [1], "{out}");
            tor.wait_asked_for(&dest, 1);
            target.assert_untouched();
        }
        // curl says "couldn't connect".
        let target = direct_target(&tor);
        let out = Run::shimmed(&tor.url(), "curl").args(["-sS", "-m", "25", &format!("http://{}/", target.addr)]).run();
        assert_eq!(out.code, Some(7), "{out}");
        target.assert_untouched();
    });
    assert!(
        tor.log.text().contains("Rejecting SOCKS request for anonymous connection to private address 127.0.0.1."),
        "{}",
        tor.log.text()
    );
}

/// Tor has no UDP ASSOCIATE (reply 7): `sendto` and a UDP `connect` fail
/// with EOPNOTSUPP, no datagram goes direct, and no DNS query leaves:
/// `dig` asking the resolv.conf nameserver is answered inside the process
/// (a fake address), `dig @ANOTHER` fails.
#[test]
fn udp_is_refused_and_dns_stays_in_process() {
    let tor = Tor::start();
    tor.run(|| {
        let stub = DnsStub::start(&[(NAME, Ipv4Addr::LOCALHOST)]);
        // Control: without the shim, dig asks the stub.
        let out = Run::plain("ip").args(["netns", "exec", &tor.ns.name, "dig", "+short", "+tries=1", NAME]).run();
        assert_eq!(out.stdout.trim(), "127.0.0.1", "the stub must be the namespace's resolver:\n{out}");
        let queries = stub.queries().len();

        // python sendto by address: EOPNOTSUPP, nothing at the target.
        udp_refused::udp_refused(&tor.url(), libc::EOPNOTSUPP);

        // python sendto by name (fake address): the same, and no DNS query.
        let target = udp_listener(Ipv4Addr::LOCALHOST, 0);
        let port = target.local_addr().unwrap().port().to_string();
        let out = tor.shimmed(&tor.url(), python3()).args(["-c", udp_refused::SEND, NAME, &port]).run();
        out.assert_success();
        assert_eq!(out.stdout.trim(), format!("errno {}", libc::EOPNOTSUPP), "{out}");
        assert!(out.stderr.contains("UDP ASSOCIATE") && out.stderr.contains("command not supported (7)"), "{out}");
        assert_eq!(datagram(&target), None, "a datagram went direct");

        // dig with the resolv.conf nameserver: a fake answer from inside the process.
        let out = tor.shimmed(&tor.url(), "dig").args(["+short", "+tries=1", NAME]).run();
        out.assert_success();
        let ip: IpAddr = out.stdout.trim().parse().unwrap_or_else(|_| panic!("{out}"));
        assert!(is_fake(ip), "{out}");

        // dig @another nameserver (not in resolv.conf) is plain UDP for the
        // proxy: its UDP connect fails (dig: "address family not supported",
        // its words for EOPNOTSUPP), and that nameserver gets nothing.
        let other = udp_listener(Ipv4Addr::new(127, 0, 0, 53), 53);
        let out = tor.shimmed(&tor.url(), "dig").args(["+tries=1", "+time=2", "@127.0.0.53", NAME]).run();
        assert_eq!(out.code, Some(9), "dig: no servers could be reached:\n{out}");
        assert!(out.stderr.contains("UDP ASSOCIATE") && out.stderr.contains("command not supported (7)"), "{out}");
        assert_eq!(datagram(&other), None, "a DNS query went direct");

        let leaked = stub.queries()[queries..].to_vec();
        assert!(leaked.is_empty(), "DNS queries leaked: {leaked:?}");
    });
    // Tor was never asked to connect anywhere for these datagrams.
    assert!(tor.all_asked().is_empty(), "{:?}", tor.all_asked());
}

/// SOCKS4a carries the name to Tor; SOCKS4 an address. Tor answers 91
/// (rejected) for both, the program gets ECONNREFUSED, nothing leaks.
#[test]
fn socks4a_and_socks4() {
    let tor = Tor::start();
    without_leaks(&tor, |port| {
        for (scheme, host) in [("socks4a", NAME), ("socks4", "127.0.0.1")] {
            let out = python_connect(&tor, &tor.url_as(scheme), host, port);
            assert_eq!(out.stdout.trim(), format!("errno {}", libc::ECONNREFUSED), "{scheme}:\n{out}");
            assert!(out.stderr.contains("SOCKS4 request rejected (code 91)"), "{scheme}:\n{out}");
            tor.wait_asked_for(&format!("{host}:{port}"), 1);
        }
    });
}

/// Username/password (RFC 1929): Tor accepts any, and uses them only to
/// keep streams with different credentials on different circuits (stream
/// isolation). Lock-step, the shim offers no-auth and username/password;
/// Tor picks username/password, accepts both users, and gets the name.
#[test]
fn username_password_for_stream_isolation() {
    let tor = Tor::start();
    without_leaks(&tor, |port| {
        for (user, pass) in [("alice", "any password"), ("bob", "another one")] {
            let url = format!("socks5h://{}:{}@127.0.0.1:{}", percent_encode(user), percent_encode(pass), tor::SOCKS_PORT);
            // Past the credentials: the reply is the CONNECT's.
            assert_errno_of_tor_giving_up(&tor, &url, port);
        }
        tor.wait_asked_for(&format!("{NAME}:{port}"), 2);
        assert_eq!(tor.accepted_method(2), 2, "Tor chose username/password both times:\n{}", tor.log.text());
        assert_eq!(tor.accepted_method(0), 0, "{}", tor.log.text());
    });
}

/// `?pipeline=1`. Without credentials Tor reads the greeting and request
/// as a stream: the same answer as lock-step, in one round trip. With
/// credentials it answers the greeting and the credentials with the RFC
/// 1929 status alone (its method selection is lost: Tor keeps one pending
/// reply per read, and the status overwrites it), so the shim sees a
/// reply that is not SOCKS5 and fails with EPROTO; nothing goes direct.
#[test]
fn pipelined_handshake() {
    let tor = Tor::start();
    without_leaks(&tor, |port| {
        let dest = format!("{NAME}:{port}");
        assert_errno_of_tor_giving_up(&tor, &format!("{}?pipeline=1", tor.url()), port);
        tor.wait_asked_for(&dest, 1);

        let url = format!("socks5h://alice:pw@127.0.0.1:{}?pipeline=1", tor::SOCKS_PORT);
        let out = python_connect(&tor, &url, NAME, port);
        assert_eq!(out.stdout.trim(), format!("errno {}", libc::EPROTO), "{out}");
        assert!(out.stderr.contains("method selection is not SOCKS version 5"), "{out}");
        // Tor took the request all the same.
        tor.wait_asked_for(&dest, 2);
        assert_eq!(tor.accepted_method(2), 1, "{}", tor.log.text());
    });
}
