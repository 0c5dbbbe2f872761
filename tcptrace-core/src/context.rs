//! What every consumer of the stream needs besides the events themselves: the recording host's
//! wall clock, the kernel's reset-reason names, facts learned about namespaces (interface
//! MTUs) and the paths of cgroup ids. The pipeline owns one and keeps it current from recorded facts only, so `replay`
//! rebuilds the same context a live run had; sinks and rules read it.
use std::net::IpAddr;

use crate::{
    FastMap as HashMap,
    cgroup::{CgroupInfo, CgroupNames},
    clock::{Rfc3339Writer, WallClock},
};

#[derive(Debug, Default)]
pub struct Context {
    clock: WallClock,
    /// Formats record times (caches the current second; interior mutability, so `&self`).
    times: Rfc3339Writer,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    reasons: HashMap<u32, String>,
    /// Interface MTU by (netns, local address).
    mtus: HashMap<(u32, IpAddr), u32>,
    /// Cgroup id → path, unit, container.
    cgroups: CgroupNames,
    /// Network namespace inode → its name under /run/netns.
    netns_names: HashMap<u32, String>,
}

impl Context {
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    pub fn set_clock(&mut self, clock: WallClock) {
        self.clock = clock;
    }

    /// Appends the RFC 3339 UTC time of a monotonic stamp.
    pub fn write_time(&self, buf: &mut Vec<u8>, ts_ns: u64) {
        self.times.write(buf, self.clock.unix_ns(ts_ns));
    }

    pub fn reason_name(&self, code: u32) -> Option<&str> {
        self.reasons.get(&code).map(String::as_str)
    }

    pub fn learn_reason(&mut self, code: u32, name: &str) {
        if self.reasons.get(&code).map(String::as_str) != Some(name) {
            self.reasons.insert(code, name.to_string());
        }
    }

    /// Every known reason, by code.
    pub fn reasons(&self) -> Vec<(u32, &str)> {
        let mut v: Vec<(u32, &str)> = self.reasons.iter().map(|(k, v)| (*k, v.as_str())).collect();
        v.sort_unstable();
        v
    }

    /// What cgroup `id` is, when its path was recorded.
    pub fn cgroup(&self, id: u64) -> Option<&CgroupInfo> {
        self.cgroups.get(id)
    }

    /// Cgroup `id` is at `path` (below the cgroup2 mount); true when that is news.
    pub fn learn_cgroup(&mut self, id: u64, path: &str) -> bool {
        self.cgroups.learn(id, path)
    }

    /// Cgroups whose paths are known.
    pub fn cgroups_known(&self) -> usize {
        self.cgroups.len()
    }

    /// A namespace's name (under /run/netns), when it has one and it was recorded.
    pub fn netns_name(&self, netns: u32) -> Option<&str> {
        self.netns_names.get(&netns).map(String::as_str)
    }

    /// Namespace `netns` is named `name`; true when that is news.
    pub fn learn_netns_name(&mut self, netns: u32, name: &str) -> bool {
        if self.netns_name(netns) == Some(name) {
            return false;
        }
        self.netns_names.insert(netns, name.to_string());
        true
    }

    /// The MTU of the interface holding `addr` in `netns`, when it was recorded.
    pub fn mtu(&self, netns: u32, addr: IpAddr) -> Option<u32> {
        self.mtus.get(&(netns, addr)).copied()
    }

    /// A namespace's interfaces as last read: replaces what was known of it.
    pub fn learn_mtus(&mut self, netns: u32, mtus: &[(IpAddr, u32)]) {
        self.mtus.retain(|(ns, _), _| *ns != netns);
        for (addr, mtu) in mtus {
            self.mtus.insert((netns, *addr), *mtu);
        }
    }
}
