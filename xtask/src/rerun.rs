//! The test stage's second look: `cargo test` runs the whole suite; a test that failed is run
//! once more on its own, and one that passes then is named as flaky instead of failing the
//! stage. Only a failure that repeats (or a suite that failed without naming a test) fails.
//! The sandbox kernel this runs on hides some events from BPF (README, *Tests*), which is what
//! such one-off failures have been.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::exec;

/// A failed test: the cargo arguments that select its binary (as cargo prints them after
/// "to rerun pass") and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    pub target: Vec<String>,
    pub name: String,
}

/// What one output of `cargo test --no-fail-fast` (stdout and stderr merged, in order) says
/// failed. `None` when a binary failed without naming a failed test (a crash, a timeout).
pub fn failures(output: &str) -> Option<Vec<Failed>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for line in output.lines() {
        if line.trim_start().starts_with("Running ") {
            names.clear();
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            names.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("error: test failed, to rerun pass `")
            && let Some(args) = rest.strip_suffix('`')
        {
            if names.is_empty() {
                return None;
            }
            let target: Vec<String> = args.split_whitespace().map(String::from).collect();
            out.extend(names.drain(..).map(|name| Failed {
                target: target.clone(),
                name,
            }));
        }
    }
    Some(out)
}

/// Runs `cmd` with its stdout and stderr in one pipe (so their lines keep their order),
/// echoing them; returns whether it succeeded, and the output.
fn run_merged(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let (reader, writer) = std::io::pipe()?;
    let mut child = cmd
        .env("PATH", exec::path_with_cargo_bin())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // The command keeps its copies of the pipe's write end: let them go, or the read below
    // never ends.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut output = String::new();
    for line in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line);
        eprintln!("{line}");
        output.push_str(&line);
        output.push('\n');
    }
    Ok((child.wait()?.success(), output))
}

/// Runs `cmd` (a `cargo test --no-fail-fast`), echoing its output; on failure reruns each
/// failed test alone once. True when every test passed, at first or on its rerun.
pub fn test_stage(cmd: &mut Command) -> anyhow::Result<bool> {
    let (ok, output) = run_merged(cmd)?;
    if ok {
        return Ok(true);
    }
    let Some(failed) = failures(&output) else {
        eprintln!("==> a test binary failed without naming a failed test: no rerun");
        return Ok(false);
    };
    if failed.is_empty() {
        return Ok(false);
    }
    let mut flaky = Vec::new();
    let mut repeated = Vec::new();
    for f in failed {
        eprintln!("==> rerunning {} alone ({})", f.name, f.target.join(" "));
        let mut again = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        again
            .current_dir(exec::repo_root())
            .arg("test")
            .args(&f.target)
            .args(["--", "--exact", &f.name]);
        let (ok, out) = run_merged(&mut again)?;
        // It must have run that one test: a wrong target would pass by running nothing.
        if ok && out.contains("test result: ok. 1 passed;") {
            flaky.push(f);
        } else {
            repeated.push(f);
        }
    }
    for f in &flaky {
        eprintln!(
            "==> FLAKY: {} ({}) failed, then passed alone",
            f.name,
            f.target.join(" ")
        );
    }
    for f in &repeated {
        eprintln!("==> FAILED twice: {} ({})", f.name, f.target.join(" "));
    }
    Ok(repeated.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_failed_tests_with_their_binaries() {
        let out = "     Running tests/live_lifecycle.rs (target/debug/deps/live_lifecycle-3a98)\n\
                   test a ... ok\n\
                   test opened_before ... FAILED\n\
                   failures:\n    opened_before\n\
                   test result: FAILED. 9 passed; 1 failed\n\
                   error: test failed, to rerun pass `-p tcptrace --test live_lifecycle`\n\
                   \x20    Running tests/live_loss.rs (target/debug/deps/live_loss-e3d9)\n\
                   test b ... ok\n\
                   \x20    Running unittests src/lib.rs (target/debug/deps/tcptrace_core-3a86)\n\
                   test x::y ... FAILED\n\
                   test x::z ... FAILED\n\
                   error: test failed, to rerun pass `-p tcptrace-core --lib`\n\
                   error: 2 targets failed:\n    `-p tcptrace --test live_lifecycle`\n";
        let f = failures(out).unwrap();
        let t = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            f,
            [
                Failed {
                    target: t("-p tcptrace --test live_lifecycle"),
                    name: "opened_before".into()
                },
                Failed {
                    target: t("-p tcptrace-core --lib"),
                    name: "x::y".into()
                },
                Failed {
                    target: t("-p tcptrace-core --lib"),
                    name: "x::z".into()
                },
            ]
        );
    }

    #[test]
    fn a_binary_that_failed_without_a_failed_test_is_not_rerun() {
        let out = "     Running tests/live_loss.rs (x)\n\
                   test b ... ok\n\
                   error: test failed, to rerun pass `-p tcptrace --test live_loss`\n";
        assert_eq!(failures(out), None);
    }
}
