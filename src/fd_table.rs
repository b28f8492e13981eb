//! What we know about the program's file descriptors.
//!
//! [`kind`] is the fast path every hook starts with: one relaxed atomic
//! load from a static table indexed by fd (in `.bss`: pages cost memory only
//! once touched). Zero means "not ours": the hook calls the real function
//! and is done. Details of our fds (the destination the program asked for,
//! the proxy we used) sit behind a fork-safe lock, read only on slow paths.
//! Nothing here changes in a `vfork` child: the tables are its parent's
//! ([`is_vfork_child`]).

use crate::fork_safe::{is_vfork_child, ForkSafeMutex};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Fds at or above this are never ours: a socket we would have to track
/// there is refused instead (see [`SLOTS`] users), never sent direct.
pub const SLOTS: usize = 1 << 20;

static KINDS: [AtomicU8; SLOTS] = [const { AtomicU8::new(0) }; SLOTS];

pub mod kind {
    /// Not ours.
    pub const NONE: u8 = 0;
    /// A TCP socket we connected through the proxy.
    pub const PROXIED_TCP: u8 = 1;
    /// A UDP socket with a SOCKS association or a proxied peer: its
    /// details are in [`crate::udp`].
    pub const UDP: u8 = 2;
    /// The shim's own control connection of a UDP association: the
    /// program never opened it, so its `close` answers `EBADF`.
    pub const CONTROL: u8 = 3;
    /// A TCP socket the program bound that is (or is to become) a SOCKS
    /// BIND: its details are in [`crate::bind`].
    pub const BIND: u8 = 4;
    /// A TCP socket whose non-blocking `connect` is under way in the
    /// background, or failed and not yet reported: its details are in
    /// [`crate::connecting`].
    pub const CONNECTING: u8 = 5;
    /// An fd of the shim's own that the program never opened (the
    /// background connect engine's): its `close` answers `EBADF`.
    pub const OWN: u8 = 6;
}

/// How many fds are of kind [`kind::CONNECTING`]: the wait hooks (`poll`,
/// `select`) look no further while it is 0. Kept by every change of kind.
static CONNECTING_FDS: AtomicUsize = AtomicUsize::new(0);

/// Whether any fd is of kind [`kind::CONNECTING`] (one relaxed load: the
/// fast path of the wait hooks).
#[inline(always)]
pub fn any_connecting() -> bool {
    CONNECTING_FDS.load(Ordering::Relaxed) != 0
}

/// Sets `slot` to `new`, keeping [`CONNECTING_FDS`]; returns the old kind.
fn swap_kind(slot: &AtomicU8, new: u8) -> u8 {
    let old = slot.swap(new, Ordering::AcqRel);
    count_change(old, new);
    old
}

fn count_change(old: u8, new: u8) {
    if old == kind::CONNECTING && new != kind::CONNECTING {
        CONNECTING_FDS.fetch_sub(1, Ordering::AcqRel);
    } else if new == kind::CONNECTING && old != kind::CONNECTING {
        CONNECTING_FDS.fetch_add(1, Ordering::AcqRel);
    }
}

#[inline(always)]
pub fn kind(fd: i32) -> u8 {
    match KINDS.get(fd as usize) {
        Some(slot) => slot.load(Ordering::Relaxed),
        None => kind::NONE,
    }
}

/// Details of a TCP socket we connected through the proxy.
#[derive(Debug, Clone, Copy)]
pub struct ProxiedTcp {
    /// The destination the program asked for, as it gave it (a fake
    /// address stays fake): what `getpeername` reports.
    pub peer: SocketAddr,
    /// The first hop, what the kernel sees as the peer. A mismatch means
    /// the fd was closed behind our back and reused.
    pub proxy: SocketAddr,
    /// The proxy's side of the connection (BND.ADDR, when it named one):
    /// what `getsockname` reports, so a program that tells the far end its
    /// address (active FTP) names one the far end can reach.
    pub bound: Option<SocketAddr>,
    /// When it was made (a counter): the BIND rule prefers the newest.
    pub opened: u64,
}

static TCP: ForkSafeMutex<Option<HashMap<i32, ProxiedTcp>>> = ForkSafeMutex::new(None);

/// The next [`ProxiedTcp::opened`] value.
pub fn next_opened() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Every proxied TCP fd with its details, oldest first.
pub fn all_proxied_tcp() -> Vec<(i32, ProxiedTcp)> {
    let mut all: Vec<(i32, ProxiedTcp)> = TCP.lock().as_ref().map_or_else(Vec::new, |m| m.iter().map(|(fd, d)| (*fd, *d)).collect());
    all.sort_by_key(|(_, d)| d.opened);
    all
}

/// `fd`'s slot, if this process may change it: `None` beyond the table,
/// and in a `vfork` child (the tables are its parent's).
fn slot_to_change(fd: i32) -> Option<&'static AtomicU8> {
    let slot = KINDS.get(fd as usize)?;
    (!is_vfork_child()).then_some(slot)
}

/// Marks `fd` as a BIND socket (details in [`crate::bind`]).
pub fn set_bind(fd: i32) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    swap_kind(slot, kind::BIND);
    true
}

pub fn set_proxied_tcp(fd: i32, details: ProxiedTcp) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    TCP.lock().get_or_insert_with(HashMap::new).insert(fd, details);
    swap_kind(slot, kind::PROXIED_TCP);
    true
}

/// A connect under way on `fd` succeeded: it becomes proxied TCP with
/// `details`, if it is still of kind [`kind::CONNECTING`] (a `close` may
/// have cleared it meanwhile: then nothing changes). The kind changes
/// under the lock of the details, so a reader of the new kind finds them.
pub fn connected(fd: i32, details: ProxiedTcp) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    let mut tcp = TCP.lock();
    if slot.compare_exchange(kind::CONNECTING, kind::PROXIED_TCP, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return false;
    }
    count_change(kind::CONNECTING, kind::PROXIED_TCP);
    tcp.get_or_insert_with(HashMap::new).insert(fd, details);
    true
}

/// Marks `fd` as a TCP socket whose connect is under way (details in
/// [`crate::connecting`]).
pub fn set_connecting(fd: i32) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    swap_kind(slot, kind::CONNECTING);
    true
}

/// The fds marked [`kind::OWN`] (a superset: one closed behind our back
/// may linger; [`own_fds`] checks the kind).
static OWN: ForkSafeMutex<Option<std::collections::HashSet<i32>>> = ForkSafeMutex::new(None);

/// Marks `fd` as one of the shim's own (see [`kind::OWN`]).
pub fn set_own(fd: i32) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    OWN.lock().get_or_insert_with(Default::default).insert(fd);
    swap_kind(slot, kind::OWN);
    true
}

/// The fds of the shim's own in `first..=last` (`close_range` leaves them open).
pub fn own_fds(first: u32, last: u32) -> Vec<i32> {
    let own = OWN.lock();
    own.iter().flatten().copied().filter(|fd| (first..=last).contains(&(*fd as u32)) && kind(*fd) == kind::OWN).collect()
}

/// Clears the mark of an fd of our own; whether it was still ours (not
/// closed behind our back and its number handed out again, which cleared
/// it): only then may we close it.
pub fn clear_own(fd: i32) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    if let Some(own) = OWN.lock().as_mut() {
        own.remove(&fd);
    }
    slot.compare_exchange(kind::OWN, kind::NONE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// The destinations of our proxied TCP connections (for the fake-address
/// table: an address an open socket uses is never given to another name).
pub fn tcp_peers() -> Vec<SocketAddr> {
    TCP.lock().as_ref().map_or_else(Vec::new, |m| m.values().map(|d| d.peer).collect())
}

pub fn proxied_tcp(fd: i32) -> Option<ProxiedTcp> {
    TCP.lock().as_ref().and_then(|m| m.get(&fd).copied())
}

/// Marks `fd` as a UDP socket of ours (details in [`crate::udp`]).
pub fn set_udp(fd: i32) -> bool {
    let Some(slot) = slot_to_change(fd) else { return false };
    swap_kind(slot, kind::UDP);
    true
}

/// Marks `fd` as one of our control connections, or clears that mark.
pub fn set_control(fd: i32, on: bool) {
    let Some(slot) = slot_to_change(fd) else { return };
    if on {
        swap_kind(slot, kind::CONTROL);
    } else {
        let _ = slot.compare_exchange(kind::CONTROL, kind::NONE, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Marks `fd` not ours, at once and without a lock, and says what it was
/// (`None`: it was not ours, or this is a `vfork` child, whose tables are
/// its parent's). Dropping the details of that kind is the caller's
/// ([`crate::sockets::forget`]).
pub fn clear(fd: i32) -> Option<u8> {
    let slot = slot_to_change(fd)?; // in a vfork child: the parent's socket, still open there
    Some(swap_kind(slot, kind::NONE)).filter(|&old| old != kind::NONE)
}

/// Drops the details of proxied TCP `fd` (its kind already cleared).
pub fn drop_proxied_tcp(fd: i32) {
    if let Some(m) = TCP.lock().as_mut() {
        m.remove(&fd);
    }
}

/// The proxied TCP fds in `first..=last`.
pub fn proxied_tcp_in(first: u32, last: u32) -> Vec<i32> {
    TCP.lock().as_ref().map_or_else(Vec::new, |m| m.keys().copied().filter(|fd| (first..=last).contains(&(*fd as u32))).collect())
}

/// The last IPv4 destination each fd sent a datagram to directly (a
/// bypassed destination), packed by [`direct_key`]; 0 for none. A program
/// sending to a bypassed address (a local DNS server, say) pays the routing
/// decision once, then one load and a compare per datagram. The verdict
/// depends on the destination and the configuration alone, never on the fd,
/// so an entry left by a closed fd stays true for whatever reuses it.
const DIRECT_SLOTS: usize = 1 << 16;
static LAST_DIRECT: [AtomicU64; DIRECT_SLOTS] = [const { AtomicU64::new(0) }; DIRECT_SLOTS];

/// `sin` as a key: its address and port, and a bit that no empty slot has.
#[inline(always)]
pub fn direct_key(sin: &libc::sockaddr_in) -> u64 {
    1 << 63 | (u32::from_be(sin.sin_addr.s_addr) as u64) << 16 | u16::from_be(sin.sin_port) as u64
}

/// Whether `fd`'s last direct datagram went to `key`.
#[inline(always)]
pub fn is_last_direct(fd: i32, key: u64) -> bool {
    LAST_DIRECT.get(fd as usize).is_some_and(|slot| slot.load(Ordering::Relaxed) == key)
}

/// Remembers that `fd` sent to `key` directly (the routing decision said so).
pub fn remember_direct(fd: i32, key: u64) {
    if let Some(slot) = LAST_DIRECT.get(fd as usize) {
        slot.store(key, Ordering::Relaxed);
    }
}
