//! Listeners, the connection cap and one (pooled) thread per client.
//!
//! Promise: every `--listen` address is bound before anything is printed;
//! then, in order, one `listening ADDR:PORT` line per listener goes to
//! stdout (flushed), and nothing else ever does. Clients outside
//! `--allow-client` and clients over `--max-conns` are closed at once.

use crate::cli::Config;
use crate::log::LogLine;
use crate::{pool, session};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Binds every listener, announces them and serves until killed.
pub fn run(cfg: Config) -> io::Result<()> {
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
    let active = Arc::new(AtomicUsize::new(0));
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

/// Decrements the active-connection count when a session ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: TcpListener, cfg: Arc<Config>, active: Arc<AtomicUsize>) {
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
        if active.fetch_add(1, Ordering::AcqRel) >= cfg.max_conns {
            active.fetch_sub(1, Ordering::AcqRel);
            LogLine::new().kv("client", client).kv("cmd", "accept").kv("reply", "over-max-conns").emit(cfg.quiet);
            continue;
        }
        let slot = Slot(active.clone());
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
