//! The fake-address table behind remote DNS.
//!
//! In remote mode the shim answers a look-up of a name the proxy must
//! resolve with an address from a reserved pool (one IPv4 and one IPv6
//! CIDR) and remembers the pair; a later `connect` to that address sends the
//! *name* to the proxy. A name gets slot `i`, and slot `i` is one IPv4 and
//! one IPv6 address (`base + 1 + i` in each pool), so both families of a
//! name are known at once.
//!
//! Promises:
//! * The same name (case and a trailing dot ignored) gets the same addresses
//!   as long as it stays in the table.
//! * O(1) both ways: a hash map from name to slot, a slot array indexed by
//!   the address's offset in the pool.
//! * Bounded: at most [`FakeDns::capacity`] names. When full, the least
//!   recently used name (by look-up either way) loses its slot to the new
//!   one; an address is never held by two names at once, and the evicted
//!   name gets a new address if it is looked up again.
//!
//! Pure data, no locking: the shim keeps one behind its fork-safe mutex.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Names kept at most, whatever the pools' sizes allow.
pub const DEFAULT_MAX_NAMES: usize = 1 << 16;

/// No slot: the end of the recency list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Slot {
    name: String,
    /// Neighbours in the recency list (towards most / least recent).
    newer: u32,
    older: u32,
}

#[derive(Debug, Clone)]
pub struct FakeDns {
    v4: (u32, u8),
    v6: (u128, u8),
    capacity: u32,
    by_name: HashMap<String, u32>,
    slots: Vec<Slot>,
    /// Most and least recently used slots.
    newest: u32,
    oldest: u32,
}

impl FakeDns {
    /// A table over the pools `v4` and `v6` (network, prefix length),
    /// holding at most `max_names` names (and never more than either pool
    /// has addresses: the network and all-ones addresses are not used).
    pub fn new(v4: (Ipv4Addr, u8), v6: (Ipv6Addr, u8), max_names: usize) -> FakeDns {
        let v4_prefix = v4.1.min(32);
        let v6_prefix = v6.1.min(128);
        let v4_mask = u32::MAX.checked_shl(32 - v4_prefix as u32).unwrap_or(0);
        let v6_mask = u128::MAX.checked_shl(128 - v6_prefix as u32).unwrap_or(0);
        let hosts = |bits: u32| if bits >= 32 { u64::MAX } else { (1u64 << bits).saturating_sub(2) };
        let capacity =
            hosts(32 - v4_prefix as u32).min(hosts(128 - v6_prefix as u32)).min(max_names as u64).min(u32::MAX as u64 - 1) as u32;
        FakeDns {
            v4: (u32::from(v4.0) & v4_mask, v4_prefix),
            v6: (u128::from(v6.0) & v6_mask, v6_prefix),
            capacity,
            by_name: HashMap::new(),
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
        self.offset(ip).is_some()
    }

    /// The addresses of `name`, allocating them if it has none; marks the
    /// name as just used. `None` only for a table of capacity zero.
    pub fn addrs_for(&mut self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let key = normalize(name);
        let slot = match self.by_name.get(&key) {
            Some(&slot) => {
                self.touch(slot);
                slot
            }
            None => self.allocate(key)?,
        };
        Some(self.addrs_of(slot))
    }

    /// The name holding `ip`, if any; marks it as just used.
    pub fn name_for(&mut self, ip: IpAddr) -> Option<&str> {
        let offset = self.offset(ip)?;
        let slot = u32::try_from(offset.checked_sub(1)?).ok()?;
        if slot as usize >= self.slots.len() {
            return None;
        }
        self.touch(slot);
        Some(&self.slots[slot as usize].name)
    }

    fn addrs_of(&self, slot: u32) -> (Ipv4Addr, Ipv6Addr) {
        let offset = slot as u64 + 1;
        (Ipv4Addr::from(self.v4.0 + offset as u32), Ipv6Addr::from(self.v6.0 + offset as u128))
    }

    /// The host part of `ip` in its pool.
    fn offset(&self, ip: IpAddr) -> Option<u128> {
        match crate::wire::canonical_ip(ip) {
            IpAddr::V4(v4) => {
                let host_bits = 32 - self.v4.1 as u32;
                let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                let ip = u32::from(v4);
                (ip & mask == self.v4.0).then_some((ip & !mask) as u128)
            }
            IpAddr::V6(v6) => {
                let host_bits = 128 - self.v6.1 as u32;
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                let ip = u128::from(v6);
                (ip & mask == self.v6.0).then_some(ip & !mask)
            }
        }
    }

    fn allocate(&mut self, key: String) -> Option<u32> {
        let slot = if (self.slots.len() as u64) < self.capacity as u64 {
            let slot = self.slots.len() as u32;
            self.slots.push(Slot { name: String::new(), newer: NIL, older: NIL });
            slot
        } else {
            // Full: the least recently used name gives its slot up.
            let slot = self.oldest;
            if slot == NIL {
                return None;
            }
            self.unlink(slot);
            let old = std::mem::take(&mut self.slots[slot as usize].name);
            self.by_name.remove(&old);
            slot
        };
        self.slots[slot as usize].name = key.clone();
        self.by_name.insert(key, slot);
        self.push_newest(slot);
        Some(slot)
    }

    fn touch(&mut self, slot: u32) {
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

    fn table(max: usize) -> FakeDns {
        FakeDns::new((Ipv4Addr::new(198, 18, 0, 0), 15), ("fd50:c5f1:f1ed::".parse().unwrap(), 64), max)
    }

    #[test]
    fn allocates_from_both_pools_and_maps_back() {
        let mut t = table(100);
        let (v4, v6) = t.addrs_for("intranet.example").unwrap();
        assert_eq!(v4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(v6, "fd50:c5f1:f1ed::1".parse::<Ipv6Addr>().unwrap());
        let (b4, b6) = t.addrs_for("other.example").unwrap();
        assert_eq!((b4, b6), (Ipv4Addr::new(198, 18, 0, 2), "fd50:c5f1:f1ed::2".parse().unwrap()));
        assert_eq!(t.name_for(v4.into()), Some("intranet.example"));
        assert_eq!(t.name_for(v6.into()), Some("intranet.example"));
        assert_eq!(t.name_for(IpAddr::V6(b4.to_ipv6_mapped())), Some("other.example"));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn same_name_same_address_ignoring_case_and_trailing_dot() {
        let mut t = table(100);
        let a = t.addrs_for("Name.Test").unwrap();
        assert_eq!(t.addrs_for("name.test.").unwrap(), a);
        assert_eq!(t.addrs_for("name.test").unwrap(), a);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pool_membership_and_unknown_addresses() {
        let mut t = table(100);
        t.addrs_for("a").unwrap();
        for ip in ["198.18.0.0", "198.19.255.255", "198.18.0.2", "fd50:c5f1:f1ed::ffff", "::ffff:198.18.0.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(t.in_pool(ip), "{ip}");
            assert_eq!(t.name_for(ip), None, "{ip}");
        }
        for ip in ["198.20.0.1", "198.17.255.255", "127.0.0.1", "fd50:c5f1:f1ee::1", "::1"] {
            assert!(!t.in_pool(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn full_table_reuses_the_least_recently_used_slot() {
        let mut t = table(3);
        let a = t.addrs_for("a").unwrap();
        let b = t.addrs_for("b").unwrap();
        let c = t.addrs_for("c").unwrap();
        // Use "a" (by address), so "b" is now the least recently used.
        assert_eq!(t.name_for(a.0.into()), Some("a"));
        let d = t.addrs_for("d").unwrap();
        assert_eq!(d, b, "d takes b's slot");
        assert_eq!(t.name_for(b.0.into()), Some("d"), "one address, one live name");
        assert_eq!(t.len(), 3);
        assert_eq!(t.addrs_for("a").unwrap(), a);
        assert_eq!(t.addrs_for("c").unwrap(), c);
        // "b" comes back: it evicts the least recently used, now "d".
        let b2 = t.addrs_for("b").unwrap();
        assert_eq!(b2, d);
        assert_eq!(t.name_for(b2.1.into()), Some("b"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn bounded_by_the_smaller_pool() {
        let t = FakeDns::new((Ipv4Addr::new(10, 0, 0, 0), 30), ("fd00::".parse().unwrap(), 64), 1000);
        assert_eq!(t.capacity(), 2, "a /30 has two usable addresses");
        let t = FakeDns::new((Ipv4Addr::new(10, 0, 0, 0), 8), ("fd00::".parse().unwrap(), 120), 1000);
        assert_eq!(t.capacity(), 254);
        assert_eq!(table(DEFAULT_MAX_NAMES).capacity(), DEFAULT_MAX_NAMES);
        let mut t = FakeDns::new((Ipv4Addr::new(10, 0, 0, 0), 30), ("fd00::".parse().unwrap(), 64), 1000);
        let mut seen = HashSet::new();
        for i in 0..50 {
            let (v4, _) = t.addrs_for(&format!("n{i}")).unwrap();
            assert!(v4 == Ipv4Addr::new(10, 0, 0, 1) || v4 == Ipv4Addr::new(10, 0, 0, 2), "{v4}");
            seen.insert(v4);
            assert!(t.len() <= 2);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn eviction_keeps_the_invariants_over_many_names() {
        let mut t = table(64);
        for i in 0..10_000u32 {
            let name = format!("host{}.example", i % 200);
            let (v4, v6) = t.addrs_for(&name).unwrap();
            assert_eq!(t.name_for(v4.into()), Some(name.as_str()));
            assert_eq!(t.name_for(v6.into()), Some(name.as_str()));
        }
        assert_eq!(t.len(), 64);
        // Every live name owns a distinct address, and the maps agree.
        let mut addrs = HashSet::new();
        for slot in 0..t.slots.len() as u32 {
            let (v4, _) = t.addrs_of(slot);
            let name = t.slots[slot as usize].name.clone();
            assert_eq!(t.by_name.get(&name), Some(&slot));
            assert!(addrs.insert(v4));
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
                            let addrs = shared.lock().unwrap().addrs_for(&name).unwrap();
                            assert_eq!(shared.lock().unwrap().name_for(addrs.0.into()).map(str::to_owned), Some(name.clone()));
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
