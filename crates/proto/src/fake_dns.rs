//! The fake-address table behind remote DNS.
//!
//! In remote mode the shim answers a look-up of a name the proxy must
//! resolve with an address from a reserved pool (one IPv4 and one IPv6
//! CIDR) and remembers the pair; a later `connect` to that address sends the
//! *name* to the proxy. A name gets IPv4 slot `i` (`base + 1 + i`) and the
//! next IPv6 serial `s` (`base + 1 + s`), so both families of a name are
//! known at once.
//!
//! Promises:
//! * The same name (case and a trailing dot ignored) gets the same addresses
//!   as long as it stays in the table.
//! * An address never leads to a name other than the one it was handed out
//!   for while a program may still hold it. The IPv4 pool (every address of
//!   it: 131 070 in the default /15) is recycled only when it is full, and
//!   then only the address idle longest (no look-up, connect, send or reverse
//!   look-up by it), only if it has been idle for at least the table's
//!   minimum idle time and no open socket uses it (the caller says which
//!   are in use). When no address qualifies, the look-up fails
//!   ([`Exhausted`]) rather than reuse one. The IPv6 pool never recycles:
//!   each allocation takes a new serial, and the IPv6 address of a name
//!   whose IPv4 address was recycled leads nowhere ever after.
//! * O(1) both ways: a hash map from name to slot, a slot array indexed by
//!   the IPv4 address's offset, a map from IPv6 serial to slot.
//!
//! Pure data, no locking, no clock: the shim keeps one behind its
//! fork-safe mutex and passes the time in.

use crate::cidr::Cidr;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Names kept at most, whatever the pools' sizes allow: the whole default
/// IPv4 pool (198.18.0.0/15).
pub const DEFAULT_MAX_NAMES: usize = 1 << 17;

/// How long an address must have been idle before it may be given to
/// another name (the shim's default; see [`FakeDns::new`]).
pub const DEFAULT_MIN_IDLE_SECS: u64 = 300;

/// No slot: the end of the recency list.
const NIL: u32 = u32::MAX;

/// Every address is in use or was used too recently to be recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

#[derive(Debug, Clone)]
struct Slot {
    name: String,
    /// This allocation's IPv6 serial.
    v6_serial: u64,
    /// When the name was last used (the caller's clock, seconds).
    used: u64,
    /// Neighbours in the recency list (towards most / least recent).
    newer: u32,
    older: u32,
}

#[derive(Debug, Clone)]
pub struct FakeDns {
    v4: (u32, u8),
    v6: (u128, u8),
    capacity: u32,
    /// IPv6 serials the pool has (its usable addresses).
    v6_hosts: u128,
    next_v6: u64,
    min_idle: u64,
    by_name: HashMap<String, u32>,
    by_v6: HashMap<u64, u32>,
    slots: Vec<Slot>,
    /// Most and least recently used slots.
    newest: u32,
    oldest: u32,
}

impl FakeDns {
    /// A table over the pools `v4` and `v6` (network, prefix length),
    /// holding at most `max_names` names (and never more than the IPv4 pool
    /// has addresses: the network and all-ones addresses are not used). An
    /// address is recycled only after `min_idle` (seconds) without use.
    pub fn new(v4: Cidr<Ipv4Addr>, v6: Cidr<Ipv6Addr>, max_names: usize, min_idle: u64) -> FakeDns {
        let (v4_prefix, v6_prefix) = (v4.prefix(), v6.prefix());
        let v4_hosts = (1u64 << (32 - v4_prefix as u32)).saturating_sub(2);
        let v6_hosts = 1u128.checked_shl(128 - v6_prefix as u32).unwrap_or(u128::MAX).saturating_sub(2);
        let capacity = v4_hosts.min(max_names as u64).min(u32::MAX as u64 - 1) as u32;
        FakeDns {
            v4: (u32::from(v4.addr()), v4_prefix),
            v6: (u128::from(v6.addr()), v6_prefix),
            capacity,
            v6_hosts,
            next_v6: 0,
            min_idle,
            by_name: HashMap::new(),
            by_v6: HashMap::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// How many names the table holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// How many names it holds now.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `ip` lies in one of the pools (a v4-mapped IPv6 address
    /// counts as its IPv4 address). Such an address must never be reached
    /// directly, whether or not a name holds it now.
    pub fn in_pool(&self, ip: IpAddr) -> bool {
        self.v4_offset(ip).is_some() || self.v6_offset(ip).is_some()
    }

    /// Whether a look-up of `name` would have to recycle an address: then
    /// the caller should say which addresses open sockets use
    /// ([`FakeDns::addrs_for`]'s `in_use`).
    pub fn needs_recycling(&self, name: &str) -> bool {
        !self.by_name.contains_key(&normalize(name)) && self.slots.len() as u64 >= self.capacity as u64
    }

    /// The addresses of `name` at time `now` (seconds), allocating them if
    /// it has none; marks the name as just used. `in_use` says whether an
    /// open socket uses an address pair: such a pair is never recycled.
    pub fn addrs_for(
        &mut self,
        name: &str,
        now: u64,
        in_use: &dyn Fn(Ipv4Addr, Ipv6Addr) -> bool,
    ) -> Result<(Ipv4Addr, Ipv6Addr), Exhausted> {
        let key = normalize(name);
        let slot = match self.by_name.get(&key) {
            Some(&slot) => {
                self.touch(slot, now);
                slot
            }
            None => self.allocate(key, now, in_use)?,
        };
        Ok(self.addrs_of(slot))
    }

    /// The name holding `ip`, if any; marks it as used at `now`.
    pub fn name_for(&mut self, ip: IpAddr, now: u64) -> Option<&str> {
        let slot = match (self.v4_offset(ip), self.v6_offset(ip)) {
            (Some(offset), _) => offset.checked_sub(1).filter(|slot| (*slot as usize) < self.slots.len())?,
            (None, Some(offset)) => *self.by_v6.get(&u64::try_from(offset.checked_sub(1)?).ok()?)?,
            (None, None) => return None,
        };
        self.touch(slot, now);
        Some(&self.slots[slot as usize].name)
    }

    fn addrs_of(&self, slot: u32) -> (Ipv4Addr, Ipv6Addr) {
        let s = &self.slots[slot as usize];
        (Ipv4Addr::from(self.v4.0 + slot + 1), Ipv6Addr::from(self.v6.0 + s.v6_serial as u128 + 1))
    }

    /// The host part of `ip` in the IPv4 pool.
    fn v4_offset(&self, ip: IpAddr) -> Option<u32> {
        let IpAddr::V4(v4) = crate::wire::canonical_ip(ip) else { return None };
        let mask = u32::MAX.checked_shl(32 - self.v4.1 as u32).unwrap_or(0);
        let ip = u32::from(v4);
        (ip & mask == self.v4.0).then_some(ip & !mask)
    }

    /// The host part of `ip` in the IPv6 pool.
    fn v6_offset(&self, ip: IpAddr) -> Option<u128> {
        let IpAddr::V6(v6) = crate::wire::canonical_ip(ip) else { return None };
        let mask = u128::MAX.checked_shl(128 - self.v6.1 as u32).unwrap_or(0);
        let ip = u128::from(v6);
        (ip & mask == self.v6.0).then_some(ip & !mask)
    }

    fn allocate(&mut self, key: String, now: u64, in_use: &dyn Fn(Ipv4Addr, Ipv6Addr) -> bool) -> Result<u32, Exhausted> {
        if self.next_v6 as u128 >= self.v6_hosts {
            return Err(Exhausted); // the IPv6 pool never recycles
        }
        let slot = if (self.slots.len() as u64) < self.capacity as u64 {
            let slot = self.slots.len() as u32;
            self.slots.push(Slot { name: String::new(), v6_serial: 0, used: now, newer: NIL, older: NIL });
            slot
        } else {
            let slot = self.recyclable(now, in_use)?;
            self.unlink(slot);
            let old = std::mem::take(&mut self.slots[slot as usize].name);
            self.by_name.remove(&old);
            self.by_v6.remove(&self.slots[slot as usize].v6_serial);
            slot
        };
        let serial = self.next_v6;
        self.next_v6 += 1;
        let s = &mut self.slots[slot as usize];
        s.name = key.clone();
        s.v6_serial = serial;
        s.used = now;
        self.by_name.insert(key, slot);
        self.by_v6.insert(serial, slot);
        self.push_newest(slot);
        Ok(slot)
    }

    /// The slot idle longest that no open socket uses, if it has been idle
    /// long enough. Slots in use count as used now (they move to the
    /// recent end), so each is passed over once per use.
    fn recyclable(&mut self, now: u64, in_use: &dyn Fn(Ipv4Addr, Ipv6Addr) -> bool) -> Result<u32, Exhausted> {
        for _ in 0..self.slots.len() {
            let slot = self.oldest;
            if slot == NIL || now.saturating_sub(self.slots[slot as usize].used) < self.min_idle {
                return Err(Exhausted);
            }
            let (v4, v6) = self.addrs_of(slot);
            if !in_use(v4, v6) {
                return Ok(slot);
            }
            self.touch(slot, now);
        }
        Err(Exhausted)
    }

    fn touch(&mut self, slot: u32, now: u64) {
        self.slots[slot as usize].used = now;
        if self.newest != slot {
            self.unlink(slot);
            self.push_newest(slot);
        }
    }

    fn unlink(&mut self, slot: u32) {
        let Slot { newer, older, .. } = self.slots[slot as usize];
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        let s = &mut self.slots[slot as usize];
        s.newer = NIL;
        s.older = NIL;
    }

    fn push_newest(&mut self, slot: u32) {
        let old_newest = self.newest;
        {
            let s = &mut self.slots[slot as usize];
            s.newer = NIL;
            s.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = slot,
            n => self.slots[n as usize].newer = slot,
        }
        self.newest = slot;
    }
}

/// How names are compared: DNS is case-insensitive and `a.example.` is
/// `a.example`.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    const IDLE: u64 = 300;

    fn table(max: usize) -> FakeDns {
        FakeDns::new(Cidr::v4(Ipv4Addr::new(198, 18, 0, 0), 15), Cidr::v6("fd50:c5f1:f1ed::".parse().unwrap(), 64), max, IDLE)
    }

    fn unused(_: Ipv4Addr, _: Ipv6Addr) -> bool {
        false
    }

    #[test]
    fn allocates_from_both_pools_and_maps_back() {
        let mut t = table(100);
        let (v4, v6) = t.addrs_for("intranet.example", 0, &unused).unwrap();
        assert_eq!(v4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(v6, "fd50:c5f1:f1ed::1".parse::<Ipv6Addr>().unwrap());
        let (b4, b6) = t.addrs_for("other.example", 0, &unused).unwrap();
        assert_eq!((b4, b6), (Ipv4Addr::new(198, 18, 0, 2), "fd50:c5f1:f1ed::2".parse().unwrap()));
        assert_eq!(t.name_for(v4.into(), 0), Some("intranet.example"));
        assert_eq!(t.name_for(v6.into(), 0), Some("intranet.example"));
        assert_eq!(t.name_for(IpAddr::V6(b4.to_ipv6_mapped()), 0), Some("other.example"));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn same_name_same_address_ignoring_case_and_trailing_dot() {
        let mut t = table(100);
        let a = t.addrs_for("Name.Test", 0, &unused).unwrap();
        assert_eq!(t.addrs_for("name.test.", 0, &unused).unwrap(), a);
        assert_eq!(t.addrs_for("name.test", 0, &unused).unwrap(), a);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pool_membership_and_unknown_addresses() {
        let mut t = table(100);
        t.addrs_for("a", 0, &unused).unwrap();
        for ip in ["198.18.0.0", "198.19.255.255", "198.18.0.2", "fd50:c5f1:f1ed::ffff", "::ffff:198.18.0.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(t.in_pool(ip), "{ip}");
            assert_eq!(t.name_for(ip, 0), None, "{ip}");
        }
        for ip in ["198.20.0.1", "198.17.255.255", "127.0.0.1", "fd50:c5f1:f1ee::1", "::1"] {
            assert!(!t.in_pool(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_whole_ipv4_pool_is_used() {
        assert_eq!(table(DEFAULT_MAX_NAMES).capacity(), 131_070, "a /15 less its network and all-ones addresses");
        let t = FakeDns::new(Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 30), Cidr::v6("fd00::".parse().unwrap(), 64), 1000, IDLE);
        assert_eq!(t.capacity(), 2, "a /30 has two usable addresses");
    }

    #[test]
    fn a_full_table_recycles_the_address_idle_longest_once_idle_long_enough() {
        let mut t = table(3);
        let a = t.addrs_for("a", 0, &unused).unwrap();
        let b = t.addrs_for("b", 1, &unused).unwrap();
        let c = t.addrs_for("c", 2, &unused).unwrap();
        // Use "a" (by address), so "b" is now idle longest.
        assert_eq!(t.name_for(a.0.into(), 3), Some("a"));
        // Too soon: nothing may be recycled, the look-up fails.
        assert_eq!(t.addrs_for("d", 1 + IDLE - 1, &unused), Err(Exhausted));
        assert_eq!(t.name_for(b.0.into(), 1 + IDLE - 1), Some("b"), "a failed look-up takes nothing");
        // "b" was just used again: "c" is idle longest now.
        let d = t.addrs_for("d", 2 + IDLE, &unused).unwrap();
        assert_eq!(d.0, c.0, "d takes c's IPv4 address");
        assert_ne!(d.1, c.1, "but a new IPv6 address: that pool never recycles");
        assert_eq!(t.name_for(c.0.into(), 2 + IDLE), Some("d"), "one address, one live name");
        assert_eq!(t.name_for(c.1.into(), 2 + IDLE), None, "c's IPv6 address leads nowhere now");
        assert_eq!(t.len(), 3);
        assert_eq!(t.addrs_for("a", 2 + IDLE, &unused).unwrap(), a);
        assert_eq!(t.addrs_for("b", 2 + IDLE, &unused).unwrap(), b);
    }

    #[test]
    fn an_address_an_open_socket_uses_is_never_recycled() {
        let mut t = table(2);
        let a = t.addrs_for("a", 0, &unused).unwrap();
        let b = t.addrs_for("b", 1, &unused).unwrap();
        let held = move |v4: Ipv4Addr, _| v4 == a.0;
        // "a" is idle longest but held: "b" goes instead.
        let c = t.addrs_for("c", 1000, &held).unwrap();
        assert_eq!(c.0, b.0);
        assert_eq!(t.name_for(a.0.into(), 1000), Some("a"));
        // Both held now: nothing can go, however long they have been idle.
        let both = move |v4: Ipv4Addr, _| v4 == a.0 || v4 == c.0;
        assert_eq!(t.addrs_for("d", 100_000, &both), Err(Exhausted));
    }

    /// Property: whatever the sequence of look-ups, uses and held sockets,
    /// an address is handed to a second name only if the first name's use
    /// of it was at least the minimum idle time ago and no socket held it.
    #[test]
    fn recycling_never_takes_a_recent_or_held_address() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut t = FakeDns::new(Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 28), Cidr::v6("fd00::".parse().unwrap(), 64), 1000, 50);
        let mut owner: HashMap<Ipv4Addr, (String, u64)> = HashMap::new();
        let mut v6_seen: HashMap<Ipv6Addr, String> = HashMap::new();
        let mut held: HashSet<Ipv4Addr> = HashSet::new();
        let mut now = 0;
        for _ in 0..20_000 {
            now += next() % 3;
            let name = format!("n{}", next() % 40);
            match next() % 10 {
                0 if !owner.is_empty() => {
                    let ip = *owner.keys().nth((next() % owner.len() as u64) as usize).unwrap();
                    if !held.remove(&ip) {
                        held.insert(ip);
                    }
                }
                1 if !owner.is_empty() => {
                    let ip = *owner.keys().nth((next() % owner.len() as u64) as usize).unwrap();
                    let got = t.name_for(ip.into(), now).map(str::to_owned);
                    assert_eq!(got.as_deref(), Some(owner[&ip].0.as_str()));
                    owner.get_mut(&ip).unwrap().1 = now;
                }
                _ => {
                    let h = held.clone();
                    match t.addrs_for(&name, now, &move |v4, _| h.contains(&v4)) {
                        Ok((v4, v6)) => {
                            if let Some((prev, used)) = owner.get(&v4) {
                                if *prev != name {
                                    assert!(now - used >= 50, "{v4} recycled {} s after {prev} used it", now - used);
                                    assert!(!held.contains(&v4), "{v4} recycled while held");
                                }
                            }
                            assert_eq!(v6_seen.entry(v6).or_insert_with(|| name.clone()), &name, "an IPv6 address reused");
                            owner.insert(v4, (name, now));
                        }
                        Err(Exhausted) => assert!(t.needs_recycling(&name)),
                    }
                }
            }
        }
    }

    #[test]
    fn concurrent_lookups_agree() {
        let shared = Arc::new(Mutex::new(table(1000)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|i| {
                            let name = format!("n{}.test", (i * 7 + t) % 300);
                            let addrs = shared.lock().unwrap().addrs_for(&name, 0, &unused).unwrap();
                            assert_eq!(shared.lock().unwrap().name_for(addrs.0.into(), 0).map(str::to_owned), Some(name.clone()));
                            (name, addrs)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_name = HashMap::new();
        for thread in threads {
            for (name, addrs) in thread.join().unwrap() {
                assert_eq!(*by_name.entry(name).or_insert(addrs), addrs, "one name, one address (no eviction below capacity)");
            }
        }
        let distinct: HashSet<_> = by_name.values().collect();
        assert_eq!(distinct.len(), by_name.len(), "two names never share an address");
        assert_eq!(by_name.len(), 300);
    }
}
