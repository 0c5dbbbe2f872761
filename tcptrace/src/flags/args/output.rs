//! What is printed and where: the output formats of each command, and the flags shared by
//! every command that prints records (mode, destination, header, colour, diagnoses, summary).
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Output format of live tracing and the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned text: a record per connection with its state timeline (events: columns).
    Text,
    /// One compact line per connection: who, where, how it ended, facts, rule names; no
    /// state timeline.
    Line,
    /// One JSON object per line (schema in README.md).
    Json,
    /// Binary recording of the event stream for `tcptrace replay` (with --events; to a file
    /// or pipe). The kernel's records as they came, the cheapest way to keep everything.
    Raw,
    /// Nothing on standard output: a metrics-only daemon (with --metrics).
    None,
}

/// Output format of `replay` (a recording is not re-recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormatArg {
    /// Aligned text: a record per connection with its state timeline (events: columns).
    Text,
    /// One compact line per connection, without the state timeline.
    Line,
    /// One JSON object per line (schema in README.md).
    Json,
}

/// Output format of `sysctl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SysctlFormatArg {
    /// The sysctls with their meaning, and what they imply.
    Text,
    /// One `sysctl_report` JSON line.
    Json,
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

/// When text output is coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// When the output is a terminal and NO_COLOR is not set.
    Auto,
    /// Always (also into files and pipes).
    Always,
    /// Never.
    Never,
}

/// Flags of every command that prints records.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Stream every TCP event (state changes, retransmits, resets, errors) as it happens,
    /// instead of one record per connection.
    #[arg(long)]
    pub events: bool,

    /// Which diagnoses to attach to records: info, warning (default), error or off.
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "warning")]
    pub diagnose: DiagnoseArg,

    /// Also print a summary table per destination, process and unit/container: connections
    /// by how they ended, retransmits, p50/p99 connect time and duration; every INTERVAL
    /// (e.g. 10s, 1m; at least 1s) and at exit, or only at exit without INTERVAL.
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub summary: Option<String>,

    /// Append the output to FILE instead of standard output; SIGHUP reopens it (log
    /// rotation). A full disk or a write error does not stop tracing: what could not be
    /// written is counted and reported.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Do not print the column header (text format with --events; the only mode that has one).
    #[arg(long)]
    pub no_header: bool,

    /// Colour text output: auto (a terminal, and NO_COLOR unset), always or never.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: ColorArg,
}
