//! The kernel side's losses, by cause: records dropped because the ring buffer was full (the
//! programs' per-CPU counter), and program runs the kernel skipped because a program was
//! already running on that CPU (each program's `recursion_misses`), less the state changes the
//! nested-run program caught.
use std::os::fd::AsFd as _;

use aya::{
    maps::{MapData, PerCpuArray},
    programs::ProgramFd,
};
use tcptrace_common::Nested;
use tcptrace_core::wire::LostCause as LossCause;

use super::prog_info;

/// One attached program whose skipped runs are watched.
struct Watched {
    /// Kept open so the counters stay readable after the programs are detached.
    fd: ProgramFd,
    /// Its skipped runs are lost events; false for the nested-run program, whose skipped runs
    /// the main state-change program handled.
    loses: bool,
}

/// Counters read at one moment, totals since loading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    pub ring_full: u64,
    /// Runs the kernel skipped, over every program whose runs are events.
    pub skipped: u64,
    /// Of those, state changes the nested-run program caught.
    pub caught: u64,
}

impl Losses {
    /// Events lost to skipped runs.
    pub fn recursion(&self) -> u64 {
        self.skipped.saturating_sub(self.caught)
    }

    pub fn of(&self, cause: LossCause) -> u64 {
        match cause {
            LossCause::RingFull => self.ring_full,
            LossCause::Recursion => self.recursion(),
        }
    }
}

/// The maps and program descriptors the counters are read from.
pub struct LossCounters {
    ring_full: PerCpuArray<MapData, u64>,
    nested: PerCpuArray<MapData, Nested>,
    watched: Vec<Watched>,
    /// Whether `recursion_misses` could be read (Linux 5.12+; false once a read failed).
    pub misses_readable: bool,
}

impl LossCounters {
    pub fn new(ring_full: PerCpuArray<MapData, u64>, nested: PerCpuArray<MapData, Nested>) -> Self {
        Self {
            ring_full,
            nested,
            watched: Vec::new(),
            misses_readable: true,
        }
    }

    /// Watches an attached program; `loses`: its skipped runs are lost events.
    pub fn watch(&mut self, fd: ProgramFd, loses: bool) {
        self.watched.push(Watched { fd, loses });
    }

    /// The counters now.
    pub fn read(&mut self) -> Losses {
        let ring_full = self
            .ring_full
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().copied().sum())
            .unwrap_or(0);
        let caught = self
            .nested
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().map(|n| n.caught).sum())
            .unwrap_or(0);
        let mut skipped = 0;
        for w in self.watched.iter().filter(|w| w.loses) {
            match prog_info::recursion_misses(&w.fd.as_fd()) {
                Ok(n) => skipped += n,
                Err(_) => self.misses_readable = false,
            }
        }
        Losses {
            ring_full,
            skipped,
            caught,
        }
    }
}
