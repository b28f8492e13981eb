//! `socks5h://[user:pass@]host:port[?pipeline=1]` and friends.

use crate::handshake::{Credentials, Dialect};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

pub const DEFAULT_PORT: u16 = 1080;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// SOCKS5, names resolved locally.
    Socks5,
    /// SOCKS5, names resolved by the proxy.
    Socks5h,
    Socks4,
    /// SOCKS4 with names resolved by the proxy.
    Socks4a,
}

impl Scheme {
    /// Whether host names are sent to the proxy rather than resolved here.
    pub fn resolves_remotely(self) -> bool {
        matches!(self, Scheme::Socks5h | Scheme::Socks4a)
    }

    pub fn supports_udp(self) -> bool {
        matches!(self, Scheme::Socks5 | Scheme::Socks5h)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHost {
    Ip(IpAddr),
    /// Resolved with the real resolver when first used.
    Name(String),
}

impl fmt::Display for ProxyHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            ProxyHost::Ip(ip) => write!(f, "{ip}"),
            ProxyHost::Name(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    pub host: ProxyHost,
    pub port: u16,
    pub credentials: Option<Credentials>,
    /// `?pipeline=1`: send the SOCKS5 greeting, credentials and request in
    /// one flight (see `handshake`); off by default, since servers that read
    /// one message per `recv` (microsocks) lose the rest and hang.
    pub pipeline: bool,
}

impl fmt::Display for ProxyUrl {
    /// The URL without the password, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
            Scheme::Socks4 => "socks4",
            Scheme::Socks4a => "socks4a",
        };
        write!(f, "{scheme}://")?;
        if let Some(c) = &self.credentials {
            write!(f, "{}:***@", String::from_utf8_lossy(&c.user))?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if self.pipeline {
            f.write_str("?pipeline=1")?;
        }
        Ok(())
    }
}

impl ProxyUrl {
    /// Parses one proxy URL. Errors are one line, fit for the user.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| format!("{text:?} is not a URL like socks5h://host:port"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => Scheme::Socks5,
            "socks5h" | "socks" => Scheme::Socks5h,
            "socks4" => Scheme::Socks4,
            "socks4a" => Scheme::Socks4a,
            other => return Err(format!("unsupported scheme {other:?} (use socks5h, socks5, socks4a or socks4)")),
        };
        let (rest, pipeline) = match rest.split_once('?') {
            None => (rest, false),
            Some((rest, query)) => (rest, parse_query(query)?),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!("{text:?} has a path; a proxy URL is scheme://[user:pass@]host:port"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let creds = Credentials { user: percent_decode(user)?, pass: percent_decode(pass)? };
                if creds.user.is_empty() || creds.user.len() > 255 || creds.pass.len() > 255 {
                    return Err("user name must be 1 to 255 bytes and password at most 255 (RFC 1929)".into());
                }
                if matches!(scheme, Scheme::Socks4 | Scheme::Socks4a) && !creds.pass.is_empty() {
                    return Err("SOCKS4 has no passwords; give only a user id".into());
                }
                Some(creds)
            }
        };
        let (host, port) = split_host_port(hostport)?;
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(format!("bad port {p:?}")),
            },
        };
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            ProxyHost::Ip(ip)
        } else if is_host_name(host) {
            ProxyHost::Name(host.to_ascii_lowercase())
        } else {
            return Err(format!("bad host {host:?}"));
        };
        if pipeline && !matches!(scheme, Scheme::Socks5 | Scheme::Socks5h) {
            return Err("pipeline=1 is for SOCKS5; a SOCKS4 request is a single message already".into());
        }
        Ok(ProxyUrl { scheme, host, port, credentials, pipeline })
    }

    /// A comma-separated chain, first hop first.
    pub fn parse_chain(text: &str) -> Result<Vec<ProxyUrl>, String> {
        let chain = text.split(',').filter(|s| !s.trim().is_empty()).map(ProxyUrl::parse).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err("empty proxy list".into());
        }
        Ok(chain)
    }

    /// How to speak to this proxy.
    pub fn dialect(&self) -> Dialect {
        match self.scheme {
            Scheme::Socks5 | Scheme::Socks5h => Dialect::Socks5 { credentials: self.credentials.clone(), pipeline: self.pipeline },
            Scheme::Socks4 | Scheme::Socks4a => {
                Dialect::Socks4 { user_id: self.credentials.as_ref().map(|c| c.user.clone()).unwrap_or_default() }
            }
        }
    }
}

/// The query of a proxy URL: `pipeline=1` or `pipeline=0`, nothing else.
fn parse_query(query: &str) -> Result<bool, String> {
    let mut pipeline = false;
    for item in query.split('&').filter(|s| !s.is_empty()) {
        pipeline = match item {
            "pipeline=1" => true,
            "pipeline=0" => false,
            other => return Err(format!("unknown proxy URL option {other:?} (the only one is pipeline=1 or pipeline=0)")),
        };
    }
    Ok(pipeline)
}

/// `host:port`, `[v6]:port`, `host`, `[v6]`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
        host.parse::<Ipv6Addr>().map_err(|_| format!("bad IPv6 address {host:?}"))?;
        return match after {
            "" => Ok((host, None)),
            _ => after.strip_prefix(':').map(|p| (host, Some(p))).ok_or_else(|| format!("junk after ']' in {text:?}")),
        };
    }
    if text.matches(':').count() > 1 {
        return Err(format!("IPv6 address {text:?} must be in brackets, like [::1]:1080"));
    }
    Ok(match text.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    })
}

pub(crate) fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or("bad percent-escape in user:password")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let u = ProxyUrl::parse("socks5h://al%40ice:p%3Aw@gw.example:1081").unwrap();
        assert_eq!(u.scheme, Scheme::Socks5h);
        assert_eq!(u.host, ProxyHost::Name("gw.example".into()));
        assert_eq!(u.port, 1081);
        let c = u.credentials.clone().unwrap();
        assert_eq!((c.user.as_slice(), c.pass.as_slice()), (&b"al@ice"[..], &b"p:w"[..]));
        assert_eq!(u.to_string(), "socks5h://al@ice:***@gw.example:1081");
    }

    #[test]
    fn ipv6_default_port_and_schemes() {
        let u = ProxyUrl::parse("socks5://[::1]").unwrap();
        assert_eq!((u.host, u.port, u.scheme), (ProxyHost::Ip("::1".parse().unwrap()), 1080, Scheme::Socks5));
        assert_eq!(ProxyUrl::parse("SOCKS4A://127.0.0.1:9050/").unwrap().scheme, Scheme::Socks4a);
        assert!(ProxyUrl::parse("socks5h://[::1]:1080").unwrap().scheme.resolves_remotely());
    }

    #[test]
    fn malformed_urls_are_errors() {
        for bad in [
            "",
            "127.0.0.1:1080",
            "http://x:1",
            "socks5://",
            "socks5://h:0",
            "socks5://h:99999",
            "socks5://h:x",
            "socks5://::1:1080",
            "socks5://[::1",
            "socks5://[zz]:1",
            "socks5://h/path",
            "socks5://a b:1",
            "socks5://%zz:p@h:1",
            "socks5://:pw@h:1",
            "socks4://u:pw@h:1",
            "socks5://h:1?pipeline=yes",
            "socks5://h:1?fast=1",
            "socks4a://h:1?pipeline=1",
            "socks5://h:1/x?pipeline=1",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn pipelining_is_an_opt_in_per_proxy() {
        assert!(!ProxyUrl::parse("socks5h://127.0.0.1:1080").unwrap().pipeline);
        let u = ProxyUrl::parse("socks5h://u:p@127.0.0.1:1080/?pipeline=1").unwrap();
        assert!(u.pipeline);
        assert_eq!(u.to_string(), "socks5h://u:***@127.0.0.1:1080?pipeline=1");
        assert!(!ProxyUrl::parse("socks5://[::1]:1?pipeline=0").unwrap().pipeline);
        let chain = ProxyUrl::parse_chain("socks5://a:1?pipeline=1,socks5://b:2").unwrap();
        assert_eq!((chain[0].pipeline, chain[1].pipeline), (true, false));
    }

    #[test]
    fn chains() {
        let c = ProxyUrl::parse_chain("socks5://127.0.0.1:1,socks5h://127.0.0.2:2").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].port, 2);
        assert!(ProxyUrl::parse_chain(" , ").is_err());
    }
}
