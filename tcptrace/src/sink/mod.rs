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
    wire::{CgroupLine, Cold, InterfacesLine, LostCause, SampleLine, SysctlLine},
};

pub use escape::push_escaped;
pub use json::JsonSink;
pub use out::{Backpressure, Out, OutStats};
pub use raw::RawSink;
pub use text::TextSink;
pub use writer::Destination;

use crate::{
    flags::{Config, Format},
    pipeline::Mode,
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

/// Several sinks fed from one pass, each getting what its [`Interest`] asks for.
#[derive(Default)]
pub struct Fanout<'a> {
    sinks: Vec<(Interest, Box<dyn Sink + 'a>)>,
}

impl<'a> Fanout<'a> {
    pub fn push(&mut self, sink: Box<dyn Sink + 'a>) {
        self.sinks.push((sink.interest(), sink));
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        for (_, s) in &mut self.sinks {
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
            .fold(Interest::default(), |a, (i, _)| a.or(*i))
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
        for (i, s) in &mut self.sinks {
            if i.events {
                s.event(ctx, ev, prev_ns)?;
            }
        }
        Ok(())
    }
    fn fact(&mut self, ctx: &Context, fact: &Fact) -> io::Result<()> {
        for (i, s) in &mut self.sinks {
            if i.events {
                s.fact(ctx, fact)?;
            }
        }
        Ok(())
    }
    #[inline]
    fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        for (i, s) in &mut self.sinks {
            if i.conns {
                s.conn(ctx, c, diagnoses)?;
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
        for (_, s) in &mut self.sinks {
            if let Err(e) = s.finish(ctx, now_ns, stats) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
    fn out_stats(&self) -> OutStats {
        self.sinks
            .iter()
            .fold(OutStats::default(), |a, (_, s)| a.add(s.out_stats()))
    }
}

/// The output sink a configuration asks for, writing to `dest` (none for `--format none`).
fn output(
    cfg: &Config,
    dest: Destination,
    policy: Backpressure,
) -> io::Result<Option<Box<dyn Sink>>> {
    if cfg.format == Format::None {
        return Ok(None);
    }
    let out = Out::open(dest, policy)?;
    let mode = cfg.mode;
    Ok(Some(match cfg.format {
        Format::Json => Box::new(JsonSink::new(out, mode)),
        Format::Raw => Box::new(RawSink::new(out)),
        Format::None | Format::Text => {
            let width = if cfg.filter.family == tcptrace_common::AF_INET {
                15
            } else {
                39
            };
            let header = cfg.header && mode == Mode::Events;
            Box::new(TextSink::new(out, mode, width, header))
        }
    }))
}

/// Every sink `cfg` asks for, behind one fan-out: the output format first. Live tracing
/// drops output rather than stall when the reader does not keep up; `replay` waits.
pub fn build(cfg: &Config, policy: Backpressure) -> io::Result<Fanout<'static>> {
    let mut sinks = Fanout::default();
    if let Some(out) = output(cfg, Destination::from_config(cfg), policy)? {
        sinks.push(out);
    }
    metrics::add(cfg, &mut sinks)?;
    Ok(sinks)
}
