//! The resolver calls that bypass `getaddrinfo` do not leak either:
//! glibc's `getaddrinfo_a` and the raw `res_query` family run glibc's own
//! resolver, whose sockets our hooks never see. The C program
//! `tests/programs/raw_dns.c` calls `getaddrinfo_a` (GAI_WAIT, then
//! GAI_NOWAIT with a SIGEV_SIGNAL notification and `gai_suspend`) and
//! `res_query`, inside a network namespace whose only resolver is a DNS
//! stub that counts queries (the set-up of `tests/dns_leak.rs`).
//!
//! Remote mode: `getaddrinfo_a` gives fake addresses, `res_query` fails,
//! and the stub sees zero queries. Local mode (`SOCKSIFY_DNS=local`): the
//! same program resolves through the stub, which proves the stub counts.
//! Needs root (CI runs as root).

mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;
#[path = "common/netns.rs"]
mod netns;

use common::*;
use dns_cases::is_fake;
use netns::{DnsStub, NetNs};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

const NAMES: [&str; 3] = ["gai-wait.raw.test", "gai-nowait.raw.test", "res-query.raw.test"];
/// glibc's `EAI_ALLDONE`: `gai_suspend` of a list with nothing in progress.
const EAI_ALLDONE: &str = "-103";
const NO_RECOVERY: &str = "3";
const ECONNREFUSED: &str = "111";

/// `tests/programs/raw_dns.c`, built with gcc into `dir`.
fn build_program(dir: &TempDir) -> PathBuf {
    let exe = dir.path().join("raw_dns");
    let source = repo_root().join("tests/programs/raw_dns.c");
    // -lanl: getaddrinfo_a lives there before glibc 2.34; -lresolv: res_query.
    let built = Run::plain("gcc").args(["-O2", "-Wall", "-pthread", "-o"]).arg(&exe).arg(&source).args(["-lanl", "-lresolv"]).run();
    built.assert_success();
    exe
}

/// The `key=value` fields of the line of `out` that starts with `call `.
fn fields(out: &Output, call: &str) -> HashMap<String, String> {
    let line = out.stdout.lines().find(|l| l.starts_with(&format!("{call} "))).unwrap_or_else(|| panic!("no {call} line:\n{out}"));
    line.split_whitespace().skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn addr(f: &HashMap<String, String>) -> IpAddr {
    f["addr"].parse().unwrap_or_else(|_| panic!("no address in {f:?}"))
}

#[test]
fn getaddrinfo_a_and_res_query_send_no_dns_queries_in_remote_mode() {
    let dir = TempDir::new("raw-dns");
    let exe = build_program(&dir);
    let ns = NetNs::create();
    ns.run(|| {
        let known: Vec<(&str, Ipv4Addr)> = NAMES.iter().map(|n| (*n, Ipv4Addr::LOCALHOST)).collect();
        let stub = DnsStub::start(&known);
        // No proxy needs to run: faking a name needs none, and nothing connects.
        let url = "socks5h://127.0.0.1:1080";

        // Control: SOCKSIFY_DNS=local, the same program resolves through the stub.
        let out = ns.shimmed(url, &exe).env("SOCKSIFY_DNS", "local").args(NAMES).timeout(Duration::from_secs(60)).run();
        out.assert_success();
        let wait = fields(&out, "gai_wait");
        assert_eq!((wait["rc"].as_str(), wait["err"].as_str(), addr(&wait)), ("0", "0", IpAddr::from(Ipv4Addr::LOCALHOST)), "{out}");
        let nowait = fields(&out, "gai_nowait");
        assert_eq!((nowait["rc"].as_str(), nowait["err"].as_str(), addr(&nowait)), ("0", "0", IpAddr::from(Ipv4Addr::LOCALHOST)), "{out}");
        assert_eq!((nowait["signal"].as_str(), nowait["value"].as_str()), ("1", "42"), "glibc's own notification:\n{out}");
        let res = fields(&out, "res_query");
        assert!(res["rc"].parse::<i32>().unwrap() > 0, "local mode: res_query gets the stub's answer:\n{out}");
        let control = stub.queries();
        eprintln!("local mode: the stub saw {} queries: {control:?}", control.len());
        for name in NAMES {
            assert!(control.iter().any(|q| q.starts_with(&format!("{name} "))), "local mode looks {name} up through the stub: {control:?}");
        }
        let before = control.len();

        // Remote mode (socks5h://, the default): fake addresses, a refused res_query, no query.
        let out = ns.shimmed(url, &exe).args(NAMES).timeout(Duration::from_secs(60)).run();
        out.assert_success();
        let wait = fields(&out, "gai_wait");
        assert_eq!((wait["rc"].as_str(), wait["err"].as_str()), ("0", "0"), "{out}");
        assert!(is_fake(addr(&wait)), "getaddrinfo_a(GAI_WAIT) gives a fake address:\n{out}");
        let nowait = fields(&out, "gai_nowait");
        assert_eq!((nowait["rc"].as_str(), nowait["err"].as_str()), ("0", "0"), "{out}");
        assert!(["0", EAI_ALLDONE].contains(&nowait["suspend"].as_str()), "gai_suspend returns at once:\n{out}");
        assert!(is_fake(addr(&nowait)), "getaddrinfo_a(GAI_NOWAIT) gives a fake address:\n{out}");
        assert_ne!(addr(&wait), addr(&nowait), "two names, two fake addresses:\n{out}");
        assert_eq!((nowait["signal"].as_str(), nowait["value"].as_str()), ("1", "42"), "SIGEV_SIGNAL is honoured:\n{out}");
        let res = fields(&out, "res_query");
        assert_eq!((res["rc"].as_str(), res["h_errno"].as_str(), res["errno"].as_str()), ("-1", NO_RECOVERY, ECONNREFUSED), "{out}");
        assert!(out.stderr.contains("raw DNS queries are refused in remote DNS mode"), "the refusal is explained:\n{out}");
        let leaked = stub.queries()[before..].to_vec();
        eprintln!("remote mode: the stub saw {} queries from the shimmed program (local-mode control: {before})", leaked.len());
        assert!(leaked.is_empty(), "remote mode leaked DNS queries: {leaked:?}");
    });
}
