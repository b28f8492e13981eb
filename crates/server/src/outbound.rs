//! Reaching destinations: name resolution (`--map` first, then the system
//! resolver), the allow/deny rules, and outgoing TCP connections from the
//! `--bind-out` address.
//!
//! Promise: every failure comes back as the SOCKS5 reply code that describes
//! it (refused → 5, network unreachable → 3, host unreachable or unresolvable
//! → 4, timeout → 6, denied by a rule → 2) plus a short reason for the log.

use crate::cli::Config;
use crate::rules;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use socksify_proto::wire::socks5::ReplyCode;
use socksify_proto::wire::TargetAddr;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};

/// Why a destination could not be reached.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: ReplyCode,
    pub reason: String,
}

impl Failure {
    pub fn new(code: ReplyCode, reason: impl Into<String>) -> Failure {
        Failure { code, reason: reason.into() }
    }
}

/// The reply code that describes an error from `connect` or `bind`.
pub fn reply_for(err: &io::Error) -> ReplyCode {
    if err.kind() == io::ErrorKind::TimedOut || err.kind() == io::ErrorKind::WouldBlock {
        return ReplyCode::TtlExpired;
    }
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => ReplyCode::ConnectionRefused,
        Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) | Some(libc::EADDRNOTAVAIL) => ReplyCode::NetworkUnreachable,
        Some(libc::EHOSTUNREACH) | Some(libc::EHOSTDOWN) => ReplyCode::HostUnreachable,
        Some(libc::ETIMEDOUT) => ReplyCode::TtlExpired,
        Some(libc::EACCES) | Some(libc::EPERM) => ReplyCode::NotAllowed,
        Some(libc::EAFNOSUPPORT) => ReplyCode::AddressTypeNotSupported,
        _ => ReplyCode::GeneralFailure,
    }
}

/// The addresses `target` names: itself, its `--map` entry, or what the
/// system resolver returns, each as the address it reaches
/// ([`rules::reached`]: `0.0.0.0` is `127.0.0.1`, `::ffff:a.b.c.d` is
/// `a.b.c.d`). Rules judge these and sockets connect to these, never to
/// the spelling the client sent, nor to a second look-up of the name.
/// Unresolvable names are host-unreachable.
pub fn resolve(cfg: &Config, target: &TargetAddr) -> Result<Vec<SocketAddr>, Failure> {
    let (name, port) = match target {
        TargetAddr::Ip(sa) => return Ok(vec![rules::reached_addr(*sa)]),
        TargetAddr::Domain(name, port) => (name, *port),
    };
    let lower = name.to_ascii_lowercase();
    if let Some(ip) = cfg.map.get(lower.trim_end_matches('.')) {
        return Ok(vec![SocketAddr::new(rules::reached(*ip), port)]);
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(rules::reached(ip), port)]);
    }
    // RFC 6761: `.invalid` never resolves; answering at once spares a DNS round trip.
    if lower.trim_end_matches('.').ends_with(".invalid") || lower == "invalid" {
        return Err(Failure::new(ReplyCode::HostUnreachable, format!("cannot resolve {name}")));
    }
    match (name.as_str(), port).to_socket_addrs() {
        Ok(addrs) => {
            let mut out: Vec<SocketAddr> = Vec::new();
            for a in addrs {
                let a = rules::reached_addr(a);
                if !out.contains(&a) {
                    out.push(a);
                }
            }
            if out.is_empty() {
                Err(Failure::new(ReplyCode::HostUnreachable, format!("no address for {name}")))
            } else {
                Ok(out)
            }
        }
        Err(e) => Err(Failure::new(ReplyCode::HostUnreachable, format!("cannot resolve {name}: {e}"))),
    }
}

/// Resolves `target` and keeps the addresses the rules allow: every
/// address a name resolves to is judged, and only those allowed are returned
/// (and so ever connected to).
pub fn allowed_addrs(cfg: &Config, target: &TargetAddr) -> Result<Vec<SocketAddr>, Failure> {
    let addrs = resolve(cfg, target)?;
    let (allowed, denied): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.into_iter().partition(|a| cfg.dest_allowed(a.ip(), a.port()));
    if allowed.is_empty() {
        let by_rule = denied.iter().any(|a| cfg.rules.verdict(a.ip(), a.port()).is_some());
        let why =
            if by_rule { "denied by rules" } else { "is this host: denied when listening beyond loopback (an --allow rule opens it)" };
        return Err(Failure::new(ReplyCode::NotAllowed, format!("{target} {why}")));
    }
    Ok(allowed)
}

/// A new socket of `addr`'s family bound to `--bind-out` for that family, if any.
pub fn socket_for(cfg: &Config, addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM { Protocol::TCP } else { Protocol::UDP };
    let sock = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(proto))?;
    if let Some(ip) = cfg.bind_out_for(addr.ip()) {
        sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    Ok(sock)
}

/// Connects to `target`, trying each allowed address in turn (so a name
/// whose first family does not work falls through to the next one).
pub fn connect(cfg: &Config, target: &TargetAddr) -> Result<TcpStream, Failure> {
    let addrs = allowed_addrs(cfg, target)?;
    let mut last = Failure::new(ReplyCode::GeneralFailure, "no address tried");
    for addr in addrs {
        let attempt = socket_for(cfg, addr, Type::STREAM).and_then(|s| {
            s.connect_timeout(&SockAddr::from(addr), cfg.connect_timeout)?;
            Ok(s)
        });
        match attempt {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Ok(sock.into());
            }
            Err(e) => last = Failure::new(reply_for(&e), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_reply_codes() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(reply_for(&os(libc::ECONNREFUSED)), ReplyCode::ConnectionRefused);
        assert_eq!(reply_for(&os(libc::ENETUNREACH)), ReplyCode::NetworkUnreachable);
        assert_eq!(reply_for(&os(libc::EHOSTUNREACH)), ReplyCode::HostUnreachable);
        assert_eq!(reply_for(&os(libc::ETIMEDOUT)), ReplyCode::TtlExpired);
        assert_eq!(reply_for(&io::Error::from(io::ErrorKind::TimedOut)), ReplyCode::TtlExpired);
        assert_eq!(reply_for(&os(libc::EIO)), ReplyCode::GeneralFailure);
    }

    #[test]
    fn what_is_connected_to_is_what_the_rules_judged() {
        let mut cfg = Config::default();
        cfg.rules.push(rules::Rule::parse("127.0.0.0/8", false).unwrap());
        cfg.rules.push(rules::Rule::parse("::1", false).unwrap());
        let ip = |s: &str| TargetAddr::Ip(s.parse().unwrap());
        let name = |s: &str| TargetAddr::domain(s, 80).unwrap();
        // Names the resolver reads as numbers (inet_aton: "0" is 0.0.0.0).
        let ips = [ip("0.0.0.0:80"), ip("[::]:80"), ip("[::ffff:0.0.0.0]:80"), ip("[::ffff:127.0.0.1]:80")];
        for target in ips.into_iter().chain([name("0"), name("::"), name("localhost")]) {
            let got = resolve(&cfg, &target).unwrap();
            assert!(got.iter().all(|a| a.ip().is_loopback()), "{target} resolves to {got:?}");
            let err = allowed_addrs(&cfg, &target).unwrap_err();
            assert_eq!(err.code, ReplyCode::NotAllowed, "{target}");
        }
        assert_eq!(allowed_addrs(&cfg, &ip("[::ffff:192.0.2.1]:80")).unwrap(), vec!["192.0.2.1:80".parse().unwrap()]);
    }

    #[test]
    fn map_is_consulted_first_and_invalid_never_resolves() {
        let mut cfg = Config::default();
        cfg.map.insert("name.test".into(), "127.0.0.9".parse().unwrap());
        let got = resolve(&cfg, &TargetAddr::domain("NAME.test.", 80).unwrap()).unwrap();
        assert_eq!(got, vec!["127.0.0.9:80".parse().unwrap()]);
        cfg.map.insert("any.test".into(), "::".parse().unwrap());
        let got = resolve(&cfg, &TargetAddr::domain("any.test", 80).unwrap()).unwrap();
        assert_eq!(got, vec!["[::1]:80".parse().unwrap()], "a --map to :: reaches ::1");
        let err = resolve(&cfg, &TargetAddr::domain("nothing.invalid", 80).unwrap()).unwrap_err();
        assert_eq!(err.code, ReplyCode::HostUnreachable);
    }
}
