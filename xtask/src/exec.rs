//! Runs subprocesses: quietly with a progress ticker and a log file for long installs, or with
//! inherited output for builds and tests.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Repository root (the parent of this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// PATH with ~/.cargo/bin first, so a freshly installed bpf-linker is found.
pub fn path_with_cargo_bin() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = std::env::var("PATH").unwrap_or_default();
    let bin = format!("{home}/.cargo/bin");
    if path.split(':').any(|p| p == bin) {
        path
    } else {
        format!("{bin}:{path}")
    }
}

/// Runs `cmd` with output captured to `target/xtask-logs/<log>.log`, printing a ticker with the
/// elapsed time and the latest output line; on failure shows the log's tail.
pub fn logged(what: &str, log: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let dir = repo_root().join("target/xtask-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join(format!("{log}.log"));
    let mut file = File::create(&log_path)?;
    let mut child = cmd
        .env("PATH", path_with_cargo_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    let (rx, readers) = lines(&mut child);
    let start = Instant::now();
    let mut last = String::new();
    let mut tail: Vec<String> = Vec::new();
    let mut tick = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                tail.push(line.clone());
                if tail.len() > 20 {
                    tail.remove(0);
                }
                last = line;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if tick.elapsed() >= Duration::from_secs(5) {
            tick = Instant::now();
            let short: String = last.chars().take(90).collect();
            eprintln!("    ... {what}: {}s  {short}", start.elapsed().as_secs());
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait()?;
    if !status.success() {
        eprintln!("---- last lines of {} ----", log_path.display());
        for l in &tail {
            eprintln!("    {l}");
        }
        bail!("{what} failed ({status}); full log: {}", log_path.display());
    }
    eprintln!("    {what}: done in {}s", start.elapsed().as_secs());
    Ok(())
}

/// The lines of a child's piped stdout and stderr, merged as they come (invalid UTF-8
/// replaced, line ends trimmed); the reader threads end with the streams.
pub fn lines(child: &mut Child) -> (mpsc::Receiver<String>, Vec<thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    (rx, readers)
}

/// Runs `cmd` with inherited output; returns whether it succeeded.
pub fn inherit(cmd: &mut Command) -> anyhow::Result<bool> {
    let status = cmd
        .env("PATH", path_with_cargo_bin())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(status.success())
}

/// Captured stdout of a command, `None` if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", path_with_cargo_bin())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
