//! The clap definition of tcptrace's command line: the default command (trace) and each
//! subcommand with only the flags it uses, built from shared flag groups (`output`, `filter`,
//! `kernel`). Pure clap and std, so `cargo xtask` compiles the same files to generate the man
//! page and shell completions.
mod filter;
mod kernel;
mod metrics;
mod output;

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

pub use filter::{FilterArgs, SelectArgs};
pub use kernel::{KernelFilterArgs, TracepointsArg, TracerArgs};
pub use metrics::MetricsArgs;
pub use output::{ColorArg, DiagnoseArg, FormatArg, OutputArgs, ReplayFormatArg, SysctlFormatArg};

/// Levels of the daemon's own messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    Error,
    Warning,
    Info,
    Debug,
}

/// Traces TCP connections on this host with eBPF and prints one record per connection: its
/// owner, every state with its timing, retransmits, resets, errors, bytes and how it ended.
#[derive(Debug, Parser)]
#[command(
    name = "tcptrace",
    version,
    after_help = "Without a subcommand, tcptrace traces (needs root). See also: tcptrace replay --help, tcptrace lab --help, tcptrace sysctl --help."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,

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
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rebuild connection records (or re-print events) from a stream recorded with
    /// `tcptrace --events --format json|raw`.
    Replay(ReplayArgs),
    /// Reproduce an experiment of the article in throwaway network namespaces, trace it and
    /// print the explained lifecycles; without SCENARIO, list them.
    Lab(LabArgs),
    /// Print the TCP sysctls that govern lifecycles in a network namespace (this one, or the
    /// one given with --netns or --pid), what each means and the budgets they imply.
    Sysctl(SysctlArgs),
}

/// `tcptrace [FLAGS]`: trace live.
#[derive(Debug, ClapArgs)]
pub struct TraceArgs {
    /// Output format: aligned text (one record per connection with its state timeline),
    /// line (the same without the timeline), JSON lines, (with --events) a binary
    /// recording for `tcptrace replay`, or none (with --metrics: a metrics-only daemon).
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub kernel_filter: KernelFilterArgs,

    #[command(flatten)]
    pub tracer: TracerArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
}

/// `tcptrace replay FILE [FLAGS]`.
#[derive(Debug, ClapArgs)]
pub struct ReplayArgs {
    /// A recording made with `tcptrace --events --format json|raw`; "-" reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Output format: text (with the state timeline), line (without it) or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReplayFormatArg,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub select: SelectArgs,
}

/// `tcptrace lab [SCENARIO] [FLAGS]`.
#[derive(Debug, ClapArgs)]
pub struct LabArgs {
    /// The experiment to run (without it, the list).
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<String>,

    /// Output format: text, line, JSON lines, or (with --events) a binary recording.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub tracer: TracerArgs,
}

/// `tcptrace sysctl [FLAGS]`.
#[derive(Debug, ClapArgs)]
pub struct SysctlArgs {
    /// The namespace to read: an inode number, or a path such as /run/netns/NAME or
    /// /proc/PID/ns/net [default: tcptrace's own].
    #[arg(
        short = 'N',
        long = "netns",
        value_name = "INODE|PATH",
        conflicts_with = "pid"
    )]
    pub netns: Option<String>,

    /// Read the namespace of this process.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: SysctlFormatArg,
}
