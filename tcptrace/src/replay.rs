//! `tcptrace replay FILE`: feeds a recorded event stream through the same pipeline as live
//! tracing: JSON lines (`--events --format json`) or a binary recording (`--format raw`, whose
//! kernel records go through the live decoder), read by `tcptrace_core::wire::reader`. The
//! recording host's wall clock, reset reason names and namespace facts come from the stream.
//! A damaged stream is replayed up to the damage, then the damage is one error line.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use anyhow::{Context as _, anyhow, bail};
use tcptrace_core::{
    clock::WallClock,
    event::Event,
    wire::{
        Cold, Line, Parsed,
        reader::{Item, ReadError, Reader},
    },
};

use crate::{pipeline::Pipeline, stats::Stats};

/// A loss report larger than this cannot come from a kernel (it exceeds what any ring buffer
/// sees in a reporting interval): the recording is damaged.
const MAX_LOST_PER_LINE: u64 = u32::MAX as u64;

/// Where the stream is, for applying its items in order.
struct Replayer<'p, 's, 'f> {
    pipeline: &'p mut Pipeline<'s, 'f>,
    have_clock: bool,
    started: bool,
    last_ts: u64,
    /// When the live loop would tick next (once a second of the recording's time).
    next_tick: u64,
}

/// The live loop's tick period, replayed on the recording's clock.
const TICK_NS: u64 = 1_000_000_000;

impl Replayer<'_, '_, '_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        match item {
            Item::Parsed(p) => self.parsed(p),
            Item::Record(ev) => Ok(self.event(&ev)?),
            Item::Context(ctx) => {
                self.pipeline.set_clock(WallClock {
                    offset_ns: i128::from(ctx.clock_offset_ns),
                });
                self.have_clock = true;
                for (code, reason) in &ctx.reset_reasons {
                    self.pipeline.learn_reason(*code, reason);
                }
                Ok(())
            }
        }
    }

    fn parsed(&mut self, parsed: Parsed) -> anyhow::Result<()> {
        if let Some(off) = parsed.clock_offset_ns {
            self.pipeline.set_clock(WallClock { offset_ns: off });
            self.have_clock = true;
        }
        match parsed.line {
            Line::Event { event, reason } => {
                if let Some((code, name)) = &reason {
                    self.pipeline.learn_reason(*code, name);
                }
                self.event(&event)?;
            }
            Line::Cold(cold) => self.cold(cold)?,
            Line::Other => {}
        }
        Ok(())
    }

    /// The output starts with the first item that has a time (the recording's header).
    fn start(&mut self, ts_ns: u64) -> io::Result<()> {
        if !self.started {
            self.started = true;
            self.pipeline.start(ts_ns)?;
        }
        Ok(())
    }

    fn to(&mut self, ts_ns: u64) -> io::Result<()> {
        self.start(ts_ns)?;
        if ts_ns > self.last_ts {
            self.pipeline.advance(ts_ns)?;
            self.last_ts = ts_ns;
        }
        if ts_ns >= self.next_tick {
            self.pipeline.tick(ts_ns)?;
            self.next_tick = ts_ns.saturating_add(TICK_NS);
        }
        Ok(())
    }

    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.to(ev.ts_ns)?;
        self.pipeline.feed(ev)
    }

    fn cold(&mut self, cold: Cold) -> anyhow::Result<()> {
        match cold {
            Cold::Stream(h) => self.start(h.ts_ns)?,
            Cold::Lost(l) => {
                if l.count > MAX_LOST_PER_LINE {
                    bail!("a loss of {} events in one report is not credible", l.count);
                }
                self.start(l.ts_ns)?;
                self.pipeline.lost(l.ts_ns, l.count, l.cause)?;
            }
            Cold::Sysctl(s) => {
                self.start(s.ts_ns)?;
                self.pipeline.set_sysctls(s.ts_ns, s.netns, s.sysctls())?;
            }
            Cold::Interfaces(i) => {
                self.start(i.ts_ns)?;
                self.pipeline.set_interfaces(i.ts_ns, i.netns, &i.mtus())?;
            }
            Cold::NetnsSample(s) => {
                self.to(s.ts_ns)?;
                self.pipeline.sample(&s.sample())?;
            }
            Cold::Cgroup(c) => {
                self.start(c.ts_ns)?;
                self.pipeline.learn_cgroup(c.ts_ns, c.id, &c.path)?;
            }
            Cold::Netns(n) => {
                self.start(n.ts_ns)?;
                self.pipeline.learn_netns_name(n.ts_ns, n.netns, &n.name)?;
            }
            Cold::Log(_) | Cold::SysctlReport(_) | Cold::Summary(_) => {}
        }
        Ok(())
    }
}

/// `FILE:LINE: what` for JSON lines, `FILE: what` for binary recordings.
fn located(name: &str, e: ReadError) -> anyhow::Error {
    if e.at_line() {
        anyhow!("{name}:{e}")
    } else {
        anyhow!("{name}: {e}")
    }
}

/// Replays `path` ("-" for stdin) into `pipeline`. A damaged stream is replayed up to the
/// damage: the counters come back with the error that names it.
pub fn replay(
    path: &Path,
    pipeline: &mut Pipeline,
) -> anyhow::Result<(Stats, Option<anyhow::Error>)> {
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock()))
    } else {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let name = path.display().to_string();
    let mut reader = Reader::new(input).map_err(|e| located(&name, e))?;
    let mut r = Replayer {
        pipeline,
        have_clock: false,
        started: false,
        last_ts: 0,
        next_tick: 0,
    };
    let damage = loop {
        match reader.next_item(!r.have_clock) {
            Ok(Some(item)) => {
                if let Err(e) = r.item(item) {
                    // The item was read; what it said could not be applied.
                    break Some(e.context(format!("{name}{}", reader.position())));
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(located(&name, e)),
        }
    };
    let last = r.last_ts;
    r.start(last)?;
    let stats = r.pipeline.finish(last)?;
    Ok((stats, damage))
}
