//! The one path from decoded events to the sink, shared by live tracing and `replay`: in events
//! mode every event is printed; in lifecycle mode events feed the connection table and each
//! finished connection that passes the filters is diagnosed and printed. Namespace facts
//! (sysctls, periodic samples) go to the rules and, in events mode, into the stream so a
//! recording can be diagnosed again.
use std::{collections::HashMap, io};

use tcptrace_core::{
    diagnose::{
        self, Diagnosis, Inputs, Severity,
        netns::{NetnsFinding, NetnsSample, NetnsWatch},
    },
    event::Event,
    lifecycle::{Conn, ConnTable, TableConfig},
    state_clock::StateClock,
    sysctl::Sysctls,
    tcp::TcpState,
};

use crate::{sink::Sink, stats::Stats};

/// Sockets whose last transition time is remembered for `prev_ms`.
const STATE_CLOCK_CAPACITY: usize = 1 << 20;

/// What is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every event as it happens.
    Events,
    /// One record per finished connection.
    Lifecycle,
}

/// Which connection records are printed.
#[derive(Clone, Debug, Default)]
pub struct ConnFilter {
    /// Keep connections that visited any of these states (empty: all).
    pub states: Vec<TcpState>,
    pub min_duration_ns: Option<u64>,
    /// Keep connections in these namespaces (empty: all).
    pub netns: Vec<u32>,
    /// Keep connections owned by this process.
    pub owner_pid: Option<u32>,
}

impl ConnFilter {
    pub fn keep(&self, c: &Conn) -> bool {
        let visited =
            |s: TcpState| c.visited(s) || c.cold().time_wait.is_some_and(|(tw, _)| tw == s);
        (self.states.is_empty() || self.states.iter().any(|s| visited(*s)))
            && self
                .min_duration_ns
                .is_none_or(|min| c.duration_ns().is_some_and(|d| d >= min))
            && (self.netns.is_empty() || c.netns.is_some_and(|ns| self.netns.contains(&ns)))
            && self
                .owner_pid
                .is_none_or(|pid| c.owner.is_some_and(|o| o.pid == pid))
    }
}

pub struct Pipeline<'s> {
    mode: Mode,
    pub table: ConnTable,
    clock: StateClock,
    pub stats: Stats,
    filter: ConnFilter,
    sink: &'s mut dyn Sink,
    done: Vec<Conn>,
    /// Findings below this are not produced (None: no diagnosis at all).
    min_severity: Option<Severity>,
    /// Each namespace's sysctls, as last read.
    sysctls: HashMap<u32, Sysctls>,
    /// Assumed for namespaces not read (yet).
    fallback: Sysctls,
    watches: HashMap<u32, NetnsWatch>,
    /// Interface MTU by (netns, local address), when the caller knows it.
    pub mtus: HashMap<(u32, std::net::IpAddr), u32>,
    diags: Vec<Diagnosis>,
    findings: Vec<NetnsFinding>,
}

impl<'s> Pipeline<'s> {
    pub fn new(mode: Mode, table: TableConfig, filter: ConnFilter, sink: &'s mut dyn Sink) -> Self {
        Self {
            mode,
            table: ConnTable::new(table),
            clock: StateClock::new(if mode == Mode::Events {
                STATE_CLOCK_CAPACITY
            } else {
                1
            }),
            stats: Stats::default(),
            filter,
            sink,
            done: Vec::new(),
            min_severity: Some(Severity::Warning),
            sysctls: HashMap::new(),
            fallback: Sysctls::defaults(None),
            watches: HashMap::new(),
            mtus: HashMap::new(),
            diags: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// Which findings to produce (None: none).
    pub fn set_min_severity(&mut self, min: Option<Severity>) {
        self.min_severity = min;
    }

    /// The kernel's HZ, for namespaces whose sysctls were not read.
    pub fn set_hz(&mut self, hz: Option<u32>) {
        self.fallback.hz = hz;
    }

    /// A namespace's sysctls were read at `ts_ns`; recorded in events mode.
    pub fn set_sysctls(&mut self, ts_ns: u64, netns: u32, sysctls: Sysctls) -> io::Result<()> {
        if self.mode == Mode::Events {
            self.sink.sysctl(ts_ns, netns, &sysctls)?;
        }
        self.sysctls.insert(netns, sysctls);
        Ok(())
    }

    /// A periodic look at a namespace: recorded in events mode, judged by the namespace rules.
    pub fn sample(&mut self, s: &NetnsSample) -> io::Result<()> {
        if self.mode == Mode::Events {
            self.sink.sample(s)?;
        }
        if self.min_severity.is_none()
            || (!self.filter.netns.is_empty() && !self.filter.netns.contains(&s.netns))
        {
            return Ok(());
        }
        let sys = self.sysctls.get(&s.netns).unwrap_or(&self.fallback);
        self.watches
            .entry(s.netns)
            .or_default()
            .check(s, sys, &mut self.findings);
        for f in self.findings.drain(..) {
            if self.min_severity.is_some_and(|m| f.diagnosis.severity >= m) {
                self.stats.findings += 1;
                self.sink.finding(&f)?;
            }
        }
        Ok(())
    }

    /// A kernel record as it came, before [`Pipeline::feed`] gets it decoded.
    pub fn record(
        &mut self,
        raw: &[u8],
        layout: &tcptrace_core::snapshot::SnapLayout,
    ) -> io::Result<()> {
        self.sink.record(raw, layout)
    }

    pub fn feed(&mut self, ev: &Event) -> io::Result<()> {
        self.stats.count(ev);
        match self.mode {
            Mode::Events => {
                let prev = self.clock.observe(ev);
                self.sink.event(ev, prev)
            }
            Mode::Lifecycle => {
                self.table.process(ev, &mut self.done);
                self.emit()
            }
        }
    }

    /// Lets closed connections whose trailing facts are in go out.
    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        self.table.advance(now_ns, &mut self.done);
        self.emit()
    }

    /// Tracing stops: every tracked connection is printed.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        self.table.finish_all(now_ns, &mut self.done);
        self.emit()?;
        self.stats.table = self.table.stats;
        self.sink.flush()
    }

    /// A reset reason's name: for printing, and to know which resets are aborts in `close()`.
    pub fn learn_reason(&mut self, code: u32, name: &str) {
        self.table.learn_reason(code, name);
        self.sink
            .ctx_mut()
            .reset_reasons
            .insert(code, name.to_string());
    }

    /// A cgroup id's path under the cgroup2 mount (recorded in events mode, like sysctls).
    pub fn learn_cgroup(&mut self, ts_ns: u64, id: u64, path: &str) -> io::Result<()> {
        if self.sink.ctx_mut().cgroups.learn(id, path) && self.mode == Mode::Events {
            self.sink.cgroup(ts_ns, id)?;
        }
        Ok(())
    }

    /// The wall clock records are printed in (replay takes the recording host's).
    pub fn set_clock(&mut self, clock: tcptrace_core::clock::WallClock) {
        self.sink.ctx_mut().clock = clock;
    }

    pub fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()> {
        self.sink.lost(ts_ns, count)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stats.table = self.table.stats;
        self.sink.flush()
    }

    fn emit(&mut self) -> io::Result<()> {
        for c in self.done.drain(..) {
            if !self.filter.keep(&c) {
                continue;
            }
            self.diags.clear();
            if let Some(min) = self.min_severity {
                let netns = c.netns.unwrap_or(0);
                // Reason names live in the sink's rendering context (learned once, shared).
                let ctx = self.sink.ctx_mut();
                let inp = Inputs {
                    sys: self.sysctls.get(&netns).unwrap_or(&self.fallback),
                    reset_reason: c.cold().reset_reason.and_then(|r| ctx.reason_name(r)),
                    mtu: self.mtus.get(&(netns, c.laddr)).copied(),
                };
                diagnose::diagnose(&c, &inp, min, &mut self.diags);
                self.stats.diagnosed += u64::from(!self.diags.is_empty());
            }
            self.stats.conns_printed += 1;
            self.sink.conn(&c, &self.diags)?;
        }
        Ok(())
    }
}
