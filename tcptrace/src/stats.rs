//! Counters for the end-of-run summary: events by type, malformed records, kernel-side losses,
//! and what the connection table did.
use std::fmt;

use tcptrace_core::{
    event::{Event, EventKind},
    lifecycle::TableStats,
    wire::LostCause,
};

use crate::sink::{OutStats, count};

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub state: u64,
    pub retransmit: u64,
    pub retransmit_failed: u64,
    pub reset: u64,
    pub error: u64,
    /// Userspace facts from sock_diag (timewait, request_gone, existing).
    pub facts: u64,
    pub malformed: u64,
    /// Error reports without an error (`tcp_disconnect` after a failed connect): skipped.
    pub empty_error_reports: u64,
    /// Records the kernel could not write (ring buffer full).
    pub lost_ring: u64,
    /// Program runs the kernel skipped because one of ours was already running on that CPU.
    pub lost_recursion: u64,
    /// State changes the kernel skipped in the main program but the nested-run program caught.
    pub nested_caught: u64,
    /// Lifecycle mode: connection records that passed the filters.
    pub conns_printed: u64,
    /// Of those, records the output left out (`--problems`, `--end`, `--diagnosed`).
    pub conns_withheld: u64,
    pub table: TableStats,
    /// Connections in the table at the last tick.
    pub tracked: u64,
    /// sock_diag lookups skipped to stay within the lookup budget.
    pub diag_skipped: u64,
    /// Connection records that carried at least one diagnosis.
    pub diagnosed: u64,
    /// Namespace-wide findings printed.
    pub findings: u64,
    /// Output the destination did not take.
    pub output: OutStats,
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
            EventKind::TimeWait { .. } | EventKind::RequestGone | EventKind::Existing { .. } => {
                self.facts += 1
            }
        }
    }

    /// Adds lost events of a cause (saturating: a recording may claim absurd counts).
    pub fn add_lost(&mut self, cause: LostCause, count: u64) {
        let slot = match cause {
            LostCause::RingFull => &mut self.lost_ring,
            LostCause::Recursion => &mut self.lost_recursion,
        };
        *slot = slot.saturating_add(count);
    }

    /// Kernel events lost, whatever the cause.
    pub fn lost(&self) -> u64 {
        self.lost_ring.saturating_add(self.lost_recursion)
    }

    /// Kernel events (not counting userspace facts).
    pub fn total(&self) -> u64 {
        self.state + self.retransmit + self.retransmit_failed + self.reset + self.error
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} state, {} retransmit, {} retransmit_failed, {} reset, {} error; \
             {} lost, {} malformed; {}",
            count(self.total(), "event"),
            self.state,
            self.retransmit,
            self.retransmit_failed,
            self.reset,
            self.error,
            self.lost(),
            self.malformed,
            count(self.facts, "sock_diag fact"),
        )?;
        let t = &self.table;
        if t.finished > 0 || self.conns_printed > 0 {
            write!(
                f,
                "; {} ({} printed, {} evicted, {} with missed events, \
                 {} timewait unconfirmed)",
                count(t.finished, "connection"),
                self.conns_printed.saturating_sub(self.conns_withheld),
                t.evicted,
                t.missed,
                t.time_wait_unconfirmed
            )?;
            if t.open_at_loss > 0 {
                write!(f, "; {} open when events were lost", t.open_at_loss)?;
            }
        }
        if self.diagnosed > 0 || self.findings > 0 {
            write!(
                f,
                "; {} diagnosed, {}",
                self.diagnosed,
                count(self.findings, "namespace finding")
            )?;
        }
        if self.lost() > 0 {
            write!(
                f,
                " (lost: {} ring buffer full, {} in runs the kernel skipped)",
                self.lost_ring, self.lost_recursion
            )?;
        }
        if self.nested_caught > 0 {
            write!(
                f,
                "; {} caught in nested runs",
                count(self.nested_caught, "state change")
            )?;
        }
        let o = &self.output;
        if o.total() > 0 {
            write!(
                f,
                "; {} not written ({} reader stalled, {})",
                count(o.total(), "output line"),
                o.stalled,
                count(o.failed, "write error")
            )?;
        }
        if self.empty_error_reports > 0 {
            write!(
                f,
                "; {} error reports without an error skipped",
                self.empty_error_reports
            )?;
        }
        if self.diag_skipped > 0 {
            write!(
                f,
                "; {} skipped (budget)",
                count(self.diag_skipped, "sock_diag lookup")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts_saturate() {
        let mut s = Stats::default();
        s.add_lost(LostCause::RingFull, u64::MAX - 1);
        s.add_lost(LostCause::RingFull, 5);
        s.add_lost(LostCause::Recursion, u64::MAX);
        assert_eq!(s.lost_ring, u64::MAX);
        assert_eq!(s.lost(), u64::MAX);
        assert!(s.to_string().contains(&format!("{} lost", u64::MAX)));
    }

    #[test]
    fn counts_read_right_in_the_singular() {
        let mut s = Stats {
            state: 1,
            facts: 1,
            conns_printed: 1,
            ..Stats::default()
        };
        s.table.finished = 1;
        let text = s.to_string();
        assert!(text.starts_with("1 event: "), "{text}");
        assert!(
            text.contains("; 1 sock_diag fact; 1 connection (1 printed"),
            "{text}"
        );
        s.state = 2;
        s.table.finished = 2;
        let text = s.to_string();
        assert!(text.starts_with("2 events: "), "{text}");
        assert!(text.contains("; 2 connections ("), "{text}");
    }
}
