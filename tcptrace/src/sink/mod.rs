//! Sinks: where decoded events go. Text and JSON lines share one buffered writer and one
//! rendering context (wall clock, reset reason names).
mod json;
mod json_conn;
mod text;
mod text_conn;
mod writer;

use std::{collections::HashMap, io};

use tcptrace_core::{clock::WallClock, event::Event, lifecycle::Conn};

pub use json::JsonSink;
pub use text::TextSink;
pub use writer::Out;

/// Facts printers need beyond the event itself.
#[derive(Debug, Default)]
pub struct RenderCtx {
    pub clock: WallClock,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    pub reset_reasons: HashMap<u32, String>,
}

impl RenderCtx {
    pub fn reason_name(&self, code: u32) -> Option<&str> {
        self.reset_reasons.get(&code).map(String::as_str)
    }
}

/// A consumer of events.
pub trait Sink {
    /// One event; `prev_ns` is the time spent in the old state for state events, when known.
    fn event(&mut self, ev: &Event, prev_ns: Option<u64>) -> io::Result<()>;
    /// One finished connection lifecycle.
    fn conn(&mut self, c: &Conn) -> io::Result<()>;
    /// `count` records were dropped by the kernel since the last report.
    fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()>;
    /// The rendering context, for what is learned while running.
    fn ctx_mut(&mut self) -> &mut RenderCtx;
    /// Pushes buffered output to its destination.
    fn flush(&mut self) -> io::Result<()>;
}
