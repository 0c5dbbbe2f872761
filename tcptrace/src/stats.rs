//! Counters for the end-of-run summary: events by type, malformed records, kernel-side losses.
use std::fmt;

use tcptrace_core::event::{Event, EventKind};

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub state: u64,
    pub retransmit: u64,
    pub retransmit_failed: u64,
    pub reset: u64,
    pub error: u64,
    pub malformed: u64,
    /// Records the kernel could not write (ring buffer full).
    pub lost: u64,
}

impl Stats {
    pub fn count(&mut self, ev: &Event) {
        match ev.kind {
            EventKind::State { .. } => self.state += 1,
            EventKind::Retransmit { .. } | EventKind::SynAckRetransmit { .. } => {
                self.retransmit += 1
            }
            EventKind::RetransmitFailed { .. } => self.retransmit_failed += 1,
            EventKind::Reset { .. } => self.reset += 1,
            EventKind::Error { .. } => self.error += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.state + self.retransmit + self.retransmit_failed + self.reset + self.error
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events: {} state, {} retransmit, {} retransmit_failed, {} reset, {} error; \
             {} lost, {} malformed",
            self.total(),
            self.state,
            self.retransmit,
            self.retransmit_failed,
            self.reset,
            self.error,
            self.lost,
            self.malformed
        )
    }
}
