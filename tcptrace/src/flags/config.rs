//! Validated configuration built from [`Args`]: every user error is reported here, in one line.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use tcptrace_common::{AF_INET, AF_INET6, Filter, MAX_PORTS};

use tcptrace_core::{diagnose::Severity, lifecycle::TableConfig, tcp::TcpState};

use super::args::{Args, Command, DiagnoseArg, FormatArg, LogLevelArg, TracepointsArg};
use crate::pipeline::{ConnFilter, Mode};

/// Where the running kernel's BTF is.
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// Binary recording (`--events` only).
    Raw,
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
    pub mode: Mode,
    pub conn_filter: ConnFilter,
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
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let duration = match args.duration {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("--duration must be a positive number of seconds, got {s}"),
        };
        let mut filter = Filter::default();
        if args.ipv4 {
            filter.family = AF_INET;
        } else if args.ipv6 {
            filter.family = AF_INET6;
        }
        let mode = if args.events {
            Mode::Events
        } else {
            Mode::Lifecycle
        };
        let mut conn_filter = ConnFilter::default();
        if let Some(pid) = args.pid {
            if pid == 0 {
                bail!("--pid must be a process id, not 0");
            }
            // Lifecycle mode filters on the owner: most transitions run in softirq, where the
            // current task is unrelated, so the kernel-side task filter would cut lifecycles.
            match mode {
                Mode::Events => filter.tgid = pid,
                Mode::Lifecycle => conn_filter.owner_pid = Some(pid),
            }
        }
        for name in &args.states {
            let state = TcpState::from_name(&name.to_ascii_uppercase())
                .with_context(|| format!("--state: unknown TCP state {name:?}"))?;
            conn_filter.states.push(state);
        }
        if let Some(text) = &args.min_duration {
            conn_filter.min_duration_ns = Some(duration_ns(text, "--min-duration")?);
        }
        if args.max_conns == 0 {
            bail!("--max-conns must be at least 1");
        }
        filter.n_lports = ports(&args.lports, &mut filter.lports, "--lport")?;
        filter.n_rports = ports(&args.rports, &mut filter.rports, "--rport")?;
        if let Some(ns) = &args.netns {
            filter.netns = netns_inode(ns)?;
            conn_filter.netns = vec![filter.netns];
        }
        let cgroup = match &args.cgroup {
            Some(spec) => {
                let f = crate::cgroups::CgroupFilter::parse(spec)?;
                filter.cgroup = f.id;
                filter.cgroup_level = f.level;
                Some(f)
            }
            None => None,
        };
        if args.format == FormatArg::Raw {
            if !args.events || args.command.is_some() {
                bail!(
                    "--format raw records the live event stream: use it with --events (replay prints text or json)"
                );
            }
            if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!(
                    "--format raw writes binary data: redirect standard output to a file or pipe"
                );
            }
        }
        let btf_explicit = args.btf.is_some();
        let btf = match args.btf {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p),
            None => Some(PathBuf::from(DEFAULT_BTF)),
        };
        let tracepoints = match args.tracepoints {
            TracepointsArg::Auto => TracepointMode::Auto,
            TracepointsArg::Btf => TracepointMode::Btf,
            TracepointsArg::BtfProbe => TracepointMode::BtfProbe,
            TracepointsArg::Classic => TracepointMode::Classic,
        };
        if btf.is_none() && matches!(tracepoints, TracepointMode::Btf | TracepointMode::BtfProbe) {
            bail!("--tracepoints btf and btf-probe need kernel BTF, but --btf none was given");
        }
        if btf.is_none() && cgroup.is_some() {
            bail!("--cgroup needs kernel BTF to read a socket's cgroup, but --btf none was given");
        }
        if btf.is_none() && filter.netns != 0 {
            bail!(
                "--netns needs kernel BTF to read a socket's namespace, but --btf none was given"
            );
        }
        Ok(Self {
            format: match args.format {
                FormatArg::Text => Format::Text,
                FormatArg::Json => Format::Json,
                FormatArg::Raw => Format::Raw,
            },
            duration,
            filter,
            ring_bytes: ring_size(&args.ring_buffer)?,
            latency: match duration_ns(&args.latency, "--latency")? {
                0 => None,
                ns => Some(Duration::from_nanos(ns)),
            },
            tracepoints,
            btf,
            btf_explicit,
            header: !args.no_header,
            mode,
            conn_filter,
            table: TableConfig {
                max_conns: args.max_conns,
                ..TableConfig::default()
            },
            replay: match &args.command {
                Some(Command::Replay { file }) => Some(file.clone()),
                _ => None,
            },
            diagnose: match args.diagnose {
                DiagnoseArg::Info => Some(Severity::Info),
                DiagnoseArg::Warning => Some(Severity::Warning),
                DiagnoseArg::Error => Some(Severity::Error),
                DiagnoseArg::Off => None,
            },
            action: match args.command {
                None => Action::Trace,
                Some(Command::Replay { .. }) => Action::Replay,
                Some(Command::Sysctl) => Action::Sysctl,
                Some(Command::Lab { scenario }) => Action::Lab(scenario),
            },
            pid: args.pid,
            output: args.output,
            cgroup,
            log_level: match args.log_level {
                LogLevelArg::Error => log::LevelFilter::Error,
                LogLevelArg::Warning => log::LevelFilter::Warn,
                LogLevelArg::Info => log::LevelFilter::Info,
                LogLevelArg::Debug => log::LevelFilter::Debug,
            },
        })
    }
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
        Ok(v) if v.is_finite() && v >= 0.0 && v * unit < 1.8e19 => Ok((v * unit) as u64),
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

/// Network namespace inode from a number or a namespace file path.
fn netns_inode(text: &str) -> anyhow::Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        if n == 0 {
            bail!("--netns: 0 is not a namespace inode");
        }
        return Ok(n);
    }
    let meta = std::fs::metadata(text).with_context(|| format!("--netns: cannot open {text}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("--netns: inode of {text} out of range"))
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
        assert_eq!(
            parse(&["--netns", "4026531840"]).unwrap().filter.netns,
            4026531840
        );
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
