//! The shim's routing decision: the client core's
//! ([`socksify_client::route`]: the configuration's rules, the proxy
//! itself, fake addresses) plus what only this process knows, the
//! addresses its real resolver gave for names a rule bypasses.

use crate::fork_safe::ForkSafeMutex;
use crate::runtime::proxy_addrs;
use socksify_proto::config::Config;
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether traffic to `dst` goes direct (never for a destination the
/// configuration proxies: see `socksify_client::route::goes_direct`).
pub fn goes_direct(config: &'static Config, dst: &SocketAddr) -> bool {
    socksify_client::route::goes_direct(config, proxy_addrs(config, 0), dst, resolved_for_bypassed_name)
}

/// [`goes_direct`], with the reason (`None`: proxied), for the log.
pub fn direct_reason(config: &'static Config, dst: &SocketAddr) -> Option<socksify_client::route::Direct> {
    socksify_client::route::direct_reason(config, proxy_addrs(config, 0), dst, resolved_for_bypassed_name)
}

/// Addresses the real resolver gave for names `SOCKSIFY_NO_PROXY` bypasses
/// (`.local.test`): a connection to one goes direct, as the name rule
/// says, although no address rule covers it. Bounded; the oldest entry is
/// forgotten first (a forgotten address is proxied, never leaked).
const MAX_BYPASSED: usize = 4096;

static BYPASSED: ForkSafeMutex<Option<(HashSet<IpAddr>, VecDeque<IpAddr>)>> = ForkSafeMutex::new(None);

/// Changes with every address added to [`BYPASSED`]: a socket filter
/// built before a change may lack a source the program now hears directly.
static BYPASSED_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Remembers that a bypassed name resolved to `ip`.
pub fn remember_bypassed(ip: IpAddr) {
    let ip = socksify_proto::wire::canonical_ip(ip);
    let mut guard = BYPASSED.lock();
    let (set, order) = guard.get_or_insert_with(Default::default);
    if set.insert(ip) {
        BYPASSED_GENERATION.fetch_add(1, Ordering::Release);
        order.push_back(ip);
        if order.len() > MAX_BYPASSED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

/// Whether `ip` came from the look-up of a bypassed name.
pub fn resolved_for_bypassed_name(ip: IpAddr) -> bool {
    let ip = socksify_proto::wire::canonical_ip(ip);
    BYPASSED.lock().as_ref().is_some_and(|(set, _)| set.contains(&ip))
}

/// The generation of the bypassed addresses (see [`BYPASSED_GENERATION`]).
pub fn bypassed_generation() -> u64 {
    BYPASSED_GENERATION.load(Ordering::Acquire)
}

/// The addresses of bypassed names, most recent first.
pub fn bypassed_addrs() -> Vec<IpAddr> {
    BYPASSED.lock().as_ref().map_or_else(Vec::new, |(_, order)| order.iter().rev().copied().collect())
}
