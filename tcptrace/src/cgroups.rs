//! Resolves the cgroup ids records carry to paths under the cgroup v2 mount, once per id, and
//! hands them to the pipeline (which records them, so `replay` names them too). An id is
//! opened as a kernfs file handle on the mount (`open_by_handle_at`, O(1), needs
//! `CAP_DAC_READ_SEARCH`); where handles are refused the mount's tree is scanned instead, at
//! most once per second. Also turns `--cgroup PATH` into the id and depth the in-kernel filter
//! compares with.
use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use tcptrace_core::{cgroup::cgroup2_mounts, event::Event};

use crate::pipeline::Pipeline;

/// `FILEID_KERNFS`: the handle type of kernfs (cgroup2) file handles, an 8-byte id.
const FILEID_KERNFS: i32 = 0xfe;
/// A tree scan is repeated at most this often (the fallback without handles).
const RESCAN_NS: u64 = 1_000_000_000;

/// `struct file_handle` with room for a kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// The cgroup2 mount tcptrace names paths under.
#[derive(Debug)]
pub struct Mount {
    pub dir: PathBuf,
    fd: OwnedFd,
}

impl Mount {
    /// The mount that shows the whole hierarchy: among the cgroup2 mounts of /proc/mounts
    /// (the usual places first), the first whose root is the root cgroup (id 1). Inside a
    /// container whose own cgroup namespace is mounted at /sys/fs/cgroup, that is the host's
    /// hierarchy mounted elsewhere; failing that, the first mount.
    pub fn find() -> io::Result<Mount> {
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let mut first = None;
        for dir in cgroup2_mounts(&mounts) {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let whole = meta.ino() == 1;
            let Ok(m) = Self::open(PathBuf::from(dir)) else {
                continue;
            };
            if whole {
                return Ok(m);
            }
            first.get_or_insert(m);
        }
        first.ok_or_else(|| io::Error::other("no cgroup2 mount in /proc/self/mounts"))
    }

    fn open(dir: PathBuf) -> io::Result<Mount> {
        let c =
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: `c` is a NUL-terminated path; open returns a new descriptor or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Mount { dir, fd })
    }

    /// A path below the mount (`/` for its root), from a path in our mount namespace.
    fn relative(&self, full: &Path) -> Option<String> {
        let rest = full.strip_prefix(&self.dir).ok()?;
        Some(format!("/{}", rest.to_string_lossy()))
    }

    /// The path of cgroup `id` through a file handle; `Err` says why not (`ESTALE`: gone).
    fn by_handle(&self, id: u64) -> io::Result<String> {
        let mut h = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `h` is a `struct file_handle` header followed by its 8 handle bytes, as
        // `handle_bytes` says; the mount descriptor is open. The result is a new descriptor.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.fd.as_raw_fd(),
                (&raw mut h).cast(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let full = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        self.relative(&full)
            .ok_or_else(|| io::Error::other(format!("{} is outside the mount", full.display())))
    }

    /// Every cgroup below the mount: id → path.
    fn scan(&self) -> HashMap<u64, String> {
        let mut out = HashMap::new();
        walk(&self.dir, |dir, id| {
            if let Some(rel) = self.relative(dir) {
                out.insert(id, rel);
            }
        });
        out
    }
}

/// Visits `root` and every directory below it with its inode number (a cgroup's id).
fn walk(root: &Path, mut each: impl FnMut(&Path, u64)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            each(&dir, meta.ino());
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// How ids are turned into paths.
#[derive(Debug)]
enum Lookup {
    Handles,
    /// Handles are refused here: the last tree scan and when it was made.
    Scan {
        known: HashMap<u64, String>,
        at_ns: Option<u64>,
    },
}

/// The resolver the live loop feeds every event through.
#[derive(Debug)]
pub struct Cgroups {
    mount: Option<Mount>,
    lookup: Lookup,
    /// Ids resolved or given up on.
    done: HashSet<u64>,
    /// Ids seen but not found by the latest scan yet (scan mode).
    pending: Vec<u64>,
    /// The id of the previous event: most repeat it, so no set lookup.
    last: u64,
    pub resolved: u64,
    pub unresolved: u64,
}

impl Cgroups {
    /// Finds the mount and whether file handles work on it (they need
    /// `CAP_DAC_READ_SEARCH`, kept after the capability drop for this and /proc).
    pub fn new() -> Self {
        let mount = Mount::find().ok();
        let lookup = match &mount {
            Some(m) => match m.by_handle(1) {
                Ok(_) => Lookup::Handles,
                Err(_) => Lookup::Scan {
                    known: HashMap::new(),
                    at_ns: None,
                },
            },
            None => Lookup::Handles,
        };
        Self {
            mount,
            lookup,
            done: HashSet::new(),
            pending: Vec::new(),
            last: 0,
            resolved: 0,
            unresolved: 0,
        }
    }

    /// Where paths are relative to, for the start-up message.
    pub fn describe(&self) -> String {
        match (&self.mount, &self.lookup) {
            (None, _) => "no cgroup2 mount: cgroups are shown by id".to_string(),
            (Some(m), Lookup::Handles) => format!("cgroup2 at {}", m.dir.display()),
            (Some(m), Lookup::Scan { .. }) => format!(
                "cgroup2 at {} (file handles refused: resolving by scanning it)",
                m.dir.display()
            ),
        }
    }

    /// Names the event's cgroup the first time it is seen.
    pub fn observe(&mut self, ev: &Event, pipeline: &mut Pipeline) -> io::Result<()> {
        let Some(id) = ev.cgroup else {
            return Ok(());
        };
        if id == self.last || self.mount.is_none() {
            return Ok(());
        }
        self.last = id;
        if !self.done.insert(id) {
            return Ok(());
        }
        let Some(mount) = &self.mount else {
            return Ok(());
        };
        let path = match &mut self.lookup {
            Lookup::Handles => mount.by_handle(id).ok(),
            Lookup::Scan { known, at_ns } => {
                if !known.contains_key(&id)
                    && at_ns.is_none_or(|t| ev.ts_ns.saturating_sub(t) >= RESCAN_NS)
                {
                    *known = mount.scan();
                    *at_ns = Some(ev.ts_ns);
                }
                let found = known.get(&id).cloned();
                if found.is_none() {
                    self.pending.push(id);
                }
                found
            }
        };
        self.learned(ev.ts_ns, id, path, pipeline)
    }

    fn learned(
        &mut self,
        ts_ns: u64,
        id: u64,
        path: Option<String>,
        pipeline: &mut Pipeline,
    ) -> io::Result<()> {
        match path {
            Some(p) => {
                self.resolved += 1;
                pipeline.learn_cgroup(ts_ns, id, &p)
            }
            None => {
                if !self.pending.contains(&id) {
                    self.unresolved += 1;
                }
                Ok(())
            }
        }
    }

    /// Scan mode: ids the last scan missed get one more scan; those still missing are given
    /// up (their cgroup is gone).
    pub fn tick(&mut self, now_ns: u64, pipeline: &mut Pipeline) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (Some(mount), Lookup::Scan { known, at_ns }) = (&self.mount, &mut self.lookup) else {
            return Ok(());
        };
        *known = mount.scan();
        *at_ns = Some(now_ns);
        let found: Vec<(u64, Option<String>)> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|id| (id, known.get(&id).cloned()))
            .collect();
        for (id, path) in found {
            self.learned(now_ns, id, path, pipeline)?;
        }
        Ok(())
    }
}

/// What `--cgroup PATH` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFilter {
    /// The directory, in our mount namespace.
    pub dir: PathBuf,
    /// Its path below the cgroup2 mount.
    pub path: String,
    pub id: u64,
    /// Depth below the root (the root is 0).
    pub level: u32,
}

impl CgroupFilter {
    /// `spec` is a directory under the cgroup2 mount, given in full
    /// (`/sys/fs/cgroup/system.slice/nginx.service`) or below the mount
    /// (`/system.slice/nginx.service`, `system.slice/nginx.service`).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mount = Mount::find().context("--cgroup")?;
        let given = Path::new(spec);
        let dir = if given.starts_with(&mount.dir) {
            given.to_path_buf()
        } else {
            mount.dir.join(spec.trim_start_matches('/'))
        };
        let meta = fs::metadata(&dir)
            .with_context(|| format!("--cgroup {spec}: {} is not a cgroup", dir.display()))?;
        if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
            bail!(
                "--cgroup {spec}: {} is not a cgroup directory",
                dir.display()
            );
        }
        let dir = dir.canonicalize().unwrap_or(dir);
        let path = mount.relative(&dir).with_context(|| {
            format!(
                "--cgroup {spec}: not under the cgroup2 mount {}",
                mount.dir.display()
            )
        })?;
        let level = path.split('/').filter(|c| !c.is_empty()).count() as u32;
        Ok(Self {
            dir,
            path,
            id: meta.ino(),
            level,
        })
    }

    /// Ids of the filter's cgroup and every cgroup below it now (for sockets that predate
    /// tracing, which the in-kernel filter never saw).
    pub fn subtree_ids(&self) -> HashSet<u64> {
        let mut out = HashSet::new();
        walk(&self.dir, |_, id| {
            out.insert(id);
        });
        out
    }
}
