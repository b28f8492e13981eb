//! Process-wide state, set up on first use (never at load): the
//! configuration, the logger, and the proxies' resolved addresses.
//!
//! A malformed configuration is reported once, on stderr, in one line;
//! from then on [`config`] returns `None` and every call that would have
//! been proxied fails. Nothing goes out directly because of a typo.

use crate::fork_safe::ForkSafeOnce;
use socksify_proto::config::{Config, ProxyHost};
use std::net::SocketAddr;

static CONFIG: ForkSafeOnce<Option<Config>> = ForkSafeOnce::new();

/// The configuration, or `None` if it is malformed (already reported).
pub fn config() -> Option<&'static Config> {
    CONFIG.get_or_init(load).as_ref()
}

fn load() -> Option<Config> {
    use crate::at_load::var;
    crate::stderr_log::init(var("SOCKSIFY_LOG"));
    // As the program was started: one that clears its environment keeps its proxy.
    match Config::from_lookup(var) {
        Ok(config) => {
            log::debug!("configuration: {}", config.summary());
            if let Some(note) = config.proxy_source_note() {
                log::info!("{note}");
            }
            if let Some(warning) = &config.warning {
                log::warn!("{warning}");
            }
            Some(config)
        }
        Err(e) => {
            // One line, whatever SOCKSIFY_LOG says: the user must see this.
            eprintln!("socksify: {e}; refusing to make network connections until it is fixed");
            None
        }
    }
}

/// Addresses of chain hop `index` (resolved once, with the real resolver).
pub fn proxy_addrs(config: &'static Config, index: usize) -> &'static [SocketAddr] {
    const MAX_HOPS: usize = 8;
    static RESOLVED: [ForkSafeOnce<Vec<SocketAddr>>; MAX_HOPS] = [const { ForkSafeOnce::new() }; MAX_HOPS];
    let hop = &config.chain[index];
    let resolve = || match &hop.host {
        ProxyHost::Ip(ip) => vec![SocketAddr::new(*ip, hop.port)],
        ProxyHost::Name(name) => resolve_real(name, hop.port),
    };
    match RESOLVED.get(index) {
        Some(cell) => cell.get_or_init(resolve),
        None => Box::leak(resolve().into_boxed_slice()),
    }
}

/// Resolves with libc's own `getaddrinfo`, never our hook.
fn resolve_real(name: &str, port: u16) -> Vec<SocketAddr> {
    let Ok(cname) = std::ffi::CString::new(name) else { return Vec::new() };
    // SAFETY: zeroed addrinfo is a valid "no hints" value; we set two fields.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and out-pointer; the list is freed below.
    let rc = crate::guard::as_resolver(|| unsafe { crate::real::getaddrinfo(cname.as_ptr(), std::ptr::null(), &hints, &mut res) });
    let mut out = Vec::new();
    if rc != 0 {
        log::warn!("cannot resolve proxy host {name:?} (getaddrinfo error {rc})");
        return out;
    }
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: cur walks the list getaddrinfo returned.
        let ai = unsafe { &*cur };
        // SAFETY: getaddrinfo's entry: ai_addr holds ai_addrlen bytes.
        if let Some(sa) = unsafe { crate::socket_addr::read(ai.ai_addr, ai.ai_addrlen) } {
            out.push(SocketAddr::new(sa.ip(), port));
        }
        cur = ai.ai_next;
    }
    // SAFETY: res came from the real getaddrinfo.
    unsafe { crate::real::freeaddrinfo(res) };
    out
}

/// Test hook: `SOCKSIFY_DEBUG_PANIC=SITE` makes the hook at `SITE`
/// (`connect`, `udp-send`) panic for a proxied destination, so the tests
/// can prove that a panic is caught, reported, and never becomes a direct
/// connection. Unset in normal use; costs one load on slow paths only.
pub fn debug_panic(site: &str) {
    static SITE: ForkSafeOnce<Option<String>> = ForkSafeOnce::new();
    if SITE.get_or_init(|| crate::at_load::var("SOCKSIFY_DEBUG_PANIC")).as_deref() == Some(site) {
        panic!("SOCKSIFY_DEBUG_PANIC={site}");
    }
}
