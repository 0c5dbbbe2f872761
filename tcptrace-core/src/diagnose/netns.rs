//! Namespace-wide rules over periodic samples of one network namespace: TIME_WAIT pressure on
//! the local port range, TIME_WAIT bucket overflow, listen queue overflows. A watch per
//! namespace turns counter deltas into findings, at most one per rule every
//! [`REPEAT_NS`] while the condition lasts.
use std::{collections::HashMap, net::IpAddr};

use super::{Diagnosis, Severity, open::tw_reuse_advice};
use crate::sysctl::{self as sc, Sysctls};

/// A rule that keeps firing is reported again after this long.
pub const REPEAT_NS: u64 = 10_000_000_000;

/// TcpExt counters the rules use.
pub const TCPEXT_COUNTERS: [&str; 6] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPTimeWaitOverflow",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
];

/// A listening socket and its accept queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    /// Connections waiting for accept().
    pub queued: u32,
    /// The accept queue's size: listen()'s backlog capped by `somaxconn`.
    pub backlog: u32,
}

/// One look at a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsSample {
    pub netns: u32,
    pub ts_ns: u64,
    /// Cumulative TcpExt counters (those in [`TCPEXT_COUNTERS`] this kernel has).
    pub tcpext: Vec<(String, u64)>,
    pub time_wait_total: u64,
    /// TIME_WAIT sockets per destination, busiest first.
    pub time_wait_by_dest: Vec<(IpAddr, u16, u64)>,
    pub listeners: Vec<Listener>,
}

impl NetnsSample {
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.tcpext.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Parses the TcpExt counters out of `/proc/net/netstat` (a header line of names followed by
/// a line of values).
pub fn parse_tcpext(netstat: &str) -> Vec<(String, u64)> {
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else { break };
        let (Some(n), Some(v)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        return n
            .split_whitespace()
            .zip(v.split_whitespace())
            .filter(|(name, _)| TCPEXT_COUNTERS.contains(name))
            .filter_map(|(name, val)| Some((name.to_string(), val.parse().ok()?)))
            .collect();
    }
    Vec::new()
}

/// A namespace-wide finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsFinding {
    pub netns: u32,
    pub ts_ns: u64,
    pub diagnosis: Diagnosis,
}

/// Remembers what a namespace looked like when each rule last reported.
#[derive(Debug, Default)]
pub struct NetnsWatch {
    /// Counter values at the last report of the rule that uses them (or the first sample).
    baseline: HashMap<String, u64>,
    last_report: HashMap<&'static str, u64>,
    /// Highest TIME_WAIT pressure level reported and not yet cleared.
    tw_level: Option<Severity>,
}

impl NetnsWatch {
    /// Checks a sample; findings go to `out`.
    pub fn check(&mut self, s: &NetnsSample, sys: &Sysctls, out: &mut Vec<NetnsFinding>) {
        if self.baseline.is_empty() {
            self.baseline = s.tcpext.iter().cloned().collect();
        }
        let mut push = |d: Option<Diagnosis>| {
            if let Some(diagnosis) = d {
                out.push(NetnsFinding {
                    netns: s.netns,
                    ts_ns: s.ts_ns,
                    diagnosis,
                });
            }
        };
        push(self.time_wait_pressure(s, sys));
        push(self.tw_overflow(s, sys));
        push(self.listen_overflow(s, sys));
    }

    fn delta(&self, s: &NetnsSample, name: &str) -> u64 {
        let now = s.counter(name).unwrap_or(0);
        now.saturating_sub(self.baseline.get(name).copied().unwrap_or(now))
    }

    /// Whether `rule` may report now; records it if so.
    fn due(&mut self, rule: &'static str, s: &NetnsSample, counters: &[&str]) -> bool {
        if self
            .last_report
            .get(rule)
            .is_some_and(|t| s.ts_ns.saturating_sub(*t) < REPEAT_NS)
        {
            return false;
        }
        self.last_report.insert(rule, s.ts_ns);
        for c in counters {
            if let Some(v) = s.counter(c) {
                self.baseline.insert((*c).to_string(), v);
            }
        }
        true
    }

    fn time_wait_pressure(&mut self, s: &NetnsSample, sys: &Sysctls) -> Option<Diagnosis> {
        let (lo, hi) = sys.port_range()?;
        let ports = u64::from(hi.saturating_sub(lo)) + 1;
        let (addr, port, n) =
            s.time_wait_by_dest
                .first()
                .copied()
                .unwrap_or((IpAddr::from([0, 0, 0, 0]), 0, 0));
        let level = if n >= ports {
            Some(Severity::Error)
        } else if n * 2 >= ports {
            Some(Severity::Warning)
        } else {
            None
        };
        if level.is_none() && n * 4 < ports {
            self.tw_level = None; // cleared: a new rise is reported again
        }
        let level = level.filter(|l| self.tw_level.is_none_or(|prev| *l > prev))?;
        self.tw_level = Some(level);
        let mut d = Diagnosis::new("time_wait_pressure", level, sys);
        d.sysctl = sys.pick(&[sc::LOCAL_PORT_RANGE, sc::TW_REUSE, sc::MAX_TW_BUCKETS]);
        let dest = if addr.is_ipv6() {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        d.observed.push(("destination", dest.as_str().into()));
        d.observed.push(("time_wait", n.into()));
        d.observed
            .push(("time_wait_total", s.time_wait_total.into()));
        d.expected.push(("ports_per_destination", ports.into()));
        let pct = n * 100 / ports.max(1);
        let state = if level == Severity::Error {
            "every local port to it is taken: connect() fails with EADDRNOTAVAIL (\"Cannot assign requested address\")".to_string()
        } else {
            format!(
                "{} ports are left; at 100% connect() to it fails with EADDRNOTAVAIL",
                ports - n
            )
        };
        d.message = format!(
            "{n} TIME_WAIT sockets to {dest} hold {pct}% of the {ports} local ports {}={} gives per destination: {state}. {}",
            sc::LOCAL_PORT_RANGE,
            sys.raw(sc::LOCAL_PORT_RANGE).unwrap_or("?"),
            tw_reuse_advice(sys)
        );
        Some(d)
    }

    fn tw_overflow(&mut self, s: &NetnsSample, sys: &Sysctls) -> Option<Diagnosis> {
        let lost = self.delta(s, "TCPTimeWaitOverflow");
        if lost == 0 || !self.due("time_wait_overflow", s, &["TCPTimeWaitOverflow"]) {
            return None;
        }
        let mut d = Diagnosis::new("time_wait_overflow", Severity::Warning, sys);
        d.sysctl = sys.pick(&[sc::MAX_TW_BUCKETS]);
        d.observed.push(("TCPTimeWaitOverflow", lost.into()));
        d.observed
            .push(("time_wait_total", s.time_wait_total.into()));
        if let Some(max) = sys.int(sc::MAX_TW_BUCKETS) {
            d.expected
                .push(("time_wait_max", (max.max(0) as u64).into()));
        }
        d.message = format!(
            "{lost} connections closed without TIME_WAIT because {}={} TIME_WAIT sockets already exist (TcpExt TCPTimeWaitOverflow +{lost}): \
             their ports are free at once, but late segments of the old connections can now reach new ones.",
            sc::MAX_TW_BUCKETS,
            sys.raw(sc::MAX_TW_BUCKETS).unwrap_or("?")
        );
        Some(d)
    }

    fn listen_overflow(&mut self, s: &NetnsSample, sys: &Sysctls) -> Option<Diagnosis> {
        let overflows = self.delta(s, "ListenOverflows");
        let drops = self.delta(s, "ListenDrops");
        let syn_drops = self.delta(s, "TCPReqQFullDrop");
        let cookies = self.delta(s, "TCPReqQFullDoCookies") + self.delta(s, "SyncookiesSent");
        if overflows + drops + syn_drops + cookies == 0
            || !self.due("listen_overflow", s, &TCPEXT_COUNTERS)
        {
            return None;
        }
        let mut d = Diagnosis::new("listen_overflow", Severity::Warning, sys);
        d.sysctl = sys.pick(&[
            sc::SOMAXCONN,
            sc::MAX_SYN_BACKLOG,
            sc::SYNCOOKIES,
            sc::ABORT_ON_OVERFLOW,
        ]);
        d.observed.push(("ListenOverflows", overflows.into()));
        d.observed.push(("ListenDrops", drops.into()));
        d.observed.push(("TCPReqQFullDrop", syn_drops.into()));
        d.observed.push(("syncookies_sent", cookies.into()));
        let full: Vec<&Listener> = s
            .listeners
            .iter()
            .filter(|l| l.backlog > 0 && l.queued >= l.backlog)
            .collect();
        let names: Vec<String> = full
            .iter()
            .map(|l| {
                format!(
                    "{}:{} ({}/{} waiting for accept())",
                    l.addr, l.port, l.queued, l.backlog
                )
            })
            .collect();
        if let Some(l) = full.first() {
            d.observed
                .push(("accept_queue", u64::from(l.queued).into()));
            d.expected
                .push(("accept_queue_max", u64::from(l.backlog).into()));
        }
        let who = if names.is_empty() {
            "A listener's queue overflowed".to_string()
        } else {
            format!("Full accept queue: {}", names.join(", "))
        };
        d.message = format!(
            "{who}. TcpExt ListenOverflows +{overflows}, ListenDrops +{drops}: completed handshakes were dropped because the application does not accept() fast enough; \
             the queue is the backlog passed to listen() capped by {}={}{}. SYN queue ({}={}) drops +{syn_drops}, SYN cookies sent +{cookies} ({}={}). \
             With {}={} the client's ACK is ignored and the server retransmits its SYN-ACK; the client believes it is connected.",
            sc::SOMAXCONN,
            sys.raw(sc::SOMAXCONN).unwrap_or("?"),
            if full.is_empty() {
                ""
            } else {
                " (raise the backlog, accept faster)"
            },
            sc::MAX_SYN_BACKLOG,
            sys.raw(sc::MAX_SYN_BACKLOG).unwrap_or("?"),
            sc::SYNCOOKIES,
            sys.raw(sc::SYNCOOKIES).unwrap_or("?"),
            sc::ABORT_ON_OVERFLOW,
            sys.raw(sc::ABORT_ON_OVERFLOW).unwrap_or("?"),
        );
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(range: &str) -> Sysctls {
        Sysctls::from_read(
            [
                (sc::LOCAL_PORT_RANGE, range),
                (sc::TW_REUSE, "0"),
                (sc::MAX_TW_BUCKETS, "50"),
                (sc::SOMAXCONN, "4096"),
            ],
            Some(250),
        )
    }

    fn sample(ts_s: u64, tw: u64, ext: &[(&str, u64)]) -> NetnsSample {
        NetnsSample {
            netns: 7,
            ts_ns: ts_s * 1_000_000_000,
            tcpext: ext.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            time_wait_total: tw,
            time_wait_by_dest: vec![(IpAddr::from([10, 9, 0, 2]), 9527, tw)],
            listeners: vec![Listener {
                addr: IpAddr::from([10, 9, 0, 2]),
                port: 9527,
                queued: 2,
                backlog: 1,
            }],
        }
    }

    #[test]
    fn netstat_parses() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops Other\nTcpExt: 1 2 3 4\nIpExt: A\nIpExt: 1\n";
        assert_eq!(
            parse_tcpext(text),
            vec![
                ("SyncookiesSent".to_string(), 1),
                ("ListenOverflows".to_string(), 2),
                ("ListenDrops".to_string(), 3)
            ]
        );
    }

    #[test]
    fn time_wait_pressure_warns_then_errors_once_each() {
        let s = sys("40000 40099");
        let mut w = NetnsWatch::default();
        let mut out = Vec::new();
        w.check(&sample(0, 40, &[]), &s, &mut out);
        assert!(out.is_empty());
        w.check(&sample(1, 60, &[]), &s, &mut out);
        w.check(&sample(2, 70, &[]), &s, &mut out);
        w.check(&sample(3, 100, &[]), &s, &mut out);
        w.check(&sample(4, 100, &[]), &s, &mut out);
        let levels: Vec<_> = out.iter().map(|f| f.diagnosis.severity).collect();
        assert_eq!(levels, [Severity::Warning, Severity::Error]);
        let d = &out[1].diagnosis;
        assert_eq!(
            d.sysctl[0],
            (sc::LOCAL_PORT_RANGE, "40000 40099".to_string())
        );
        assert!(d.message.contains("EADDRNOTAVAIL"), "{}", d.message);
        assert!(d.message.contains("tcp_tw_reuse=0"), "{}", d.message);
    }

    #[test]
    fn counters_report_deltas_rate_limited() {
        let s = sys("40000 40099");
        let mut w = NetnsWatch::default();
        let mut out = Vec::new();
        let ext = |o, tw| {
            [
                ("ListenOverflows", o),
                ("ListenDrops", o),
                ("TCPTimeWaitOverflow", tw),
            ]
        };
        w.check(&sample(0, 0, &ext(5, 0)), &s, &mut out);
        assert!(out.is_empty(), "the first sample is the baseline");
        w.check(&sample(1, 0, &ext(8, 4)), &s, &mut out);
        assert_eq!(out.len(), 2);
        let listen = out
            .iter()
            .find(|f| f.diagnosis.rule == "listen_overflow")
            .unwrap();
        assert!(
            listen
                .diagnosis
                .observed
                .contains(&("ListenOverflows", 3u64.into()))
        );
        assert!(
            listen.diagnosis.message.contains("9527 (2/1 waiting"),
            "{}",
            listen.diagnosis.message
        );
        // Within the repeat interval nothing more; after it, the accumulated delta.
        w.check(&sample(5, 0, &ext(9, 4)), &s, &mut out);
        assert_eq!(out.len(), 2);
        w.check(&sample(12, 0, &ext(12, 4)), &s, &mut out);
        assert_eq!(out.len(), 3);
        assert!(
            out[2]
                .diagnosis
                .observed
                .contains(&("ListenOverflows", 4u64.into()))
        );
    }
}
