//! The decisions of a UDP association (RFC 1928's UDP ASSOCIATE) that any
//! front end needs, as pure functions: whether the configuration can carry
//! UDP at all, which address the request names, and where the relay is.
//! Opening the control connection is [`crate::tcp::connect_via_proxy`]
//! with `Command::UdpAssociate`.

use socksify_proto::config::Config;
use socksify_proto::wire::{canonical_ip, TargetAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why UDP cannot go through this configuration: the errno and the reason.
pub fn unsupported(config: &Config) -> Option<(i32, String)> {
    if config.chain.len() != 1 {
        return Some((libc::ENETUNREACH, "UDP cannot go through a chain of proxies (UDP ASSOCIATE needs the relay reachable from here)".into()));
    }
    let hop = &config.chain[0];
    (!hop.scheme.supports_udp()).then(|| (libc::ENETUNREACH, format!("{hop} cannot carry UDP (SOCKS4 has no UDP ASSOCIATE)")))
}

/// The address a UDP ASSOCIATE request names for a socket bound at
/// `local`: where its datagrams will come from. Bound to the wildcard, that
/// is "any address, this port", in the family the proxy is reached over.
pub fn request_for(local: SocketAddr, proxy_is_ipv4: bool) -> TargetAddr {
    let ip = canonical_ip(local.ip());
    let ip = match ip.is_unspecified() {
        true if proxy_is_ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        true => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        false => ip,
    };
    TargetAddr::Ip(SocketAddr::new(ip, local.port()))
}

/// The relay, from the reply's BND.ADDR (`bound`) and the proxy the
/// control connection reached: an unspecified address (`0.0.0.0`, `::`)
/// or port 0 means the proxy's own (many servers answer `0.0.0.0:0` and
/// relay on their own port). A name is refused: we would have to resolve
/// it, and the reply gives no reason to trust a resolver with it.
pub fn relay_addr(bound: &TargetAddr, proxy: SocketAddr) -> Result<SocketAddr, String> {
    match bound {
        TargetAddr::Ip(sa) => {
            let ip = if sa.ip().is_unspecified() { proxy.ip() } else { sa.ip() };
            let port = if sa.port() == 0 { proxy.port() } else { sa.port() };
            Ok(SocketAddr::new(canonical_ip(ip), port))
        }
        TargetAddr::Domain(name, port) => Err(format!("relay given as a name ({name}:{port})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(proxy: &str) -> Config {
        let vars: HashMap<&str, &str> = [("SOCKSIFY_PROXY", proxy)].into_iter().collect();
        Config::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_one_socks5_hop_carries_udp() {
        assert_eq!(unsupported(&config("socks5://127.0.0.1:1080")), None);
        assert_eq!(unsupported(&config("socks5h://[::1]:1080")), None);
        let (errno, why) = unsupported(&config("socks4://127.0.0.1:1080")).expect("SOCKS4 has no UDP");
        assert_eq!(errno, libc::ENETUNREACH);
        assert!(why.contains("SOCKS4"), "{why}");
        let (errno, why) = unsupported(&config("socks5://127.0.0.1:1080,socks5://127.0.0.2:1080")).expect("a chain");
        assert_eq!(errno, libc::ENETUNREACH);
        assert!(why.contains("chain"), "{why}");
    }

    #[test]
    fn the_request_names_where_datagrams_come_from() {
        assert_eq!(request_for(sa("0.0.0.0:5000"), true), TargetAddr::Ip(sa("0.0.0.0:5000")));
        assert_eq!(request_for(sa("[::]:5000"), true), TargetAddr::Ip(sa("0.0.0.0:5000")), "wildcard: the proxy's family");
        assert_eq!(request_for(sa("0.0.0.0:5000"), false), TargetAddr::Ip(sa("[::]:5000")));
        assert_eq!(request_for(sa("10.0.0.7:5000"), false), TargetAddr::Ip(sa("10.0.0.7:5000")), "a bound address stays");
        assert_eq!(request_for(sa("[::ffff:10.0.0.7]:5000"), false), TargetAddr::Ip(sa("10.0.0.7:5000")), "v4-mapped is IPv4");
        assert_eq!(request_for(sa("[fd00::7]:5000"), true), TargetAddr::Ip(sa("[fd00::7]:5000")));
    }

    #[test]
    fn an_unspecified_relay_address_or_port_is_the_proxys() {
        let proxy = sa("192.0.2.1:1080");
        let relay = |bound: &str| relay_addr(&TargetAddr::Ip(sa(bound)), proxy);
        assert_eq!(relay("0.0.0.0:0"), Ok(proxy));
        assert_eq!(relay("[::]:0"), Ok(proxy));
        assert_eq!(relay("0.0.0.0:4000"), Ok(sa("192.0.2.1:4000")));
        assert_eq!(relay("198.51.100.9:0"), Ok(sa("198.51.100.9:1080")));
        assert_eq!(relay("198.51.100.9:4000"), Ok(sa("198.51.100.9:4000")));
        assert_eq!(relay("[::ffff:198.51.100.9]:4000"), Ok(sa("198.51.100.9:4000")), "v4-mapped is IPv4");
        let named = relay_addr(&TargetAddr::domain("relay.test", 4000).unwrap(), proxy);
        assert!(named.is_err_and(|why| why.contains("relay.test")));
    }
}
