//! The command line: `socksify-server [OPTIONS]`, parsed into a [`Config`].
//!
//! Promise: every option of the contract in the project briefing is accepted
//! with exactly that spelling; a bad value is an error naming the option, never
//! a silent default.

use crate::local;
use crate::rules::{AddrRange, Rule, Rules};
use socksify_proto::wire::canonical_ip;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const HELP: &str = "\
socksify-server: a small SOCKS4/4a/5 server (CONNECT, UDP ASSOCIATE, BIND)

Usage: socksify-server [OPTIONS]

Options:
  --listen ADDR:PORT        listen here (repeatable; IPv6 as [::1]:0; default
                            127.0.0.1:1080). Port 0 picks a free port. For each
                            listener, in order, one line `listening ADDR:PORT`
                            is printed on stdout; nothing else goes to stdout.
                            IPv6 listeners are IPv6-only.
  --user NAME:PASS          accept RFC 1929 username/password (repeatable). When
                            any user is given, no-auth and SOCKS4 are refused.
  --map NAME=IP             resolve NAME to IP before asking the system resolver
                            (repeatable; names compare case-insensitively).
  --bind-out ADDR           source address for outgoing TCP connections, UDP
                            datagrams to destinations and BIND listeners of the
                            same family (repeatable: one IPv4, one IPv6).
  --allow RULE              allow destinations matching RULE (repeatable)
  --deny RULE               deny destinations matching RULE (repeatable)
  --allow-client CIDR       accept clients only from these ranges (repeatable;
                            default: any client). Others are closed at once.
  --open                    serve anyone who can reach a listener beyond
                            loopback, with no --user and no --allow-client.
                            Without it the server refuses to start that way:
                            it would be an open proxy.
  --max-conns N             at most N client connections at once (default 1024);
                            connections over the cap are closed at once.
  --max-client-conns N      at most N of them from one client address (an IPv6
                            client counts per /64; default half of --max-conns,
                            so 512); more are closed at once, so one client
                            cannot take the whole server.
  --handshake-timeout-ms N  a client must finish its handshake within N ms
                            (default 10000), else the connection is closed.
  --connect-timeout-ms N    give up on an outgoing connection after N ms
                            (default 10000; reply TTL expired).
  --idle-timeout-ms N       close a CONNECT or BIND flow when neither direction
                            has moved a byte for N ms (default 900000, 15 min;
                            it closes between N and 2N ms after the last byte;
                            0: never).
  --udp-idle-timeout-ms N   end a UDP association (and close its control
                            connection) when no datagram was relayed either way
                            for N ms (default 300000, 5 min; 0: never).
  --quiet                   no per-request log lines on stderr
  -h, --help                this text

Rules: RULE is ADDR[/PREFIX][:PORT[-PORT]] with IPv6 in brackets when a port
follows, or `*` for every address of both families:
  --deny 127.0.0.3/32         --deny 0.0.0.0/0:25        --deny '[::1]:22'
  --allow 10.0.0.0/8:80-443   --deny '[2001:db8::]/32'   --deny '*:25'
--allow and --deny rules are checked in the order given against the resolved
destination address and port of CONNECT, BIND and each UDP datagram, as the
address it reaches (::ffff:a.b.c.d is a.b.c.d; 0.0.0.0 and :: are 127.0.0.1
and ::1, where the kernel connects them; a name is every address it resolves
to, and only an allowed one is connected to); the first
matching rule wins; when none matches the destination is allowed, except this
host when any --listen address is beyond loopback: then loopback (127.0.0.0/8,
::1), link-local (169.254.0.0/16, fe80::/10), 0.0.0.0/8, :: and the addresses
of the server's own interfaces are denied unless an --allow rule matches them
(e.g. --allow 127.0.0.1/32:8080). A denied request is answered `not allowed`
(SOCKS5 reply 2, SOCKS4 reply 91).

UDP ASSOCIATE relays from a socket on the IP the client reached. The request
must name the port the client sends from (its IP may be 0, or a name, which
counts as 0); a request naming port 0 or another IP than the client's is
refused (not allowed).
Only datagrams from that client address are relayed out, and only datagrams
from an address and port the client has sent to are relayed back.
BIND listens on the --bind-out address (else the address this host reaches
the expected peer from, else that IP) and waits up to 120 s for one peer.

Log: one line per request on stderr, key=value, for example
  socksify-server: client=127.0.0.1:40312 cmd=connect dst=127.0.0.1:8080 reply=succeeded sent=120 received=4520 ms=3
";

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// (user, password) pairs; empty means no authentication.
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
    /// Lower-cased host name → address.
    pub map: HashMap<String, IpAddr>,
    pub bind_out_v4: Option<IpAddr>,
    pub bind_out_v6: Option<IpAddr>,
    pub rules: Rules,
    pub allow_clients: Vec<AddrRange>,
    /// `--open`: serve everyone on a listener beyond loopback.
    pub open: bool,
    /// A listener is beyond loopback: this host's addresses are denied as
    /// destinations unless a rule allows them.
    pub guard_this_host: bool,
    pub max_conns: usize,
    /// Connections from one client address (IPv6: one /64).
    pub max_client_conns: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// A TCP flow with no byte either way this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A UDP association with no datagram relayed this long ends; `None`: never.
    pub udp_idle_timeout: Option<Duration>,
    pub quiet: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Vec::new(),
            users: Vec::new(),
            map: HashMap::new(),
            bind_out_v4: None,
            bind_out_v6: None,
            rules: Rules::default(),
            allow_clients: Vec::new(),
            open: false,
            guard_this_host: false,
            max_conns: 1024,
            max_client_conns: 512,
            handshake_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(10_000),
            idle_timeout: Some(Duration::from_secs(900)),
            udp_idle_timeout: Some(Duration::from_secs(300)),
            quiet: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
}

impl Config {
    /// The `--bind-out` address for the family of `ip`, if one was given.
    pub fn bind_out_for(&self, ip: IpAddr) -> Option<IpAddr> {
        if ip.is_ipv4() {
            self.bind_out_v4
        } else {
            self.bind_out_v6
        }
    }

    /// Whether the destination `ip:port` (for UDP also the source of an
    /// answer) may be reached: the first matching rule decides; with none,
    /// yes, except this host's addresses when listening beyond loopback.
    /// `ip` is judged as the address it reaches ([`crate::rules::reached`]),
    /// so every spelling of an address gets the same answer.
    pub fn dest_allowed(&self, ip: IpAddr, port: u16) -> bool {
        let ip = crate::rules::reached(ip);
        match self.rules.verdict(ip, port) {
            Some(verdict) => verdict,
            None => !(self.guard_this_host && local::is_this_host(ip)),
        }
    }

    /// Whether a client at `ip` may use the server at all.
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.allow_clients.is_empty() || self.allow_clients.iter().any(|c| c.contains(ip))
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut cfg = Config::default();
    let mut max_client_conns = None;
    let mut args = args.into_iter();
    while let Some(opt) = args.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match opt.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (opt.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quiet" => cfg.quiet = true,
            "--open" => cfg.open = true,
            "--listen" => {
                let v = value(&name)?;
                cfg.listen.push(v.parse().map_err(|_| format!("--listen {v}: expected ADDR:PORT (IPv6 as [::1]:0)"))?);
            }
            "--user" => {
                let v = value(&name)?;
                let (user, pass) = v.split_once(':').ok_or_else(|| format!("--user {v}: expected NAME:PASS"))?;
                if user.is_empty() || user.len() > 255 || pass.len() > 255 {
                    return Err(format!("--user {user}: name must be 1..=255 bytes and password at most 255"));
                }
                cfg.users.push((user.as_bytes().to_vec(), pass.as_bytes().to_vec()));
            }
            "--map" => {
                let v = value(&name)?;
                let (host, ip) = v.split_once('=').ok_or_else(|| format!("--map {v}: expected NAME=IP"))?;
                let ip: IpAddr = ip.parse().map_err(|_| format!("--map {v}: `{ip}` is not an IP address"))?;
                if host.is_empty() {
                    return Err(format!("--map {v}: empty name"));
                }
                cfg.map.insert(host.to_ascii_lowercase(), ip);
            }
            "--bind-out" => {
                let v = value(&name)?;
                let ip: IpAddr =
                    v.trim_matches(|c| c == '[' || c == ']').parse().map_err(|_| format!("--bind-out {v}: not an IP address"))?;
                match ip {
                    IpAddr::V4(_) => cfg.bind_out_v4 = Some(ip),
                    IpAddr::V6(_) => cfg.bind_out_v6 = Some(ip),
                }
            }
            "--allow" | "--deny" => {
                let v = value(&name)?;
                let rule = Rule::parse(&v, name == "--allow").map_err(|e| format!("{name} {v}: {e}"))?;
                cfg.rules.push(rule);
            }
            "--allow-client" => {
                let v = value(&name)?;
                cfg.allow_clients.push(AddrRange::parse(&v).map_err(|e| format!("--allow-client {v}: {e}"))?);
            }
            "--max-conns" => cfg.max_conns = number(&name, &value(&name)?)?,
            "--max-client-conns" => max_client_conns = Some(number(&name, &value(&name)?)?),
            "--idle-timeout-ms" => cfg.idle_timeout = timeout(&name, &value(&name)?)?,
            "--udp-idle-timeout-ms" => cfg.udp_idle_timeout = timeout(&name, &value(&name)?)?,
            "--handshake-timeout-ms" => cfg.handshake_timeout = Duration::from_millis(number(&name, &value(&name)?)?),
            "--connect-timeout-ms" => cfg.connect_timeout = Duration::from_millis(number(&name, &value(&name)?)?),
            other => return Err(format!("unknown option `{other}` (see --help)")),
        }
    }
    if cfg.listen.is_empty() {
        cfg.listen.push(SocketAddr::from(([127, 0, 0, 1], 1080)));
    }
    cfg.max_client_conns = max_client_conns.unwrap_or((cfg.max_conns / 2).max(1));
    let beyond = cfg.listen.iter().find(|a| !canonical_ip(a.ip()).is_loopback());
    if let Some(addr) = beyond {
        if cfg.users.is_empty() && cfg.allow_clients.is_empty() && !cfg.open {
            return Err(format!(
                "refusing to listen on {addr} with no --user and no --allow-client: anyone who reaches it could use \
                 this server as an open proxy (add --user or --allow-client, or --open to serve everyone)"
            ));
        }
        cfg.guard_this_host = true;
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{name} {v}: expected a non-negative number"))
}

/// Milliseconds, 0 meaning "never".
fn timeout(name: &str, v: &str) -> Result<Option<Duration>, String> {
    let ms: u64 = number(name, v)?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn contract_options() {
        let c = run(&[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--user",
            "a:b:c",
            "--map",
            "Name.Test=127.0.0.1",
            "--bind-out",
            "127.0.0.2",
            "--bind-out",
            "::1",
            "--deny",
            "127.0.0.3/32",
            "--max-conns",
            "5",
            "--handshake-timeout-ms",
            "300",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.users, vec![(b"a".to_vec(), b"b:c".to_vec())]);
        assert_eq!(c.map["name.test"], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.bind_out_v4, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.bind_out_v6, Some("::1".parse().unwrap()));
        assert_eq!((c.max_conns, c.handshake_timeout, c.quiet), (5, Duration::from_millis(300), true));
        assert_eq!(run(&[]).unwrap().listen, vec!["127.0.0.1:1080".parse().unwrap()]);
    }

    #[test]
    fn limits_and_idle_timeouts() {
        let d = run(&[]).unwrap();
        assert_eq!((d.max_conns, d.max_client_conns), (1024, 512));
        assert_eq!((d.idle_timeout, d.udp_idle_timeout), (Some(Duration::from_secs(900)), Some(Duration::from_secs(300))));
        assert_eq!(run(&["--max-conns", "64"]).unwrap().max_client_conns, 32);
        assert_eq!(run(&["--max-conns", "2"]).unwrap().max_client_conns, 1);
        let c = run(&["--max-conns", "64", "--max-client-conns", "64", "--idle-timeout-ms", "0", "--udp-idle-timeout-ms", "250"]).unwrap();
        assert_eq!((c.max_client_conns, c.idle_timeout, c.udp_idle_timeout), (64, None, Some(Duration::from_millis(250))));
    }

    #[test]
    fn bad_values_name_the_option() {
        for bad in
            [&["--listen", "nope"][..], &["--user", "x"], &["--map", "a=b"], &["--deny", "1.2.3.4/40"], &["--max-conns"], &["--frob"]]
        {
            let err = run(bad).unwrap_err();
            assert!(err.contains(bad[0]), "{err}");
        }
    }

    #[test]
    fn beyond_loopback_needs_users_clients_or_open_and_guards_this_host() {
        for listen in ["0.0.0.0:1080", "[::]:0", "192.0.2.1:1080", "[::ffff:0.0.0.0]:0"] {
            let err = run(&["--listen", "127.0.0.1:0", "--listen", listen]).unwrap_err();
            assert!(err.contains("--open") && err.contains("open proxy"), "{err}");
            for extra in [&["--open"][..], &["--user", "a:b"], &["--allow-client", "10.0.0.0/8"]] {
                let c = run(&[&["--listen", listen][..], extra].concat()).unwrap();
                assert!(c.guard_this_host, "{listen} {extra:?}");
                let ip = |s: &str| s.parse::<IpAddr>().unwrap();
                assert!(!c.dest_allowed(ip("127.0.0.1"), 80) && !c.dest_allowed(ip("169.254.169.254"), 80));
                assert!(c.dest_allowed(ip("192.0.2.7"), 80));
            }
        }
        for listen in ["127.0.0.1:0", "127.0.0.2:0", "[::1]:0", "[::ffff:127.0.0.1]:0"] {
            let c = run(&["--listen", listen]).unwrap();
            assert!(!c.guard_this_host && c.dest_allowed("127.0.0.1".parse().unwrap(), 80), "{listen}");
        }
        // A rule opens this host again; the first match still wins.
        let c = run(&["--listen", "0.0.0.0:0", "--open", "--deny", "127.0.0.1/32:22", "--allow", "127.0.0.0/8"]).unwrap();
        assert!(c.dest_allowed("127.0.0.1".parse().unwrap(), 80));
        assert!(!c.dest_allowed("127.0.0.1".parse().unwrap(), 22));
        assert!(!c.dest_allowed("::1".parse().unwrap(), 80));
    }

    #[test]
    fn a_rule_judges_every_spelling_of_an_address_alike() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = run(&["--deny", "127.0.0.0/8", "--deny", "::1"]).unwrap();
        for spelling in ["127.0.0.1", "127.3.2.1", "0.0.0.0", "::", "::1", "::ffff:0.0.0.0", "::ffff:127.0.0.1"] {
            assert!(!c.dest_allowed(ip(spelling), 80), "{spelling}");
        }
        for other in ["192.0.2.1", "::ffff:192.0.2.1", "0.1.2.3", "2001:db8::1", "::2"] {
            assert!(c.dest_allowed(ip(other), 80), "{other}");
        }
        let c = run(&["--allow", "127.0.0.1/32:8080", "--deny", "*"]).unwrap();
        assert!(c.dest_allowed(ip("0.0.0.0"), 8080) && c.dest_allowed(ip("::ffff:0.0.0.0"), 8080));
        assert!(!c.dest_allowed(ip("::"), 8080), ":: reaches ::1, which the rule does not open");
    }
}
