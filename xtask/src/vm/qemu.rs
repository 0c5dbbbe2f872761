//! Boots one kernel under qemu: KVM when `/dev/kvm` works (TCG otherwise, slower), the host's
//! root exported read-only and the results directory read-write over virtio-9p, the serial
//! console captured to a log with the guest's progress lines shown live, a deadline enforced.
use std::{
    fs::File,
    io::Write as _,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::initramfs::{RESULTS_TAG, ROOT_TAG};

/// How the guest's CPU is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG",
        }
    }

    /// How many times longer the tests wait for things to happen: TCG runs the guest's
    /// code ~10× slower than the host (measured: `tcptrace` attaches in seconds instead of
    /// a fraction of one, a Python peer starts in over a second).
    pub fn patience(self) -> u32 {
        match self {
            Self::Kvm => 1,
            Self::Tcg => 6,
        }
    }

    /// How much longer a guest and each of its test binaries may take before they are
    /// stopped (measured under TCG on 2 loaded CPUs: the whole suite in ≈20 min, the longest
    /// binary in ≈5 min).
    pub fn timeout_factor(self) -> u32 {
        match self {
            Self::Kvm => 1,
            Self::Tcg => 2,
        }
    }
}

/// `--accel kvm|tcg` (none: choose).
pub fn parse_accel(s: Option<&str>) -> anyhow::Result<Option<Accel>> {
    match s {
        None | Some("auto") => Ok(None),
        Some("kvm") => Ok(Some(Accel::Kvm)),
        Some("tcg") => Ok(Some(Accel::Tcg)),
        Some(o) => bail!("--accel {o:?}: expected kvm, tcg or auto"),
    }
}

/// `KVM_GET_API_VERSION`: `_IO(0xAE, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Whether `/dev/kvm` opens read-write and answers the stable API version (12).
fn kvm_device() -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    // SAFETY: the fd is open for the call; this ioctl takes no argument.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    v == 12
}

/// Whether the CPU offers hardware virtualization (`vmx` or `svm` in `/proc/cpuinfo`).
fn hardware_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The accelerator to use: KVM when `/dev/kvm` works on a CPU with hardware virtualization.
/// Without it (a VM without nested virtualization) a `/dev/kvm` can still exist, backed by a
/// software implementation such as `kvm_pvm`, which runs an unmodified Debian kernel far
/// slower than TCG (measured: over two minutes to reach the kernel command line, TCG boots
/// to userspace in under a minute). Otherwise TCG; `Err` says why not KVM.
pub fn choose(requested: Option<Accel>) -> (Accel, Option<String>) {
    if let Some(a) = requested {
        return (a, None);
    }
    if !kvm_device() {
        return (Accel::Tcg, Some("/dev/kvm is not usable".into()));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if hardware_virtualization(&cpuinfo) {
        return (Accel::Kvm, None);
    }
    let module = ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| std::path::Path::new("/sys/module").join(m).exists())
        .unwrap_or("unknown");
    (
        Accel::Tcg,
        Some(format!(
            "/dev/kvm works but the CPU has no hardware virtualization (no vmx/svm; KVM module {module}): it would run the Debian kernels far slower than TCG"
        )),
    )
}

/// One boot.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub results: &'a Path,
    pub console_log: &'a Path,
    pub accel: Accel,
    pub timeout: Duration,
    /// Prefix of the progress lines shown.
    pub label: &'a str,
}

/// Boots and waits for the guest to power off; the console goes to `console_log`, and lines
/// from the guest's init and suite (`vm-init:`, `vm-guest:`) to stderr as they come.
pub fn boot(b: &Boot<'_>) -> anyhow::Result<()> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-smp", "2", "-m", "3072"]);
    match b.accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        // Multi-threaded TCG: one host thread per vCPU.
        Accel::Tcg => cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    cmd.arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        .arg("-virtfs")
        .arg(format!(
            "local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag={RESULTS_TAG},security_model=none,multidevs=remap",
            b.results.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (rx, _readers) = crate::exec::lines(&mut child);
    let mut log = File::create(b.console_log)
        .with_context(|| format!("creating {}", b.console_log.display()))?;
    let deadline = Instant::now() + b.timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if let Some(i) = line.find("vm-guest: ").or_else(|| line.find("vm-init: ")) {
                    eprintln!("    [{}] {}", b.label, &line[i..]);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the guest did not finish within {} s (console: {})",
                b.timeout.as_secs(),
                b.console_log.display()
            );
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "qemu exited with {status} (console: {})",
            b.console_log.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_virtualization_flags() {
        assert!(hardware_virtualization("flags\t\t: fpu vme svm lm\n"));
        assert!(hardware_virtualization("processor : 0\nflags : fpu vmx\n"));
        // This machine's kind: a VM whose /dev/kvm is kvm_pvm.
        assert!(!hardware_virtualization(
            "flags\t\t: fpu hypervisor avx512f\n"
        ));
        assert!(!hardware_virtualization("model name : svm-like\n"));
    }
}
