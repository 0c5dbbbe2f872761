//! Checks up front that this process may load and attach tracing eBPF programs, and drops
//! every capability the running tracer no longer needs once they are attached.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `Err` with one line saying what is missing when tracing is not permitted.
pub fn check() -> anyhow::Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    anyhow::bail!(
        "tracing needs root (or CAP_BPF + CAP_PERFMON); run with sudo. \
         Effective capabilities: {caps:#x}"
    )
}

/// `CAP_DAC_READ_SEARCH`, `CAP_SYS_PTRACE`: see [`KEPT`].
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;

/// What a running tracer still needs once its programs are attached, and why:
/// - `CAP_SYS_ADMIN`: `setns(CLONE_NEWNET)` into each traced namespace, to read its sysctls,
///   interfaces and netstat and to open its sock_diag socket (the kernel asks for it in both
///   the namespace's and our user namespace). It also keeps the `bpf()` calls on the maps we
///   hold working on kernels before 6.5, which check `bpf_capable()` for every command.
/// - `CAP_SYS_PTRACE`: `/proc/PID/fd` and `/proc/PID/ns/net` of other users' processes (who
///   owns a socket that predates tracing; a namespace only a process holds).
/// - `CAP_DAC_READ_SEARCH`: the same `/proc` directories (mode 0500, owned by their user),
///   and `open_by_handle_at` to name cgroup ids.
///
/// Everything else goes: `CAP_BPF`, `CAP_PERFMON` (loading and attaching are done), `CAP_NET_ADMIN`,
/// `CAP_DAC_OVERRIDE`, `CAP_SETUID`, `CAP_SYS_MODULE`, … — from the effective, permitted,
/// inheritable, ambient and bounding sets, so no exec can bring them back.
pub const KEPT: [u32; 3] = [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN];

/// The [`KEPT`] set as a mask (as `/proc/PID/status` prints capability sets).
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, c| m | (1u64 << c))
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

/// Reduces the calling thread to `keep` (a mask): bounding set first (which needs
/// `CAP_SETPCAP`, still held), ambient cleared, then effective/permitted/inheritable. Threads
/// created afterwards inherit the reduced sets; threads that already exist keep theirs, so
/// each long-lived one drops for itself.
pub fn reduce_thread_to(keep: u64) -> anyhow::Result<()> {
    for cap in 0..=last_cap().min(63) {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only; it changes this thread's bounding set.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            // EINVAL: a capability this kernel does not have.
            if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(os_err(&format!(
                    "dropping capability {cap} from the bounding set"
                )));
            }
        }
    }
    // SAFETY: as above; clears this thread's ambient set.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut head = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` words for version 3 into `data`.
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut head, data.as_mut_ptr()) } != 0 {
        return Err(os_err("capget"));
    }
    for (i, d) in data.iter_mut().enumerate() {
        let word = (keep >> (32 * i)) as u32;
        d.effective &= word;
        d.permitted &= word;
        d.inheritable &= word;
    }
    // SAFETY: capset reads the header and two `CapData` words; it only lowers this thread's
    // sets (dropping needs no privilege).
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut head, data.as_ptr()) } != 0 {
        return Err(os_err("capset"));
    }
    Ok(())
}

/// After attaching: keep only [`KEPT`] in this thread (and so in the threads it starts later).
pub fn drop_after_attach() -> anyhow::Result<()> {
    reduce_thread_to(kept_mask())
}
