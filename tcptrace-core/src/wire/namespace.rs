//! Namespace facts on the wire, recorded so `replay` diagnoses a recording exactly as the live
//! run did: `sysctl` (a namespace's TCP sysctls as read), `interfaces` (its addresses and their
//! interface MTUs) and `netns_sample` (the counters and queues the namespace rules judge). Cold
//! lines: one serde type each, for writing and reading.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ordered;
use crate::{
    context::Context,
    diagnose::netns::{Listener, NetnsSample},
    sysctl::{Source, Sysctls},
};

/// The RFC 3339 time of a monotonic stamp, as a string member.
pub(super) fn time_text(ctx: &Context, ts_ns: u64) -> String {
    let mut b = Vec::with_capacity(27);
    ctx.write_time(&mut b, ts_ns);
    String::from_utf8(b).unwrap_or_default()
}

/// `{"type":"sysctl",...}`: a namespace's sysctls when first seen and when re-read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SysctlLine {
    pub ts_ns: u64,
    pub time: String,
    pub netns: u32,
    /// The kernel's CONFIG_HZ, for per-socket jiffies values.
    pub hz: Option<u32>,
    /// `read`, or `defaults` when the namespace could not be read.
    pub source: String,
    /// Knob → value as the kernel prints it, in the knob table's order.
    #[serde(with = "ordered")]
    pub values: Vec<(String, String)>,
}

impl SysctlLine {
    pub fn new(ctx: &Context, ts_ns: u64, netns: u32, s: &Sysctls) -> Self {
        Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            netns,
            hz: s.hz,
            source: match s.source {
                Source::Read => "read",
                Source::Defaults => "defaults",
            }
            .to_string(),
            values: s
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn sysctls(&self) -> Sysctls {
        let mut s = Sysctls::from_read(
            self.values.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.hz,
        );
        if self.source == "defaults" {
            s.source = Source::Defaults;
        }
        s
    }
}

/// `{"type":"netns",...}`: a namespace's name (its entry under /run/netns), written when
/// tcptrace first sees the namespace, so `replay` shows the names the live run showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsLine {
    pub ts_ns: u64,
    pub time: String,
    pub netns: u32,
    pub name: String,
}

impl NetnsLine {
    /// The line for a namespace the context has a name for.
    pub fn new(ctx: &Context, ts_ns: u64, netns: u32) -> Option<Self> {
        Some(Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            netns,
            name: ctx.netns_name(netns)?.to_string(),
        })
    }
}

/// One local address and the MTU of the interface holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub addr: IpAddr,
    pub mtu: u32,
}

/// `{"type":"interfaces",...}`: a namespace's addresses and MTUs, read with its sysctls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfacesLine {
    pub ts_ns: u64,
    pub time: String,
    pub netns: u32,
    pub addrs: Vec<Interface>,
}

impl InterfacesLine {
    pub fn new(ctx: &Context, ts_ns: u64, netns: u32, mtus: &[(IpAddr, u32)]) -> Self {
        Self {
            ts_ns,
            time: time_text(ctx, ts_ns),
            netns,
            addrs: mtus
                .iter()
                .map(|(addr, mtu)| Interface {
                    addr: *addr,
                    mtu: *mtu,
                })
                .collect(),
        }
    }

    pub fn mtus(&self) -> Vec<(IpAddr, u32)> {
        self.addrs.iter().map(|i| (i.addr, i.mtu)).collect()
    }
}

/// TIME_WAIT sockets to one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    pub raddr: IpAddr,
    pub rport: u16,
    pub count: u64,
}

/// `{"type":"netns_sample",...}`: what the namespace rules judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    pub ts_ns: u64,
    #[serde(default)]
    pub time: String,
    pub netns: u32,
    #[serde(default, with = "ordered")]
    pub tcpext: Vec<(String, u64)>,
    #[serde(default)]
    pub time_wait_total: u64,
    #[serde(default)]
    pub time_wait_by_dest: Vec<Dest>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

impl SampleLine {
    pub fn new(ctx: &Context, s: &NetnsSample) -> Self {
        Self {
            ts_ns: s.ts_ns,
            time: time_text(ctx, s.ts_ns),
            netns: s.netns,
            tcpext: s.tcpext.clone(),
            time_wait_total: s.time_wait_total,
            time_wait_by_dest: s
                .time_wait_by_dest
                .iter()
                .map(|(raddr, rport, count)| Dest {
                    raddr: *raddr,
                    rport: *rport,
                    count: *count,
                })
                .collect(),
            listeners: s.listeners.clone(),
        }
    }

    pub fn sample(&self) -> NetnsSample {
        let mut tcpext = self.tcpext.clone();
        tcpext.sort();
        NetnsSample {
            netns: self.netns,
            ts_ns: self.ts_ns,
            tcpext,
            time_wait_total: self.time_wait_total,
            time_wait_by_dest: self
                .time_wait_by_dest
                .iter()
                .map(|d| (d.raddr, d.rport, d.count))
                .collect(),
            listeners: self.listeners.clone(),
        }
    }
}

/// One knob in a `sysctl_report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnobLine {
    pub name: String,
    /// Null when this kernel does not have the knob.
    pub value: Option<String>,
    pub meaning: String,
}

/// One implied budget in a `sysctl_report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetLine {
    pub key: String,
    pub ms: u64,
    pub text: String,
}

/// `{"type":"sysctl_report",...}`: what `tcptrace sysctl --format json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SysctlReport {
    pub netns: u32,
    pub hz: Option<u32>,
    pub sysctls: Vec<KnobLine>,
    pub budgets: Vec<BudgetLine>,
}

impl SysctlReport {
    pub fn new(netns: u32, s: &Sysctls) -> Self {
        Self {
            netns,
            hz: s.hz,
            sysctls: crate::sysctl::KNOBS
                .iter()
                .map(|k| KnobLine {
                    name: k.name.to_string(),
                    value: s.raw(k.name).map(str::to_string),
                    meaning: k.meaning.to_string(),
                })
                .collect(),
            budgets: crate::diagnose::budgets::budgets(s)
                .into_iter()
                .map(|b| BudgetLine {
                    key: b.key.to_string(),
                    ms: b.ms,
                    text: b.text,
                })
                .collect(),
        }
    }
}
