//! `cargo xtask setup`: installs, idempotently, everything a fresh Debian machine needs to build
//! and test tcptrace, announcing each step and skipping what is already there.
use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow, bail};

use crate::exec;

/// The LLVM major version of a `rustc -vV` output (`LLVM version: 22.1.4` → 22).
pub fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

fn is_root() -> bool {
    exec::output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// Debian packages needed, given the LLVM major: (package, file whose presence means installed).
fn packages(major: u32) -> Vec<(String, String)> {
    vec![
        (
            format!("llvm-{major}-dev"),
            format!("/usr/lib/llvm-{major}/bin/llvm-config"),
        ),
        ("libbpf-tools".into(), "/usr/sbin/tcpstates".into()),
        ("bpftool".into(), "/usr/sbin/bpftool".into()),
        ("iptables".into(), "/usr/sbin/iptables".into()),
        ("iproute2".into(), "/usr/sbin/ip".into()),
        ("netcat-openbsd".into(), "/usr/bin/nc.openbsd".into()),
        ("socat".into(), "/usr/bin/socat".into()),
        ("python3".into(), "/usr/bin/python3".into()),
        // cargo xtask vm-test: qemu/KVM, the guest's initramfs (busybox), its kernel modules
        // (depmod on the unpacked package, modprobe inside the guest, xz for 6.12's modules).
        (
            "qemu-system-x86".into(),
            "/usr/bin/qemu-system-x86_64".into(),
        ),
        ("busybox-static".into(), "/bin/busybox".into()),
        ("kmod".into(), "/usr/sbin/depmod".into()),
        ("xz-utils".into(), "/usr/bin/xz".into()),
        // deploy/: `systemd-analyze verify` of the unit, a venv for the manifest's validator.
        ("systemd".into(), "/usr/bin/systemd-analyze".into()),
        (
            "python3-venv".into(),
            "/usr/share/doc/python3-venv/copyright".into(),
        ),
        // tests/live_metrics.rs: a real Prometheus scraping `--metrics`.
        (PROMETHEUS.into(), "/usr/bin/prometheus".into()),
    ]
}

/// The Debian package of the Prometheus server the metrics test scrapes with.
const PROMETHEUS: &str = "prometheus";

/// Debian's package enables and starts a Prometheus service where systemd runs; the tests
/// start their own, so one that installing it started is stopped and disabled again.
fn quiet_prometheus_service() {
    // sd_booted(): systemd is the running init.
    if Path::new("/run/systemd/system").is_dir() {
        step("systemctl disable --now prometheus (the tests run their own)");
        let _ = exec::inherit(Command::new("systemctl").args(["disable", "--now", PROMETHEUS]));
    }
}

fn apt_install(missing: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "packages {} are missing and installing them needs root (run as root or install them)",
            missing.join(" ")
        );
    }
    step("apt-get update");
    exec::logged(
        "apt-get update",
        "apt-update",
        Command::new("apt-get")
            .args(["update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    step(&format!("apt-get install {}", missing.join(" ")));
    exec::logged(
        "apt-get install",
        "apt-install",
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Version of the Kubernetes manifest validator (it bundles the API schemas, so it checks
/// `deploy/daemonset.yaml` offline).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Where `tcptrace/tests/deploy.rs` finds it.
fn kubernetes_validate_bin() -> std::path::PathBuf {
    exec::repo_root().join("target/tools/kubernetes-validate/bin/kubernetes-validate")
}

fn kubernetes_validate() -> anyhow::Result<()> {
    let bin = kubernetes_validate_bin();
    if bin.exists() {
        return Ok(());
    }
    let venv = bin.parent().and_then(Path::parent).context("venv path")?;
    step(&format!(
        "python3 -m venv {} && pip install {KUBERNETES_VALIDATE}",
        venv.display()
    ));
    exec::logged(
        "python3 -m venv",
        "venv",
        Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(venv),
    )?;
    exec::logged(
        "pip install kubernetes-validate",
        "kubernetes-validate",
        Command::new(venv.join("bin/pip")).args(["install", "--quiet", KUBERNETES_VALIDATE]),
    )
}

fn bpf_linker_ok() -> bool {
    exec::output("bpf-linker", &["--version"]).is_some()
}

fn mount_tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    step("mount tracefs at /sys/kernel/tracing");
    if !is_root() {
        bail!("tracefs is not mounted and mounting it needs root");
    }
    let ok = exec::inherit(Command::new("mount").args([
        "-t",
        "tracefs",
        "tracefs",
        "/sys/kernel/tracing",
    ]))?;
    if !ok {
        bail!("mount -t tracefs tracefs /sys/kernel/tracing failed");
    }
    Ok(())
}

pub fn run() -> anyhow::Result<std::process::ExitCode> {
    setup()?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Everything `run` and `test` need before building.
pub fn setup() -> anyhow::Result<()> {
    let installed = exec::output("rustup", &["+nightly", "component", "list", "--installed"])
        .ok_or_else(|| {
            anyhow!(
                "rustup with a nightly toolchain is required (rustup toolchain install nightly)"
            )
        })?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step("rustup component add rust-src --toolchain nightly");
        exec::logged(
            "rust-src",
            "rust-src",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }
    let vv = exec::output("rustc", &["+nightly", "-vV"])
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` failed"))?;
    let major = llvm_major(&vv).context("no `LLVM version:` in `rustc +nightly -vV`")?;

    let missing: Vec<String> = packages(major)
        .into_iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| pkg)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
        if missing.iter().any(|p| p == PROMETHEUS) {
            quiet_prometheus_service();
        }
    }

    if !bpf_linker_ok() {
        let prefix = format!("/usr/lib/llvm-{major}");
        step(&format!(
            "cargo install bpf-linker (LLVM {major}; takes a few minutes)"
        ));
        exec::logged(
            "cargo install bpf-linker",
            "bpf-linker",
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{major}"),
                ])
                .env(
                    "PATH",
                    format!("{prefix}/bin:{}", exec::path_with_cargo_bin()),
                )
                .env("LLVM_PREFIX", &prefix),
        )?;
        if !bpf_linker_ok() {
            bail!("bpf-linker was installed but `bpf-linker --version` still fails");
        }
    }
    if exec::output("cargo", &["fuzz", "--version"]).is_none() {
        step("cargo install cargo-fuzz (the replay fuzz target)");
        exec::logged(
            "cargo install cargo-fuzz",
            "cargo-fuzz",
            Command::new("cargo")
                .args(["install", "cargo-fuzz", "--locked"])
                .env("PATH", exec::path_with_cargo_bin()),
        )?;
    }
    kubernetes_validate()?;
    mount_tracefs()?;
    step(&format!("set-up complete (LLVM {major})"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llvm_major() {
        let vv = "rustc 1.97.0-nightly (abc 2026-10-01)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("LLVM version: 19\n"), Some(19));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
        assert_eq!(llvm_major("LLVM version: x.1\n"), None);
    }

    #[test]
    fn package_list_follows_llvm_major() {
        let p = packages(23);
        assert_eq!(p[0].0, "llvm-23-dev");
        assert_eq!(p[0].1, "/usr/lib/llvm-23/bin/llvm-config");
    }
}
