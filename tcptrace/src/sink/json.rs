//! JSON lines on the wire schema of `tcptrace_core::wire` (README.md documents it): a stream
//! header first, then events and the facts `replay` needs (`--events`), or connection records
//! (the default); findings and losses in both.
use std::io;

use tcptrace_core::{
    context::Context,
    diagnose::{Diagnosis, netns::NetnsFinding},
    event::Event,
    lifecycle::Conn,
    wire::{self, Cold, Content, LostCause, LostLine, StreamHeader},
};

use super::{Fact, Interest, Out, OutStats, Sink};
use crate::{pipeline::Mode, stats::Stats};

pub struct JsonSink {
    out: Out,
    content: Content,
}

impl JsonSink {
    pub fn new(out: Out, mode: Mode) -> Self {
        Self {
            out,
            content: match mode {
                Mode::Events => Content::Events,
                Mode::Lifecycle => Content::Records,
            },
        }
    }

    fn cold(&mut self, line: &Cold) -> io::Result<()> {
        wire::write_cold(&mut self.out.buf, line);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn header(&mut self, ctx: &Context, ts_ns: u64) -> io::Result<()> {
        self.out.essential();
        self.cold(&Cold::Stream(StreamHeader::new(ctx, ts_ns, self.content)))
    }
}

impl Sink for JsonSink {
    fn interest(&self) -> Interest {
        match self.content {
            Content::Events => Interest::EVENTS,
            Content::Records => Interest::CONNS,
        }
    }

    fn start(&mut self, ctx: &Context, ts_ns: u64) -> io::Result<()> {
        self.header(ctx, ts_ns)
    }

    fn event(&mut self, ctx: &Context, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        wire::event::write(&mut self.out.buf, ctx, ev, prev_ns);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn fact(&mut self, ctx: &Context, fact: &Fact) -> io::Result<()> {
        match fact.line(ctx) {
            Some(line) => self.cold(&line),
            None => Ok(()),
        }
    }

    fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        wire::conn::write(&mut self.out.buf, ctx, c, diagnoses);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn finding(&mut self, ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        wire::diagnosis::write_finding(&mut self.out.buf, ctx, f);
        self.out.buf.push(b'\n');
        self.out.end_line()
    }

    fn lost(&mut self, ctx: &Context, ts_ns: u64, count: u64, cause: LostCause) -> io::Result<()> {
        self.cold(&Cold::Lost(LostLine::new(ctx, ts_ns, count, cause)))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn reopen(&mut self, ctx: &Context, now_ns: u64) -> io::Result<()> {
        self.out.reopen()?;
        self.header(ctx, now_ns)
    }

    fn finish(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        self.out.close()
    }

    fn out_stats(&self) -> OutStats {
        self.out.stats()
    }
}
