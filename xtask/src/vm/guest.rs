//! `xtask vm-guest`: the guest's init after the initramfs switched to the host's root (read-only
//! under a tmpfs overlay). It mounts what a Debian host has (proc, sysfs, devtmpfs, tracefs,
//! bpffs, a pure cgroup2 hierarchy, tmpfs on /run; /tmp is the overlay's, so a checkout there
//! stays visible), links the guest kernel's modules and
//! config where modprobe and tcptrace look for them, records how tcptrace attaches in each
//! `--tracepoints` mode, runs the planned test binaries, writes the summary to the results
//! share, and powers the guest off. As PID 1 it reaps every orphan while the suite runs.
use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    initramfs::RESULTS_DIR,
    plan::{self, BinaryResult, Plan, Probe, Summary},
};

/// Console output the host shows (everything else goes to the log only).
fn say(msg: &str) {
    println!("vm-guest: {msg}");
    let _ = std::io::stdout().flush();
}

/// Runs the guest; never returns (the guest is powered off).
pub fn run() -> ! {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid == 1 {
        // SAFETY: no other thread exists yet (this is the first thing init does), so the child
        // may go on running Rust code.
        match unsafe { libc::fork() } {
            0 => exit_with(suite()),
            child if child > 0 => reap_until(child),
            _ => say("fork failed; running the suite as PID 1"),
        }
    }
    let ok = suite();
    if pid != 1 {
        exit_with(ok);
    }
    power_off();
}

fn exit_with(r: anyhow::Result<()>) -> ! {
    if let Err(e) = &r {
        say(&format!("FAILED: {e:#}"));
    }
    std::process::exit(i32::from(r.is_err()));
}

/// PID 1: reaps every process that ends (orphans are re-parented to init) until `child` has.
fn reap_until(child: libc::pid_t) -> ! {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == child
            || (got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
        {
            break;
        }
    }
    power_off();
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; power-off is what the guest is for now.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    // reboot() only returns on failure; PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// mount(2): `fstype` None for a bind mount.
fn sys_mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> anyhow::Result<()> {
    let c = |s: &str| CString::new(s).context("NUL in a mount argument");
    let (src, t) = (c(source)?, c(target)?);
    let fst = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let ptr = |o: &Option<CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or NULL for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            ptr(&fst),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mount {source} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn mount(fstype: &str, target: &str, data: Option<&str>) -> anyhow::Result<()> {
    fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
    sys_mount(fstype, target, Some(fstype), 0, data)
}

/// The mounts a Debian host has, pure cgroup v2 as on current production hosts.
fn mounts() -> anyhow::Result<()> {
    mount("proc", "/proc", None)?;
    mount("sysfs", "/sys", None)?;
    mount("devtmpfs", "/dev", None)?;
    mount("devpts", "/dev/pts", Some("ptmxmode=0666"))?;
    mount("tmpfs", "/dev/shm", None)?;
    mount("tmpfs", "/run", Some("mode=0755"))?;
    // No tmpfs of its own on /tmp: a checkout there (CI may clone into /tmp) must stay
    // visible; the root overlay already keeps the guest's writes in its memory.
    mount("tracefs", "/sys/kernel/tracing", None)?;
    mount("debugfs", "/sys/kernel/debug", None)?;
    mount("bpf", "/sys/fs/bpf", None)?;
    mount("cgroup2", "/sys/fs/cgroup", None)?;
    Ok(())
}

fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// modprobe finds the guest kernel's modules, tcptrace its config (CONFIG_HZ), where they
/// are on an installed Debian system.
fn kernel_files(plan: &Plan, release: &str) -> anyhow::Result<()> {
    fs::create_dir_all("/lib/modules")?;
    let link = format!("/lib/modules/{release}");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&plan.modules_dir, &link).context("linking the modules")?;
    fs::create_dir_all("/boot")?;
    let cfg = format!("/boot/config-{release}");
    let _ = fs::remove_file(&cfg);
    std::os::unix::fs::symlink(&plan.config, &cfg).context("linking the config")?;
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("ip link set lo up failed");
    }
    Ok(())
}

fn env() {
    for (k, v) in [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LANG", "C.UTF-8"),
        // A test that cannot run is a failure here, as in CI.
        ("CI", "1"),
        ("RUST_BACKTRACE", "1"),
    ] {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var(k, v) };
    }
}

/// Binds each snapshot copy over the path the tests know (compiled in, e.g. the
/// `CARGO_BIN_EXE_tcptrace` of the integration tests).
fn bind_snapshots(plan: &Plan) -> anyhow::Result<()> {
    for (path, copy) in &plan.snapshots {
        sys_mount(copy, path, None, libc::MS_BIND, None)?;
    }
    Ok(())
}

/// The kernel facts tcptrace reads, kept with the results for whoever compares kernels:
/// the hooks' tracepoint formats and the TCP sysctls that exist here, with their values.
fn save_facts() -> anyhow::Result<()> {
    let dir = Path::new(RESULTS_DIR).join("facts");
    fs::create_dir_all(&dir)?;
    for (cat, tp) in [
        ("sock", "inet_sock_set_state"),
        ("sock", "inet_sk_error_report"),
        ("tcp", "tcp_retransmit_skb"),
        ("tcp", "tcp_retransmit_synack"),
        ("tcp", "tcp_send_reset"),
        ("tcp", "tcp_receive_reset"),
    ] {
        let src = format!("/sys/kernel/tracing/events/{cat}/{tp}/format");
        let text = fs::read_to_string(&src).unwrap_or_else(|e| format!("{src}: {e}\n"));
        fs::write(dir.join(format!("{tp}.format")), text)?;
    }
    let mut sysctls = String::new();
    let mut names: Vec<_> = fs::read_dir("/proc/sys/net/ipv4")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tcp_") || n == "ip_local_port_range")
        .collect();
    names.sort();
    for n in names {
        let v = fs::read_to_string(format!("/proc/sys/net/ipv4/{n}")).unwrap_or_default();
        sysctls.push_str(&format!(
            "net.ipv4.{n} = {}\n",
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    fs::write(dir.join("sysctls.txt"), sysctls)?;
    Ok(())
}

/// The article's SYN_SENT experiment recorded on this kernel (`tcptrace lab syn-sent`, its
/// events and sysctls as JSON lines): how this kernel's connect() times out, and what
/// tcptrace says about it, for `tcptrace replay` and the core's tests.
fn record_syn_sent(tcptrace: &str) -> anyhow::Result<()> {
    let out = Command::new(tcptrace)
        .args(["lab", "syn-sent", "--events", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .context("running tcptrace lab syn-sent")?;
    let dir = Path::new(RESULTS_DIR).join("facts");
    fs::write(dir.join("lab_syn-sent.jsonl"), &out.stdout)?;
    if !out.status.success() {
        bail!(
            "tcptrace lab syn-sent: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// How tcptrace attaches with `--tracepoints mode`: the `hook/variant` words of its
/// `attached` line.
fn probe(tcptrace: &str, mode: &str) -> Probe {
    let out = Command::new(tcptrace)
        .args(["--events", "--duration", "0.5", "--tracepoints", mode])
        .stdout(Stdio::null())
        .output();
    let attached = match out {
        Err(e) => Err(format!("cannot run {tcptrace}: {e}")),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            match err
                .lines()
                .find_map(|l| l.strip_prefix("tcptrace: attached "))
            {
                Some(rest) if o.status.success() => Ok(rest
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()),
                _ => Err(err.trim().replace('\n', " | ")),
            }
        }
    };
    Probe {
        mode: mode.to_string(),
        attached,
    }
}

/// Runs one test binary with its output in the results share; kills its process group when
/// it runs out of time.
fn run_binary(plan: &Plan, b: &plan::Binary) -> BinaryResult {
    let mut r = BinaryResult {
        name: b.name.clone(),
        skipped: b.skip.clone(),
        ..Default::default()
    };
    let log = Path::new(RESULTS_DIR).join(plan::log_name(&b.name));
    let start = Instant::now();
    let spawned = fs::File::create(&log).and_then(|f| {
        let mut cmd = Command::new(&b.path);
        cmd.current_dir(&b.cwd).args(&plan.test_args);
        for s in &b.skip {
            cmd.args(["--skip", s]);
        }
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            r.status = format!("could not start: {e}");
            return r;
        }
    };
    let deadline = start + Duration::from_secs(plan.binary_timeout_secs);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() > deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => break None,
        }
    };
    r.secs = start.elapsed().as_secs_f64();
    match status {
        Some(s) => {
            r.ok = s.success();
            r.status = s.to_string();
        }
        None => {
            // SAFETY: kill takes no pointers; the group is the test binary's own.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            r.status = format!("killed after {} s", plan.binary_timeout_secs);
        }
    }
    let out = fs::read_to_string(&log).unwrap_or_default();
    plan::parse_libtest(&out, &mut r);
    r
}

/// Runs each failed test of a binary that finished once more, alone: one that passes then is
/// flaky (named in the report), not failed. A failure that repeats stays one.
fn rerun_failed(plan: &Plan, b: &plan::Binary, r: &mut BinaryResult) {
    if r.failed.is_empty() || r.status.starts_with("killed") {
        return;
    }
    for name in std::mem::take(&mut r.failed) {
        let again = plan::Binary {
            name: format!("{}-rerun", b.name),
            ..b.clone()
        };
        let filtered = Plan {
            test_args: vec!["--exact".into(), name.clone()],
            ..plan.clone()
        };
        let second = run_binary(&filtered, &again);
        if second.ok && second.passed == [name.clone()] {
            say(&format!("{}: {name} failed, then passed alone", b.name));
            r.passed.push(name.clone());
            r.flaky.push(name);
        } else {
            r.failed.push(name);
        }
    }
    if r.failed.is_empty() {
        r.ok = true;
    }
}

fn suite() -> anyhow::Result<()> {
    let start = Instant::now();
    let mut errors = Vec::new();
    if let Err(e) = mounts() {
        errors.push(format!("{e:#}"));
    }
    env();
    let plan_path = Path::new(RESULTS_DIR).join(plan::PLAN_FILE);
    let plan: Plan = serde_json::from_str(
        &fs::read_to_string(&plan_path)
            .with_context(|| format!("reading {}", plan_path.display()))?,
    )
    .context("parsing the plan")?;
    let release = release();
    say(&format!(
        "kernel {release} up; running the suite for {}",
        plan.kernel
    ));
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("TCPTRACE_TEST_PATIENCE", plan.patience.to_string()) };
    if let Err(e) = kernel_files(&plan, &release) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = bind_snapshots(&plan) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = save_facts() {
        errors.push(format!("saving the kernel facts: {e:#}"));
    }
    if let Err(e) = record_syn_sent(&plan.tcptrace) {
        errors.push(format!("{e:#}"));
    }
    let probes: Vec<Probe> = ["auto", "btf", "classic"]
        .iter()
        .map(|m| probe(&plan.tcptrace, m))
        .collect();
    for p in &probes {
        match &p.attached {
            Ok(a) => say(&format!(
                "--tracepoints {}: attached {}",
                p.mode,
                a.join(" ")
            )),
            Err(e) => say(&format!("--tracepoints {}: FAILED: {e}", p.mode)),
        }
    }
    let mut binaries = Vec::new();
    for b in &plan.binaries {
        let mut r = run_binary(&plan, b);
        rerun_failed(&plan, b, &mut r);
        say(&format!(
            "{}: {} passed, {} failed{} ({:.1} s{})",
            r.name,
            r.passed.len(),
            r.failed.len(),
            if r.failed.is_empty() {
                String::new()
            } else {
                format!(": {}", r.failed.join(", "))
            },
            r.secs,
            if r.ok {
                String::new()
            } else {
                format!(", {}", r.status)
            }
        ));
        binaries.push(r);
    }
    let summary = Summary {
        kernel: plan.kernel.clone(),
        release,
        probes,
        binaries,
        errors,
        secs: start.elapsed().as_secs_f64(),
    };
    let path = Path::new(RESULTS_DIR).join(plan::SUMMARY_FILE);
    fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    say(&format!(
        "done: {} passed, {} failed in {:.0} s",
        summary.passed(),
        summary.failed(),
        summary.secs
    ));
    Ok(())
}
