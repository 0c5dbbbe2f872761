//! The clap definition of tcptrace's command line.
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned columns for people.
    Text,
    /// One JSON object per line (schema in README.md).
    Json,
    /// Binary recording of the event stream for `tcptrace replay` (with --events; to a file
    /// or pipe). The kernel's records as they came, the cheapest way to keep everything.
    Raw,
}

/// Which attachment of the tracepoints to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TracepointsArg {
    /// BTF tracepoints where the kernel allows them, classic tracepoints otherwise.
    Auto,
    /// BTF tracepoints (tp_btf) only; fail if they cannot be attached.
    Btf,
    /// BTF tracepoints whose programs read sockets with bpf_probe_read_kernel rather than
    /// plain loads (what `auto` and `btf` fall back to where a kernel refuses those); fail if
    /// they cannot be attached.
    BtfProbe,
    /// Classic tracefs tracepoints only (the fallback for kernels without BTF).
    Classic,
}

/// Which diagnoses are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiagnoseArg {
    /// Everything, including explanations of normal behaviour (options, TIME_WAIT).
    Info,
    /// Problems: timeouts, resets, refusals, queue and port pressure.
    Warning,
    /// Failures only.
    Error,
    /// No diagnosis.
    Off,
}

/// Levels of the daemon's own messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    Error,
    Warning,
    Info,
    Debug,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the TCP sysctls that govern lifecycles in a network namespace (this one, or the
    /// one given with --netns or --pid), what each means and the budgets they imply.
    Sysctl,
    /// Reproduce an experiment of the article in throwaway network namespaces, trace it and
    /// print the explained lifecycles; without SCENARIO, list them.
    Lab {
        #[arg(value_name = "SCENARIO")]
        scenario: Option<String>,
    },
    /// Rebuild connection records (or re-print events) from a stream recorded with
    /// `tcptrace --events --format json`; FILE "-" reads standard input.
    Replay {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Traces TCP connections on this host with eBPF and prints one record per connection: its
/// owner, every state with its timing, retransmits, resets, errors, bytes and how it ended.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Stream every TCP event (state changes, retransmits, resets, errors) as it happens,
    /// instead of one record per connection.
    #[arg(long, global = true)]
    pub events: bool,

    /// Output format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub format: FormatArg,

    /// Only connections that visited this state (repeatable or comma-separated, e.g.
    /// SYN_SENT,TIME_WAIT).
    #[arg(
        long = "state",
        value_name = "STATE",
        value_delimiter = ',',
        global = true
    )]
    pub states: Vec<String>,

    /// Only connections that lasted at least this long (e.g. 500ms, 2s, 1.5).
    #[arg(long = "min-duration", value_name = "DURATION", global = true)]
    pub min_duration: Option<String>,

    /// Most connections tracked at once; beyond it the least recently active are evicted
    /// (printed with the `evicted` note and counted in the summary).
    #[arg(long = "max-conns", value_name = "N", default_value = "262144")]
    pub max_conns: usize,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Only this process: connections it owns (events mode: events whose current task it is).
    #[arg(short = 'p', long = "pid", value_name = "PID", global = true)]
    pub pid: Option<u32>,

    /// Only these local ports (comma-separated, at most 8).
    #[arg(
        short = 'L',
        long = "lport",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub lports: Vec<u16>,

    /// Only these remote ports (comma-separated, at most 8).
    #[arg(
        short = 'D',
        long = "rport",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub rports: Vec<u16>,

    /// Only IPv4 sockets.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6 sockets.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only sockets in this network namespace: an inode number, or a path such as
    /// /run/netns/NAME or /proc/PID/ns/net.
    #[arg(short = 'N', long = "netns", value_name = "INODE|PATH", global = true)]
    pub netns: Option<String>,

    /// Only sockets made in this cgroup v2 or below it (a service's, a container's): a
    /// directory under the cgroup2 mount, in full or below it (/system.slice/nginx.service).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Ring buffer size in bytes (power of two, suffixes K/M allowed).
    #[arg(long = "ring-buffer", value_name = "BYTES", default_value = "4M")]
    pub ring_buffer: String,

    /// Longest a record may wait in the ring buffer before it is read (e.g. 20ms). The reader
    /// drains on this timer and is woken early only when a quarter of the buffer fills, so
    /// busy hosts pay one wakeup per batch; 0 wakes the reader for every record.
    #[arg(long, value_name = "DURATION", default_value = "20ms")]
    pub latency: String,

    /// Tracepoint attachment.
    #[arg(long, value_enum, default_value = "auto")]
    pub tracepoints: TracepointsArg,

    /// Kernel BTF to read struct offsets from ("none" to run without BTF).
    /// [default: /sys/kernel/btf/vmlinux, falling back to classic tracepoints without it;
    /// a PATH given here must be readable BTF]
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,

    /// Which diagnoses to attach to records: info, warning (default), error or off.
    #[arg(
        long,
        value_enum,
        value_name = "LEVEL",
        default_value = "warning",
        global = true
    )]
    pub diagnose: DiagnoseArg,

    /// Append the output to FILE instead of standard output; SIGHUP reopens it (log
    /// rotation). A full disk or a write error does not stop tracing: what could not be
    /// written is counted and reported.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The daemon's own messages on stderr from this level up (JSON lines when the output is
    /// JSON).
    #[arg(
        long,
        value_enum,
        value_name = "LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: LogLevelArg,

    /// Do not print the column header (text format).
    #[arg(long, global = true)]
    pub no_header: bool,
}
