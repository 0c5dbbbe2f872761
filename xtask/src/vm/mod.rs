//! `cargo xtask vm-test`: the privileged suite on each pinned Debian kernel under qemu. The
//! host builds the test binaries, fetches and unpacks each kernel, writes a plan and an
//! initramfs, and boots; the guest (this same binary as `xtask vm-guest`, on the host's root
//! filesystem shared read-only) runs the suite and writes a summary back. One line per kernel.
mod cpio;
pub mod guest;
mod initramfs;
mod kernels;
mod plan;
pub mod qemu;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec;
use plan::{Binary, Plan, Summary};

/// Longest one test binary may run in a KVM guest.
const BINARY_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// Longest a whole KVM guest may run.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Test binaries of the workspace, built by `cargo test --no-run`: `(package/target, path,
/// package directory)`.
fn build_tests() -> anyhow::Result<Vec<(String, String, String)>> {
    eprintln!("==> cargo test --workspace --no-run (the test binaries the guests run)");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(exec::repo_root())
        .env("PATH", exec::path_with_cargo_bin())
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = v["manifest_path"].as_str().unwrap_or_default();
        let dir = Path::new(manifest)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let package = Path::new(&dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = v["target"]["kind"][0].as_str().unwrap_or_default();
        let target = match kind {
            "lib" | "bin" => kind.to_string(),
            _ => v["target"]["name"].as_str().unwrap_or_default().to_string(),
        };
        found.push((format!("{package}/{target}"), exe.to_string(), dir));
    }
    Ok(found)
}

/// The binaries a guest runs, with their skipped tests; checks that every binary built is
/// either run or listed in [`plan::NOT_IN_GUEST`], so a new test file cannot be forgotten.
fn guest_binaries(built: Vec<(String, String, String)>) -> anyhow::Result<Vec<Binary>> {
    let mut run = Vec::new();
    for (name, path, cwd) in built {
        let package = name.split('/').next().unwrap_or_default();
        let listed = plan::NOT_IN_GUEST.iter().any(|(n, _)| *n == name);
        if listed {
            continue;
        }
        if !plan::GUEST_PACKAGES.contains(&package) {
            bail!(
                "test target {name} is neither run in the guests nor listed in plan::NOT_IN_GUEST"
            );
        }
        let skip = plan::SKIPPED_IN_GUEST
            .iter()
            .filter(|(b, _, _)| *b == name)
            .map(|(_, t, _)| t.to_string())
            .collect();
        run.push(Binary {
            name,
            path,
            cwd,
            skip,
        });
    }
    // The privileged suites last, the quick unit tests first.
    run.sort_by_key(|b| {
        (
            b.name.contains("/live_") || b.name.contains("/oracle"),
            b.name.clone(),
        )
    });
    Ok(run)
}

/// `--kernel` and the test filter.
pub struct Options {
    pub kernel: String,
    /// `None`: KVM when the CPU has hardware virtualization, else TCG.
    pub accel: Option<qemu::Accel>,
    pub test_args: Vec<String>,
}

/// One kernel's outcome.
struct Outcome {
    kernel: kernels::Kernel,
    result: anyhow::Result<Summary>,
    secs: f64,
}

fn tools() -> anyhow::Result<()> {
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        (initramfs::BUSYBOX, "busybox-static"),
        ("depmod", "kmod"),
        ("dpkg-deb", "dpkg"),
        ("xz", "xz-utils"),
    ] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            exec::output("sh", &["-c", &format!("command -v {tool}")]).is_some()
        };
        if !found {
            bail!("{tool} is missing (package {pkg}); run cargo xtask setup");
        }
    }
    Ok(())
}

/// Runs the suite on the selected kernels; prints one line per kernel.
pub fn run(opts: &Options) -> anyhow::Result<ExitCode> {
    let selected = kernels::select(&opts.kernel)?;
    tools()?;
    let (accel, why) = qemu::choose(opts.accel);
    if let Some(why) = why {
        eprintln!(
            "xtask: WARNING: no KVM: {why}; the guests run under TCG emulation, several times slower, and the tests wait {}× longer",
            accel.patience()
        );
    }
    let binaries = guest_binaries(build_tests()?)?;
    let run_dir = kernels::cache_dir().join("run");
    std::fs::create_dir_all(&run_dir)?;
    // The guest's init: a copy of this binary that no later build replaces mid-run.
    let guest_exe = run_dir.join("xtask-guest");
    std::fs::copy(std::env::current_exe()?, &guest_exe).context("copying xtask for the guest")?;
    let tcptrace = exec::repo_root().join("target/debug/tcptrace");
    let snapshots = snapshot(&run_dir.join("snapshot"), &binaries, &tcptrace)?;
    eprintln!("==> kernels (pinned in xtask/src/vm/kernels.rs):");
    for k in &selected {
        eprintln!(
            "    {:<5} {} {} [{}]",
            k.name, k.package, k.version, k.suite
        );
    }
    let mut outcomes = Vec::new();
    for k in &selected {
        let start = Instant::now();
        let result = boot_one(
            k,
            accel,
            Plan {
                kernel: k.name.to_string(),
                modules_dir: String::new(),
                config: String::new(),
                tcptrace: tcptrace.display().to_string(),
                binaries: binaries
                    .iter()
                    .cloned()
                    .map(|mut b| {
                        b.skip.extend(
                            plan::SKIPPED_ON_KERNEL
                                .iter()
                                .filter(|(kernel, bin, _, _)| *kernel == k.name && *bin == b.name)
                                .map(|(_, _, test, _)| test.to_string()),
                        );
                        b
                    })
                    .collect(),
                snapshots: snapshots.clone(),
                test_args: opts.test_args.clone(),
                binary_timeout_secs: (BINARY_TIMEOUT * accel.timeout_factor()).as_secs(),
                patience: accel.patience(),
            },
            &run_dir,
            &guest_exe,
        );
        outcomes.push(Outcome {
            kernel: *k,
            result,
            secs: start.elapsed().as_secs_f64(),
        });
    }
    let mut ok = true;
    eprintln!("==> not run in the guests:");
    for (name, why) in plan::NOT_IN_GUEST {
        eprintln!("    {name}: {why}");
    }
    for (bin, test, why) in plan::SKIPPED_IN_GUEST {
        eprintln!("    {bin} {test}: {why}");
    }
    for (kernel, bin, test, why) in plan::SKIPPED_ON_KERNEL {
        eprintln!("    on {kernel}: {bin} {test}: {why}");
    }
    eprintln!("==> vm-test ({}):", accel.name());
    for o in &outcomes {
        ok &= report(o);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Copies the binaries the guests run (test binaries, tcptrace) into `dir`: `(path, copy)`.
fn snapshot(
    dir: &Path,
    binaries: &[Binary],
    tcptrace: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let paths = binaries
        .iter()
        .map(|b| PathBuf::from(&b.path))
        .chain([tcptrace.to_path_buf()]);
    for (i, path) in paths.enumerate() {
        let name = path.file_name().context("binary name")?.to_string_lossy();
        let copy = dir.join(format!("{i}-{name}"));
        std::fs::copy(&path, &copy).with_context(|| format!("copying {}", path.display()))?;
        out.push((path.display().to_string(), copy.display().to_string()));
    }
    Ok(out)
}

/// Prepares `k`, fills the kernel's part of `plan`, boots, returns the guest's summary.
fn boot_one(
    k: &kernels::Kernel,
    accel: qemu::Accel,
    mut plan: Plan,
    run_dir: &Path,
    guest_exe: &Path,
) -> anyhow::Result<Summary> {
    let prepared = kernels::prepare(k)?;
    let dir = run_dir.join(k.name);
    let results = dir.join("results");
    if results.exists() {
        std::fs::remove_dir_all(&results)?;
    }
    std::fs::create_dir_all(&results)?;
    plan.modules_dir = prepared.modules.display().to_string();
    plan.config = prepared.config.display().to_string();
    std::fs::write(
        results.join(plan::PLAN_FILE),
        serde_json::to_vec_pretty(&plan)?,
    )?;
    let initrd = dir.join("initramfs.cpio");
    initramfs::build(&prepared, guest_exe, "vm-guest", &initrd)?;
    eprintln!(
        "==> booting {} ({}) under {}",
        prepared.release,
        k.name,
        accel.name()
    );
    qemu::boot(&qemu::Boot {
        vmlinuz: &prepared.vmlinuz,
        initrd: &initrd,
        results: &results,
        console_log: &dir.join("console.log"),
        accel,
        timeout: GUEST_TIMEOUT * accel.timeout_factor(),
        label: k.name,
    })?;
    let path = results.join(plan::SUMMARY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the guest wrote no summary ({}); see {}",
            path.display(),
            dir.join("console.log").display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Prints one kernel's line (and its failures); returns whether it passed.
fn report(o: &Outcome) -> bool {
    let k = &o.kernel;
    let head = format!("{:<5} {} {}", k.name, k.package, k.version);
    match &o.result {
        Err(e) => {
            eprintln!("{head}: ERROR: {e:#} ({:.0} s)", o.secs);
            false
        }
        Ok(s) => {
            let hooks = s
                .probes
                .iter()
                .find(|p| p.mode == "auto")
                .and_then(|p| p.attached.as_ref().ok())
                .map(|a| variants(a))
                .unwrap_or_else(|| "attach failed".into());
            let unfinished = match s.unfinished() {
                0 => String::new(),
                n => format!(", {n} test binaries did not finish"),
            };
            eprintln!(
                "{head}: {} passed, {} failed{unfinished}, {} skipped (listed above); kernel {}; hooks {hooks}; {:.0} s",
                s.passed(),
                s.failed(),
                s.skipped(),
                s.release,
                o.secs
            );
            for t in s.flaky() {
                eprintln!("      flaky (failed, then passed alone): {t}");
            }
            for e in &s.errors {
                eprintln!("      guest error: {e}");
            }
            for p in &s.probes {
                if let Err(e) = &p.attached {
                    eprintln!("      --tracepoints {}: {e}", p.mode);
                }
            }
            for b in &s.binaries {
                if !b.ok || !b.failed.is_empty() {
                    eprintln!(
                        "      {}: {} ({}); log: {}",
                        b.name,
                        if b.failed.is_empty() {
                            "did not finish".to_string()
                        } else {
                            b.failed.join(", ")
                        },
                        b.status,
                        results_log(k, &b.name).display()
                    );
                }
            }
            s.ok()
        }
    }
}

fn results_log(k: &kernels::Kernel, binary: &str) -> PathBuf {
    kernels::cache_dir()
        .join("run")
        .join(k.name)
        .join("results")
        .join(plan::log_name(binary))
}

/// `hook/variant` words condensed: `tp_btf+nested (inet_sock_set_state), tp_btf (5 more)`.
fn variants(attached: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for a in attached {
        let v = a.rsplit('/').next().unwrap_or(a).to_string();
        match counts.iter_mut().find(|(n, _)| *n == v) {
            Some(c) => c.1 += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .iter()
        .map(|(v, n)| format!("{n}× {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
