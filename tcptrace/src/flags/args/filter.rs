//! Which connections are looked at (`FilterArgs`: state, duration, owner, namespace, table
//! size) and which of their records are printed (`SelectArgs`: by how they ended).
use clap::Args;

/// Connections in scope, for tracing and replay.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connections")]
pub struct FilterArgs {
    /// Only connections that visited this state (repeatable or comma-separated, e.g.
    /// SYN_SENT,TIME_WAIT).
    #[arg(long = "state", value_name = "STATE", value_delimiter = ',')]
    pub states: Vec<String>,

    /// Only connections that lasted at least this long (e.g. 500ms, 2s, 1.5).
    #[arg(
        long = "min-duration",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub min_duration: Option<String>,

    /// Only this process: connections it owns (events mode: events whose current task it is).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,

    /// Only sockets in these network namespaces (repeatable or comma-separated): an inode
    /// number, a name under /run/netns, or a path such as /run/netns/NAME or /proc/PID/ns/net.
    #[arg(
        short = 'N',
        long = "netns",
        value_name = "NETNS",
        value_delimiter = ','
    )]
    pub netns: Vec<String>,

    /// Most connections tracked at once; beyond it the least recently active are evicted
    /// (printed with the `evicted` note and counted in the summary).
    #[arg(long = "max-conns", value_name = "N", default_value = "262144")]
    pub max_conns: usize,
}

/// Which connection records are printed, by outcome. Given together, a record is printed when
/// it matches any of them. Not with --events (a recording is filtered when it is replayed).
#[derive(Debug, Args)]
#[command(next_help_heading = "Records printed")]
pub struct SelectArgs {
    /// Only connections that failed (ended timeout, refused, reset_sent, reset_received or
    /// aborted) or got a warning or error diagnosis: --end with those plus --diagnosed.
    #[arg(long)]
    pub problems: bool,

    /// Only connections that ended so (comma-separated; `*` matches any text): closed,
    /// reset_sent, reset_received, refused, timeout, aborted, open; e.g. timeout,refused,reset_*.
    #[arg(long = "end", value_name = "END", value_delimiter = ',')]
    pub ends: Vec<String>,

    /// Only connections with a warning or error diagnosis (at or above --diagnose).
    #[arg(long)]
    pub diagnosed: bool,
}
