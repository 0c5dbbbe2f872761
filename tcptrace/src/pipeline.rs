//! The one path from decoded events to the sinks, shared by live tracing and `replay`. The
//! pipeline owns the [`Context`] (clock, reset-reason names, recorded namespace facts) and the
//! counters; it feeds every event to the sinks that want events and to the connection table
//! when a sink wants records, diagnoses each finished connection that passes the filters
//! once, and judges namespace samples. Everything a rule uses reaches it as a recorded fact,
//! so a recording replays into the same output.
use std::{io, net::IpAddr};

use tcptrace_core::{
    FastMap as HashMap,
    clock::WallClock,
    context::Context,
    diagnose::{
        self, Diagnosis, Inputs, Severity,
        netns::{NetnsFinding, NetnsSample, NetnsWatch},
    },
    event::Event,
    lifecycle::{Conn, ConnTable, TableConfig},
    snapshot::SnapLayout,
    state_clock::StateClock,
    sysctl::Sysctls,
    tcp::TcpState,
    wire::LostCause,
};

use crate::{
    sink::{Fact, Fanout, Interest, Sink},
    stats::Stats,
};

/// Sockets whose last transition time is remembered for `prev_ms`.
const STATE_CLOCK_CAPACITY: usize = 1 << 20;

/// What the output shows.
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
            && self.netns_wanted(c.netns)
            && self
                .owner_pid
                .is_none_or(|pid| c.owner.is_some_and(|o| o.pid == pid))
    }

    fn netns_wanted(&self, netns: Option<u32>) -> bool {
        self.netns.is_empty() || netns.is_some_and(|ns| self.netns.contains(&ns))
    }
}

/// The rules' view of the namespaces: sysctls as last read, and a watch per namespace.
struct Judge {
    /// Findings below this are not produced (None: no diagnosis at all).
    min_severity: Option<Severity>,
    sysctls: HashMap<u32, Sysctls>,
    /// Assumed for namespaces not read (yet).
    fallback: Sysctls,
    watches: HashMap<u32, NetnsWatch>,
    diags: Vec<Diagnosis>,
    findings: Vec<NetnsFinding>,
}

pub struct Pipeline<'s, 'f> {
    ctx: Context,
    sink: &'s mut Fanout<'f>,
    interest: Interest,
    table: ConnTable,
    clock: StateClock,
    stats: Stats,
    filter: ConnFilter,
    done: Vec<Conn>,
    judge: Judge,
}

impl<'s, 'f> Pipeline<'s, 'f> {
    /// `min_severity` None: no diagnoses.
    pub fn new(
        table: TableConfig,
        filter: ConnFilter,
        min_severity: Option<Severity>,
        sink: &'s mut Fanout<'f>,
    ) -> Self {
        let interest = sink.interest();
        Self {
            ctx: Context::default(),
            sink,
            interest,
            table: ConnTable::new(table),
            clock: StateClock::new(if interest.timing {
                STATE_CLOCK_CAPACITY
            } else {
                1
            }),
            stats: Stats::default(),
            filter,
            done: Vec::new(),
            judge: Judge {
                min_severity,
                sysctls: HashMap::default(),
                fallback: Sysctls::defaults(None),
                watches: HashMap::default(),
                diags: Vec::new(),
                findings: Vec::new(),
            },
        }
    }

    pub fn table(&self) -> &ConnTable {
        &self.table
    }

    /// When `ev`'s socket last changed state (before `ev`), from the connection table or, with
    /// no sink wanting records, the events' state clock.
    pub fn last_change_ns(&self, ev: &Event) -> Option<u64> {
        if self.interest.conns {
            self.table.last_change_ns(ev)
        } else {
            self.clock.last(ev.sk)
        }
    }

    /// The wall clock records are printed in (replay takes the recording host's).
    pub fn set_clock(&mut self, clock: WallClock) {
        self.ctx.set_clock(clock);
    }

    /// A reset reason's name: for printing, and to know which resets are aborts in `close()`.
    pub fn learn_reason(&mut self, code: u32, name: &str) {
        self.table.learn_reason(code, name);
        self.ctx.learn_reason(code, name);
    }

    /// The kernel's HZ, for namespaces whose sysctls were not read.
    pub fn set_hz(&mut self, hz: Option<u32>) {
        self.judge.fallback.hz = hz;
    }

    /// Which sysctls the traced kernel has: namespaces whose sysctls were not read are
    /// judged with the defaults of those only (a knob a later kernel added is not assumed).
    pub fn set_kernel_knobs(&mut self, exists: impl Fn(&str) -> bool) {
        self.judge.fallback = Sysctls::defaults_present(self.judge.fallback.hz, exists);
    }

    /// The stream begins at `ts_ns`.
    pub fn start(&mut self, ts_ns: u64) -> io::Result<()> {
        self.sink.start(&self.ctx, ts_ns)
    }

    /// A kernel record as it came, before [`Pipeline::feed`] gets it decoded.
    pub fn record(&mut self, raw: &[u8], layout: &SnapLayout) -> io::Result<()> {
        self.sink.record(&self.ctx, raw, layout)
    }

    /// A kernel record that could not be decoded: counted, the first one reported.
    pub fn malformed(&mut self, why: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        if self.stats.malformed == 1 {
            log::warn!("skipping malformed record: {why}");
        }
    }

    pub fn feed(&mut self, ev: &Event) -> io::Result<()> {
        if ev.kind.is_empty_error_report() {
            // Kept in raw recordings (the kernel wrote it), shown and judged nowhere.
            self.stats.empty_error_reports += 1;
            return Ok(());
        }
        self.stats.count(ev);
        if self.interest.events {
            let prev = if self.interest.timing {
                self.clock.observe(ev)
            } else {
                None
            };
            self.sink.event(&self.ctx, ev, prev)?;
        }
        if self.interest.conns {
            self.table.process(ev, &mut self.done);
            self.emit()?;
        }
        Ok(())
    }

    /// Facts go to the sinks that keep the event stream.
    fn fact(&mut self, fact: &Fact) -> io::Result<()> {
        if self.interest.events {
            self.sink.fact(&self.ctx, fact)?;
        }
        Ok(())
    }

    /// Cgroup `id` is at `path` below the cgroup2 mount (resolved at `ts_ns`): recorded once.
    pub fn learn_cgroup(&mut self, ts_ns: u64, id: u64, path: &str) -> io::Result<()> {
        if self.ctx.learn_cgroup(id, path) {
            self.fact(&Fact::Cgroup { ts_ns, id })?;
        }
        Ok(())
    }

    /// Namespace `netns` is named `name` under /run/netns (found at `ts_ns`): recorded once.
    pub fn learn_netns_name(&mut self, ts_ns: u64, netns: u32, name: &str) -> io::Result<()> {
        if self.ctx.learn_netns_name(netns, name) {
            self.fact(&Fact::NetnsName { ts_ns, netns })?;
        }
        Ok(())
    }

    /// A namespace's sysctls were read at `ts_ns`.
    pub fn set_sysctls(&mut self, ts_ns: u64, netns: u32, sysctls: Sysctls) -> io::Result<()> {
        self.fact(&Fact::Sysctls {
            ts_ns,
            netns,
            sysctls: &sysctls,
        })?;
        self.judge.sysctls.insert(netns, sysctls);
        Ok(())
    }

    /// A namespace's addresses and interface MTUs were read at `ts_ns`.
    pub fn set_interfaces(
        &mut self,
        ts_ns: u64,
        netns: u32,
        mtus: &[(IpAddr, u32)],
    ) -> io::Result<()> {
        self.fact(&Fact::Interfaces { ts_ns, netns, mtus })?;
        self.ctx.learn_mtus(netns, mtus);
        Ok(())
    }

    /// A periodic look at a namespace: recorded, and judged by the namespace rules.
    pub fn sample(&mut self, s: &NetnsSample) -> io::Result<()> {
        self.fact(&Fact::Sample(s))?;
        let j = &mut self.judge;
        let Some(min) = j.min_severity else {
            return Ok(());
        };
        if !self.filter.netns_wanted(Some(s.netns)) {
            return Ok(());
        }
        let sys = j.sysctls.get(&s.netns).unwrap_or(&j.fallback);
        j.watches
            .entry(s.netns)
            .or_default()
            .check(s, sys, &mut j.findings);
        for f in j.findings.drain(..) {
            if f.diagnosis.severity >= min {
                self.stats.findings += 1;
                self.sink.finding(&self.ctx, &f)?;
            }
        }
        Ok(())
    }

    /// `count` kernel events of `cause` were lost (noticed at `ts_ns`): counted, recorded, and
    /// every connection open now is noted as possibly incomplete.
    pub fn lost(&mut self, ts_ns: u64, count: u64, cause: LostCause) -> io::Result<()> {
        self.stats.add_lost(cause, count);
        if self.interest.conns {
            self.table.lost();
        }
        self.sink.lost(&self.ctx, ts_ns, count, cause)
    }

    /// State changes the nested-run program caught for the main one, so far.
    pub fn set_nested_caught(&mut self, n: u64) {
        self.stats.nested_caught = n;
    }

    /// sock_diag look-ups skipped so far to stay within their budget.
    pub fn set_diag_skipped(&mut self, n: u64) {
        self.stats.diag_skipped = n;
    }

    /// Lets closed connections whose trailing facts are in go out.
    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        if self.interest.conns {
            self.table.advance(now_ns, &mut self.done);
            self.emit()?;
        }
        Ok(())
    }

    /// The periodic tick of a live run.
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        self.stats.table = self.table.stats;
        self.stats.tracked = self.table.len() as u64;
        self.stats.output = self.sink.out_stats();
        self.sink.tick(&self.ctx, now_ns, &self.stats)
    }

    /// The output is to be reopened (log rotation).
    pub fn reopen(&mut self, now_ns: u64) -> io::Result<()> {
        self.sink.reopen(&self.ctx, now_ns)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stats.table = self.table.stats;
        self.stats.conns_withheld = self.sink.withheld();
        self.sink.flush()
    }

    /// The stream ends: every tracked connection goes out, then the sinks finish.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<Stats> {
        let emitted = if self.interest.conns {
            self.table.finish_all(now_ns, &mut self.done);
            self.emit()
        } else {
            Ok(())
        };
        self.stats.table = self.table.stats;
        self.stats.conns_withheld = self.sink.withheld();
        let finished = self.sink.finish(&self.ctx, now_ns, &self.stats);
        self.stats.output = self.sink.out_stats();
        emitted.and(finished).map(|()| self.stats)
    }

    fn emit(&mut self) -> io::Result<()> {
        let j = &mut self.judge;
        for c in self.done.drain(..) {
            if !self.filter.keep(&c) {
                continue;
            }
            j.diags.clear();
            if let Some(min) = j.min_severity {
                let netns = c.netns.unwrap_or(0);
                let inp = Inputs {
                    sys: j.sysctls.get(&netns).unwrap_or(&j.fallback),
                    reset_reason: c.cold().reset_reason.and_then(|r| self.ctx.reason_name(r)),
                    mtu: self.ctx.mtu(netns, c.laddr),
                };
                diagnose::diagnose(&c, &inp, min, &mut j.diags);
                self.stats.diagnosed += u64::from(!j.diags.is_empty());
            }
            self.stats.conns_printed += 1;
            self.sink.conn(&self.ctx, &c, &j.diags)?;
        }
        Ok(())
    }
}
