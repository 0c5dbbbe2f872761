//! Which service or container a cgroup v2 path belongs to: the systemd unit and the container
//! id (with its runtime and Kubernetes pod UID) parsed from the path shapes systemd, docker,
//! containerd/CRI, CRI-O and podman create; and where cgroup2 is mounted, from /proc/mounts
//! text. Pure: the daemon reads the files, this only parses.
use std::sync::Arc;

/// A container runtime, as told by the cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A container under `kubepods` whose runtime the path does not name (cgroupfs driver).
    Kubernetes,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
            Self::Kubernetes => "kubernetes",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Docker,
            Self::Containerd,
            Self::CriO,
            Self::Podman,
            Self::Kubernetes,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

/// A container a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    pub runtime: Runtime,
    /// The runtime's container id (64 hex digits for all of the above).
    pub id: String,
    /// The Kubernetes pod UID (with dashes), for containers of a pod.
    pub pod_uid: Option<String>,
}

/// What a cgroup path tells about its owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupInfo {
    /// Path below the cgroup2 mount, `/` for the root.
    pub path: String,
    /// The innermost systemd unit (`*.service` or `*.scope`) on the path.
    pub unit: Option<String>,
    pub container: Option<Container>,
}

impl CgroupInfo {
    /// Parses a path (below the cgroup2 mount).
    pub fn from_path(path: &str) -> Self {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let unit = components
            .iter()
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
            .map(|c| c.to_string());
        let pod_uid = components.iter().rev().find_map(|c| pod_uid(c));
        let in_kubepods = components.iter().any(|c| c.starts_with("kubepods"));
        let mut container = None;
        for (i, c) in components.iter().enumerate().rev() {
            let parent = i.checked_sub(1).map(|p| components[p]);
            if let Some((runtime, id)) = container_of(c, parent, in_kubepods) {
                container = Some(Container {
                    runtime,
                    id: id.to_string(),
                    pod_uid: pod_uid.clone(),
                });
                break;
            }
        }
        Self {
            path: if components.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            },
            unit,
            container,
        }
    }

    /// How text output names it: the container (12 digits, like `docker ps`), else the unit,
    /// else the path; `None` for the root cgroup, which says nothing.
    pub fn short(&self) -> Option<String> {
        if let Some(c) = &self.container {
            let id = &c.id[..c.id.len().min(12)];
            return Some(match &c.pod_uid {
                Some(pod) => format!("{} {id} pod {}", c.runtime.name(), &pod[..pod.len().min(8)]),
                None => format!("{} {id}", c.runtime.name()),
            });
        }
        if let Some(u) = &self.unit {
            return Some(u.clone());
        }
        (self.path != "/").then(|| self.path.clone())
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `(runtime, id)` when one path component names a container.
fn container_of<'a>(
    c: &'a str,
    parent: Option<&str>,
    in_kubepods: bool,
) -> Option<(Runtime, &'a str)> {
    // systemd driver: `<prefix>-<id>.scope`; cgroupfs driver: `<prefix>-<id>` or a bare id.
    let stem = c.strip_suffix(".scope").unwrap_or(c);
    const PREFIXES: [(&str, Runtime); 4] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((runtime, id));
        }
    }
    if is_container_id(c) {
        return match parent {
            Some("docker") => Some((Runtime::Docker, c)),
            Some(p) if p.starts_with("pod") && in_kubepods => Some((Runtime::Kubernetes, c)),
            _ => None,
        };
    }
    None
}

/// The pod UID in `kubepods-burstable-pod<uid with _>.slice` or `pod<uid with ->`.
fn pod_uid(c: &str) -> Option<String> {
    let stem = c.strip_suffix(".slice").unwrap_or(c);
    let at = stem.rfind("pod")?;
    if at > 0 && !stem[..at].ends_with('-') {
        return None;
    }
    let uid = stem[at + 3..].replace('_', "-");
    let shape = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    shape.then_some(uid)
}

/// Decodes the octal escapes (`\040` for a space) of a /proc/mounts field.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup2 mount point in /proc/mounts text, the usual places first: `/sys/fs/cgroup`
/// (pure v2), `/sys/fs/cgroup/unified` (hybrid), then the others in mount order (a container
/// may see the host's hierarchy bind-mounted elsewhere).
pub fn cgroup2_mounts(proc_mounts: &str) -> Vec<String> {
    let mut found: Vec<String> = proc_mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| unescape_mount(dir))
        })
        .collect();
    let rank = |m: &String| match m.as_str() {
        "/sys/fs/cgroup" => 0,
        "/sys/fs/cgroup/unified" => 1,
        _ => 2,
    };
    found.sort_by_key(rank);
    found.dedup();
    found
}

/// Cgroup ids as learned (from the daemon's resolver live, from `cgroup` lines in replay).
#[derive(Clone, Debug, Default)]
pub struct CgroupNames {
    by_id: crate::FastMap<u64, Arc<CgroupInfo>>,
}

impl CgroupNames {
    /// Records what `id`'s path is; returns whether it was new or changed.
    pub fn learn(&mut self, id: u64, path: &str) -> bool {
        if self.by_id.get(&id).is_some_and(|i| i.path == path) {
            return false;
        }
        self.by_id.insert(id, Arc::new(CgroupInfo::from_path(path)));
        true
    }

    pub fn get(&self, id: u64) -> Option<&CgroupInfo> {
        self.by_id.get(&id).map(Arc::as_ref)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Whether `path` is `root` or below it (both below the cgroup2 mount).
pub fn is_under(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c01db0b339c4a6f0e8e7f1f2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4";
    const POD: &str = "0f1c2d3e-4567-89ab-cdef-0123456789ab";

    fn ctr(path: &str) -> Option<(Runtime, String, Option<String>)> {
        CgroupInfo::from_path(path)
            .container
            .map(|c| (c.runtime, c.id, c.pod_uid))
    }

    #[test]
    fn systemd_units() {
        let i = CgroupInfo::from_path("/system.slice/nginx.service");
        assert_eq!(i.unit.as_deref(), Some("nginx.service"));
        assert_eq!(i.container, None);
        assert_eq!(i.short().as_deref(), Some("nginx.service"));
        let i = CgroupInfo::from_path("/system.slice/system-getty.slice/getty@tty1.service");
        assert_eq!(i.unit.as_deref(), Some("getty@tty1.service"));
        // A user's own units: the innermost one, not user@1000.service.
        let i = CgroupInfo::from_path(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope",
        );
        assert_eq!(i.unit.as_deref(), Some("app-firefox-1234.scope"));
        let i = CgroupInfo::from_path("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(i.unit.as_deref(), Some("session-3.scope"));
        // `systemd-run --scope` and a process inside a service's own sub-cgroup.
        let i = CgroupInfo::from_path("/system.slice/run-r0123abcd.scope");
        assert_eq!(i.unit.as_deref(), Some("run-r0123abcd.scope"));
        let i = CgroupInfo::from_path("/system.slice/foo.service/worker");
        assert_eq!(i.unit.as_deref(), Some("foo.service"));
    }

    #[test]
    fn root_and_plain_cgroups() {
        let i = CgroupInfo::from_path("/");
        assert_eq!((i.path.as_str(), i.unit, i.container), ("/", None, None));
        assert_eq!(CgroupInfo::from_path("/").short(), None);
        assert_eq!(CgroupInfo::from_path("").path, "/");
        let i = CgroupInfo::from_path("/tcptrace-test-42");
        assert_eq!(i.short().as_deref(), Some("/tcptrace-test-42"));
        // A slice is no unit a process runs in.
        assert_eq!(CgroupInfo::from_path("/system.slice").unit, None);
    }

    #[test]
    fn docker_both_drivers() {
        let want = Some((Runtime::Docker, ID.to_string(), None));
        assert_eq!(ctr(&format!("/system.slice/docker-{ID}.scope")), want);
        assert_eq!(ctr(&format!("/docker/{ID}")), want);
        let i = CgroupInfo::from_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(i.short().as_deref(), Some("docker 4c01db0b339c"));
        // The daemon itself is a unit, not a container.
        assert_eq!(ctr("/system.slice/docker.service"), None);
        // Not 64 hex digits: not a container.
        assert_eq!(ctr("/system.slice/docker-1234.scope"), None);
        assert_eq!(ctr(&format!("/elsewhere/{ID}")), None);
    }

    #[test]
    fn kubernetes_pods() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            POD.replace('-', "_")
        );
        assert_eq!(
            ctr(&systemd),
            Some((Runtime::Containerd, ID.to_string(), Some(POD.to_string())))
        );
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            POD.replace('-', "_")
        );
        assert_eq!(
            ctr(&guaranteed),
            Some((Runtime::CriO, ID.to_string(), Some(POD.to_string())))
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{POD}/{ID}");
        assert_eq!(
            ctr(&cgroupfs),
            Some((Runtime::Kubernetes, ID.to_string(), Some(POD.to_string())))
        );
        let i = CgroupInfo::from_path(&systemd);
        assert_eq!(
            i.short().as_deref(),
            Some("containerd 4c01db0b339c pod 0f1c2d3e")
        );
        // The pod's own cgroup: a pod, no container.
        let pod_only = CgroupInfo::from_path(&format!("/kubepods/burstable/pod{POD}"));
        assert_eq!(pod_only.container, None);
        // "pod" inside another word is not a pod.
        assert_eq!(pod_uid(&format!("ipod{POD}")), None);
    }

    #[test]
    fn podman_rootful_and_rootless() {
        let want = Some((Runtime::Podman, ID.to_string(), None));
        assert_eq!(ctr(&format!("/machine.slice/libpod-{ID}.scope")), want);
        assert_eq!(
            ctr(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            )),
            want
        );
        assert_eq!(ctr(&format!("/libpod_parent/libpod-{ID}")), want);
        // conmon, the monitor beside the container, is not the container.
        assert_eq!(
            ctr(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn mounts_hybrid_and_pure_v2() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(cgroup2_mounts(hybrid), ["/sys/fs/cgroup/unified"]);
        let pure = "cgroup2 /host/sys\\040fs cgroup2 ro 0 0\n\
            cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(cgroup2_mounts(pure), ["/sys/fs/cgroup", "/host/sys fs"]);
        assert!(cgroup2_mounts("proc /proc proc rw 0 0\n").is_empty());
        assert!(cgroup2_mounts("garbage\n\n").is_empty());
    }

    #[test]
    fn subtree_matching() {
        assert!(is_under("/system.slice/a.service", "/system.slice"));
        assert!(is_under("/system.slice", "/system.slice/"));
        assert!(!is_under("/system.slice2/a", "/system.slice"));
        assert!(is_under("/anything", "/"));
    }

    #[test]
    fn names_learned_once() {
        let mut n = CgroupNames::default();
        assert!(n.learn(7, "/system.slice/a.service"));
        assert!(!n.learn(7, "/system.slice/a.service"));
        assert_eq!(n.get(7).unwrap().unit.as_deref(), Some("a.service"));
        assert!(n.get(8).is_none());
    }
}
