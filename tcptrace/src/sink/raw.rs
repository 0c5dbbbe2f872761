//! `--events --format raw`: a binary recording for `replay` (format in
//! [`tcptrace_core::raw_stream`]). Kernel records are written as the ring buffer held them;
//! userspace facts, sysctls, samples and losses as the JSON lines `--format json` would print.
use std::io::{self, Write};

use tcptrace_core::{
    diagnose::{
        Diagnosis,
        netns::{NetnsFinding, NetnsSample},
    },
    event::{Event, EventKind},
    lifecycle::Conn,
    raw_stream::{MAGIC, Tag, push_frame},
    snapshot::SnapLayout,
    sysctl::Sysctls,
};

use super::{Out, RenderCtx, Sink, json, json_diag};

pub struct RawSink<W: Write> {
    out: Out<W>,
    ctx: RenderCtx,
    started: bool,
    context_written: bool,
    line: Vec<u8>,
}

impl<W: Write> RawSink<W> {
    pub fn new(out: Out<W>, ctx: RenderCtx) -> Self {
        Self {
            out,
            ctx,
            started: false,
            context_written: false,
            line: Vec::with_capacity(1024),
        }
    }

    fn start(&mut self) {
        if !self.started {
            self.out.buf.extend_from_slice(MAGIC);
            self.started = true;
        }
    }

    /// Frames the JSON line left in `self.line`.
    fn json_frame(&mut self) -> io::Result<()> {
        self.start();
        push_frame(&mut self.out.buf, Tag::Json, &self.line);
        self.line.clear();
        self.out.end_line()
    }

    fn context(&mut self, layout: &SnapLayout) {
        let mut reasons: Vec<(&u32, &String)> = self.ctx.reset_reasons.iter().collect();
        reasons.sort();
        let mut obj = b"{\"type\":\"raw_context\"".to_vec();
        json::num(&mut obj, "clock_offset_ns", self.ctx.clock.offset_ns as i64);
        json::text(&mut obj, "snap", &layout.to_text());
        let names: Vec<(String, &str)> = reasons
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_str()))
            .collect();
        json::object(
            &mut obj,
            "reset_reasons",
            names.iter().map(|(k, v)| (k.as_str(), *v)),
            |b, v| json::push_str(b, v.as_bytes()),
        );
        obj.push(b'}');
        push_frame(&mut self.out.buf, Tag::Context, &obj);
        self.context_written = true;
    }
}

/// Whether an event came from a kernel record (already recorded raw).
fn from_kernel(ev: &Event) -> bool {
    !matches!(
        ev.kind,
        EventKind::TimeWait { .. } | EventKind::RequestGone | EventKind::Existing { .. }
    )
}

impl<W: Write> Sink for RawSink<W> {
    fn record(&mut self, raw: &[u8], layout: &SnapLayout) -> io::Result<()> {
        self.start();
        if !self.context_written {
            self.context(layout);
        }
        push_frame(&mut self.out.buf, Tag::Record, raw);
        self.out.end_line()
    }

    fn event(&mut self, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        if from_kernel(ev) {
            return Ok(());
        }
        json::render(&mut self.line, &self.ctx, ev, prev_ns);
        self.json_frame()
    }

    /// Recordings hold events; connection records are rebuilt by `replay`.
    fn conn(&mut self, _c: &Conn, _diagnosis: &[Diagnosis]) -> io::Result<()> {
        Ok(())
    }

    /// Findings are conclusions, drawn again by `replay` from the samples.
    fn finding(&mut self, _f: &NetnsFinding) -> io::Result<()> {
        Ok(())
    }

    fn sysctl(&mut self, ts_ns: u64, netns: u32, s: &Sysctls) -> io::Result<()> {
        json_diag::sysctl(&mut self.line, &self.ctx, ts_ns, netns, s);
        self.json_frame()
    }

    fn cgroup(&mut self, ts_ns: u64, id: u64) -> io::Result<()> {
        super::json_cgroup::line(&mut self.line, &self.ctx, ts_ns, id);
        self.json_frame()
    }

    fn sample(&mut self, s: &NetnsSample) -> io::Result<()> {
        json_diag::sample(&mut self.line, &self.ctx, s);
        self.json_frame()
    }

    fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()> {
        json::head(&mut self.line, &self.ctx, "lost", ts_ns);
        json::num(&mut self.line, "count", count);
        self.line.push(b'}');
        self.json_frame()
    }

    fn ctx_mut(&mut self) -> &mut RenderCtx {
        &mut self.ctx
    }

    fn flush(&mut self) -> io::Result<()> {
        self.start();
        self.out.flush()
    }
}
