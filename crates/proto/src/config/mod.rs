//! socksify's configuration, read from `SOCKSIFY_*` environment variables
//! (and curl's `ALL_PROXY` when `SOCKSIFY_PROXY` is unset, see [`proxy_source`]).
//!
//! [`Config::from_lookup`] takes the variable lookup as a function so tests
//! need no process environment. A malformed value is a [`ConfigError`]
//! naming the variable; the shim reports it once and then refuses every
//! proxied call (it never falls back to direct connections).

pub mod bypass;
pub mod proxy_source;
pub mod proxy_url;

pub use bypass::BypassList;
pub use proxy_source::ProxySource;
pub use proxy_url::{ProxyHost, ProxyUrl, Scheme};

use crate::cidr::Cidr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_PROXY: &str = "socks5h://127.0.0.1:1080";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 2544's benchmarking range: routable nowhere, not multicast, and not
/// rejected by `dig` or `nmap` as proxychains' 224/8 is.
pub const DEFAULT_FAKE_V4: Cidr<Ipv4Addr> = Cidr::v4(Ipv4Addr::new(198, 18, 0, 0), 15);
/// A unique-local /64 of our own.
pub const DEFAULT_FAKE_V6: Cidr<Ipv6Addr> = Cidr::v6(Ipv6Addr::new(0xfd50, 0xc5f1, 0xf1ed, 0, 0, 0, 0, 0), 64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMode {
    Proxy,
    Block,
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Fake addresses locally; the proxy resolves the names.
    Remote,
    Local,
}

/// Which listening TCP sockets become a SOCKS BIND (`SOCKSIFY_BIND`; the
/// rule itself is [`crate::bind::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Port 0, and the process has a proxied TCP connection from that
    /// address (or the address is the wildcard).
    Auto,
    /// Every TCP socket that is bound and then listens or is asked its name.
    Always,
    /// None: listening sockets stay local.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Proxies, first hop first; never empty.
    pub chain: Vec<ProxyUrl>,
    pub no_proxy: BypassList,
    /// Whether `no_proxy` is the default list (`SOCKSIFY_NO_PROXY` unset).
    pub no_proxy_is_default: bool,
    pub udp: UdpMode,
    pub dns: DnsMode,
    pub fake_v4: Cidr<Ipv4Addr>,
    pub fake_v6: Cidr<Ipv6Addr>,
    /// Bound on reaching the proxy and on each handshake.
    pub timeout: Duration,
    /// Which variable named the proxy.
    pub proxy_source: ProxySource,
    /// A setting that was ignored (an `http://` `ALL_PROXY`), in one line, to be logged.
    pub warning: Option<String>,
    pub bind: BindMode,
    /// `SOCKSIFY_DNS_UPSTREAM`: the resolver that DNS queries we cannot
    /// fake (MX, TXT, …) are sent to, over TCP through the proxy.
    pub dns_upstream: Option<SocketAddr>,
}

/// A malformed variable: which one and what is wrong, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `get(name)`, e.g. `std::env::var(name).ok()`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let err = |var: &'static str| move |message: String| ConfigError { var, message };
        if let Some(spec) = get("SOCKSIFY_LOG") {
            check_log_filter(&spec).map_err(err("SOCKSIFY_LOG"))?;
        }
        let proxy = proxy_source::choose(&get);
        let mut chain = ProxyUrl::parse_chain(&proxy.text).map_err(err(proxy.source.var()))?;
        // SOCKSIFY_PIPELINE=1 opts every SOCKS5 hop in; `?pipeline=` on a URL
        // still decides for that hop.
        match get("SOCKSIFY_PIPELINE").as_deref().map(str::trim) {
            None | Some("") | Some("0") => {}
            Some("1") => {
                let urls: Vec<&str> = proxy.text.split(',').filter(|s| !s.trim().is_empty()).collect();
                for (hop, url) in chain.iter_mut().zip(urls) {
                    if matches!(hop.scheme, Scheme::Socks5 | Scheme::Socks5h) && !url.contains("pipeline=") {
                        hop.pipeline = true;
                    }
                }
            }
            Some(other) => return Err(err("SOCKSIFY_PIPELINE")(format!("{other:?} is not 0 or 1"))),
        }
        let no_proxy_is_default = get("SOCKSIFY_NO_PROXY").is_none();
        let no_proxy = get("SOCKSIFY_NO_PROXY").unwrap_or_else(|| bypass::DEFAULT.into());
        let no_proxy = BypassList::parse(&no_proxy).map_err(err("SOCKSIFY_NO_PROXY"))?;
        let last = chain.last().expect("parse_chain never returns an empty chain");
        let udp = match get("SOCKSIFY_UDP").as_deref().map(str::trim) {
            None | Some("") | Some("proxy") => UdpMode::Proxy,
            Some("block") => UdpMode::Block,
            Some("direct") => UdpMode::Direct,
            Some(other) => return Err(err("SOCKSIFY_UDP")(format!("{other:?} is not proxy, block or direct"))),
        };
        let dns = match get("SOCKSIFY_DNS").as_deref().map(str::trim) {
            None | Some("") => {
                if last.scheme.resolves_remotely() {
                    DnsMode::Remote
                } else {
                    DnsMode::Local
                }
            }
            Some("remote") => DnsMode::Remote,
            Some("local") => DnsMode::Local,
            Some(other) => return Err(err("SOCKSIFY_DNS")(format!("{other:?} is not remote or local"))),
        };
        let (fake_v4, fake_v6) = match get("SOCKSIFY_FAKE_NET").filter(|s| !s.trim().is_empty()) {
            None => (DEFAULT_FAKE_V4, DEFAULT_FAKE_V6),
            Some(text) => parse_fake_net(&text).map_err(err("SOCKSIFY_FAKE_NET"))?,
        };
        let timeout = match get("SOCKSIFY_TIMEOUT_MS").filter(|s| !s.trim().is_empty()) {
            None => DEFAULT_TIMEOUT,
            Some(ms) => match ms.trim().parse::<u64>() {
                Ok(ms) if (1..=3_600_000).contains(&ms) => Duration::from_millis(ms),
                _ => return Err(err("SOCKSIFY_TIMEOUT_MS")(format!("{ms:?} is not a number of milliseconds from 1 to 3600000"))),
            },
        };
        let dns_upstream = match get("SOCKSIFY_DNS_UPSTREAM").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(text) => Some(parse_upstream(text.trim()).map_err(err("SOCKSIFY_DNS_UPSTREAM"))?),
        };
        let bind = match get("SOCKSIFY_BIND").as_deref().map(str::trim) {
            None | Some("") | Some("auto") => BindMode::Auto,
            Some("always") => BindMode::Always,
            Some("off") => BindMode::Off,
            Some(other) => return Err(err("SOCKSIFY_BIND")(format!("{other:?} is not auto, always or off"))),
        };
        Ok(Config {
            chain,
            no_proxy,
            no_proxy_is_default,
            udp,
            dns,
            fake_v4,
            fake_v6,
            timeout,
            proxy_source: proxy.source,
            warning: proxy.warning,
            bind,
            dns_upstream,
        })
    }

    /// The configuration in one readable line, passwords masked: what
    /// `SOCKSIFY_LOG=debug` shows at start (a `Debug` dump would show the
    /// password and the bypass list's internals).
    pub fn summary(&self) -> String {
        let chain: Vec<String> = self.chain.iter().map(ToString::to_string).collect();
        let rules: Vec<String> = self.no_proxy.addr_rules().iter().map(|(net, port)| match port {
            Some(p) => format!("{net}:{p}"),
            None => net.to_string(),
        }).collect();
        format!(
            "proxy {} (from {}), no proxy for {}{}, UDP {:?}, DNS {:?} (fake {} and {}), timeout {} ms, BIND {:?}",
            chain.join(","),
            self.proxy_source.var(),
            if rules.is_empty() && !self.no_proxy.has_name_rules() { "nothing".to_owned() } else { rules.join(",") },
            if self.no_proxy.has_name_rules() { " and named hosts" } else { "" },
            self.udp,
            self.dns,
            self.fake_v4,
            self.fake_v6,
            self.timeout.as_millis(),
            self.bind,
        )
    }

    /// One line for the log when the proxy came from curl's `ALL_PROXY`.
    pub fn proxy_source_note(&self) -> Option<String> {
        let ProxySource::AllProxy(var) = self.proxy_source else { return None };
        let chain: Vec<String> = self.chain.iter().map(ToString::to_string).collect();
        Some(format!("proxy {} from {var} (SOCKSIFY_PROXY is unset)", chain.join(",")))
    }
}

/// The level names of `SOCKSIFY_LOG`.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `SOCKSIFY_LOG`: comma-separated levels or `MODULE=LEVEL` directives
/// (env_logger's syntax), where a module is one of ours (`socksify`,
/// `socksify_client::…`). Anything else would be read as a module name
/// that matches nothing, silently hiding every warning: refused.
pub fn check_log_filter(spec: &str) -> Result<(), String> {
    let is_level = |s: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
    let is_ours = |s: &str| {
        let s = s.trim();
        s == "socksify" || s.starts_with("socksify::") || s.starts_with("socksify_")
    };
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match directive.split_once('=') {
            Some((module, level)) => is_ours(module) && is_level(level),
            None => is_level(directive) || is_ours(directive),
        };
        if !ok {
            return Err(format!(
                "{directive:?} is not a level ({}) or MODULE=LEVEL for a module of socksify",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:5353`:
/// an address, port 53 unless given.
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let ip = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    ip.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)).map_err(|_| format!("{text:?} is not an address or address:port"))
}

/// `198.18.0.0/15,fd50::/64`: one IPv4 and one IPv6 pool, in either order.
fn parse_fake_net(text: &str) -> Result<(Cidr<Ipv4Addr>, Cidr<Ipv6Addr>), String> {
    let (mut v4, mut v6) = (None, None);
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, prefix) = item.split_once('/').ok_or_else(|| format!("{item:?} is not a CIDR"))?;
        if let Ok(a) = addr.parse::<Ipv4Addr>() {
            let p = prefix.parse::<u8>().ok().filter(|p| (8..=30).contains(p)).ok_or("IPv4 pool prefix must be /8 to /30")?;
            v4 = Some(Cidr::v4(a, p));
        } else if let Ok(a) = addr.parse::<Ipv6Addr>() {
            let p = prefix.parse::<u8>().ok().filter(|p| (8..=120).contains(p)).ok_or("IPv6 pool prefix must be /8 to /120")?;
            // A v4-mapped pool would be IPv4 addresses written as IPv6,
            // which is_fake judges as IPv4: not a pool of its own.
            let pool = Cidr::new(a.into(), p).and_then(Cidr::to_v6);
            v6 = Some(pool.ok_or_else(|| format!("{item:?} is IPv4-mapped: give the IPv4 pool as IPv4"))?);
        } else {
            return Err(format!("{addr:?} is not an address"));
        }
    }
    Ok((v4.unwrap_or(DEFAULT_FAKE_V4), v6.unwrap_or(DEFAULT_FAKE_V6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_summary_is_one_line_without_the_password() {
        let c = config(&[("SOCKSIFY_PROXY", "socks5h://alice:s3cret@127.0.0.1:1080")]).unwrap();
        let line = c.summary();
        assert!(!line.contains("s3cret") && line.contains("alice:***@127.0.0.1:1080"), "{line}");
        assert!(line.contains("no proxy for 127.0.0.0/8,::1/128 and named hosts"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_log_filter_that_would_hide_everything_is_refused() {
        for good in ["info", "WARN", "", " debug ", "socksify=debug", "warn,socksify::udp=trace", "socksify_client=info", "off"] {
            assert_eq!(check_log_filter(good), Ok(()), "{good:?}");
        }
        for bad in ["bogus", "verbose", "info,bogus", "curl=debug", "socksify=loud", "=info"] {
            assert!(check_log_filter(bad).is_err(), "{bad:?}");
        }
        let e = config(&[("SOCKSIFY_LOG", "bogus")]).unwrap_err();
        assert_eq!(e.var, "SOCKSIFY_LOG");
        assert!(e.message.starts_with("\"bogus\" is not a level"), "{e}");
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.chain, vec![ProxyUrl::parse(DEFAULT_PROXY).unwrap()]);
        assert_eq!((c.udp, c.dns, c.timeout, c.bind), (UdpMode::Proxy, DnsMode::Remote, DEFAULT_TIMEOUT, BindMode::Auto));
        assert_eq!(config(&[("SOCKSIFY_BIND", "off")]).unwrap().bind, BindMode::Off);
        assert_eq!(config(&[("SOCKSIFY_BIND", "always")]).unwrap().bind, BindMode::Always);
        assert!(c.no_proxy.bypasses_name("localhost", 0));
    }

    #[test]
    fn dns_follows_the_scheme_unless_overridden() {
        assert_eq!(config(&[("SOCKSIFY_PROXY", "socks5://127.0.0.1:1")]).unwrap().dns, DnsMode::Local);
        assert_eq!(config(&[("SOCKSIFY_PROXY", "socks5://127.0.0.1:1"), ("SOCKSIFY_DNS", "remote")]).unwrap().dns, DnsMode::Remote);
        assert_eq!(config(&[("SOCKSIFY_DNS", "local")]).unwrap().dns, DnsMode::Local);
    }

    #[test]
    fn each_bad_variable_is_named() {
        for (var, value) in [
            ("SOCKSIFY_PROXY", "socks5h//oops"),
            ("SOCKSIFY_NO_PROXY", "10.0.0.0/99"),
            ("SOCKSIFY_UDP", "maybe"),
            ("SOCKSIFY_DNS", "both"),
            ("SOCKSIFY_FAKE_NET", "198.18.0.0"),
            ("SOCKSIFY_TIMEOUT_MS", "soon"),
            ("SOCKSIFY_TIMEOUT_MS", "0"),
            ("SOCKSIFY_PIPELINE", "yes"),
            ("SOCKSIFY_BIND", "yes"),
            ("SOCKSIFY_DNS_UPSTREAM", "dns.example"),
        ] {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var);
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn pipelining_is_off_unless_asked_for() {
        assert!(!config(&[]).unwrap().chain[0].pipeline);
        let c = config(&[("SOCKSIFY_PIPELINE", "1"), ("SOCKSIFY_PROXY", "socks5://a:1,socks4a://b:2,socks5h://c:3?pipeline=0")]).unwrap();
        let flags: Vec<bool> = c.chain.iter().map(|h| h.pipeline).collect();
        assert_eq!(flags, [true, false, false], "SOCKS4 hops and hops that say pipeline=0 stay lock-step");
        assert!(config(&[("SOCKSIFY_PROXY", "socks5://a:1?pipeline=1")]).unwrap().chain[0].pipeline);
    }

    #[test]
    fn all_proxy_is_used_when_socksify_proxy_is_unset_and_named_in_errors() {
        let c = config(&[("ALL_PROXY", "socks5://u:pw@127.0.0.1:9")]).unwrap();
        assert_eq!((c.chain[0].port, c.dns, c.proxy_source), (9, DnsMode::Local, ProxySource::AllProxy("ALL_PROXY")));
        assert_eq!(c.proxy_source_note().unwrap(), "proxy socks5://u:***@127.0.0.1:9 from ALL_PROXY (SOCKSIFY_PROXY is unset)");
        assert_eq!(config(&[("all_proxy", "socks5h://127.0.0.1:0")]).unwrap_err().var, "all_proxy");
        let c = config(&[("ALL_PROXY", "http://127.0.0.1:3128")]).unwrap();
        assert_eq!((c.chain[0].to_string(), c.proxy_source), (DEFAULT_PROXY.to_string(), ProxySource::Default));
        assert!(c.warning.is_some() && c.proxy_source_note().is_none());
    }

    #[test]
    fn dns_upstream() {
        assert_eq!(config(&[]).unwrap().dns_upstream, None);
        for (text, want) in [
            ("192.0.2.53", "192.0.2.53:53"),
            ("192.0.2.53:5353", "192.0.2.53:5353"),
            ("2001:db8::53", "[2001:db8::53]:53"),
            ("[2001:db8::53]:5353", "[2001:db8::53]:5353"),
        ] {
            assert_eq!(config(&[("SOCKSIFY_DNS_UPSTREAM", text)]).unwrap().dns_upstream, Some(want.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn fake_net_override() {
        let c = config(&[("SOCKSIFY_FAKE_NET", "fd00:1::/96, 100.64.0.0/10")]).unwrap();
        assert_eq!(c.fake_v4, Cidr::v4(Ipv4Addr::new(100, 64, 0, 0), 10));
        assert_eq!(c.fake_v6, Cidr::v6("fd00:1::".parse().unwrap(), 96));
        let c = config(&[("SOCKSIFY_FAKE_NET", "10.1.0.0/16")]).unwrap();
        assert_eq!((c.fake_v4.to_string(), c.fake_v6), ("10.1.0.0/16".to_string(), DEFAULT_FAKE_V6));
        for (bad, why) in [
            ("10.0.0.0/31", "IPv4 pool prefix must be /8 to /30"),
            ("fd00::/121", "IPv6 pool prefix must be /8 to /120"),
            ("x/8", "\"x\" is not an address"),
            ("10.0.0.0", "\"10.0.0.0\" is not a CIDR"),
            ("::ffff:10.0.0.0/104", "\"::ffff:10.0.0.0/104\" is IPv4-mapped: give the IPv4 pool as IPv4"),
        ] {
            assert_eq!(config(&[("SOCKSIFY_FAKE_NET", bad)]).unwrap_err().message, why, "{bad}");
        }
    }
}
