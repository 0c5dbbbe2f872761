//! `--summary [INTERVAL]`: connection records summed up per destination, process and
//! unit/container (`tcptrace_core::summary`), printed beside the normal output as an aligned
//! table or JSON `summary` lines — every INTERVAL and, at exit, for the whole run.
//!
//! An interval's table counts the records that *ended* in it (by the record's own time, so
//! `replay` of a recording prints the same tables). It is printed once the stream's clock
//! (the live loop's tick, or the recording's time) is past the interval's end by `settle`,
//! the longest a finished connection's record can wait for its trailing facts; a record
//! later than that (an evicted connection) counts in the next table printed. Intervals start
//! at the stream's start.
use std::{collections::VecDeque, io, io::Write as _};

use tcptrace_core::{
    context::Context,
    diagnose::Diagnosis,
    lifecycle::Conn,
    summary::{By, Key, Row, Summary},
    wire::{
        self, Cold, SummaryLine,
        summary::{Period, Quantiles, Span},
    },
};

use super::{
    Interest, Out, Sink,
    escape::escaped,
    text::time_of_day,
    text_conn::{count, human_ns},
};
use crate::stats::Stats;

pub struct SummarySink {
    out: Out,
    json: bool,
    colour: bool,
    /// 0: only the run's table at exit.
    interval_ns: u64,
    settle_ns: u64,
    /// When the stream started: intervals count from here.
    start_ns: Option<u64>,
    /// Intervals not printed yet, by number, in order.
    open: VecDeque<(u64, Summary)>,
    /// Every interval before this one is printed.
    next: u64,
    run: Summary,
}

impl SummarySink {
    /// Writes into `out` (shared with the output sink); `settle_ns` is how late a record may
    /// come after its connection ended.
    pub fn new(out: Out, json: bool, colour: bool, interval_ns: u64, settle_ns: u64) -> Self {
        Self {
            out,
            json,
            colour,
            interval_ns,
            settle_ns,
            start_ns: None,
            open: VecDeque::new(),
            next: 0,
            run: Summary::default(),
        }
    }

    fn interval_of(&self, ts_ns: u64) -> u64 {
        let start = self.start_ns.unwrap_or(ts_ns);
        (ts_ns.saturating_sub(start) / self.interval_ns).max(self.next)
    }

    fn span(&self, k: u64) -> Span {
        let start = self.start_ns.unwrap_or(0);
        Span {
            start_ns: start + k * self.interval_ns,
            end_ns: start + (k + 1) * self.interval_ns,
            period: Period::Interval,
        }
    }

    /// Prints every interval that ended before `until` (and, with `partial`, the one running
    /// then, cut at `until`).
    fn print_until(&mut self, ctx: &Context, until: u64, partial: bool) -> io::Result<()> {
        if self.interval_ns == 0 || self.start_ns.is_none() {
            return Ok(());
        }
        loop {
            let mut span = self.span(self.next);
            if span.end_ns > until {
                if !partial || span.start_ns >= until {
                    return Ok(());
                }
                span.end_ns = until;
            }
            let summary = match self.open.front() {
                Some((k, _)) if *k == self.next => self.open.pop_front().map(|(_, s)| s),
                _ => None,
            }
            .unwrap_or_default();
            self.table(ctx, span, &summary)?;
            self.next += 1;
        }
    }

    fn table(&mut self, ctx: &Context, span: Span, s: &Summary) -> io::Result<()> {
        if self.json {
            self.json_rows(ctx, span, s)
        } else {
            self.text_table(ctx, span, s)
        }
    }

    fn json_rows(&mut self, ctx: &Context, span: Span, s: &Summary) -> io::Result<()> {
        let mut line = |by: By, key: Option<&Key>, row: &Row| {
            let l = SummaryLine::new(ctx, span, by, key, row);
            wire::write_cold(&mut self.out.buf, &Cold::Summary(l));
            self.out.buf.push(b'\n');
            self.out.end_line()
        };
        line(By::All, None, &s.all)?;
        for by in By::GROUPED {
            let g = s.grouping(by);
            for (key, row) in g.rows() {
                line(by, Some(key), row)?;
            }
            if let Some(row) = g.other() {
                line(by, None, row)?;
            }
        }
        self.out.flush()
    }

    fn text_table(&mut self, ctx: &Context, span: Span, s: &Summary) -> io::Result<()> {
        let mut from = Vec::new();
        time_of_day(&mut from, ctx, span.start_ns);
        let mut to = Vec::new();
        time_of_day(&mut to, ctx, span.end_ns);
        let what = match span.period {
            Period::Interval => "summary",
            Period::Run => "summary of the run",
        };
        let _ = writeln!(
            self.out.buf,
            "── {what} {} to {} ({}): {}, {} failed, {} ──",
            String::from_utf8_lossy(&from),
            String::from_utf8_lossy(&to),
            human_ns(span.end_ns.saturating_sub(span.start_ns)),
            count(s.all.conns, "connection"),
            s.all.failed(),
            count(s.all.retransmits, "retransmit"),
        );
        self.out.end_line()?;
        if !s.is_empty() {
            for by in By::GROUPED {
                self.grouping_table(by, s)?;
            }
        }
        self.out.flush()
    }

    fn grouping_table(&mut self, by: By, s: &Summary) -> io::Result<()> {
        let g = s.grouping(by);
        let mut rows: Vec<[String; 9]> = Vec::new();
        let head = match by {
            By::Destination => "DESTINATION",
            By::Process => "PROCESS",
            _ => "UNIT",
        };
        rows.push(
            [
                head,
                "CONNS",
                "FAILED",
                "RETRANS",
                "CONNECT p50",
                "p99",
                "DURATION p50",
                "p99",
                "ENDS",
            ]
            .map(str::to_string),
        );
        for (key, row) in g.rows() {
            rows.push(text_row(&key_text(key), row));
        }
        if let Some(row) = g.other() {
            rows.push(text_row("(other groups)", row));
        }
        let mut widths = [0usize; 9];
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (i, r) in rows.iter().enumerate() {
            let failed = i > 0 && r[2] != "0";
            let buf = &mut self.out.buf;
            buf.extend_from_slice(b"  ");
            for (c, cell) in r.iter().enumerate() {
                let w = widths[c];
                let paint = self.colour && failed && c == 2;
                if paint {
                    buf.extend_from_slice(b"\x1b[31m");
                }
                let _ = match c {
                    0 | 8 => write!(buf, "{cell:<w$}"),
                    _ => write!(buf, "{cell:>w$}"),
                };
                if paint {
                    buf.extend_from_slice(b"\x1b[0m");
                }
                if c < 8 {
                    buf.extend_from_slice(b"  ");
                }
            }
            while buf.last() == Some(&b' ') {
                buf.pop();
            }
            buf.push(b'\n');
            self.out.end_line()?;
        }
        Ok(())
    }
}

/// How text names a group (escaped: names come from the host).
fn key_text(k: &Key) -> String {
    let name = k
        .name
        .as_deref()
        .map_or_else(|| "?".to_string(), |n| escaped(n.as_bytes()));
    match k.role {
        Some("server") => format!("server {name}"),
        Some("unknown") => format!("{name} (role unknown)"),
        _ => name,
    }
}

fn quantile_cells(q: Option<Quantiles>) -> [String; 2] {
    match q {
        Some(q) => [q.p50, q.p99].map(|ms| human_ns((ms * 1e6) as u64)),
        None => ["-".to_string(), "-".to_string()],
    }
}

fn text_row(name: &str, row: &Row) -> [String; 9] {
    let [c50, c99] = quantile_cells(Quantiles::of(&row.connect));
    let [d50, d99] = quantile_cells(Quantiles::of(&row.duration));
    let ends: Vec<String> = row
        .ends()
        .map(|(e, n)| format!("{n} {}", e.name()))
        .collect();
    [
        name.to_string(),
        row.conns.to_string(),
        row.failed().to_string(),
        row.retransmits.to_string(),
        c50,
        c99,
        d50,
        d99,
        ends.join(", "),
    ]
}

impl Sink for SummarySink {
    fn interest(&self) -> Interest {
        Interest::CONNS
    }

    fn start(&mut self, _ctx: &Context, ts_ns: u64) -> io::Result<()> {
        self.start_ns.get_or_insert(ts_ns);
        Ok(())
    }

    fn conn(&mut self, ctx: &Context, c: &Conn, _diagnoses: &[Diagnosis]) -> io::Result<()> {
        let ts = c.end_ns.unwrap_or(c.last_ns);
        self.start_ns.get_or_insert(ts);
        self.run.add(ctx, c);
        if self.interval_ns == 0 {
            return Ok(());
        }
        let k = self.interval_of(ts);
        let at = self.open.iter().position(|(n, _)| *n >= k);
        match at {
            Some(i) if self.open[i].0 == k => self.open[i].1.add(ctx, c),
            _ => {
                let mut s = Summary::default();
                s.add(ctx, c);
                self.open.insert(at.unwrap_or(self.open.len()), (k, s));
            }
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &Context, now_ns: u64, _stats: &Stats) -> io::Result<()> {
        self.print_until(ctx, now_ns.saturating_sub(self.settle_ns), false)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self, ctx: &Context, now_ns: u64, _stats: &Stats) -> io::Result<()> {
        let printed = self.print_until(ctx, now_ns, true).and_then(|()| {
            let run = std::mem::take(&mut self.run);
            let span = Span {
                start_ns: self.start_ns.unwrap_or(now_ns),
                end_ns: now_ns,
                period: Period::Run,
            };
            self.table(ctx, span, &run)
        });
        let closed = self.out.close();
        printed.and(closed)
    }
}
