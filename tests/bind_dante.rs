//! SOCKS BIND through Dante (`command: bind` in its `socks pass` rule,
//! `external: 127.0.0.3`, where it listens for BINDs): the cases of
//! `tests/bind_bundled.rs`. Dante checks that the peer is the one the
//! BIND request named. And a Dante that refuses BIND.

#[path = "common/bind_cases.rs"]
mod bind_cases;
mod common;
#[path = "common/dns_cases.rs"]
mod dns_cases;

use bind_cases::*;
use common::*;

#[test]
fn curl_active_ftp_download() {
    curl_active_download(&Dante::start(), "127.0.0.1", "127.0.0.1");
}

#[test]
fn curl_active_ftp_download_by_a_name_only_the_proxy_knows() {
    curl_active_download(&dns_cases::dante_server(), dns_cases::NAME, dns_cases::NAME);
}

#[test]
fn curl_active_ftp_upload() {
    curl_active_upload(&Dante::start());
}

#[test]
fn python_ftplib_active_mode() {
    python_ftplib_active(&Dante::start());
}

#[test]
fn python_ftplib_active_mode_over_ipv6() {
    python_ftplib_active_on(&Dante::start(), LOCALHOST_V6, "::1");
}

#[test]
fn passive_mode_stays_plain_connects() {
    curl_passive(&Dante::start());
}

#[test]
fn listener_calls_blocking_select_poll_epoll() {
    listener_api(&Dante::start());
}

/// Dante refusing BIND (no `bind` in its rule): curl fails cleanly before
/// it advertises any address; the FTP server never sees a data connection.
#[test]
fn curl_with_bind_refused_by_dante_fails_cleanly() {
    let dante = Dante::start_without_bind();
    let ftp = FtpServer::start();
    std::fs::write(ftp.path("file.bin"), b"never sent").unwrap();
    let out = Run::shimmed(&dante.url(), "curl").args(["-sS", "--max-time", "25", "-P", "-", "-o", "/dev/null"]).arg(ftp.url("127.0.0.1", "file.bin")).run();
    // 30: CURLE_FTP_PORT_FAILED.
    assert_eq!(out.code, Some(30), "{out}");
    assert!(out.stderr.contains("not allowed by ruleset"), "the shim logs the refusal:\n{out}");
    assert!(ftp.data_peers().is_empty(), "{}", ftp.log());
    let verbs = ftp.verbs();
    assert!(!verbs.iter().any(|v| v == "EPRT" || v == "PORT" || v == "RETR"), "curl must stop before advertising anything: {verbs:?}");
    assert!(dante.log().contains("tcp/connect ["), "the control connection went through Dante:\n{}", dante.log());
    assert!(!out.stderr.contains("the proxy listens on"), "{out}");
}

/// Dante resolving [`dns_cases::NAME`] (only it can) to `ip`.
fn resolving(ip: std::net::IpAddr) -> Dante {
    Dante::start_with_hosts(&format!("127.0.0.1 localhost\n::1 localhost\n{ip} {}\n", dns_cases::NAME))
}

#[test]
fn curl_active_ftp_by_name_forced_ipv4() {
    curl_active_by_name(&resolving(DIRECT), dns_cases::NAME, DIRECT, &["-4"]);
}

#[test]
fn curl_active_ftp_by_name_over_ipv6() {
    curl_active_by_name(&resolving(LOCALHOST_V6), dns_cases::NAME, LOCALHOST_V6, &["-6"]);
}

/// The reported failure: `curl -P -` by name through Dante, which
/// reaches the server over IPv6, from curl's IPv4 socket.
#[test]
fn curl_active_ftp_by_name_ipv4_socket_ipv6_proxy_side_fails_cleanly() {
    curl_active_by_name_across_families(&resolving(LOCALHOST_V6), dns_cases::NAME, &[]);
    curl_active_by_name_across_families(&resolving(LOCALHOST_V6), dns_cases::NAME, &["-4"]);
}

#[test]
fn getsockname_by_name_answers_in_the_sockets_family() {
    sockname_by_family(&resolving(DIRECT), dns_cases::NAME, DIRECT, |ip| ip.to_string(), |ip| format!("::ffff:{ip}"));
    sockname_by_family(&resolving(LOCALHOST_V6), dns_cases::NAME, LOCALHOST_V6, |_| "0.0.0.0".into(), |ip| ip.to_string());
}
