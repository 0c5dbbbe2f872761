//! Finding network namespaces (inode → a path to its nsfs file, inode → its /run/netns
//! name); running work inside one on a thread of its own is `tcptrace-netns`'s.
use std::{collections::HashMap, fs, io, os::unix::fs::MetadataExt as _, path::PathBuf};

/// Every network namespace reachable on this host: from /proc/*/ns/net (first process found
/// per inode) and /run/netns/* (named namespaces, which may have no process).
pub fn netns_paths() -> HashMap<u32, PathBuf> {
    let mut out = HashMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = fs::metadata(&path)
            && let Ok(ino) = u32::try_from(meta.ino())
        {
            out.entry(ino).or_insert(path);
        }
    };
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            add(e.path());
        }
    }
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                add(e.path().join("ns/net"));
            }
        }
    }
    out
}

/// The named network namespaces (`ip netns add NAME`): inode → NAME, from /run/netns.
pub fn netns_names() -> HashMap<u32, String> {
    let mut out = HashMap::new();
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if let (Ok(meta), Some(name)) = (fs::metadata(e.path()), e.file_name().to_str())
                && let Ok(ino) = u32::try_from(meta.ino())
            {
                out.entry(ino).or_insert_with(|| name.to_string());
            }
        }
    }
    out
}

/// Where each namespace can be joined: our own needs no joining; others are found through
/// /run/netns or a process holding them (re-scanned when an unknown inode is asked for).
#[derive(Debug, Default)]
pub struct NetnsPaths {
    own: u32,
    paths: HashMap<u32, PathBuf>,
}

impl NetnsPaths {
    pub fn new() -> Self {
        Self {
            own: own_netns().unwrap_or(0),
            paths: HashMap::new(),
        }
    }

    pub fn own(&self) -> u32 {
        self.own
    }

    /// `Ok(None)`: it is ours; `Ok(Some(path))`: join it there.
    pub fn locate(&mut self, ns: u32) -> io::Result<Option<PathBuf>> {
        if ns == self.own {
            return Ok(None);
        }
        if !self.paths.contains_key(&ns) {
            self.paths = netns_paths();
        }
        match self.paths.get(&ns) {
            Some(p) => Ok(Some(p.clone())),
            None => Err(io::Error::other("no process or /run/netns entry holds it")),
        }
    }

    /// Every namespace reachable now, ours included, in inode order.
    pub fn all(&mut self) -> Vec<u32> {
        self.paths = netns_paths();
        let mut all: Vec<u32> = self.paths.keys().copied().collect();
        if self.own != 0 && !all.contains(&self.own) {
            all.push(self.own);
        }
        all.sort_unstable();
        all
    }
}

/// Inode of the caller's network namespace.
pub fn own_netns() -> io::Result<u32> {
    let meta = fs::metadata("/proc/self/ns/net")?;
    u32::try_from(meta.ino()).map_err(io::Error::other)
}

pub use tcptrace_netns::{in_netns, spawn_in_netns};
