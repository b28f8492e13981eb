//! The process's fake-address table (remote DNS), built from the
//! configuration on first use and kept behind a fork-safe lock. A `fork`
//! child inherits it with the rest of memory, so a name resolved before the
//! fork connects by name after it.
//!
//! Users: the resolver hooks hand addresses out ([`addrs_for`]); `connect`
//! and the UDP path turn a fake destination back into its name
//! ([`target_for`], [`name_for`]).

use crate::fork_safe::ForkSafeMutex;
use socksify_proto::config::Config;
use socksify_proto::fake_dns::{Exhausted, FakeDns, DEFAULT_MAX_NAMES, DEFAULT_MIN_IDLE_SECS};
use socksify_proto::wire::TargetAddr;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

static TABLE: ForkSafeMutex<Option<FakeDns>> = ForkSafeMutex::new(None);

fn with_table<R>(config: &Config, f: impl FnOnce(&mut FakeDns) -> R) -> R {
    let mut table = TABLE.lock();
    let table = table.get_or_insert_with(|| FakeDns::new(config.fake_v4, config.fake_v6, DEFAULT_MAX_NAMES, DEFAULT_MIN_IDLE_SECS));
    f(table)
}

/// Seconds of a monotonic clock (vDSO, no system call): the table's time.
fn now_secs() -> u64 {
    // SAFETY: all-zero timespec is valid; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is our own, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64
}

/// The fake addresses of `name`, allocated on first use. When the IPv4
/// pool is full, the address idle longest goes to `name`, but only one no
/// open socket uses and idle for [`DEFAULT_MIN_IDLE_SECS`]; if there is
/// none, `None` (the look-up fails with `EAI_AGAIN`, or the DNS responder
/// answers SERVFAIL), with one warning for the process.
pub fn addrs_for(config: &Config, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
    let now = now_secs();
    // Which fake addresses open sockets use, gathered (with the fd tables'
    // locks) before this table's lock is taken, and only when needed.
    let held: HashSet<IpAddr> = match with_table(config, |t| t.needs_recycling(name)) {
        true => crate::sockets::addrs_in_use().into_iter().map(socksify_proto::wire::canonical_ip).collect(),
        false => HashSet::new(),
    };
    match with_table(config, |t| t.addrs_for(name, now, &|v4, v6| held.contains(&IpAddr::V4(v4)) || held.contains(&IpAddr::V6(v6)))) {
        Ok((v4, v6)) => {
            log::debug!("{name}: fake addresses {v4} and {v6}; the proxy resolves it");
            Some((v4, v6))
        }
        Err(Exhausted) => {
            // One warning, not one per look-up (a program may retry).
            crate::log_once::log_once(format!(
                "look-ups fail (try again): every fake address is in use by an open socket or was used in the last {DEFAULT_MIN_IDLE_SECS} s"
            ));
            log::debug!("look-up of {name:?}: no fake address free");
            None
        }
    }
}

/// Whether `ip` is in the fake pools (remote DNS only): such an address is
/// never bypassed and never connected to directly.
///
/// A pure range check on the configuration, no lock: it runs for every
/// datagram a program sends to an address, proxied or not.
pub fn is_fake(config: &Config, ip: IpAddr) -> bool {
    socksify_client::route::is_fake(config, ip)
}

/// The name behind fake address `ip`, if `ip` is one that is held now.
pub fn name_for(config: &Config, ip: IpAddr) -> Option<String> {
    if !is_fake(config, ip) {
        return None;
    }
    with_table(config, |t| t.name_for(ip, now_secs()).map(str::to_owned))
}

/// What to ask the proxy for when the program names `dst`: the name for a
/// fake address, the address itself otherwise. `None` for a fake address
/// no name holds (never looked up in this process, or evicted): the caller
/// fails with `EHOSTUNREACH` rather than go anywhere.
pub fn target_for(config: &Config, dst: &SocketAddr) -> Option<TargetAddr> {
    if !is_fake(config, dst.ip()) {
        return Some(TargetAddr::Ip(*dst));
    }
    let name = with_table(config, |t| t.name_for(dst.ip(), now_secs()).map(str::to_owned))?;
    TargetAddr::domain(&name, dst.port())
}
