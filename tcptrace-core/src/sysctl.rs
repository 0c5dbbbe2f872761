//! The TCP sysctls that govern lifecycles, as read from one network namespace: their names,
//! what each means, the kernel's defaults, and typed access to the text the kernel printed.
use std::collections::BTreeMap;

/// One sysctl tcptrace reads.
#[derive(Clone, Copy, Debug)]
pub struct Knob {
    /// Dotted name, e.g. `net.ipv4.tcp_syn_retries`.
    pub name: &'static str,
    /// The kernel's default, as it prints it (used when the namespace could not be read).
    pub default: &'static str,
    /// What it governs, in one line.
    pub meaning: &'static str,
}

const fn knob(name: &'static str, default: &'static str, meaning: &'static str) -> Knob {
    Knob {
        name,
        default,
        meaning,
    }
}

pub const SYN_RETRIES: &str = "net.ipv4.tcp_syn_retries";
pub const SYN_LINEAR_TIMEOUTS: &str = "net.ipv4.tcp_syn_linear_timeouts";
pub const SYNACK_RETRIES: &str = "net.ipv4.tcp_synack_retries";
pub const RETRIES1: &str = "net.ipv4.tcp_retries1";
pub const RETRIES2: &str = "net.ipv4.tcp_retries2";
pub const ORPHAN_RETRIES: &str = "net.ipv4.tcp_orphan_retries";
pub const RTO_MIN_US: &str = "net.ipv4.tcp_rto_min_us";
pub const RTO_MAX_MS: &str = "net.ipv4.tcp_rto_max_ms";
pub const FIN_TIMEOUT: &str = "net.ipv4.tcp_fin_timeout";
pub const KEEPALIVE_TIME: &str = "net.ipv4.tcp_keepalive_time";
pub const KEEPALIVE_INTVL: &str = "net.ipv4.tcp_keepalive_intvl";
pub const KEEPALIVE_PROBES: &str = "net.ipv4.tcp_keepalive_probes";
pub const TW_REUSE: &str = "net.ipv4.tcp_tw_reuse";
pub const TW_REUSE_DELAY: &str = "net.ipv4.tcp_tw_reuse_delay";
pub const MAX_TW_BUCKETS: &str = "net.ipv4.tcp_max_tw_buckets";
pub const LOCAL_PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
pub const MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
pub const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
pub const SOMAXCONN: &str = "net.core.somaxconn";
pub const ABORT_ON_OVERFLOW: &str = "net.ipv4.tcp_abort_on_overflow";
pub const SACK: &str = "net.ipv4.tcp_sack";
pub const TIMESTAMPS: &str = "net.ipv4.tcp_timestamps";
pub const WINDOW_SCALING: &str = "net.ipv4.tcp_window_scaling";

/// Everything read, in the order `tcptrace sysctl` lists it.
pub const KNOBS: [Knob; 23] = [
    knob(
        SYN_RETRIES,
        "6",
        "SYN retransmits a connect() may make; sets its time budget",
    ),
    knob(
        SYN_LINEAR_TIMEOUTS,
        "4",
        "first SYN retransmits spaced linearly (1 s) before doubling (Linux 6.5+)",
    ),
    knob(
        SYNACK_RETRIES,
        "5",
        "SYN-ACK retransmits for a half-open handshake before the request is dropped",
    ),
    knob(
        RETRIES1,
        "3",
        "data retransmits before the route is suspected (MTU probing, new route)",
    ),
    knob(
        RETRIES2,
        "15",
        "data retransmits' time budget before an established connection gives up",
    ),
    knob(
        ORPHAN_RETRIES,
        "0",
        "retransmits of a closed (orphaned) socket's FIN; 0 means 8 while the peer is alive",
    ),
    knob(
        RTO_MIN_US,
        "200000",
        "lower bound of the retransmission timeout in µs (Linux 6.11+)",
    ),
    knob(
        RTO_MAX_MS,
        "120000",
        "upper bound of the retransmission timeout in ms (Linux 6.15+)",
    ),
    knob(
        FIN_TIMEOUT,
        "60",
        "seconds an orphaned FIN_WAIT2 waits for the peer's FIN",
    ),
    knob(
        KEEPALIVE_TIME,
        "7200",
        "idle seconds before the first keepalive probe (SO_KEEPALIVE sockets)",
    ),
    knob(KEEPALIVE_INTVL, "75", "seconds between keepalive probes"),
    knob(
        KEEPALIVE_PROBES,
        "9",
        "unanswered keepalive probes before the connection is reset",
    ),
    knob(
        TW_REUSE,
        "2",
        "reuse TIME_WAIT ports for new outgoing connections: 0 no, 1 yes, 2 loopback only",
    ),
    knob(
        TW_REUSE_DELAY,
        "1000",
        "ms a TIME_WAIT socket must age before tcp_tw_reuse may take its port (Linux 6.13+)",
    ),
    knob(
        MAX_TW_BUCKETS,
        "262144",
        "TIME_WAIT sockets at most; beyond it connections close without TIME_WAIT",
    ),
    knob(
        LOCAL_PORT_RANGE,
        "32768 60999",
        "local ports connect() picks from; one per TIME_WAIT per destination",
    ),
    knob(
        MAX_SYN_BACKLOG,
        "4096",
        "half-open handshakes a listener queues (SYN queue)",
    ),
    knob(
        SYNCOOKIES,
        "1",
        "answer SYNs with cookies when the SYN queue overflows: 0 never, 1 on overflow, 2 always",
    ),
    knob(
        SOMAXCONN,
        "4096",
        "cap on a listener's accept queue (the backlog passed to listen())",
    ),
    knob(
        ABORT_ON_OVERFLOW,
        "0",
        "reset (1) instead of ignoring (0) a handshake whose accept queue is full",
    ),
    knob(
        SACK,
        "1",
        "offer selective acknowledgements (SACK) in the handshake",
    ),
    knob(TIMESTAMPS, "1", "offer TCP timestamps in the handshake"),
    knob(
        WINDOW_SCALING,
        "1",
        "offer window scaling in the handshake (windows above 64 KiB)",
    ),
];

/// Where a namespace's values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read from the namespace's /proc/sys.
    Read,
    /// Not readable: the kernel's defaults are assumed.
    Defaults,
}

/// The sysctls of one network namespace (plus the kernel's HZ, which converts per-socket
/// jiffies values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctls {
    values: BTreeMap<&'static str, String>,
    pub source: Source,
    /// Timer ticks per second (`CONFIG_HZ`), when known.
    pub hz: Option<u32>,
}

impl Default for Sysctls {
    fn default() -> Self {
        Self::defaults(None)
    }
}

/// The value text with runs of whitespace collapsed to one space, ends trimmed.
pub fn collapse(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The knob named `name`.
pub fn knob_named(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

/// `/proc/sys` relative path of a dotted name.
pub fn proc_path(name: &str) -> String {
    name.replace('.', "/")
}

impl Sysctls {
    /// Assumed values: the kernel's defaults.
    pub fn defaults(hz: Option<u32>) -> Self {
        Self {
            values: KNOBS
                .iter()
                .map(|k| (k.name, k.default.to_string()))
                .collect(),
            source: Source::Defaults,
            hz,
        }
    }

    /// The defaults of the knobs this kernel has (`exists`, e.g. its `/proc/sys` entry), the
    /// way a read would find them: a knob a later kernel added (`tcp_syn_linear_timeouts` on
    /// 6.1, `tcp_rto_max_ms` before 6.15) is absent, so its arithmetic is the older kernel's
    /// and no diagnosis cites it.
    pub fn defaults_present(hz: Option<u32>, exists: impl Fn(&str) -> bool) -> Self {
        let mut s = Self::defaults(hz);
        s.values.retain(|name, _| exists(name));
        s
    }

    /// Values read from a namespace: `(name, text as printed)`. Unknown names are ignored;
    /// knobs this kernel lacks stay absent.
    pub fn from_read<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        hz: Option<u32>,
    ) -> Self {
        let mut values = BTreeMap::new();
        for (name, raw) in pairs {
            if let Some(k) = knob_named(name) {
                values.insert(k.name, collapse(raw));
            }
        }
        Self {
            values,
            source: Source::Read,
            hz,
        }
    }

    /// The value as the kernel printed it.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.raw(name)?.parse().ok()
    }

    /// An integer knob, or the kernel default when absent or unreadable.
    pub fn int_or_default(&self, name: &str) -> i64 {
        self.int(name)
            .or_else(|| knob_named(name)?.default.parse().ok())
            .unwrap_or(0)
    }

    /// `ip_local_port_range` as (low, high).
    pub fn port_range(&self) -> Option<(u16, u16)> {
        let mut it = self.raw(LOCAL_PORT_RANGE)?.split(' ');
        let lo = it.next()?.parse().ok()?;
        let hi = it.next()?.parse().ok()?;
        Some((lo, hi))
    }

    /// `tcp_rto_max_ms`, or the compiled-in 120 s on kernels without it.
    pub fn rto_max_ms(&self) -> u64 {
        self.int(RTO_MAX_MS).map_or(120_000, |v| v.max(1) as u64)
    }

    /// `tcp_rto_min_us` in ms (at least 1), or the compiled-in 200 ms on kernels without it.
    pub fn rto_min_ms(&self) -> u64 {
        self.int(RTO_MIN_US)
            .map_or(200, |us| (us.max(1000) / 1000) as u64)
    }

    /// Every value read, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// `(name, value)` for the diagnosis of a rule that depends on `names` (absent ones left
    /// out).
    pub fn pick(&self, names: &[&'static str]) -> Vec<(&'static str, String)> {
        names
            .iter()
            .filter_map(|n| Some((*n, self.raw(n)?.to_string())))
            .collect()
    }

    /// Converts a jiffies value to milliseconds with this kernel's HZ.
    pub fn jiffies_to_ms(&self, jiffies: u64) -> Option<u64> {
        let hz = u64::from(self.hz?);
        (hz > 0).then(|| jiffies * 1000 / hz)
    }
}

/// Parses `CONFIG_HZ=250` out of a kernel config text.
pub fn hz_from_config(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_and_types() {
        let s = Sysctls::from_read(
            [
                (LOCAL_PORT_RANGE, "32768\t60999\n"),
                (SYN_RETRIES, "3\n"),
                ("net.ipv4.not_a_knob", "1"),
            ],
            Some(250),
        );
        assert_eq!(s.raw(LOCAL_PORT_RANGE), Some("32768 60999"));
        assert_eq!(s.port_range(), Some((32768, 60999)));
        assert_eq!(s.int(SYN_RETRIES), Some(3));
        assert_eq!(s.raw("net.ipv4.not_a_knob"), None);
        // Absent on this kernel: the default is used for arithmetic, never reported.
        assert_eq!(s.int(SYN_LINEAR_TIMEOUTS), None);
        assert_eq!(s.int_or_default(SYN_LINEAR_TIMEOUTS), 4);
        assert_eq!(s.pick(&[SYN_RETRIES, SYN_LINEAR_TIMEOUTS]).len(), 1);
        assert_eq!(s.jiffies_to_ms(250), Some(1000));
    }

    #[test]
    fn hz_parses() {
        assert_eq!(
            hz_from_config("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(hz_from_config("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn defaults_leave_out_knobs_the_kernel_lacks() {
        // 6.1: no tcp_syn_linear_timeouts, tcp_rto_min_us, tcp_rto_max_ms, tcp_tw_reuse_delay.
        let newer = [SYN_LINEAR_TIMEOUTS, RTO_MIN_US, RTO_MAX_MS, TW_REUSE_DELAY];
        let d = Sysctls::defaults_present(Some(250), |n| !newer.contains(&n));
        assert_eq!(d.source, Source::Defaults);
        assert_eq!(d.int(SYN_LINEAR_TIMEOUTS), None);
        assert_eq!(d.int(SYN_RETRIES), Some(6));
        assert_eq!(d.iter().count(), KNOBS.len() - newer.len());
        assert_eq!(d.rto_max_ms(), 120_000);
    }

    #[test]
    fn defaults_cover_every_knob() {
        let d = Sysctls::defaults(None);
        for k in KNOBS {
            assert_eq!(d.raw(k.name), Some(k.default), "{}", k.name);
        }
    }
}
