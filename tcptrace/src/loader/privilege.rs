//! Checks up front that this process may load and attach tracing eBPF programs.

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
