//! `cargo xtask run` and `cargo xtask test`: set up, then build and run or lint, test, fuzz
//! and run the kernel matrix.
use std::process::{Command, ExitCode};

use anyhow::bail;

use crate::{exec, setup};

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(exec::repo_root());
    c
}

/// Builds the release binary and runs it with `args`, passing its exit status through.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    setup::setup()?;
    eprintln!("==> cargo build --release -p tcptrace");
    if !exec::inherit(cargo().args(["build", "--release", "-p", "tcptrace"]))? {
        bail!("building tcptrace failed");
    }
    let bin = exec::repo_root().join("target/release/tcptrace");
    let status = Command::new(&bin).args(args).status()?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// The replay fuzz target for `secs` seconds, from the committed corpus (new inputs go to a
/// scratch corpus under `fuzz/target`, so the committed one stays as it is).
fn fuzz_replay(secs: u32) -> Command {
    let root = exec::repo_root();
    let scratch = root.join("fuzz/target/corpus-replay");
    let _ = std::fs::create_dir_all(&scratch);
    let mut c = Command::new("cargo");
    c.current_dir(root.join("fuzz"))
        .env("PATH", exec::path_with_cargo_bin())
        .args(["+nightly", "fuzz", "run", "replay"])
        .arg(&scratch)
        .arg(root.join("fuzz/corpus/replay"))
        .args([
            "--",
            &format!("-max_total_time={secs}"),
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
        ]);
    c
}

/// The stage whose failed tests get a rerun ([`crate::rerun`]).
const TEST_STAGE: &str = "cargo test --workspace";

/// fmt, clippy and the whole test suite; every stage runs, the summary says which failed.
pub fn test(skip_lint: bool, extra: &[String]) -> anyhow::Result<ExitCode> {
    setup::setup()?;
    let mut stages: Vec<(&str, Command)> = Vec::new();
    if !skip_lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        stages.push(("cargo fmt --check", fmt));
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        stages.push(("cargo clippy -D warnings", clippy));
    }
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"]);
    if !extra.is_empty() {
        test.arg("--").args(extra);
    }
    stages.push((TEST_STAGE, test));
    if extra.is_empty() {
        stages.push(("fuzz replay (60 s)", fuzz_replay(60)));
        // The privileged suite again on each pinned Debian kernel, under qemu.
        let mut vm = Command::new(std::env::current_exe()?);
        vm.args(["vm-test", "--kernel", "all"]);
        stages.push(("vm-test --kernel all (Debian 6.1, 6.12 under qemu)", vm));
    }

    let mut failed = Vec::new();
    for (name, mut cmd) in stages {
        eprintln!("==> {name}");
        let start = std::time::Instant::now();
        let ok = if name == TEST_STAGE {
            crate::rerun::test_stage(&mut cmd)?
        } else {
            exec::inherit(&mut cmd)?
        };
        if !ok {
            failed.push(name);
        }
        eprintln!("==> {name}: {:.0} s", start.elapsed().as_secs_f64());
    }
    if failed.is_empty() {
        eprintln!("==> all stages passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("==> FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
