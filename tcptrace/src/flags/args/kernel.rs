//! How the tracer attaches to the kernel (`TracerArgs`) and the filters applied in the kernel
//! (`KernelFilterArgs`): flags of live tracing only.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

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

/// The eBPF side: programs, ring buffer, BTF.
#[derive(Debug, Args)]
#[command(next_help_heading = "Tracer")]
pub struct TracerArgs {
    /// Ring buffer size in bytes (power of two, suffixes K/M allowed).
    #[arg(long = "ring-buffer", value_name = "BYTES", default_value = "16M")]
    pub ring_buffer: String,

    /// Longest a record may wait in the ring buffer before it is read (e.g. 20ms). The reader
    /// drains on this timer and is woken early only when a quarter of the buffer fills, so
    /// busy hosts pay one wakeup per batch; 0 wakes the reader for every record.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "20ms",
        allow_hyphen_values = true
    )]
    pub latency: String,

    /// Tracepoint attachment.
    #[arg(long, value_enum, default_value = "auto")]
    pub tracepoints: TracepointsArg,

    /// Kernel BTF to read struct offsets from ("none" to run without BTF).
    /// [default: /sys/kernel/btf/vmlinux, falling back to classic tracepoints without it;
    /// a PATH given here must be readable BTF]
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
}

/// Filters the eBPF programs apply before anything reaches userspace.
#[derive(Debug, Args)]
#[command(next_help_heading = "Kernel filters")]
pub struct KernelFilterArgs {
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

    /// Only sockets made in this cgroup v2 or below it (a service's, a container's): a
    /// directory under the cgroup2 mount, in full or below it (/system.slice/nginx.service).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Option<String>,
}
