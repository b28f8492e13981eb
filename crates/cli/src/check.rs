//! `socksify --check [HOST:PORT]`: reach each proxy of the configured chain
//! the way the shim does, one step per line, then a verdict.
//!
//! The configuration is the shim's own (`Config::from_lookup` over the same
//! variables), and so is the client: the client core connects a socket of
//! ours to the first hop (`tcp::connect_first_hop`, one address at a time
//! so that each is reported) and runs each hop's `ClientHandshake`
//! (`tcp::handshake`) under one deadline, as `tcp::connect_via_proxy` does
//! for the shim: a CONNECT to the next hop, or at the end to the
//! destination given (by default the last proxy's own address). Each
//! handshake is then reported from the state machine it left (greeting and
//! method chosen, username/password, request and reply). A separate
//! connection asks each SOCKS5 hop for UDP ASSOCIATE. The exit status says
//! whether a TCP connection through the whole chain works; the last line
//! says why not, in one line, with a hint when the server is not SOCKS.

mod not_socks;

use socksify_client::tcp::{self, ConnectError, Deadline, Libc};
use socksify_proto::config::{Config, DnsMode, ProxyHost, ProxySource, ProxyUrl, Scheme, UdpMode};
use socksify_proto::handshake::{Awaiting, ClientHandshake, HandshakeError};
use socksify_proto::wire::socks5::{method, Command, ReplyCode};
use socksify_proto::wire::TargetAddr;
use std::fmt::Display;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
            let own = tcp::proxy_target(last);
            report.line(format_args!("destination: none given, so the last proxy's own address {own}"));
            own
        }
    };
    let mut first_addr = None;
    let mut udp_offered = None;
    let mut conn: Option<Conn> = None;
    for (i, hop) in config.chain.iter().enumerate() {
        report.line(format_args!("hop {}/{hops}: {hop}", i + 1));
        let c = match conn.take() {
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
        let target = tcp::hop_target(config, i, &final_target);
        let (what, hint) = match config.chain.get(i + 1) {
            Some(_) => (format!("hop {}", i + 2), ""),
            None if dest.is_some() => ("the destination".to_owned(), ""),
            None => (
                "the proxy's own address".to_owned(),
                "; the proxy may just not allow that: try a destination it should reach, socksify --check HOST:PORT",
            ),
        };
        let ran = c.handshake(hop, Command::Connect, &target);
        let asked = Asked { target: &target, what: &what, hint };
        report_connect(&c, hop, &ran, &asked, config.timeout.as_millis(), report)?;
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

/// A TCP connection of ours to the first hop (and through the hops after
/// it), under one deadline for the connect and every handshake, as the
/// library's.
struct Conn {
    stream: TcpStream,
    deadline: Deadline,
}

/// One hop's handshake as the client core ran it: the state machine as it
/// ended, and the outcome. `hs` is `None` when nothing could be sent (the
/// destination cannot be expressed in the hop's protocol).
struct Ran {
    hs: Option<ClientHandshake>,
    result: Result<TargetAddr, ConnectError>,
}

impl Conn {
    /// A new non-blocking socket of `addr`'s family, connected to it by the
    /// client core within `deadline`.
    fn connect(config: &Config, addr: SocketAddr, deadline: Deadline) -> Result<Conn, ConnectError> {
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: no pointers; the fd returned is checked below.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(ConnectError::Io("opening a socket", io::Error::last_os_error().raw_os_error().unwrap_or(0)));
        }
        // SAFETY: a new socket, owned by nothing else.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        tcp::connect_first_hop(&Libc, fd, family, config, &[addr], &deadline)?;
        Ok(Conn { stream, deadline })
    }

    /// Runs `hop`'s handshake over the connection, as the library does.
    fn handshake(&self, hop: &ProxyUrl, command: Command, target: &TargetAddr) -> Ran {
        match ClientHandshake::start(&hop.dialect(), command, target) {
            Ok((mut hs, first)) => {
                let result = tcp::handshake(&Libc, self.stream.as_raw_fd(), &mut hs, &first, &self.deadline);
                Ran { hs: Some(hs), result }
            }
            Err(e) => Ran { hs: None, result: Err(ConnectError::Handshake(e)) },
        }
    }

    /// The rest of the server's first line after `got`, the bytes that
    /// failed the handshake (up to a line end, [`not_socks::SHOWN`] bytes,
    /// the end of the stream or the deadline), to say what it is.
    fn rest_of_line(&self, got: &[u8]) -> Vec<u8> {
        let mut bytes = got.to_vec();
        let mut buf = [0u8; not_socks::SHOWN];
        while bytes.len() < not_socks::SHOWN && !bytes.contains(&b'\n') {
            if tcp::poll_until(&Libc, self.stream.as_raw_fd(), libc::POLLIN, self.deadline.instant()).is_err() {
                break;
            }
            let want = not_socks::SHOWN - bytes.len();
            match (&self.stream).read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => break,
            }
        }
        bytes
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
    // One deadline for every address and the whole chain, as the library.
    let deadline = Deadline::after(config.timeout);
    let mut why = Vec::new();
    let count = addrs.len();
    for (n, addr) in addrs.into_iter().enumerate() {
        match Conn::connect(config, addr, deadline) {
            Ok(conn) => {
                let from = conn.stream.local_addr().map(|a| format!(" from {a}")).unwrap_or_default();
                report.step("connected", Mark::Ok, format_args!("{addr}{from}"));
                return Ok((conn, addr));
            }
            Err(e) => {
                let reason = match e {
                    ConnectError::ProxyUnreachable(_, libc::ECONNREFUSED) => {
                        format!("nothing listens at {addr} (connection refused): is the proxy running, on that port?")
                    }
                    ConnectError::Timeout(_) => format!(
                        "no answer from {addr} within {} ms: a wrong address, or a firewall dropping packets",
                        config.timeout.as_millis()
                    ),
                    ConnectError::ProxyUnreachable(_, errno) | ConnectError::Io(_, errno) => {
                        format!("cannot connect to {addr}: {}", io::Error::from_raw_os_error(errno))
                    }
                    e => format!("cannot connect to {addr}: {e}"),
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

/// What a hop was asked to connect to.
struct Asked<'a> {
    target: &'a TargetAddr,
    /// Names it: the next hop, or the destination.
    what: &'a str,
    /// Ends the verdict when the proxy refuses it.
    hint: &'a str,
}

/// Reports a hop's CONNECT handshake, one line per step it reached:
/// `methods` (greeting and method chosen), `auth`, `connect` (request and
/// reply). `timeout` is `SOCKSIFY_TIMEOUT_MS`.
fn report_connect(conn: &Conn, hop: &ProxyUrl, ran: &Ran, asked: &Asked, timeout: u128, report: &mut Report) -> Result<(), String> {
    let Asked { target, what, hint } = asked;
    let socks4 = matches!(hop.scheme, Scheme::Socks4 | Scheme::Socks4a);
    if socks4 {
        report.step("methods", Mark::Skip, "SOCKS4 has no authentication methods");
        match &hop.credentials {
            Some(c) => {
                report.step("auth", Mark::Skip, format_args!("user id {:?} goes with the request", String::from_utf8_lossy(&c.user)))
            }
            None => report.step("auth", Mark::Skip, "none (SOCKS4)"),
        }
    } else if let Some(hs) = &ran.hs {
        report_session(conn, hop, hs, ran.result.as_ref().err(), timeout, report)?;
    }
    let (hs, e) = match (&ran.hs, &ran.result) {
        (_, Ok(_)) if socks4 => {
            report.step("connect", Mark::Ok, format_args!("CONNECT {target} ({what}) granted"));
            return Ok(());
        }
        (_, Ok(bound)) => {
            report.step("connect", Mark::Ok, format_args!("CONNECT {target} ({what}) succeeded, the proxy's end is {bound}"));
            return Ok(());
        }
        (None, Err(e)) => {
            report.step("connect", Mark::Fail, format_args!("{target} ({what}): {e}"));
            return Err(format!("{hop} speaks SOCKS4, which cannot carry the IPv6 address {target}"));
        }
        (Some(hs), Err(e)) => (hs, e),
    };
    match e {
        ConnectError::Handshake(HandshakeError::Rejected(code)) => {
            let code = *code;
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {} ({})", code.describe(), code.code()));
            let rules = if code == ReplyCode::NotAllowed { ": its rules do not allow this destination" } else { "" };
            Err(format!("{hop} refused the CONNECT to {target} ({what}): {} (reply {}){rules}{hint}", code.describe(), code.code()))
        }
        ConnectError::Handshake(HandshakeError::Rejected4(code)) => {
            let why = match code {
                92 => "rejected: the proxy cannot reach identd on this machine",
                93 => "rejected: identd reports another user id",
                _ => "rejected or failed",
            };
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {why} ({code})"));
            Err(format!("{hop} refused the CONNECT to {target} ({what}): {why} (SOCKS4 code {code}){hint}"))
        }
        // SOCKS4's request is its first message: silence there is a silent server.
        ConnectError::Timeout(_) if socks4 => {
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {}", failure(conn, hs, e, timeout)));
            Err(format!("{hop}: no answer to the SOCKS4 request within {timeout} ms: is this a SOCKS server? {HTTP_WAITS}"))
        }
        e => {
            let e = failure(conn, hs, e, timeout);
            report.step("connect", Mark::Fail, format_args!("CONNECT {target} ({what}): {e}"));
            Err(format!("{hop} did not answer the CONNECT to {target}: {e}"))
        }
    }
}

const HTTP_WAITS: &str = "an HTTP proxy waits for a request";

/// A SOCKS5 hop's greeting and authentication, as the handshake `hs`
/// ended, with `error` if it failed (at the step `hs` was awaiting).
fn report_session(
    conn: &Conn,
    hop: &ProxyUrl,
    hs: &ClientHandshake,
    error: Option<&ConnectError>,
    timeout: u128,
    report: &mut Report,
) -> Result<(), String> {
    let at_methods = error.filter(|_| hs.awaiting() == Awaiting::MethodSelection);
    let at_auth = error.filter(|_| hs.awaiting() == Awaiting::AuthReply);
    let offered: Vec<String> = hs.offered().iter().map(|m| method_name(*m)).collect();
    let offered = offered.join(", ");
    if hop.pipeline {
        match at_methods {
            Some(ConnectError::Io(step, errno)) if step.starts_with("sending") && *errno != 0 => {
                let e = io::Error::from_raw_os_error(*errno);
                report.step("flight", Mark::Fail, format_args!("pipelined: {e}"));
                return Err(format!("{hop}: cannot send the pipelined first flight: {e}"));
            }
            _ => report.step("flight", Mark::Ok, "pipelined (?pipeline=1): greeting, credentials and request sent at once"),
        }
    }
    if let Some(e) = at_methods {
        let chosen = hs.chosen().map(method_name).unwrap_or_default();
        let (line, why) = match e {
            ConnectError::Handshake(HandshakeError::NoAcceptableMethod) => (
                format!("offered {offered}; chosen {chosen}"),
                match (&hop.credentials, hs.offered().len()) {
                    (None, _) => format!(
                        "{hop} accepts none of the offered methods (no authentication): it wants a user name and password; \
                         give them with -U USER:PASS or as user:pass@ in the URL"
                    ),
                    (Some(_), 1) => format!("{hop} does not accept username/password authentication (RFC 1929)"),
                    (Some(_), _) => format!("{hop} accepts neither no authentication nor username/password (RFC 1929)"),
                },
            ),
            // Pipelined with credentials, only username/password was offered.
            ConnectError::Handshake(HandshakeError::UnexpectedMethod(method::NO_AUTH)) if hop.pipeline => (
                format!("offered {offered}; chosen {chosen}"),
                format!(
                    "{hop} takes no authentication, but a pipelined first flight with credentials offers only \
                     username/password: give no credentials, or drop ?pipeline=1"
                ),
            ),
            ConnectError::Handshake(HandshakeError::UnexpectedMethod(_)) => (
                format!("offered {offered}; chosen {chosen}"),
                format!("{hop} chose {chosen}, which was not offered: a broken SOCKS server"),
            ),
            ConnectError::Timeout(_) if hop.pipeline => (
                format!("offered {offered}: {}", failure(conn, hs, e, timeout)),
                format!(
                    "{hop} did not answer the pipelined first flight: {}: a server that reads one message at a time \
                     drops what comes ahead of its turn; try without ?pipeline=1",
                    failure(conn, hs, e, timeout)
                ),
            ),
            ConnectError::Timeout(_) => (
                format!("offered {offered}: {}", failure(conn, hs, e, timeout)),
                format!("{hop}: no answer to the SOCKS greeting within {timeout} ms: is this a SOCKS server? {HTTP_WAITS}"),
            ),
            e => {
                let hint = match (closed(e), hop.pipeline) {
                    (true, true) => {
                        ": a server that reads one message at a time may hang up on a pipelined first flight; try without ?pipeline=1"
                    }
                    (true, false) => ": is it a SOCKS5 server (socks4:// if it speaks only SOCKS4)?",
                    (false, _) => "",
                };
                let e = failure(conn, hs, e, timeout);
                (format!("offered {offered}: {e}"), format!("{hop} did not answer the SOCKS5 greeting: {e}{hint}"))
            }
        };
        report.step("methods", Mark::Fail, line);
        return Err(why);
    }
    let chosen = hs.chosen().expect("the method selection was read");
    report.step("methods", Mark::Ok, format_args!("offered {offered}; chosen {}", method_name(chosen)));
    match (&hop.credentials, chosen) {
        (Some(_), method::NO_AUTH) => {
            report.step("auth", Mark::Skip, "none: the server chose no authentication, so the credentials were not sent")
        }
        (None, _) => report.step("auth", Mark::Skip, "none needed"),
        (Some(creds), _) => {
            let user = String::from_utf8_lossy(&creds.user);
            match at_auth {
                None => report.step("auth", Mark::Ok, format_args!("user {user:?} accepted")),
                Some(ConnectError::Handshake(HandshakeError::AuthFailed(status))) => {
                    report.step("auth", Mark::Fail, format_args!("user {user:?} rejected (RFC 1929 status {status})"));
                    return Err(format!(
                        "wrong user name or password: {hop} rejected user {user:?} (RFC 1929 status {status}); \
                         check -U USER:PASS or user:pass@ in the URL"
                    ));
                }
                Some(e) => {
                    let e = failure(conn, hs, e, timeout);
                    report.step("auth", Mark::Fail, format_args!("user {user:?}: {e}"));
                    return Err(format!("{hop} did not answer the username/password: {e}"));
                }
            }
        }
    }
    Ok(())
}

/// Whether the handshake failed because the server hung up: an end of
/// stream, or a reset (a server that closes with our bytes unread).
fn closed(e: &ConnectError) -> bool {
    matches!(e, ConnectError::Io(_, 0 | libc::ECONNRESET | libc::EPIPE))
}

/// A failed handshake step in words: what the server sent, or did not.
fn failure(conn: &Conn, hs: &ClientHandshake, e: &ConnectError, timeout: u128) -> String {
    let got = hs.received();
    match e {
        ConnectError::Timeout(_) => format!("no answer within {timeout} ms (SOCKSIFY_TIMEOUT_MS)"),
        ConnectError::Io(_, errno @ (0 | libc::ECONNRESET | libc::EPIPE)) => {
            let how = if *errno == 0 { "" } else { " (reset)" };
            match got {
                [] => format!("the proxy closed the connection{how} without answering"),
                _ => format!("the proxy closed the connection{how} after {} byte(s) {}", got.len(), not_socks::hex(got)),
            }
        }
        ConnectError::Handshake(HandshakeError::Garbage(why)) => not_socks::describe(&conn.rest_of_line(got), why),
        e => e.to_string(),
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
    let conn = match Conn::connect(config, first_addr, Deadline::after(config.timeout)) {
        Ok(conn) => conn,
        Err(e) => {
            report.step("udp", Mark::Fail, format_args!("cannot connect again to {first_addr}: {e}"));
            return None;
        }
    };
    for (j, before) in config.chain[..k].iter().enumerate() {
        if let Err(e) = conn.handshake(before, Command::Connect, &tcp::proxy_target(&config.chain[j + 1])).result {
            report.step("udp", Mark::Fail, format_args!("cannot reach this hop again through hop {}: {e}", j + 1));
            return None;
        }
    }
    // As the library does: name the address datagrams will come from (a
    // server may refuse port 0, RFC 1928 section 7), here a socket of ours
    // on the control connection's address, kept open until the answer.
    // Behind another hop only the port means anything.
    let local_ip = conn.stream.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
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
    let unused = if config.chain.len() > 1 { " (unused: the library sends no UDP through a chain)" } else { "" };
    let ran = conn.handshake(hop, Command::UdpAssociate, &named);
    match (&ran.hs, &ran.result) {
        (_, Ok(bound)) => {
            report.step("udp", Mark::Ok, format_args!("UDP ASSOCIATE offered, relay {bound}{unused}"));
            Some(true)
        }
        (_, Err(ConnectError::Handshake(HandshakeError::Rejected(code)))) => {
            let code = *code;
            report.step("udp", Mark::Skip, format_args!("UDP ASSOCIATE not offered: {} ({}){unused}", code.describe(), code.code()));
            Some(false)
        }
        (Some(hs), Err(e)) if hs.awaiting() == Awaiting::Reply => {
            let e = failure(&conn, hs, e, config.timeout.as_millis());
            report.step("udp", Mark::Skip, format_args!("UDP ASSOCIATE not offered: {e}{unused}"));
            Some(false)
        }
        (_, Err(e)) => {
            report.step("udp", Mark::Fail, format_args!("the second session failed: {e}"));
            None
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
