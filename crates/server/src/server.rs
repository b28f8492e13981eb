//! Listeners, the connection caps and one (pooled) thread per client.
//!
//! Promise: every `--listen` address is bound before anything is printed;
//! then, in order, one `listening ADDR:PORT` line per listener goes to
//! stdout (flushed), and nothing else ever does. Clients outside
//! `--allow-client`, connections over `--max-conns`, and connections over
//! `--max-client-conns` from one client address (IPv6: one /64) are closed
//! at once, so one client's flood leaves room for everyone else.

use crate::cli::Config;
use crate::log::LogLine;
use crate::{pool, session};
use socket2::{Domain, SockAddr, Socket, Type};
use socksify_proto::wire::canonical_ip;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Binds every listener, announces them and serves until killed.
pub fn run(cfg: Config) -> io::Result<()> {
    raise_fd_limit();
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let l = bind_listener(*addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    {
        let mut out = io::stdout().lock();
        for l in &listeners {
            writeln!(out, "listening {}", l.local_addr()?)?;
        }
        out.flush()?;
    }
    let cfg = Arc::new(cfg);
    let active = Arc::new(Slots::default());
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let (cfg, active) = (cfg.clone(), active.clone());
            std::thread::spawn(move || accept_loop(l, cfg, active))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one: a session holds two
/// to four fds (client, destination, a splice pipe), so the usual soft limit
/// of 1024 would run out long before `--max-conns` and every client,
/// well-behaved or not, would wait in the accept queue.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // So `0.0.0.0:P` and `[::]:P` can both be listened on.
        sock.set_only_v6(true)?;
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// The connections being served: in all, and per client address.
#[derive(Default)]
struct Slots(Mutex<Counts>);

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// What one client is counted as: its IPv4 address, or the /64 of its IPv6
/// address (one host is usually given a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

impl Slots {
    /// A slot for a connection from `ip`, or the log's reason why not.
    fn take(self: &Arc<Slots>, cfg: &Config, ip: IpAddr) -> Result<Slot, &'static str> {
        let key = client_key(ip);
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= cfg.max_conns {
            return Err("over-max-conns");
        }
        let mine = c.per_client.entry(key).or_insert(0);
        if *mine >= cfg.max_client_conns {
            return Err("over-max-client-conns");
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot { slots: self.clone(), key })
    }
}

/// Gives its slot back when a session ends, however it ends.
struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_client.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.key);
            }
        }
    }
}

fn accept_loop(listener: TcpListener, cfg: Arc<Config>, active: Arc<Slots>) {
    loop {
        let (stream, client) = match listener.accept() {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !cfg.client_allowed(client.ip()) {
            LogLine::new().kv("client", client).kv("cmd", "accept").kv("reply", "client-not-allowed").emit(cfg.quiet);
            continue;
        }
        let slot = match active.take(&cfg, client.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                LogLine::new().kv("client", client).kv("cmd", "accept").kv("reply", why).emit(cfg.quiet);
                continue;
            }
        };
        let cfg = cfg.clone();
        let spawned = pool::run(move || {
            let _slot = slot;
            session::serve(stream, cfg, client);
        });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_caps() {
        let cfg = Config { max_conns: 3, max_client_conns: 2, ..Config::default() };
        let slots = Arc::new(Slots::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = slots.take(&cfg, ip("127.0.0.5")).unwrap();
        let a2 = slots.take(&cfg, ip("::ffff:127.0.0.5")).unwrap();
        assert_eq!(slots.take(&cfg, ip("127.0.0.5")).err(), Some("over-max-client-conns"));
        let b1 = slots.take(&cfg, ip("2001:db8::1")).unwrap();
        assert_eq!(slots.take(&cfg, ip("127.0.0.1")).err(), Some("over-max-conns"));
        drop(a1);
        let b2 = slots.take(&cfg, ip("2001:db8::2")).unwrap();
        drop(a2);
        assert_eq!(slots.take(&cfg, ip("2001:db8::3")).err(), Some("over-max-client-conns"), "one /64 is one client");
        let c = slots.take(&cfg, ip("127.0.0.1")).unwrap();
        drop((b1, b2, c));
        let c = slots.0.lock().unwrap();
        assert_eq!((c.total, c.per_client.len()), (0, 0), "every slot given back");
    }
}
