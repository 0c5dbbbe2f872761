//! The clap definition of tcptrace's command line.
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned columns for people.
    Text,
    /// One JSON object per line (schema in README.md).
    Json,
}

/// Which attachment of the tracepoints to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TracepointsArg {
    /// BTF tracepoints where the kernel allows them, classic tracepoints otherwise.
    Auto,
    /// BTF tracepoints (tp_btf) only; fail if they cannot be attached.
    Btf,
    /// Classic tracefs tracepoints only (the fallback for kernels without BTF).
    Classic,
}

/// Traces TCP connections on this host with eBPF: every state change, retransmit, reset and
/// socket error, attributed to its process and network namespace.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, about, long_about = None)]
pub struct Args {
    /// Stream every TCP event (state changes, retransmits, resets, errors) as it happens.
    #[arg(long)]
    pub events: bool,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Only events of this process id (the task current when the event fired).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
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
    #[arg(short = 'N', long = "netns", value_name = "INODE|PATH")]
    pub netns: Option<String>,

    /// Ring buffer size in bytes (power of two, suffixes K/M allowed).
    #[arg(long = "ring-buffer", value_name = "BYTES", default_value = "4M")]
    pub ring_buffer: String,

    /// Tracepoint attachment.
    #[arg(long, value_enum, default_value = "auto")]
    pub tracepoints: TracepointsArg,

    /// Kernel BTF to read struct offsets from ("none" to run without BTF).
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,

    /// Do not print the column header (text format).
    #[arg(long)]
    pub no_header: bool,
}
