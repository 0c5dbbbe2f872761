//! The scale figures: resident memory per tracked open connection with many held open, and
//! how many recorded events per second `tcptrace replay` pushes through decode, the connection
//! table and diagnosis on one core. Also the machine description heading the report.
use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    Options,
    tracer::{self, Running, Setup, Sink},
};
use crate::{churn, exec};

/// Kernel, CPU, memory, commit and date of this run.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1 << 20) as f64);
    let out = |p: &str, a: &[&str]| exec::output(p, a).unwrap_or_default().trim().to_string();
    format!(
        "Machine: {} CPUs ({cpu}), {mem_gib:.0} GiB, Linux {}; commit {}; {}\n",
        churn::cpus(),
        out("uname", &["-r"]),
        out(
            "git",
            &[
                "-C",
                &exec::repo_root().to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
        out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// Waits until a process's CPU time stops growing (it has caught up with its input).
fn wait_idle(pid: u32) {
    let cpu = || tracer::cpu_secs(pid).unwrap_or(0.0);
    let mut last = cpu();
    for _ in 0..120 {
        thread::sleep(Duration::from_millis(500));
        let now = cpu();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Connection records (`{"type":"conn"` lines) in `path`.
fn count_conn_records(path: &Path) -> anyhow::Result<u64> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut n = 0;
    for line in BufReader::with_capacity(1 << 20, f).lines() {
        if line?.starts_with("{\"type\":\"conn\"") {
            n += 1;
        }
    }
    Ok(n)
}

/// Resident memory per tracked connection with `conns` loopback connections held open.
pub fn memory_per_conn(tcptrace: &Path, dir: &Path, conns: usize) -> anyhow::Result<String> {
    eprintln!("==> memory: holding {conns} connections open under tcptrace");
    let setup = Setup::tcptrace("hold", tcptrace, &["--format", "json"], Sink::File);
    let t = Running::start(&setup, dir)?;
    let out = t.out.clone();
    let before = tracer::rss(t.pid())?;
    let maps_before = tracer::map_memlock(t.pid());
    let held = Holders::open(conns)?;
    wait_idle(t.pid());
    let during = tracer::rss(t.pid())?;
    let maps = tracer::map_memlock(t.pid());
    let cost = t.stop()?;
    held.release();
    // Every connection still open is printed when tracing stops.
    let tracked = count_conn_records(&out)?;
    if tracked == 0 {
        bail!("tcptrace printed no connections for the held ones");
    }
    let per = (during.saturating_sub(before)) as f64 / tracked as f64;
    // Kernel side: what the maps grew by (per-socket storage would show here), and the whole of
    // them spread over the connections as an upper bound.
    let kernel_per = maps.saturating_sub(maps_before) as f64 / tracked as f64;
    let total_per = (during.saturating_sub(before) + maps) as f64 / tracked as f64;
    eprintln!(
        "    {tracked} tracked, RSS {before} → {during} bytes: {per:.0} bytes each; eBPF maps {maps_before} → {maps} bytes"
    );
    Ok(format!(
        "### Memory per tracked open connection\n\n\
         {conns} loopback connections held open (both ends traced: {tracked} connections in the \
         table). tcptrace's resident memory grew from {:.1} MiB to {:.1} MiB: **{per:.0} bytes \
         per tracked connection**, table and allocator overhead included (peak RSS {:.1} MiB, \
         with the final report of every open connection). Kernel side, its eBPF maps (`memlock` \
         in fdinfo: ring buffer, counters, any per-socket storage) went from {:.2} MiB to \
         {:.2} MiB: {kernel_per:.0} bytes per tracked connection; counting all of that memory \
         as theirs, **{total_per:.0} bytes per tracked connection, kernel included**.\n",
        before as f64 / (1 << 20) as f64,
        during as f64 / (1 << 20) as f64,
        cost.peak_rss as f64 / (1 << 20) as f64,
        maps_before as f64 / (1 << 20) as f64,
        maps as f64 / (1 << 20) as f64,
    ))
}

/// `xtask hold` children that together keep the connections open (one process cannot hold
/// them all under a 20,000-descriptor hard limit).
struct Holders(Vec<std::process::Child>);

impl Holders {
    fn open(conns: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating xtask")?;
        let mut children = Holders(Vec::new());
        let mut left = conns;
        while left > 0 {
            let n = left.min(churn::HOLD_PER_PROCESS);
            left -= n;
            let mut child = Command::new(&exe)
                .args(["hold", &n.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting xtask hold")?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                BufReader::new(out).read_line(&mut line)?;
            }
            children.0.push(child);
            if !line.starts_with("ready") {
                children.release();
                bail!("xtask hold {n} did not get its connections open");
            }
        }
        Ok(children)
    }

    /// Closes their stdin: they close their connections and exit.
    fn release(mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

/// `tcptrace replay` of churn recordings, pinned to one CPU: the binary recording (kernel
/// records through the live decoder) and the JSON lines of the same kind of run.
pub fn replay_throughput(tcptrace: &Path, dir: &Path, opts: &Options) -> anyhow::Result<String> {
    let mut md = String::from("### Replay throughput\n\n");
    md.push_str(
        "`tcptrace replay` rebuilding connection records (decode, connection table, diagnosis, \
         JSON records to /dev/null) from a churn recording, pinned to one CPU, best of 3:\n\n\
         | recording | events | size MB | CPU s | M events/s |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, args) in [
        ("events-raw-file", ["--events", "--format", "raw"]),
        ("events-json-file", ["--events", "--format", "json"]),
    ] {
        let recorded = dir.join(format!("{name}.out"));
        // The churn rounds leave both recordings behind; otherwise make fresh ones.
        if opts.skip_churn || !recorded.exists() {
            eprintln!("==> recording a churn stream ({name}) for replay");
            let setup = Setup::tcptrace(name, tcptrace, &args, Sink::File);
            let mut t = Running::start(&setup, dir)?;
            t.mark()?;
            churn::churn(opts.threads, opts.duration)?;
            t.stop()?;
        }
        let bytes = fs::metadata(&recorded)?.len();
        let mut best = f64::MAX;
        let mut events = 0;
        for _ in 0..3 {
            let (cpu, n) = replay_once(tcptrace, &recorded, dir)?;
            best = best.min(cpu);
            events = n;
        }
        let rate = events as f64 / best;
        eprintln!("    {name}: {events} events in {best:.2} s CPU: {rate:.0} events/s");
        md.push_str(&format!(
            "| {} | {events} | {:.0} | {best:.2} | **{:.2}** |\n",
            if name == "events-raw-file" {
                "`--format raw`"
            } else {
                "`--format json`"
            },
            bytes as f64 / 1e6,
            rate / 1e6,
        ));
    }
    Ok(md)
}

/// One pinned replay: (CPU seconds, events it read, from its summary line).
fn replay_once(tcptrace: &Path, recorded: &Path, dir: &Path) -> anyhow::Result<(f64, u64)> {
    let err = dir.join("replay.err");
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(tcptrace)
        .args(["replay", "--format", "json"])
        .arg(recorded)
        .stdin(Stdio::null())
        .stdout(File::create("/dev/null")?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("starting taskset tcptrace replay")?;
    let cpu = cpu_of(child)?;
    let summary = fs::read_to_string(&err)?;
    // With JSON output tcptrace's own messages are JSON `log` lines too.
    let message = |l: &str| -> Option<String> {
        match l.strip_prefix("tcptrace: ") {
            Some(m) => Some(m.to_string()),
            None => serde_json::from_str::<serde_json::Value>(l).ok()?["message"]
                .as_str()
                .map(str::to_string),
        }
    };
    let events = summary
        .lines()
        .find_map(|l| message(l)?.split(' ').next()?.parse().ok())
        .with_context(|| format!("no event count in replay's summary: {summary}"))?;
    Ok((cpu, events))
}

/// User + system CPU seconds of a child, waited for; an error if it failed.
fn cpu_of(child: std::process::Child) -> anyhow::Result<f64> {
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own, not yet reaped child; the pointers are valid for the call.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("replay failed (wait status {status})");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}
