//! Sinks: where decoded events go. Text and JSON lines share one buffered writer and one
//! rendering context (wall clock, reset reason names).
pub mod json;
mod json_cgroup;
mod json_conn;
mod json_diag;
mod raw;
mod text;
mod text_conn;
mod writer;

use std::{collections::HashMap, io};

use tcptrace_core::{
    clock::WallClock,
    diagnose::{
        Diagnosis,
        netns::{NetnsFinding, NetnsSample},
    },
    event::Event,
    lifecycle::Conn,
    snapshot::SnapLayout,
    sysctl::Sysctls,
};

pub use json::JsonSink;
pub use raw::RawSink;
pub use text::TextSink;
pub use writer::Out;

/// Facts printers need beyond the event itself.
#[derive(Debug, Default)]
pub struct RenderCtx {
    pub clock: WallClock,
    /// Formats record times (caching the current second).
    pub times: tcptrace_core::clock::Rfc3339Writer,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    pub reset_reasons: HashMap<u32, String>,
    /// Cgroup id → path, unit and container.
    pub cgroups: tcptrace_core::cgroup::CgroupNames,
}

impl RenderCtx {
    pub fn reason_name(&self, code: u32) -> Option<&str> {
        self.reset_reasons.get(&code).map(String::as_str)
    }
}

/// A consumer of events.
pub trait Sink {
    /// A kernel record before decoding (only a recording keeps it).
    fn record(&mut self, _raw: &[u8], _layout: &SnapLayout) -> io::Result<()> {
        Ok(())
    }
    /// One event; `prev_ns` is the time spent in the old state for state events, when known.
    fn event(&mut self, ev: &Event, prev_ns: Option<u64>) -> io::Result<()>;
    /// One finished connection lifecycle and what explains it.
    fn conn(&mut self, c: &Conn, diagnosis: &[Diagnosis]) -> io::Result<()>;
    /// A namespace-wide finding.
    fn finding(&mut self, f: &NetnsFinding) -> io::Result<()>;
    /// A namespace's sysctls were read (recorded so `replay` can diagnose too).
    fn sysctl(&mut self, _ts_ns: u64, _netns: u32, _s: &Sysctls) -> io::Result<()> {
        Ok(())
    }
    /// A cgroup id's path was learned (recorded so `replay` names it too).
    fn cgroup(&mut self, _ts_ns: u64, _id: u64) -> io::Result<()> {
        Ok(())
    }
    /// A periodic sample of a namespace (recorded so `replay` can diagnose too).
    fn sample(&mut self, _s: &NetnsSample) -> io::Result<()> {
        Ok(())
    }
    /// `count` records were dropped by the kernel since the last report.
    fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()>;
    /// The rendering context, for what is learned while running.
    fn ctx_mut(&mut self) -> &mut RenderCtx;
    /// Pushes buffered output to its destination.
    fn flush(&mut self) -> io::Result<()>;
}
