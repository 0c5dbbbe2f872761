//! The one path from decoded events to the sink, shared by live tracing and `replay`: in events
//! mode every event is printed; in lifecycle mode events feed the connection table and each
//! finished connection that passes the filters is printed.
use std::io;

use tcptrace_core::{
    event::Event,
    lifecycle::{Conn, ConnTable, TableConfig},
    state_clock::StateClock,
    tcp::TcpState,
};

use crate::{sink::Sink, stats::Stats};

/// Sockets whose last transition time is remembered for `prev_ms`.
const STATE_CLOCK_CAPACITY: usize = 1 << 20;

/// What is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every event as it happens.
    Events,
    /// One record per finished connection.
    Lifecycle,
}

/// Which connection records are printed.
#[derive(Clone, Debug, Default)]
pub struct ConnFilter {
    /// Keep connections that visited any of these states (empty: all).
    pub states: Vec<TcpState>,
    pub min_duration_ns: Option<u64>,
    pub netns: Option<u32>,
    /// Keep connections owned by this process.
    pub owner_pid: Option<u32>,
}

impl ConnFilter {
    pub fn keep(&self, c: &Conn) -> bool {
        let visited = |s: TcpState| c.visited(s) || c.time_wait.is_some_and(|(tw, _)| tw == s);
        (self.states.is_empty() || self.states.iter().any(|s| visited(*s)))
            && self
                .min_duration_ns
                .is_none_or(|min| c.duration_ns().is_some_and(|d| d >= min))
            && self.netns.is_none_or(|ns| c.netns == Some(ns))
            && self
                .owner_pid
                .is_none_or(|pid| c.owner.is_some_and(|o| o.pid == pid))
    }
}

pub struct Pipeline<'s> {
    mode: Mode,
    pub table: ConnTable,
    clock: StateClock,
    pub stats: Stats,
    filter: ConnFilter,
    sink: &'s mut dyn Sink,
    done: Vec<Conn>,
}

impl<'s> Pipeline<'s> {
    pub fn new(mode: Mode, table: TableConfig, filter: ConnFilter, sink: &'s mut dyn Sink) -> Self {
        Self {
            mode,
            table: ConnTable::new(table),
            clock: StateClock::new(if mode == Mode::Events {
                STATE_CLOCK_CAPACITY
            } else {
                1
            }),
            stats: Stats::default(),
            filter,
            sink,
            done: Vec::new(),
        }
    }

    pub fn feed(&mut self, ev: &Event) -> io::Result<()> {
        self.stats.count(ev);
        match self.mode {
            Mode::Events => {
                let prev = self.clock.observe(ev);
                self.sink.event(ev, prev)
            }
            Mode::Lifecycle => {
                self.table.process(ev, &mut self.done);
                self.emit()
            }
        }
    }

    /// Lets closed connections whose trailing facts are in go out.
    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        self.table.advance(now_ns, &mut self.done);
        self.emit()
    }

    /// Tracing stops: every tracked connection is printed.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        self.table.finish_all(now_ns, &mut self.done);
        self.emit()?;
        self.stats.table = self.table.stats;
        self.sink.flush()
    }

    /// A reset reason's name: for printing, and to know which resets are aborts in `close()`.
    pub fn learn_reason(&mut self, code: u32, name: &str) {
        self.table.learn_reason(code, name);
        self.sink
            .ctx_mut()
            .reset_reasons
            .insert(code, name.to_string());
    }

    /// The wall clock records are printed in (replay takes the recording host's).
    pub fn set_clock(&mut self, clock: tcptrace_core::clock::WallClock) {
        self.sink.ctx_mut().clock = clock;
    }

    pub fn lost(&mut self, ts_ns: u64, count: u64) -> io::Result<()> {
        self.sink.lost(ts_ns, count)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stats.table = self.table.stats;
        self.sink.flush()
    }

    fn emit(&mut self) -> io::Result<()> {
        for c in self.done.drain(..) {
            if self.filter.keep(&c) {
                self.stats.conns_printed += 1;
                self.sink.conn(&c)?;
            }
        }
        Ok(())
    }
}
