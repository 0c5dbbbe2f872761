//! Sinks: where the pipeline's output goes. Every sink sees the same pass — kernel records,
//! events, recorded facts, connection records with their diagnoses, findings, losses — with
//! the pipeline's [`Context`], and says which of the costly parts it wants ([`Interest`]).
//! A [`Fanout`] feeds several at once (the output format plus metrics, a summary, the lab's
//! checker); [`build`] wires the ones a configuration asks for.
mod escape;
mod json;
pub mod metrics;
mod out;
mod raw;
mod summary;
mod text;
mod text_conn;
mod writer;

use std::{io, net::IpAddr};

use tcptrace_core::{
    context::Context,
    diagnose::{
        Diagnosis,
        netns::{NetnsFinding, NetnsSample},
    },
    event::Event,
    lifecycle::Conn,
    snapshot::SnapLayout,
    sysctl::Sysctls,
    wire::{CgroupLine, Cold, InterfacesLine, LostCause, NetnsLine, SampleLine, SysctlLine},
};

pub use escape::push_escaped;
pub use json::JsonSink;
pub use out::{Backpressure, Out, OutStats};
pub use raw::RawSink;
pub use text::TextSink;
pub use text_conn::count;
pub use writer::Destination;

use crate::{
    flags::{Config, Format},
    pipeline::Mode,
    select::Select,
    stats::Stats,
};

/// Which of the pipeline's costly products a sink consumes: every event (and the facts a
/// recording needs), each state change's time in its old state (a clock of every socket's last
/// transition), and/or finished connection records (the connection table runs only when some
/// sink wants them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub events: bool,
    pub conns: bool,
    /// `prev_ns` of state changes (with `events`).
    pub timing: bool,
}

impl Interest {
    pub const EVENTS: Self = Self {
        events: true,
        conns: false,
        timing: true,
    };
    pub const CONNS: Self = Self {
        events: false,
        conns: true,
        timing: false,
    };

    pub fn or(self, other: Self) -> Self {
        Self {
            events: self.events || other.events,
            conns: self.conns || other.conns,
            timing: self.timing || other.timing,
        }
    }
}

/// A recorded fact about a namespace: what the rules judge with, so a recording carries it.
#[derive(Clone, Copy, Debug)]
pub enum Fact<'a> {
    /// Its sysctls as read at `ts_ns`.
    Sysctls {
        ts_ns: u64,
        netns: u32,
        sysctls: &'a Sysctls,
    },
    /// Its addresses and their interface MTUs, read with the sysctls.
    Interfaces {
        ts_ns: u64,
        netns: u32,
        mtus: &'a [(IpAddr, u32)],
    },
    /// A periodic look at its counters and queues.
    Sample(&'a NetnsSample),
    /// What cgroup `id`'s path is (in the context by now).
    Cgroup { ts_ns: u64, id: u64 },
    /// What namespace `netns` is called (in the context by now).
    NetnsName { ts_ns: u64, netns: u32 },
}

impl Fact<'_> {
    /// The line a recording keeps of it.
    pub fn line(&self, ctx: &Context) -> Option<Cold> {
        Some(match *self {
            Fact::Sysctls {
                ts_ns,
                netns,
                sysctls,
            } => Cold::Sysctl(SysctlLine::new(ctx, ts_ns, netns, sysctls)),
            Fact::Interfaces { ts_ns, netns, mtus } => {
                Cold::Interfaces(InterfacesLine::new(ctx, ts_ns, netns, mtus))
            }
            Fact::Sample(s) => Cold::NetnsSample(SampleLine::new(ctx, s)),
            Fact::Cgroup { ts_ns, id } => Cold::Cgroup(CgroupLine::new(ctx, ts_ns, id)?),
            Fact::NetnsName { ts_ns, netns } => Cold::Netns(NetnsLine::new(ctx, ts_ns, netns)?),
        })
    }
}

/// A consumer of the pipeline's output. Every method but `interest` has a do-nothing default:
/// a sink implements what it uses.
pub trait Sink {
    fn interest(&self) -> Interest;
    /// The stream begins (a JSON stream writes its header).
    fn start(&mut self, _ctx: &Context, _ts_ns: u64) -> io::Result<()> {
        Ok(())
    }
    /// A kernel record before decoding (only a recording keeps it).
    fn record(&mut self, _ctx: &Context, _raw: &[u8], _layout: &SnapLayout) -> io::Result<()> {
        Ok(())
    }
    /// One event (with [`Interest::events`]); `prev_ns` is the time spent in the old state of
    /// a state change, when known.
    fn event(&mut self, _ctx: &Context, _ev: &Event, _prev_ns: Option<u64>) -> io::Result<()> {
        Ok(())
    }
    /// A namespace fact (with [`Interest::events`]: recordings keep them for `replay`).
    fn fact(&mut self, _ctx: &Context, _fact: &Fact) -> io::Result<()> {
        Ok(())
    }
    /// One finished connection and what explains it (with [`Interest::conns`]).
    fn conn(&mut self, _ctx: &Context, _c: &Conn, _diagnoses: &[Diagnosis]) -> io::Result<()> {
        Ok(())
    }
    /// A namespace-wide finding.
    fn finding(&mut self, _ctx: &Context, _f: &NetnsFinding) -> io::Result<()> {
        Ok(())
    }
    /// `count` kernel events were lost since the last report.
    fn lost(
        &mut self,
        _ctx: &Context,
        _ts_ns: u64,
        _count: u64,
        _cause: LostCause,
    ) -> io::Result<()> {
        Ok(())
    }
    /// About once a second while tracing, with the counters so far.
    fn tick(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        Ok(())
    }
    /// Pushes buffered output to its destination (end of a batch).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The destination is to be reopened (log rotation): what follows starts a new file,
    /// with its own header.
    fn reopen(&mut self, _ctx: &Context, _now_ns: u64) -> io::Result<()> {
        Ok(())
    }
    /// The stream ends: last words, then everything written out.
    fn finish(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        self.flush()
    }
    /// What the sink's output could not deliver (a stalled reader, a full disk).
    fn out_stats(&self) -> OutStats {
        OutStats::default()
    }
}

/// Several sinks fed from one pass, each getting what its [`Interest`] asks for, and the
/// connection records its [`Select`] keeps.
#[derive(Default)]
pub struct Fanout<'a> {
    sinks: Vec<(Interest, Select, Box<dyn Sink + 'a>)>,
    /// Records the first sink (the output) did not print because of its selection.
    withheld: u64,
}

impl<'a> Fanout<'a> {
    pub fn push(&mut self, sink: Box<dyn Sink + 'a>) {
        self.push_selected(sink, Select::default());
    }

    /// Each of `sinks`, in order.
    pub fn extend(&mut self, sinks: impl IntoIterator<Item = Box<dyn Sink + 'a>>) {
        for s in sinks {
            self.push(s);
        }
    }

    /// A sink that gets only the connection records `select` keeps.
    pub fn push_selected(&mut self, sink: Box<dyn Sink + 'a>, select: Select) {
        self.sinks.push((sink.interest(), select, sink));
    }

    /// Connection records the output left out (`--problems`, `--end`, `--diagnosed`).
    pub fn withheld(&self) -> u64 {
        self.withheld
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        for (_, _, s) in &mut self.sinks {
            f(s.as_mut())?;
        }
        Ok(())
    }
}

impl Sink for Fanout<'_> {
    #[inline]
    fn interest(&self) -> Interest {
        self.sinks
            .iter()
            .fold(Interest::default(), |a, (i, _, _)| a.or(*i))
    }
    fn start(&mut self, ctx: &Context, ts_ns: u64) -> io::Result<()> {
        self.each(|s| s.start(ctx, ts_ns))
    }
    #[inline]
    fn record(&mut self, ctx: &Context, raw: &[u8], layout: &SnapLayout) -> io::Result<()> {
        self.each(|s| s.record(ctx, raw, layout))
    }
    #[inline]
    fn event(&mut self, ctx: &Context, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        for (i, _, s) in &mut self.sinks {
            if i.events {
                s.event(ctx, ev, prev_ns)?;
            }
        }
        Ok(())
    }
    fn fact(&mut self, ctx: &Context, fact: &Fact) -> io::Result<()> {
        for (i, _, s) in &mut self.sinks {
            if i.events {
                s.fact(ctx, fact)?;
            }
        }
        Ok(())
    }
    #[inline]
    fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        for (n, (i, sel, s)) in self.sinks.iter_mut().enumerate() {
            if !i.conns {
                continue;
            }
            if sel.keep(c, diagnoses) {
                s.conn(ctx, c, diagnoses)?;
            } else if n == 0 {
                self.withheld += 1;
            }
        }
        Ok(())
    }
    fn finding(&mut self, ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        self.each(|s| s.finding(ctx, f))
    }
    fn lost(&mut self, ctx: &Context, ts_ns: u64, count: u64, cause: LostCause) -> io::Result<()> {
        self.each(|s| s.lost(ctx, ts_ns, count, cause))
    }
    fn tick(&mut self, ctx: &Context, now_ns: u64, stats: &Stats) -> io::Result<()> {
        // What a sink prints on the tick (a summary) comes after what the others printed.
        self.each(|s| s.flush())?;
        self.each(|s| s.tick(ctx, now_ns, stats))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }
    fn reopen(&mut self, ctx: &Context, now_ns: u64) -> io::Result<()> {
        self.each(|s| s.reopen(ctx, now_ns))
    }
    fn finish(&mut self, ctx: &Context, now_ns: u64, stats: &Stats) -> io::Result<()> {
        // Every sink gets its last words even if an earlier one fails.
        let mut first_err = None;
        for (_, _, s) in &mut self.sinks {
            if let Err(e) = s.finish(ctx, now_ns, stats) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
    fn out_stats(&self) -> OutStats {
        self.sinks
            .iter()
            .fold(OutStats::default(), |a, (_, _, s)| a.add(s.out_stats()))
    }
}

/// The output sink a configuration asks for, writing to `out`.
fn output(cfg: &Config, out: Out) -> Box<dyn Sink> {
    let mode = cfg.mode;
    match cfg.format {
        Format::Json => Box::new(JsonSink::new(out, mode)),
        Format::Raw => Box::new(RawSink::new(out)),
        // `--format none` has no output sink (`build`); it never gets here.
        Format::Text | Format::Line | Format::None => {
            let width = if cfg.filter.family == tcptrace_common::AF_INET {
                15
            } else {
                39
            };
            let header = cfg.header && mode == Mode::Events;
            Box::new(
                TextSink::new(out, mode, width, header)
                    .styled(cfg.colour, cfg.format == Format::Line),
            )
        }
    }
}

/// `--summary`: tables beside the output, into the same destination.
fn summary(cfg: &Config, out: &Out) -> Option<Box<dyn Sink>> {
    let every = cfg.summary?;
    // How late a record may come: its close grace and the wait for its timewait socket, and
    // a tick of the live loop.
    let settle = cfg.table.close_grace_ns + cfg.table.time_wait_wait_ns + 1_000_000_000;
    let json = cfg.format == Format::Json;
    let sink = summary::SummarySink::new(out.share(), json, cfg.colour, every, settle);
    Some(Box::new(sink))
}

/// Every sink `cfg` asks for, behind one fan-out: the output format first. Live tracing
/// drops output rather than stall when the reader does not keep up; `replay` waits.
pub fn build(cfg: &Config, policy: Backpressure) -> io::Result<Fanout<'static>> {
    let mut sinks = Fanout::default();
    if cfg.format != Format::None {
        let out = Out::open(Destination::from_config(cfg), policy)?;
        let summary = summary(cfg, &out);
        sinks.push_selected(output(cfg, out), cfg.select.clone());
        sinks.extend(summary);
    }
    metrics::add(cfg, &mut sinks)?;
    Ok(sinks)
}
