//! `tcptrace replay FILE`: feeds a recorded event stream through the same pipeline as live
//! tracing: JSON lines (`--events --format json`) or a binary recording (`--format raw`, whose
//! kernel records go through the live decoder). The recording host's wall clock and reset
//! reason names come from the stream.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use anyhow::{Context as _, bail};
use tcptrace_core::{
    clock::WallClock,
    decode::decode,
    event::Event,
    raw_stream::{MAGIC, Tag, read_frame},
    replay::{Line, Parsed, parse_context, parse_line},
    snapshot::SnapLayout,
};

use crate::{pipeline::Pipeline, stats::Stats};

/// Where the stream is, for applying its lines in order.
struct Replayer<'p, 's> {
    pipeline: &'p mut Pipeline<'s>,
    have_clock: bool,
    last_ts: u64,
}

impl Replayer<'_, '_> {
    fn parsed(&mut self, parsed: Parsed) -> io::Result<()> {
        if let Some(off) = parsed.clock_offset_ns {
            self.pipeline.set_clock(WallClock { offset_ns: off });
            self.have_clock = true;
        }
        if let Some((code, reason)) = &parsed.reason {
            self.pipeline.learn_reason(*code, reason);
        }
        self.line(parsed.line)
    }

    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if ev.ts_ns > self.last_ts {
            self.pipeline.advance(ev.ts_ns)?;
            self.last_ts = ev.ts_ns;
        }
        self.pipeline.feed(ev)
    }

    fn line(&mut self, line: Line) -> io::Result<()> {
        let p = &mut *self.pipeline;
        match line {
            Line::Event(ev) => self.event(&ev),
            Line::Lost { ts_ns, count } => {
                p.stats.lost += count;
                p.lost(ts_ns, count)
            }
            Line::Sysctl { netns, sysctls } => p.set_sysctls(self.last_ts, netns, sysctls),
            Line::Cgroup { ts_ns, id, path } => match path {
                Some(path) => p.learn_cgroup(ts_ns, id, &path),
                None => Ok(()),
            },
            Line::NetnsSample(sample) => {
                if sample.ts_ns > self.last_ts {
                    p.advance(sample.ts_ns)?;
                    self.last_ts = sample.ts_ns;
                }
                p.sample(&sample)
            }
            Line::Other => Ok(()),
        }
    }
}

/// Replays `path` ("-" for stdin) into `pipeline`; a malformed line is an error naming it.
pub fn replay(path: &Path, pipeline: &mut Pipeline) -> anyhow::Result<Stats> {
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
        last_ts: 0,
    };
    let head = reader
        .fill_buf()
        .with_context(|| format!("reading {name}"))?;
    if head.starts_with(MAGIC) {
        reader.consume(MAGIC.len());
        raw(&mut reader, &name, &mut r)?;
    } else if head.len() >= MAGIC.len() && head.starts_with(&MAGIC[..MAGIC.len() - 1]) {
        anyhow::bail!(
            "{name}: raw recording version {} is not supported (this tcptrace reads version {})",
            head[MAGIC.len() - 1],
            MAGIC[MAGIC.len() - 1]
        );
    } else {
        json_lines(&mut reader, &name, &mut r)?;
    }
    let last = r.last_ts;
    r.pipeline.finish(last)?;
    Ok(r.pipeline.stats)
}

fn json_lines(reader: &mut dyn BufRead, name: &str, r: &mut Replayer) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {name}"))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, !r.have_clock) {
            Ok(p) => r.parsed(p)?,
            Err(e) => bail!("{name}:{n}: {e}"),
        }
    }
}

fn raw(reader: &mut dyn BufRead, name: &str, r: &mut Replayer) -> anyhow::Result<()> {
    let mut layout: Option<SnapLayout> = None;
    let mut payload = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        let tag = match read_frame(reader, &mut payload) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(e) => bail!("{name}: frame {n}: {e}"),
        };
        r.frame(tag, &payload, &mut layout)
            .with_context(|| format!("{name}: frame {n}"))?;
    }
}

impl Replayer<'_, '_> {
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
                let ctx = parse_context(std::str::from_utf8(payload)?)?;
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
