//! `socksify --check [HOST:PORT]`: reach each proxy of the configured chain
//! the way the shim would, one step per line, then a verdict.
//!
//! The configuration is the shim's own (`Config::from_lookup` over the same
//! variables). Each hop is driven lock-step: greeting, method selection,
//! username/password, then a CONNECT to the next hop, or at the end to the
//! destination given (by default the last proxy's own address); a hop with
//! `?pipeline=1` gets its first flight in one write, as the library sends
//! it. A separate connection asks each SOCKS5 hop for UDP ASSOCIATE. The
//! exit status says whether a TCP connection through the whole chain works;
//! the last line says why not, in one line.

use crate::exchange::{Conn, Failure};
use socksify_proto::config::{Config, DnsMode, ProxyHost, ProxySource, ProxyUrl, Scheme, UdpMode};
use socksify_proto::wire::socks4;
use socksify_proto::wire::socks5::{method, Command, ReplyCode};
use socksify_proto::wire::TargetAddr;
use std::fmt::Display;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

pub const USAGE: &str = "usage: socksify --check [HOST:PORT]";

/// Runs the check with the process environment; returns the exit status:
/// 0 works, 1 does not, 2 bad usage.
pub fn main(args: &[String]) -> i32 {
    let dest = match args {
        [] => None,
        [text] => match parse_destination(text) {
            Ok(dest) => Some(dest),
            Err(e) => {
                eprintln!("socksify: --check {text}: {e}\n{USAGE}");
                return 2;
            }
        },
        _ => {
            eprintln!("socksify: --check takes at most one HOST:PORT\n{USAGE}");
            return 2;
        }
    };
    let mut out = io::stdout().lock();
    let config = match Config::from_lookup(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(out, "FAIL: the configuration is malformed: {e}");
            return 1;
        }
    };
    if run(&config, dest.as_ref(), &mut out) {
        0
    } else {
        1
    }
}

/// A destination named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Addr(sa) => write!(f, "{sa}"),
            Destination::Name(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// `1.2.3.4:80`, `[::1]:22`, `example.org:443`.
pub fn parse_destination(text: &str) -> Result<Destination, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(Destination::Addr(sa));
    }
    let (host, port) = text.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("bad port {port:?}"))?;
    if host.is_empty() || host.contains(':') || host.contains('[') || TargetAddr::domain(host, port).is_none() {
        return Err(format!("bad host {host:?} (IPv6 addresses go in brackets: [::1]:22)"));
    }
    Ok(Destination::Name(host.to_ascii_lowercase(), port))
}

/// Prints the check of `config` to `out`; returns whether it works.
pub fn run(config: &Config, dest: Option<&Destination>, out: &mut dyn Write) -> bool {
    let mut report = Report { out };
    report.header(config);
    match walk(config, dest, &mut report) {
        Ok(summary) => {
            report.line(format_args!("ok: {summary}"));
            true
        }
        Err(why) => {
            report.line(format_args!("FAIL: {why}"));
            false
        }
    }
}

/// The steps of every hop, in order; `Err` is the verdict's reason.
fn walk(config: &Config, dest: Option<&Destination>, report: &mut Report) -> Result<String, String> {
    let hops = config.chain.len();
    let last = config.chain.last().expect("a chain is never empty");
    let final_target = match dest {
        Some(dest) => destination_target(config, dest, report)?,
        None => {
            let own = hop_address(last);
            report.line(format_args!("destination: none given, so the last proxy's own address {own}"));
            own
        }
    };
    let mut first_addr = None;
    let mut udp_offered = None;
    let mut conn: Option<Conn> = None;
    for (i, hop) in config.chain.iter().enumerate() {
        report.line(format_args!("hop {}/{hops}: {hop}", i + 1));
        let mut c = match conn.take() {
            None => {
                let (c, addr) = reach_first_hop(config, hop, report)?;
                first_addr = Some(addr);
                c
            }
            Some(c) => {
                match &hop.host {
                    ProxyHost::Ip(ip) => report.step("resolved", Mark::Ok, format_args!("{ip} (an address: nothing to resolve)")),
                    ProxyHost::Name(name) => report.step("resolved", Mark::Skip, format_args!("{name} is sent by name to hop {i}")),
                }
                report.step("connected", Mark::Ok, format_args!("through hop {i}"));
                c
            }
        };
        let (target, what, hint) = match config.chain.get(i + 1) {
            Some(next) => (hop_address(next), format!("hop {}", i + 2), ""),
            None if dest.is_some() => (final_target.clone(), "the destination".to_owned(), ""),
            None => (
                final_target.clone(),
                "the proxy's own address".to_owned(),
                "; the proxy may just not allow that: try a destination it should reach, socksify --check HOST:PORT",
            ),
        };
        if hop.pipeline {
            send_first_flight(&mut c, hop, Command::Connect, &target, report)?;
        }
        open_session(&mut c, hop, report)?;
        connect_step(&mut c, hop, &target, &what, hint, report)?;
        udp_offered = udp_step(config, i, first_addr.expect("the first hop was reached"), report);
        conn = Some(c);
    }
    let udp = match udp_offered {
        _ if hops > 1 && config.udp == UdpMode::Proxy => "; UDP programs will get an error: UDP through a chain is not supported",
        Some(true) => "; UDP ASSOCIATE offered",
        Some(false) => "; but UDP ASSOCIATE is not offered: UDP programs will get an error (SOCKSIFY_UDP=block or direct to choose)",
        None => "",
    };
    let proxies = if hops == 1 { "1 proxy".to_owned() } else { format!("a chain of {hops} proxies") };
    Ok(format!("the configuration works: CONNECT to {final_target} through {proxies}{udp}"))
}

/// The destination as the shim would send it: by name in remote DNS mode,
/// else resolved here first.
fn destination_target(config: &Config, dest: &Destination, report: &mut Report) -> Result<TargetAddr, String> {
    let bypassed = match dest {
        Destination::Addr(sa) => config.no_proxy.bypasses_addr(sa),
        Destination::Name(name, port) => config.no_proxy.bypasses_name(name, *port),
    };
    let target = match dest {
        Destination::Addr(sa) => {
            report.line(format_args!("destination: {sa}"));
            TargetAddr::Ip(*sa)
        }
        Destination::Name(name, port) if config.dns == DnsMode::Remote => {
            report.line(format_args!("destination: {name}:{port}, sent by name to the proxy (remote DNS)"));
            TargetAddr::Domain(name.clone(), *port)
        }
        Destination::Name(name, port) => {
            let found = (name.as_str(), *port).to_socket_addrs().map(|mut addrs| addrs.next());
            match found {
                Ok(Some(sa)) => {
                    report.line(format_args!("destination: {name}:{port}, resolved here to {sa} (local DNS)"));
                    TargetAddr::Ip(sa)
                }
                Ok(None) => return Err(format!("cannot resolve the destination {name} here (local DNS): no address")),
                Err(e) => return Err(format!("cannot resolve the destination {name} here (local DNS): {e}")),
            }
        }
    };
    if bypassed {
        report.line(format_args!("note: SOCKSIFY_NO_PROXY sends {dest} direct, not through the proxy; the check asks the proxy anyway"));
    }
    Ok(target)
}

/// Where a hop is asked to connect when it is the next one of a chain (as
/// the shim does: a host name is sent by name), or the destination by default.
fn hop_address(hop: &ProxyUrl) -> TargetAddr {
    match &hop.host {
        ProxyHost::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, hop.port)),
        ProxyHost::Name(name) => TargetAddr::Domain(name.clone(), hop.port),
    }
}

/// Resolves and connects to the first hop, trying each of its addresses.
fn reach_first_hop(config: &Config, hop: &ProxyUrl, report: &mut Report) -> Result<(Conn, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match &hop.host {
        ProxyHost::Ip(ip) => {
            report.step("resolved", Mark::Ok, format_args!("{ip} (an address: nothing to resolve)"));
            vec![SocketAddr::new(*ip, hop.port)]
        }
        ProxyHost::Name(name) => match (name.as_str(), hop.port).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                report.step("resolved", Mark::Ok, format_args!("{name} is {}", shown.join(", ")));
                addrs
            }
            Err(e) => {
                report.step("resolved", Mark::Fail, format_args!("{name}: {e}"));
                return Err(format!("cannot resolve the proxy's host name {name}: {e}"));
            }
        },
    };
    let mut why = Vec::new();
    let count = addrs.len();
    for (n, addr) in addrs.into_iter().enumerate() {
        match Conn::connect(addr, config.timeout) {
            Ok(conn) => {
                let from = conn.local_addr().map(|a| format!(" from {a}")).unwrap_or_default();
                report.step("connected", Mark::Ok, format_args!("{addr}{from}"));
                return Ok((conn, addr));
            }
            Err(e) => {
                let reason = match e.kind() {
                    ErrorKind::ConnectionRefused => {
                        format!("nothing listens at {addr} (connection refused): is the proxy running, on that port?")
                    }
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
                        "no answer from {addr} within {} ms: a wrong address, or a firewall dropping packets",
                        config.timeout.as_millis()
                    ),
                    _ => format!("cannot connect to {addr}: {e}"),
                };
                // The library tries the next address too: only the last failure fails.
                let mark = if n + 1 < count { Mark::Skip } else { Mark::Fail };
                report.step("connected", mark, &reason);
                why.push(reason);
            }
        }
    }
    Err(why.join("; "))
}

/// What the library offers a SOCKS5 proxy: exactly one method.
fn offered_method(hop: &ProxyUrl) -> u8 {
    if hop.credentials.is_some() {
        method::USER_PASS
    } else {
        method::NO_AUTH
    }
}

/// `?pipeline=1`: as the library, greeting, credentials and request in one
/// write, before any answer.
fn send_first_flight(conn: &mut Conn, hop: &ProxyUrl, command: Command, target: &TargetAddr, report: &mut Report) -> Result<(), String> {
    let creds = hop.credentials.as_ref().map(|c| (c.user.as_slice(), c.pass.as_slice()));
    match conn.send_first_flight(&[offered_method(hop)], creds, command, target) {
        Ok(()) => {
            report.step("flight", Mark::Ok, "pipelined (?pipeline=1): greeting, credentials and request sent at once");
            Ok(())
        }
        Err(e) => {
            report.step("flight", Mark::Fail, format_args!("pipelined: {e}"));
            Err(format!("{hop}: cannot send the pipelined first flight: {e}"))
        }
    }
}

/// SOCKS5: the method offer and, when chosen, username/password. SOCKS4
/// has neither; its user id travels with the request.
fn open_session(conn: &mut Conn, hop: &ProxyUrl, report: &mut Report) -> Result<(), String> {
    if matches!(hop.scheme, Scheme::Socks4 | Scheme::Socks4a) {
        report.step("methods", Mark::Skip, "SOCKS4 has no authentication methods");
        match &hop.credentials {
            Some(c) => {
                report.step("auth", Mark::Skip, format_args!("user id {:?} goes with the request", String::from_utf8_lossy(&c.user)))
            }
            None => report.step("auth", Mark::Skip, "none (SOCKS4)"),
        }
        return Ok(());
    }
    let offered = offered_method(hop);
    let chosen = match conn.greet(&[offered]) {
        Ok(selection) => selection.method,
        Err(e) => {
            report.step("methods", Mark::Fail, format_args!("offered {}: {e}", method_name(offered)));
            let hint = if matches!(e, Failure::Closed(_)) { ": is it a SOCKS5 server (socks4:// if it speaks only SOCKS4)?" } else { "" };
            return Err(format!("{hop} did not answer the SOCKS5 greeting: {e}{hint}"));
        }
    };
    let offer = format!("offered {}; chosen {}", method_name(offered), method_name(chosen));
    if chosen == method::NO_ACCEPTABLE {
        report.step("methods", Mark::Fail, &offer);
        return Err(match &hop.credentials {
            None => format!(
                "{hop} accepts none of the offered methods (no authentication): it wants a user name and password; \
                 give them with -U USER:PASS or as user:pass@ in the URL"
            ),
            Some(_) => format!("{hop} does not accept username/password authentication (RFC 1929)"),
        });
    }
    if chosen != offered {
        report.step("methods", Mark::Fail, &offer);
        return Err(format!("{hop} chose {}, which was not offered: a broken SOCKS server", method_name(chosen)));
    }
    report.step("methods", Mark::Ok, &offer);
    let Some(creds) = &hop.credentials else {
        report.step("auth", Mark::Skip, "none needed");
        return Ok(());
    };
    let user = String::from_utf8_lossy(&creds.user);
    match conn.authenticate(&creds.user, &creds.pass) {
        Ok(reply) if reply.succeeded() => {
            report.step("auth", Mark::Ok, format_args!("user {user:?} accepted"));
            Ok(())
        }
        Ok(reply) => {
            report.step("auth", Mark::Fail, format_args!("user {user:?} rejected (RFC 1929 status {})", reply.status));
            Err(format!(
                "wrong user name or password: {hop} rejected user {user:?} (RFC 1929 status {}); check -U USER:PASS or user:pass@ in the URL",
                reply.status
            ))
        }
        Err(e) => {
            report.step("auth", Mark::Fail, format_args!("user {user:?}: {e}"));
            Err(format!("{hop} did not answer the username/password: {e}"))
        }
    }
}

fn method_name(m: u8) -> String {
    match m {
        method::NO_AUTH => "no authentication (00)".into(),
        method::GSSAPI => "GSSAPI (01)".into(),
        method::USER_PASS => "username/password (02)".into(),
        method::NO_ACCEPTABLE => "no acceptable method (ff)".into(),
        other => format!("method {other:02x}"),
    }
}

/// CONNECT to `target` (`what` names it: the next hop or the destination;
/// `hint` ends the verdict when the proxy refuses).
fn connect_step(conn: &mut Conn, hop: &ProxyUrl, target: &TargetAddr, what: &str, hint: &str, report: &mut Report) -> Result<(), String> {
    if matches!(hop.scheme, Scheme::Socks4 | Scheme::Socks4a) {
        if matches!(target, TargetAddr::Ip(SocketAddr::V6(_))) {
            report.step("connect", Mark::Fail, format_args!("{target} ({what}): SOCKS4 cannot carry an IPv6 address"));
            return Err(format!("{hop} speaks SOCKS4, which cannot carry the IPv6 address {target}"));
        }
        let user_id = hop.credentials.as_ref().map(|c| c.user.clone()).unwrap_or_default();
        return match conn.request4(&user_id, target) {
            Ok(reply) if reply.code == socks4::GRANTED => {
                report.step("connect", Mark::Ok, format_args!("CONNECT {target} ({what}) granted"));
                Ok(())
            }
            Ok(reply) => {
                let why = match reply.code {
                    92 => "rejected: the proxy cannot reach identd on this machine",
                    93 => "rejected: identd reports another user id",
                    _ => "rejected or failed",
                };
                report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {why} ({})", reply.code));
                Err(format!("{hop} refused the CONNECT to {target} ({what}): {why} (SOCKS4 code {}){hint}", reply.code))
            }
            Err(e) => {
                report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {e}"));
                Err(format!("{hop} did not answer the CONNECT to {target}: {e}"))
            }
        };
    }
    match conn.request(Command::Connect, target) {
        Ok(reply) if reply.code == ReplyCode::Succeeded => {
            report.step("connect", Mark::Ok, format_args!("CONNECT {target} ({what}) succeeded, the proxy's end is {}", reply.bound));
            Ok(())
        }
        Ok(reply) => {
            let code = reply.code;
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {} ({})", code.describe(), code.code()));
            let rules = if code == ReplyCode::NotAllowed { ": its rules do not allow this destination" } else { "" };
            Err(format!("{hop} refused the CONNECT to {target} ({what}): {} (reply {}){rules}{hint}", code.describe(), code.code()))
        }
        Err(e) => {
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {e}"));
            Err(format!("{hop} did not answer the CONNECT to {target}: {e}"))
        }
    }
}

/// Whether hop `k` offers UDP ASSOCIATE, asked on a connection of its own
/// (reached again through the hops before it), unless the library would
/// not ask. `None`: not asked, or no answer.
fn udp_step(config: &Config, k: usize, first_addr: SocketAddr, report: &mut Report) -> Option<bool> {
    let hop = &config.chain[k];
    let skip = match config.udp {
        UdpMode::Block => Some("SOCKSIFY_UDP=block refuses proxied datagrams"),
        UdpMode::Direct => Some("SOCKSIFY_UDP=direct sends datagrams direct"),
        UdpMode::Proxy if !hop.scheme.supports_udp() => Some("SOCKS4 has no UDP"),
        UdpMode::Proxy => None,
    };
    if let Some(why) = skip {
        report.step("udp", Mark::Skip, format_args!("not asked: {why}"));
        return None;
    }
    let mut quiet = Report { out: &mut io::sink() };
    let mut conn = match Conn::connect(first_addr, config.timeout) {
        Ok(conn) => conn,
        Err(e) => {
            report.step("udp", Mark::Fail, format_args!("cannot connect again to {first_addr}: {e}"));
            return None;
        }
    };
    for (j, before) in config.chain[..k].iter().enumerate() {
        let next = hop_address(&config.chain[j + 1]);
        if before.pipeline {
            let _ = send_first_flight(&mut conn, before, Command::Connect, &next, &mut quiet);
        }
        let through = open_session(&mut conn, before, &mut quiet).and_then(|()| connect_step(&mut conn, before, &next, "", "", &mut quiet));
        if let Err(e) = through {
            report.step("udp", Mark::Fail, format_args!("cannot reach this hop again through hop {}: {e}", j + 1));
            return None;
        }
    }
    // As the library does: name the address datagrams will come from (a
    // server may refuse port 0, RFC 1928 section 7), here a socket of ours
    // on the control connection's address, kept open until the answer.
    // Behind another hop only the port means anything.
    let local_ip = conn.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let (_socket, from) = match UdpSocket::bind((local_ip, 0)).and_then(|s| s.local_addr().map(|a| (s, a))) {
        Ok(bound) => bound,
        Err(e) => {
            report.step("udp", Mark::Fail, format_args!("cannot open a UDP socket here: {e}"));
            return None;
        }
    };
    let named = match k {
        0 => TargetAddr::Ip(from),
        _ => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), from.port())),
    };
    if hop.pipeline {
        let _ = send_first_flight(&mut conn, hop, Command::UdpAssociate, &named, &mut quiet);
    }
    if let Err(e) = open_session(&mut conn, hop, &mut quiet) {
        report.step("udp", Mark::Fail, format_args!("the second session failed: {e}"));
        return None;
    }
    let unused = if config.chain.len() > 1 { " (unused: the library sends no UDP through a chain)" } else { "" };
    match conn.request(Command::UdpAssociate, &named) {
        Ok(reply) if reply.code == ReplyCode::Succeeded => {
            report.step("udp", Mark::Ok, format_args!("UDP ASSOCIATE offered, relay {}{unused}", reply.bound));
            Some(true)
        }
        Ok(reply) => {
            let code = reply.code;
            report.step("udp", Mark::Skip, format_args!("UDP ASSOCIATE not offered: {} ({}){unused}", code.describe(), code.code()));
            Some(false)
        }
        Err(e) => {
            report.step("udp", Mark::Skip, format_args!("UDP ASSOCIATE not offered: {e}{unused}"));
            Some(false)
        }
    }
}

#[derive(Clone, Copy)]
enum Mark {
    Ok,
    Fail,
    /// Not applicable, or not a failure of the configuration.
    Skip,
}

/// The check's output: a header, one line per step, the verdict.
struct Report<'a> {
    out: &'a mut dyn Write,
}

impl Report<'_> {
    fn line(&mut self, text: impl Display) {
        // stdout gone (a closed pipe): nothing to report to, the exit status still tells.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn step(&mut self, name: &str, mark: Mark, detail: impl Display) {
        let mark = match mark {
            Mark::Ok => "ok",
            Mark::Fail => "FAIL",
            Mark::Skip => "--",
        };
        self.line(format_args!("  {name:<9} {mark:<4} {detail}"));
    }

    fn header(&mut self, config: &Config) {
        let chain: Vec<String> = config.chain.iter().map(ToString::to_string).collect();
        let source = match config.proxy_source {
            ProxySource::SocksifyProxy => "from SOCKSIFY_PROXY".to_owned(),
            ProxySource::AllProxy(var) => format!("from {var}, as SOCKSIFY_PROXY is unset"),
            ProxySource::Default => "the default, as SOCKSIFY_PROXY is unset".to_owned(),
        };
        let dns = if config.dns == DnsMode::Remote { "remote" } else { "local" };
        let udp = match config.udp {
            UdpMode::Proxy => "proxy",
            UdpMode::Block => "block",
            UdpMode::Direct => "direct",
        };
        self.line(format_args!(
            "socksify --check: proxy {} ({source}); DNS {dns}, UDP {udp}, timeout {} ms",
            chain.join(","),
            config.timeout.as_millis()
        ));
        if let Some(warning) = &config.warning {
            self.line(format_args!("warning: {warning}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(parse_destination("127.0.0.1:80"), Ok(Destination::Addr("127.0.0.1:80".parse().unwrap())));
        assert_eq!(parse_destination("[::1]:22"), Ok(Destination::Addr("[::1]:22".parse().unwrap())));
        assert_eq!(parse_destination("Example.org:443"), Ok(Destination::Name("example.org".into(), 443)));
        for bad in ["example.org", "example.org:0", "::1:22", ":80", "host:http"] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }
}
