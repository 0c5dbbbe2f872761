//! `tcptrace replay FILE`: feeds a recorded JSON event stream through the same pipeline as
//! live tracing. The recording host's wall clock and reset reason names come from the stream.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use anyhow::{Context as _, bail};
use tcptrace_core::{
    clock::WallClock,
    replay::{Line, parse_line},
};

use crate::{pipeline::Pipeline, stats::Stats};

/// Replays `path` ("-" for stdin) into `pipeline`; a malformed line is an error naming it.
pub fn replay(path: &Path, pipeline: &mut Pipeline) -> anyhow::Result<Stats> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock()))
    } else {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let name = path.display();
    let mut have_clock = false;
    let mut last_ts = 0u64;
    let mut line = String::new();
    let mut reader = reader;
    let mut n = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {name}"))?;
        if read == 0 {
            break;
        }
        n += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = match parse_line(text, !have_clock) {
            Ok(p) => p,
            Err(e) => bail!("{name}:{n}: {e}"),
        };
        if let Some(off) = parsed.clock_offset_ns {
            pipeline.set_clock(WallClock { offset_ns: off });
            have_clock = true;
        }
        if let Some((code, reason)) = &parsed.reason {
            pipeline.learn_reason(*code, reason);
        }
        match parsed.line {
            Line::Event(ev) => {
                if ev.ts_ns > last_ts {
                    pipeline.advance(ev.ts_ns)?;
                    last_ts = ev.ts_ns;
                }
                pipeline.feed(&ev)?;
            }
            Line::Lost { ts_ns, count } => {
                pipeline.stats.lost += count;
                pipeline.lost(ts_ns, count)?;
            }
            Line::Sysctl { netns, sysctls } => pipeline.set_sysctls(last_ts, netns, sysctls)?,
            Line::NetnsSample(sample) => {
                if sample.ts_ns > last_ts {
                    pipeline.advance(sample.ts_ns)?;
                    last_ts = sample.ts_ns;
                }
                pipeline.sample(&sample)?;
            }
            Line::Other => {}
        }
    }
    pipeline.finish(last_ts)?;
    Ok(pipeline.stats)
}
