//! `--events --format raw`: a binary recording for `replay` (format in
//! `tcptrace_core::wire::raw`). Kernel records are written as the ring buffer held them;
//! userspace facts, namespace facts and losses as the JSON lines `--format json` would print.
use std::io;

use tcptrace_core::{
    context::Context,
    event::{Event, EventKind},
    snapshot::SnapLayout,
    wire::{
        self, Cold, LostCause, LostLine,
        raw::{MAGIC, RawContext, Tag, push_frame},
    },
};

use super::{Fact, Interest, Out, OutStats, Sink};
use crate::stats::Stats;

pub struct RawSink {
    out: Out,
    /// The magic is written (at the start of each file).
    started: bool,
    /// The context frame is written; it needs the snapshot layout of the first record.
    layout: Option<SnapLayout>,
    line: Vec<u8>,
}

impl RawSink {
    pub fn new(out: Out) -> Self {
        Self {
            out,
            started: false,
            layout: None,
            line: Vec::with_capacity(1024),
        }
    }

    fn start_file(&mut self) {
        if !self.started {
            self.out.essential();
            self.out.buf.extend_from_slice(MAGIC);
            self.started = true;
        }
    }

    /// Frames the JSON line left in `self.line`.
    fn json_frame(&mut self) -> io::Result<()> {
        self.start_file();
        push_frame(&mut self.out.buf, Tag::Json, &self.line);
        self.line.clear();
        self.out.end_line()
    }

    fn cold(&mut self, line: &Cold) -> io::Result<()> {
        wire::write_cold(&mut self.line, line);
        self.json_frame()
    }
}

/// Whether an event came from a kernel record (already recorded raw).
fn from_kernel(ev: &Event) -> bool {
    !matches!(
        ev.kind,
        EventKind::TimeWait { .. } | EventKind::RequestGone | EventKind::Existing { .. }
    )
}

impl Sink for RawSink {
    fn interest(&self) -> Interest {
        Interest::EVENTS
    }

    fn record(&mut self, ctx: &Context, raw: &[u8], layout: &SnapLayout) -> io::Result<()> {
        self.start_file();
        if self.layout.is_none() {
            RawContext::of(ctx, layout).write(&mut self.line);
            push_frame(&mut self.out.buf, Tag::Context, &self.line);
            self.line.clear();
            self.layout = Some(*layout);
        }
        push_frame(&mut self.out.buf, Tag::Record, raw);
        self.out.end_line()
    }

    fn event(&mut self, ctx: &Context, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        if from_kernel(ev) {
            return Ok(());
        }
        wire::event::write(&mut self.line, ctx, ev, prev_ns);
        self.json_frame()
    }

    fn fact(&mut self, ctx: &Context, fact: &Fact) -> io::Result<()> {
        match fact.line(ctx) {
            Some(line) => self.cold(&line),
            None => Ok(()),
        }
    }

    fn lost(&mut self, ctx: &Context, ts_ns: u64, count: u64, cause: LostCause) -> io::Result<()> {
        self.cold(&Cold::Lost(LostLine::new(ctx, ts_ns, count, cause)))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.start_file();
        self.out.flush()
    }

    fn reopen(&mut self, ctx: &Context, _now_ns: u64) -> io::Result<()> {
        self.out.reopen()?;
        // The new file is a recording of its own: magic, then the context before its first
        // record.
        self.started = false;
        if let Some(layout) = self.layout.take() {
            self.start_file();
            RawContext::of(ctx, &layout).write(&mut self.line);
            push_frame(&mut self.out.buf, Tag::Context, &self.line);
            self.line.clear();
            self.layout = Some(layout);
        }
        Ok(())
    }

    fn finish(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        self.start_file();
        self.out.close()
    }

    fn out_stats(&self) -> OutStats {
        self.out.stats()
    }
}
