//! The supervisor's fake-address table (remote DNS): the responder hands
//! addresses out, a connect to one is turned back into its name. One table
//! for the whole supervised process tree.

use socksify_proto::config::Config;
use socksify_proto::fake_dns::{FakeDns, DEFAULT_MAX_NAMES, DEFAULT_MIN_IDLE_SECS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

pub struct FakeTable {
    table: Mutex<FakeDns>,
    /// The table's clock: seconds since the supervisor started.
    start: Instant,
}

impl FakeTable {
    pub fn new(config: &Config) -> FakeTable {
        let table = FakeDns::new(config.fake_v4, config.fake_v6, DEFAULT_MAX_NAMES, DEFAULT_MIN_IDLE_SECS);
        FakeTable { table: Mutex::new(table), start: Instant::now() }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The fake addresses of `name`; `None` when the pool is exhausted.
    /// A full pool recycles the address idle longest (5 minutes at least):
    /// the supervisor does not track which sockets are still open, so a
    /// connection made by an old name keeps its name (it was sent to the
    /// proxy), and only a new connect to the recycled address gets the new one.
    pub fn addrs_for(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let now = self.now();
        self.table.lock().unwrap_or_else(|e| e.into_inner()).addrs_for(name, now, &|_, _| false).ok()
    }

    /// The name holding fake address `ip`, if one does.
    pub fn name_for(&self, ip: IpAddr) -> Option<String> {
        let now = self.now();
        self.table.lock().unwrap_or_else(|e| e.into_inner()).name_for(ip, now).map(str::to_owned)
    }
}
