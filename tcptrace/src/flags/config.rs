//! Validated configuration built from [`Args`]: every user error is reported here, in one line.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use tcptrace_common::{AF_INET, AF_INET6, Filter, MAX_PORTS};

use tcptrace_core::{diagnose::Severity, lifecycle::TableConfig, tcp::TcpState};

use super::args::{
    Args, ColorArg, Command, DiagnoseArg, FilterArgs, FormatArg, KernelFilterArgs, LogLevelArg,
    MetricsArgs, OutputArgs, ReplayFormatArg, SelectArgs, SysctlFormatArg, TracepointsArg,
    TracerArgs,
};
use crate::{
    pipeline::{ConnFilter, Mode},
    select::Select,
    sink::metrics::{Labels, MetricsConfig},
};

/// Where the running kernel's BTF is.
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Shortest `--summary` interval: the live loop ticks once a second.
const MIN_SUMMARY_NS: u64 = 1_000_000_000;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    /// Text records without the state timeline, one line each.
    Line,
    Json,
    /// Binary recording (`--events` only).
    Raw,
    /// No output sink (`--metrics` only).
    None,
}

/// Tracepoint attachment policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracepointMode {
    Auto,
    Btf,
    /// BTF tracepoints reading sockets with `bpf_probe_read_kernel` only.
    BtfProbe,
    Classic,
}

impl TracepointMode {
    /// BTF tracepoints or nothing.
    pub fn btf_only(self) -> bool {
        matches!(self, Self::Btf | Self::BtfProbe)
    }
}

/// Everything the program needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub format: Format,
    pub duration: Option<Duration>,
    pub filter: Filter,
    pub ring_bytes: u32,
    /// Drain timer of the ring buffer; `None`: woken for every record.
    pub latency: Option<Duration>,
    pub tracepoints: TracepointMode,
    /// `None`: run without BTF.
    pub btf: Option<PathBuf>,
    /// The BTF path was given (`--btf PATH`): it must be usable, no fallback.
    pub btf_explicit: bool,
    pub header: bool,
    /// Text output is coloured (`--color`, `NO_COLOR`).
    pub colour: bool,
    pub mode: Mode,
    pub conn_filter: ConnFilter,
    /// Which records the output prints, by outcome (`--problems`, `--end`, `--diagnosed`).
    pub select: Select,
    /// `--summary`: the interval in nanoseconds, 0 for a summary at exit only.
    pub summary: Option<u64>,
    pub table: TableConfig,
    /// `tcptrace replay FILE`: read this recorded stream instead of tracing.
    pub replay: Option<PathBuf>,
    /// Lowest severity of diagnoses produced (None: off).
    pub diagnose: Option<Severity>,
    /// What to do.
    pub action: Action,
    /// `-p PID` as given (for `sysctl`: whose namespace).
    pub pid: Option<u32>,
    /// `--output FILE`: append there instead of standard output.
    pub output: Option<PathBuf>,
    /// The daemon's own messages from this level up.
    pub log_level: log::LevelFilter,
    /// `--cgroup PATH`: applied in the kernel (its id and depth are in `filter`).
    pub cgroup: Option<crate::cgroups::CgroupFilter>,
    /// `--metrics ADDR` with its labels.
    pub metrics: Option<MetricsConfig>,
}

/// What the invocation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Trace,
    Replay,
    Sysctl,
    Lab(Option<String>),
}

impl Config {
    /// What every command starts from: the defaults of the flags it does not have.
    fn base(action: Action, log_level: LogLevelArg) -> Self {
        Self {
            format: Format::Text,
            duration: None,
            filter: Filter::default(),
            ring_bytes: 16 << 20,
            latency: Some(Duration::from_millis(20)),
            tracepoints: TracepointMode::Auto,
            btf: Some(PathBuf::from(DEFAULT_BTF)),
            btf_explicit: false,
            header: true,
            colour: false,
            mode: Mode::Lifecycle,
            conn_filter: ConnFilter::default(),
            select: Select::default(),
            summary: None,
            table: TableConfig::default(),
            replay: None,
            diagnose: Some(Severity::Warning),
            action,
            pid: None,
            output: None,
            log_level: match log_level {
                LogLevelArg::Error => log::LevelFilter::Error,
                LogLevelArg::Warning => log::LevelFilter::Warn,
                LogLevelArg::Info => log::LevelFilter::Info,
                LogLevelArg::Debug => log::LevelFilter::Debug,
            },
            cgroup: None,
            metrics: None,
        }
    }

    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let cfg = match args.command {
            None => {
                let t = args.trace;
                let mut cfg = Self::base(Action::Trace, args.log_level);
                cfg.output(&t.output, format(t.format))?;
                cfg.filters(&t.filter)?;
                cfg.kernel_filters(&t.kernel_filter)?;
                cfg.tracer(&t.tracer)?;
                cfg.duration = match t.duration {
                    None => None,
                    Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => {
                        Some(Duration::from_secs_f64(s))
                    }
                    Some(s) => bail!("--duration must be a positive number of seconds, got {s}"),
                };
                cfg.select(&t.select)?;
                cfg.metrics = metrics(&t.metrics, t.format, &t.output)?;
                cfg
            }
            Some(Command::Replay(r)) => {
                let mut cfg = Self::base(Action::Replay, args.log_level);
                let f = match r.format {
                    ReplayFormatArg::Text => Format::Text,
                    ReplayFormatArg::Line => Format::Line,
                    ReplayFormatArg::Json => Format::Json,
                };
                cfg.output(&r.output, f)?;
                cfg.filters(&r.filter)?;
                cfg.select(&r.select)?;
                cfg.replay = Some(r.file);
                cfg
            }
            Some(Command::Lab(l)) => {
                if l.format == FormatArg::None {
                    bail!("--format none prints nothing: the lab shows what it traced");
                }
                let mut cfg = Self::base(Action::Lab(l.scenario), args.log_level);
                cfg.output(&l.output, format(l.format))?;
                cfg.tracer(&l.tracer)?;
                cfg.select(&l.select)?;
                cfg
            }
            Some(Command::Sysctl(s)) => {
                let mut cfg = Self::base(Action::Sysctl, args.log_level);
                cfg.format = match s.format {
                    SysctlFormatArg::Text => Format::Text,
                    SysctlFormatArg::Json => Format::Json,
                };
                if let Some(pid) = s.pid {
                    if pid == 0 {
                        bail!("--pid must be a process id, not 0");
                    }
                    cfg.pid = Some(pid);
                }
                if let Some(ns) = &s.netns {
                    cfg.conn_filter.netns = vec![netns_inode(ns, true)?];
                }
                cfg
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// `OutputArgs`, with the command's format.
    fn output(&mut self, o: &OutputArgs, format: Format) -> anyhow::Result<()> {
        self.format = format;
        self.mode = if o.events {
            Mode::Events
        } else {
            Mode::Lifecycle
        };
        self.diagnose = match o.diagnose {
            DiagnoseArg::Info => Some(Severity::Info),
            DiagnoseArg::Warning => Some(Severity::Warning),
            DiagnoseArg::Error => Some(Severity::Error),
            DiagnoseArg::Off => None,
        };
        self.summary = match o.summary.as_deref() {
            None => None,
            Some("") => Some(0),
            Some(text) => match duration_ns(text, "--summary")? {
                ns if ns >= MIN_SUMMARY_NS => Some(ns),
                _ => bail!("--summary: the interval must be at least 1s, got {text:?}"),
            },
        };
        self.output = o.output.clone();
        self.header = !o.no_header;
        self.colour = match o.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                o.output.is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        if format == Format::Line && self.mode == Mode::Events {
            bail!(
                "--format line is the one-line connection record: events are one line each already (use --format text)"
            );
        }
        if format == Format::None && self.summary.is_some() {
            bail!("--format none prints nothing: --summary needs an output (text or json)");
        }
        if format == Format::Raw {
            if self.mode != Mode::Events {
                bail!(
                    "--format raw records the live event stream: use it with --events (replay prints text or json)"
                );
            }
            if self.summary.is_some() {
                bail!("--summary prints tables or JSON lines: not into a --format raw recording");
            }
            if o.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!(
                    "--format raw writes binary data: redirect standard output to a file or pipe"
                );
            }
        }
        Ok(())
    }

    /// `FilterArgs`: userspace filters (and the namespace, which live tracing also applies
    /// in the kernel).
    fn filters(&mut self, f: &FilterArgs) -> anyhow::Result<()> {
        if let Some(pid) = f.pid {
            if pid == 0 {
                bail!("--pid must be a process id, not 0");
            }
            self.pid = Some(pid);
            // Lifecycle mode filters on the owner: most transitions run in softirq, where the
            // current task is unrelated, so the kernel-side task filter would cut lifecycles.
            match self.mode {
                Mode::Events => self.filter.tgid = pid,
                Mode::Lifecycle => self.conn_filter.owner_pid = Some(pid),
            }
        }
        for name in &f.states {
            let state = TcpState::from_name(&name.to_ascii_uppercase())
                .with_context(|| format!("--state: unknown TCP state {name:?}"))?;
            self.conn_filter.states.push(state);
        }
        if let Some(text) = &f.min_duration {
            self.conn_filter.min_duration_ns = Some(duration_ns(text, "--min-duration")?);
        }
        if f.max_conns == 0 {
            bail!("--max-conns must be at least 1");
        }
        self.table.max_conns = f.max_conns;
        // A recording's namespaces need not exist here: replay takes inodes as given.
        let must_exist = self.action != Action::Replay;
        for ns in &f.netns {
            let ino = netns_inode(ns, must_exist)?;
            if !self.conn_filter.netns.contains(&ino) {
                self.conn_filter.netns.push(ino);
            }
        }
        if self.conn_filter.netns.len() > tcptrace_common::MAX_NETNS as usize {
            bail!(
                "--netns takes at most {} namespaces, got {}",
                tcptrace_common::MAX_NETNS,
                self.conn_filter.netns.len()
            );
        }
        self.filter.netns = self.conn_filter.netns.len() as u32;
        Ok(())
    }

    /// `KernelFilterArgs`: family, ports, cgroup.
    fn kernel_filters(&mut self, k: &KernelFilterArgs) -> anyhow::Result<()> {
        if k.ipv4 {
            self.filter.family = AF_INET;
        } else if k.ipv6 {
            self.filter.family = AF_INET6;
        }
        self.filter.n_lports = ports(&k.lports, &mut self.filter.lports, "--lport")?;
        self.filter.n_rports = ports(&k.rports, &mut self.filter.rports, "--rport")?;
        if let Some(spec) = &k.cgroup {
            let f = crate::cgroups::CgroupFilter::parse(spec)?;
            self.filter.cgroup = f.id;
            self.filter.cgroup_level = f.level;
            self.cgroup = Some(f);
        }
        Ok(())
    }

    /// `TracerArgs`: ring buffer, latency, tracepoints, BTF.
    fn tracer(&mut self, t: &TracerArgs) -> anyhow::Result<()> {
        self.ring_bytes = ring_size(&t.ring_buffer)?;
        self.latency = match duration_ns(&t.latency, "--latency")? {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        self.tracepoints = match t.tracepoints {
            TracepointsArg::Auto => TracepointMode::Auto,
            TracepointsArg::Btf => TracepointMode::Btf,
            TracepointsArg::BtfProbe => TracepointMode::BtfProbe,
            TracepointsArg::Classic => TracepointMode::Classic,
        };
        self.btf_explicit = t.btf.is_some();
        self.btf = match &t.btf {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_BTF)),
        };
        Ok(())
    }

    /// `SelectArgs`: which records the output prints.
    fn select(&mut self, s: &SelectArgs) -> anyhow::Result<()> {
        self.select = Select::new(s.problems, &s.ends, s.diagnosed, self.diagnose)?;
        if self.select.is_active() && self.mode == Mode::Events {
            bail!(
                "--problems, --end and --diagnosed select connection records, not events: record with --events and select when replaying (tcptrace replay FILE --problems)"
            );
        }
        Ok(())
    }

    /// What only a combination of flags can get wrong.
    fn check(&self) -> anyhow::Result<()> {
        if self.btf.is_none() && self.tracepoints.btf_only() {
            bail!("--tracepoints btf and btf-probe need kernel BTF, but --btf none was given");
        }
        if self.btf.is_none() && self.cgroup.is_some() {
            bail!("--cgroup needs kernel BTF to read a socket's cgroup, but --btf none was given");
        }
        if self.btf.is_none() && !self.conn_filter.netns.is_empty() && self.action == Action::Trace
        {
            bail!(
                "--netns needs kernel BTF to read a socket's namespace, but --btf none was given"
            );
        }
        Ok(())
    }
}

fn format(f: FormatArg) -> Format {
    match f {
        FormatArg::Text => Format::Text,
        FormatArg::Line => Format::Line,
        FormatArg::Json => Format::Json,
        FormatArg::Raw => Format::Raw,
        FormatArg::None => Format::None,
    }
}

/// `--metrics ADDR` and `--metrics-labels`, and `--format none`, which only they make useful.
fn metrics(
    m: &MetricsArgs,
    format: FormatArg,
    output: &OutputArgs,
) -> anyhow::Result<Option<MetricsConfig>> {
    let none = format == FormatArg::None;
    let Some(text) = &m.metrics else {
        if !m.metrics_labels.is_empty() {
            bail!("--metrics-labels labels the metrics of --metrics ADDR, which was not given");
        }
        if none {
            bail!(
                "--format none prints nothing: use it with --metrics ADDR (a metrics-only daemon)"
            );
        }
        return Ok(None);
    };
    if none && output.output.is_some() {
        bail!("--format none writes nothing to --output");
    }
    // An IP address and port, or a host name (`localhost:9464`) resolved once.
    let named = text.rsplit_once(':').is_some_and(|(host, _)| {
        host.chars().any(|c| c.is_ascii_alphabetic()) && !host.contains('[')
    });
    let addr = match text.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) if named => std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
            .ok()
            .and_then(|mut a| a.next()),
        Err(_) => None,
    }
    .with_context(|| format!("--metrics: {text:?} is not an address like 127.0.0.1:9464"))?;
    let labels =
        Labels::parse(&m.metrics_labels).map_err(|e| anyhow::anyhow!("--metrics-labels: {e}"))?;
    Ok(Some(MetricsConfig { addr, labels }))
}

/// Parses `500ms`, `2s`, `1.5m` or plain seconds into nanoseconds.
fn duration_ns(text: &str, flag: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60e9)
    } else {
        (t, 1e9)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v < 0.0 => bail!("{flag} must not be negative, got {text}"),
        Ok(v) if v.is_finite() && v * unit < 1.8e19 => Ok((v * unit) as u64),
        _ => bail!("{flag}: {text:?} is not a duration like 500ms or 2s"),
    }
}

fn ports(list: &[u16], out: &mut [u16; MAX_PORTS], flag: &str) -> anyhow::Result<u8> {
    if list.len() > MAX_PORTS {
        bail!("{flag} takes at most {MAX_PORTS} ports, got {}", list.len());
    }
    if list.contains(&0) {
        bail!("{flag}: port 0 cannot be traced");
    }
    out[..list.len()].copy_from_slice(list);
    Ok(list.len() as u8)
}

/// Parses a ring buffer size: a power of two of at least one page, at most 1 GiB.
pub fn ring_size(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1u64 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ring-buffer: {text:?} is not a size like 4M"))?;
    let bytes = n.saturating_mul(mult);
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        bail!("--ring-buffer must be a power of two between 4K and 1G, got {text}");
    }
    Ok(bytes as u32)
}

/// `CLONE_NEWNET`, as `NS_GET_NSTYPE` reports a network namespace.
const CLONE_NEWNET: i32 = 0x4000_0000;
/// `ioctl(NS_GET_NSTYPE)` (`_IO(0xb7, 0x3)`, Linux 4.11+).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Whether the open file is a network namespace (an nsfs file of type `CLONE_NEWNET`).
fn is_netns_file(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor, which `f` keeps
    // open for the call; on any other file it fails with ENOTTY.
    let ty = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    ty == CLONE_NEWNET
}

/// A network namespace's inode from `-N`: a number, a name under /run/netns, or the path of a
/// namespace file. With `must_exist` (live tracing, `sysctl`) the namespace must exist here: a
/// number must be the inode of one that a process or /run/netns holds, a path must be a
/// network namespace file; otherwise it is a one-line error, not a silent trace of nothing.
fn netns_inode(text: &str, must_exist: bool) -> anyhow::Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        if n == 0 {
            bail!("--netns: 0 is not a namespace inode");
        }
        if must_exist && !crate::diag::netns_paths().contains_key(&n) {
            bail!(
                "--netns {n}: no network namespace with that inode (none in /run/netns or /proc/*/ns/net)"
            );
        }
        return Ok(n);
    }
    let named = std::path::Path::new("/run/netns").join(text);
    let path = if !text.contains('/') && named.exists() {
        named
    } else {
        PathBuf::from(text)
    };
    let shown = path.display();
    let file = std::fs::File::open(&path).with_context(|| {
        if text.contains('/') {
            format!("--netns: cannot open {shown}")
        } else {
            format!("--netns: no network namespace named {text:?} (not in /run/netns)")
        }
    })?;
    if !is_netns_file(&file) {
        bail!("--netns: {shown} is not a network namespace");
    }
    let meta = file
        .metadata()
        .with_context(|| format!("--netns: cannot read {shown}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("--netns: inode of {shown} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut v = vec!["tcptrace"];
        v.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(v)?)
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size("4M").unwrap(), 4 << 20);
        assert_eq!(ring_size("65536").unwrap(), 65536);
        assert_eq!(ring_size("64k").unwrap(), 65536);
        assert!(ring_size("3M").is_err());
        assert!(ring_size("1K").is_err());
        assert!(ring_size("2G").is_err());
        assert!(ring_size("lots").is_err());
    }

    #[test]
    fn filters_are_validated() {
        let c = parse(&["--events", "-L", "80,443", "-D", "9527", "-4", "-p", "7"]).unwrap();
        assert_eq!(c.filter.n_lports, 2);
        assert_eq!(&c.filter.lports[..2], &[80, 443]);
        assert_eq!(c.filter.rports[0], 9527);
        assert_eq!(c.filter.family, AF_INET);
        assert_eq!(c.filter.tgid, 7);
        assert!(parse(&["-L", "1,2,3,4,5,6,7,8,9"]).is_err());
        assert!(parse(&["-L", "0"]).is_err());
        assert!(parse(&["-p", "0"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--duration", "nan"]).is_err());
        assert!(parse(&["-4", "-6"]).is_err());
        assert!(parse(&["--netns", "/nonexistent/ns"]).is_err());
        assert!(parse(&["--btf", "none", "--tracepoints", "btf"]).is_err());
    }

    #[test]
    fn lifecycle_filters() {
        let c = parse(&[
            "-p",
            "7",
            "--state",
            "syn_sent,TIME_WAIT",
            "--min-duration",
            "1.5s",
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::Lifecycle);
        assert_eq!(c.filter.tgid, 0, "owner filter is applied in userspace");
        assert_eq!(c.conn_filter.owner_pid, Some(7));
        assert_eq!(
            c.conn_filter.states,
            vec![TcpState::SYN_SENT, TcpState::TIME_WAIT]
        );
        assert_eq!(c.conn_filter.min_duration_ns, Some(1_500_000_000));
        assert_eq!(duration_ns("500ms", "--x").unwrap(), 500_000_000);
        assert!(parse(&["--state", "NOPE"]).is_err());
        assert!(parse(&["--min-duration", "soon"]).is_err());
        assert!(parse(&["--max-conns", "0"]).is_err());
        let r = parse(&["replay", "-", "--format", "json"]).unwrap();
        assert_eq!(r.replay.as_deref(), Some(std::path::Path::new("-")));
        assert_eq!(r.format, Format::Json);
    }
}
