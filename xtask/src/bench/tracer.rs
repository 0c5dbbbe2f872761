//! A tracer under measurement: started as a child process with its output sent to a sink,
//! waited on until it traces, then stopped with SIGINT; reports its CPU time, peak RSS, the
//! runs, run time and kernel-skipped runs of its eBPF programs (from `/proc/PID/fdinfo` with
//! `bpf_stats_enabled`) and the events it says it lost.
use std::{
    collections::HashMap,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where the tracer's standard output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    DevNull,
    File,
}

/// Which tracer, in which mode.
#[derive(Clone, Debug)]
pub struct Setup {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub sink: Sink,
    /// tcptrace prints its summary (with lost events) on stderr; tcpstates prints one line per loss.
    pub kind: Kind,
    /// tcptrace's `--metrics` port, scraped every second while it runs.
    pub scrape: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcptrace,
    Tcpstates,
}

impl Setup {
    /// tcptrace (the binary at `program`) with `args`.
    pub fn tcptrace(name: &'static str, program: &Path, args: &[&str], sink: Sink) -> Self {
        Self {
            name,
            program: program.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            sink,
            kind: Kind::Tcptrace,
            scrape: None,
        }
    }

    /// The same, serving metrics on a loopback `port` that a scraper fetches every second.
    pub fn with_metrics(mut self, port: u16) -> Self {
        self.args
            .extend(["--metrics".to_string(), format!("127.0.0.1:{port}")]);
        self.scrape = Some(port);
        self
    }
}

/// CPU seconds (user + system) of a process from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let mut f = rest.split_whitespace().skip(11);
    let mut field =
        || -> anyhow::Result<u64> { Ok(f.next().context("short /proc/PID/stat")?.parse()?) };
    let ticks = field()? + field()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// The fdinfo texts of a process's eBPF program descriptors.
fn prog_fdinfos(pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter(|t| t.contains("prog_type:"))
        .collect()
}

/// eBPF program counters of one process, summed over its programs (each counted once, however
/// many descriptors of it the process holds).
#[derive(Debug, Clone, Copy, Default)]
pub struct BpfStats {
    /// Runs (`run_cnt`).
    pub runs: u64,
    /// Time in them (`run_time_ns`).
    pub ns: u64,
    /// Runs the kernel skipped because a program was already running on that CPU
    /// (`recursion_misses`).
    pub skipped: u64,
}

/// Names of the loaded eBPF programs by id (`bpftool prog show`; fdinfo has none).
pub fn prog_names() -> anyhow::Result<HashMap<u64, String>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool prog show")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let progs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(progs
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_string())))
        .collect())
}

/// tcptrace's second state-change program runs for every state change, but only handles those
/// its first one could not: its runs are not events and its skipped runs not losses.
fn is_nested_prog(name: Option<&String>) -> bool {
    name.is_some_and(|n| n.ends_with("_nested"))
}

/// The counters of `pid`'s programs; `names` from [`prog_names`].
pub fn bpf_stats(pid: u32, names: &HashMap<u64, String>) -> BpfStats {
    let mut by_prog = HashMap::new();
    for text in prog_fdinfos(pid) {
        let mut id = None;
        let mut one = BpfStats::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k {
                "prog_id" => id = Some(v),
                "run_cnt" => one.runs = v,
                "run_time_ns" => one.ns = v,
                "recursion_misses" => one.skipped = v,
                _ => {}
            }
        }
        if let Some(id) = id
            && is_nested_prog(names.get(&id))
        {
            one.runs = 0;
            one.skipped = 0;
        }
        by_prog.insert(id, one);
    }
    by_prog.values().fold(BpfStats::default(), |a, b| BpfStats {
        runs: a.runs + b.runs,
        ns: a.ns + b.ns,
        skipped: a.skipped + b.skipped,
    })
}

/// A running tracer; dropped without [`Running::stop`] (a failed measurement), it is killed.
pub struct Running {
    child: Option<Child>,
    setup: Setup,
    stderr: PathBuf,
    pub out: PathBuf,
    cpu_at_start: f64,
    bpf_at_start: BpfStats,
    names: HashMap<u64, String>,
    scraper: Option<super::metrics::Scraper>,
}

/// What one measured window cost the tracer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// CPU seconds from the workload's start until the tracer exited (draining included).
    pub cpu_secs: f64,
    /// Kernel events the tracer's programs handled in the window.
    pub events: u64,
    /// Nanoseconds spent in its eBPF programs in the window.
    pub bpf_ns: u64,
    /// Runs of its programs the kernel skipped in the window (`recursion_misses`).
    pub skipped: u64,
    /// Events the tracer says it lost, all causes.
    pub lost: u64,
    /// Skipped runs tcptrace caught with its nested-run program (its summary).
    pub caught: u64,
    /// Peak resident set, bytes.
    pub peak_rss: u64,
    /// Output bytes written.
    pub out_bytes: u64,
    /// The metrics scraper's view (setups with `--metrics`).
    pub scrapes: super::metrics::Scrapes,
}

impl Running {
    /// Starts `setup` and waits until it traces.
    pub fn start(setup: &Setup, dir: &Path) -> anyhow::Result<Self> {
        let out = dir.join(format!("{}.out", setup.name));
        let stderr = dir.join(format!("{}.err", setup.name));
        let stdout = match setup.sink {
            Sink::DevNull => Stdio::from(File::create("/dev/null")?),
            Sink::File => Stdio::from(File::create(&out)?),
        };
        let child = Command::new(&setup.program)
            .args(&setup.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting {}", setup.program.display()))?;
        let mut r = Self {
            child: Some(child),
            setup: setup.clone(),
            stderr,
            out,
            cpu_at_start: 0.0,
            bpf_at_start: BpfStats::default(),
            names: HashMap::new(),
            scraper: None,
        };
        r.wait_ready()?;
        r.scraper = setup.scrape.map(super::metrics::Scraper::start);
        Ok(r)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                bail!(
                    "{} exited before tracing ({status}): {}",
                    self.setup.name,
                    fs::read_to_string(&self.stderr).unwrap_or_default().trim()
                );
            }
            let ready = match self.setup.kind {
                Kind::Tcptrace => {
                    fs::read_to_string(&self.stderr).is_ok_and(|s| s.contains("tracing (Ctrl-C"))
                }
                // tcpstates attaches, then prints its column header; once its programs are
                // loaded they show in fdinfo.
                Kind::Tcpstates => !prog_fdinfos(self.pid()).is_empty(),
            };
            if ready {
                // Let start-up work (BTF parsing, seeding from sock_diag) finish.
                thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not start tracing within 30 s", self.setup.name);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Marks the start of the workload.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        let pid = self.pid();
        self.cpu_at_start = cpu_secs(pid)?;
        self.names = prog_names()?;
        self.bpf_at_start = bpf_stats(pid, &self.names);
        Ok(())
    }

    /// Stops the tracer with SIGINT and returns the window's cost.
    pub fn stop(mut self) -> anyhow::Result<Cost> {
        let pid = self.pid();
        let scrapes = self
            .scraper
            .take()
            .map(super::metrics::Scraper::stop)
            .unwrap_or_default();
        // Reaped below with wait4 (for its rusage); nothing is left for Drop.
        drop(self.child.take());
        let bpf = bpf_stats(pid, &self.names);
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        if r < 0 {
            bail!(
                "waiting for {}: {}",
                self.setup.name,
                std::io::Error::last_os_error()
            );
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let total_cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        let (lost, caught) = match self.setup.kind {
            Kind::Tcptrace => (
                tcptrace_count(&err, " lost,"),
                tcptrace_count(&err, " state changes caught in nested runs"),
            ),
            Kind::Tcpstates => (tcpstates_lost(&err), 0),
        };
        Ok(Cost {
            cpu_secs: total_cpu - self.cpu_at_start,
            events: bpf.runs - self.bpf_at_start.runs,
            bpf_ns: bpf.ns - self.bpf_at_start.ns,
            skipped: bpf.skipped - self.bpf_at_start.skipped,
            lost,
            caught,
            peak_rss: usage.ru_maxrss as u64 * 1024,
            out_bytes: fs::metadata(&self.out).map_or(0, |m| m.len()),
            scrapes,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running until stopped")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number before `marker` in tcptrace's exit summary (`N lost,`), 0 if it has none.
fn tcptrace_count(stderr: &str, marker: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains(" events: "))
        .and_then(|l| {
            let (before, _) = l.split_once(marker)?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The sum of tcpstates' `lost N events on CPU #C` lines.
fn tcpstates_lost(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("lost ")
                .or_else(|| l.strip_prefix("Lost "))?;
            rest.split(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Kernel memory of a process's eBPF maps now (the `memlock` of each map it holds, each map
/// counted once), bytes: the ring buffer, counters and any per-socket storage.
pub fn map_memlock(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut by_map = HashMap::new();
    for text in dir
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
    {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) {
            by_map.insert(id, bytes);
        }
    }
    by_map.values().sum()
}

/// Resident set of a process now, bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// Turns on the kernel's eBPF run-time statistics, returning the previous setting.
pub fn enable_bpf_stats() -> anyhow::Result<String> {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = fs::read_to_string(path).context(path)?;
    fs::write(path, "1").context(path)?;
    Ok(old.trim().to_string())
}

pub fn restore_bpf_stats(old: &str) {
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", old);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts_are_parsed() {
        let s = "tcptrace: 961163 events: 961140 state; 12 lost, 0 malformed; 10 facts; \
                 7 state changes caught in nested runs\n";
        assert_eq!(tcptrace_count(s, " lost,"), 12);
        assert_eq!(tcptrace_count(s, " state changes caught in nested runs"), 7);
        assert_eq!(
            tcptrace_count("tcptrace: 3 events: 0 lost, 0\n", " caught"),
            0
        );
        assert_eq!(
            tcpstates_lost("Lost 3 events on CPU #0!\nlost 4 events on CPU #1\n"),
            7
        );
        assert_eq!(tcpstates_lost("nothing\n"), 0);
    }
}
