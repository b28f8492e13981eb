//! `/etc/hosts`, parsed: the text in, the entries of a name or an address
//! out. The shim's resolver hooks and DNS responder (`src/hosts.rs`) and the
//! supervisor's DNS responder each read the file and ask here, so a name
//! gets the same answer from both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A host as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// The first name on the first matching line.
    pub canon: String,
    pub aliases: Vec<String>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Every line of `text`: (address, names).
fn lines(text: &str) -> impl Iterator<Item = (IpAddr, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        let names: Vec<&str> = fields.collect();
        (!names.is_empty()).then_some((ip, names))
    })
}

/// `name` looked up in `text` (case-insensitively, trailing dot ignored).
pub fn by_name_in(text: &str, name: &str) -> Option<Host> {
    let wanted = crate::fake_dns::normalize(name);
    let mut host: Option<Host> = None;
    for (ip, names) in lines(text) {
        if !names.iter().any(|n| crate::fake_dns::normalize(n) == wanted) {
            continue;
        }
        let h = host.get_or_insert_with(|| Host { canon: names[0].to_owned(), ..Host::default() });
        for n in &names {
            if *n != h.canon && !h.aliases.iter().any(|a| a == n) {
                h.aliases.push((*n).to_owned());
            }
        }
        match ip {
            IpAddr::V4(a) if !h.v4.contains(&a) => h.v4.push(a),
            IpAddr::V6(a) if !h.v6.contains(&a) => h.v6.push(a),
            _ => {}
        }
    }
    host
}

/// The host for `name` in `text` (the file's contents); for `localhost`
/// (RFC 6761) the loopback address of each family the file does not give.
pub fn lookup(text: &str, name: &str) -> Option<Host> {
    let mut host = by_name_in(text, name);
    if is_localhost(name) {
        let h = host.get_or_insert_with(|| Host { canon: "localhost".into(), ..Host::default() });
        if h.v4.is_empty() {
            h.v4.push(Ipv4Addr::LOCALHOST);
        }
        if h.v6.is_empty() {
            h.v6.push(Ipv6Addr::LOCALHOST);
        }
    }
    host
}

pub fn is_localhost(name: &str) -> bool {
    let n = crate::fake_dns::normalize(name);
    n == "localhost" || n.ends_with(".localhost")
}

/// The names of `ip` in `text`: (canonical, aliases) of the first line.
pub fn by_addr_in(text: &str, ip: IpAddr) -> Option<(String, Vec<String>)> {
    let ip = crate::wire::canonical_ip(ip);
    lines(text)
        .find(|(a, _)| crate::wire::canonical_ip(*a) == ip)
        .map(|(_, names)| (names[0].to_owned(), names[1..].iter().map(|s| s.to_string()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "127.0.0.1 localhost\n# a comment\n10.1.2.3  Db.Corp db  # trailing\n::1 localhost ip6-localhost\nfd00::3 db.corp\nbogus line\n";

    #[test]
    fn finds_names_aliases_and_both_families() {
        let h = by_name_in(TEXT, "DB.corp.").unwrap();
        assert_eq!(h.canon, "Db.Corp");
        assert_eq!(h.aliases, vec!["db", "db.corp"]);
        assert_eq!(h.v4, vec![Ipv4Addr::new(10, 1, 2, 3)]);
        assert_eq!(h.v6, vec!["fd00::3".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(by_name_in(TEXT, "db").unwrap().canon, "Db.Corp");
        assert!(by_name_in(TEXT, "corp").is_none());
        assert!(by_name_in(TEXT, "comment").is_none());
        let lo = by_name_in(TEXT, "localhost").unwrap();
        assert_eq!((lo.v4.len(), lo.v6.len()), (1, 1));
    }

    #[test]
    fn reverse() {
        assert_eq!(by_addr_in(TEXT, "10.1.2.3".parse().unwrap()), Some(("Db.Corp".into(), vec!["db".into()])));
        assert_eq!(by_addr_in(TEXT, "::ffff:10.1.2.3".parse().unwrap()).unwrap().0, "Db.Corp");
        assert_eq!(by_addr_in(TEXT, "10.1.2.4".parse().unwrap()), None);
    }

    #[test]
    fn localhost_is_loopback_whatever_the_file_says() {
        assert!(is_localhost("LOCALHOST.") && is_localhost("a.localhost") && !is_localhost("localhost.example"));
        for text in ["", "10.0.0.1 localhost\n", "::2 localhost\n"] {
            let h = lookup(text, "localhost").unwrap();
            assert!(!h.v4.is_empty() && !h.v6.is_empty(), "{text:?}: {h:?}");
        }
        assert_eq!(lookup("", "a.localhost").unwrap().v4, vec![Ipv4Addr::LOCALHOST]);
        assert_eq!(lookup("10.0.0.1 localhost\n", "localhost").unwrap().v4, vec![Ipv4Addr::new(10, 0, 0, 1)], "the file's address first");
        assert_eq!(lookup("", "db"), None);
        assert_eq!(lookup(TEXT, "db").unwrap().v4, vec![Ipv4Addr::new(10, 1, 2, 3)]);
    }
}
