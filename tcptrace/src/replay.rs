//! `tcptrace replay FILE`: feeds a recorded event stream through the same pipeline as live
//! tracing: JSON lines (`--events --format json`) or a binary recording (`--format raw`, whose
//! kernel records go through the live decoder). The recording host's wall clock, reset reason
//! names and namespace facts come from the stream. A damaged stream is read up to the damage:
//! everything complete before it goes through the pipeline, then the damage is one error line.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use anyhow::{Context as _, anyhow, bail};
use tcptrace_core::{
    clock::WallClock,
    decode::decode,
    event::Event,
    snapshot::SnapLayout,
    wire::{
        Cold, Line, MAX_LINE, Parsed, parse_line,
        raw::{self, RawContext, Tag, read_frame},
    },
};

use crate::{pipeline::Pipeline, stats::Stats};

/// A loss report larger than this cannot come from a kernel (it exceeds what any ring buffer
/// sees in a reporting interval): the recording is damaged.
const MAX_LOST_PER_LINE: u64 = u32::MAX as u64;

/// Where the stream is, for applying its lines in order.
struct Replayer<'p, 's, 'f> {
    pipeline: &'p mut Pipeline<'s, 'f>,
    have_clock: bool,
    started: bool,
    last_ts: u64,
}

impl Replayer<'_, '_, '_> {
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

    /// The output starts with the first line that has a time (the recording's header).
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
            Cold::Log(_) | Cold::SysctlReport(_) => {}
        }
        Ok(())
    }
}

/// Replays `path` ("-" for stdin) into `pipeline`. A damaged stream is replayed up to the
/// damage: the counters come back with the error that names it.
pub fn replay(
    path: &Path,
    pipeline: &mut Pipeline,
) -> anyhow::Result<(Stats, Option<anyhow::Error>)> {
    let mut reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock()))
    } else {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let name = path.display().to_string();
    let mut r = Replayer {
        pipeline,
        have_clock: false,
        started: false,
        last_ts: 0,
    };
    let head = reader
        .fill_buf()
        .with_context(|| format!("reading {name}"))?;
    let read = match raw::is_recording(head) {
        Ok(true) => {
            reader.consume(raw::MAGIC.len());
            raw_frames(&mut reader, &mut r).with_context(|| name.clone())
        }
        Ok(false) => json_lines(&mut reader, &name, &mut r),
        Err(e) => Err(anyhow!("{name}: {e}")),
    };
    let last = r.last_ts;
    r.start(last)?;
    let stats = r.pipeline.finish(last)?;
    Ok((stats, read.err()))
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (without its newline). `Ok(None)`
/// at the end; `Ok(Some(false))` for a last line that has no newline.
fn bounded_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> anyhow::Result<Option<bool>> {
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((!buf.is_empty()).then_some(false));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            bail!("a line longer than {} bytes: not a recording", MAX_LINE);
        }
        buf.extend_from_slice(&chunk[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(Some(true));
        }
    }
}

/// Reads JSON lines; errors are `FILE:LINE: what`.
fn json_lines(reader: &mut dyn BufRead, name: &str, r: &mut Replayer) -> anyhow::Result<()> {
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        let complete = match bounded_line(reader, &mut line) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.context(format!("{name}:{}", n + 1))),
        };
        n += 1;
        let truncated =
            || anyhow!("{name}:{n}: the stream is truncated: its last line is incomplete");
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(_) if !complete => return Err(truncated()),
            Err(_) => bail!("{name}:{n}: not UTF-8"),
        };
        if text.is_empty() {
            continue;
        }
        match parse_line(text, !r.have_clock) {
            Ok(p) => r.parsed(p).with_context(|| format!("{name}:{n}"))?,
            Err(_) if !complete => return Err(truncated()),
            Err(e) => bail!("{name}:{n}: {e}"),
        }
    }
}

fn raw_frames(reader: &mut dyn BufRead, r: &mut Replayer) -> anyhow::Result<()> {
    let mut layout: Option<SnapLayout> = None;
    let mut payload = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        let tag = match read_frame(reader, &mut payload) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                bail!("recording is truncated at frame {n}")
            }
            Err(e) => bail!("frame {n}: {e}"),
        };
        r.frame(tag, &payload, &mut layout)
            .with_context(|| format!("frame {n}"))?;
    }
}

impl Replayer<'_, '_, '_> {
    /// One frame of a binary recording; kernel records need the context frame's layout.
    fn frame(
        &mut self,
        tag: Tag,
        payload: &[u8],
        layout: &mut Option<SnapLayout>,
    ) -> anyhow::Result<()> {
        match tag {
            Tag::Record => {
                let Some(snap) = layout.as_ref() else {
                    bail!("a kernel record before the recording's context");
                };
                self.event(&decode(payload, snap)?)?;
            }
            Tag::Json => {
                let parsed = parse_line(std::str::from_utf8(payload)?, !self.have_clock)?;
                self.parsed(parsed)?;
            }
            Tag::Context => {
                let ctx = RawContext::parse(std::str::from_utf8(payload)?)?;
                self.pipeline.set_clock(WallClock {
                    offset_ns: i128::from(ctx.clock_offset_ns),
                });
                self.have_clock = true;
                for (code, reason) in &ctx.reset_reasons {
                    self.pipeline.learn_reason(*code, reason);
                }
                *layout = Some(ctx.snap);
            }
        }
        Ok(())
    }
}
