//! Aligned text columns for people, in the spirit of `tcpstates`, wide enough for IPv6.
use std::io::{self, Write as _};

use tcptrace_core::{
    context::Context,
    diagnose::{Diagnosis, netns::NetnsFinding},
    event::{Event, EventKind},
    lifecycle::Conn,
    tcp::errno_name,
};

use super::{Interest, Out, OutStats, Sink, escape::escaped};
use crate::{pipeline::Mode, stats::Stats};

pub struct TextSink {
    out: Out,
    mode: Mode,
    addr_width: usize,
    header_pending: bool,
    colour: bool,
    /// Records without their state timeline, diagnoses by rule name on the same line.
    compact: bool,
}

impl TextSink {
    /// `addr_width` is 15 when only IPv4 can appear, 39 otherwise.
    pub fn new(out: Out, mode: Mode, addr_width: usize, header: bool) -> Self {
        Self {
            out,
            mode,
            addr_width,
            header_pending: header,
            colour: false,
            compact: false,
        }
    }

    /// Coloured (`--color`) and/or compact (`--format line`).
    pub fn styled(mut self, colour: bool, compact: bool) -> Self {
        self.colour = colour;
        self.compact = compact;
        self
    }

    fn header(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.header_pending) {
            let w = self.addr_width;
            let _ = writeln!(
                self.out.buf,
                "{:<15} {:<18} {:<7} {:<15} {:<10} {:<w$} {:<5} {:<w$} {:<5} EVENT",
                "TIME(UTC)", "SKADDR", "PID", "COMM", "NETNS", "LADDR", "LPORT", "RADDR", "RPORT"
            );
            self.out.end_line()?;
        }
        Ok(())
    }
}

/// Time of day `HH:MM:SS.uuuuuu` of a monotonic stamp.
pub fn time_of_day(buf: &mut Vec<u8>, ctx: &Context, ts_ns: u64) {
    // "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" → "HH:MM:SS.uuuuuu"
    let start = buf.len();
    ctx.write_time(buf, ts_ns);
    buf.pop();
    buf.drain(start..start + 11);
}

/// ` in STATE`, or nothing when the kernel gave no state.
fn in_state(s: Option<tcptrace_core::tcp::TcpState>) -> String {
    s.map_or_else(String::new, |s| format!(" in {s}"))
}

/// Renders the EVENT column.
pub fn describe(buf: &mut Vec<u8>, ctx: &Context, ev: &Event, prev_ns: Option<u64>) {
    let _ = match ev.kind {
        EventKind::State { old, new, .. } => match prev_ns {
            Some(ns) => {
                let _ = write!(buf, "{old} -> {new} (");
                tcptrace_core::wire::json::push_ms(buf, ns);
                write!(buf, " ms in {old})")
            }
            None => write!(buf, "{old} -> {new}"),
        },
        EventKind::Retransmit { state, kind, .. } => {
            write!(buf, "RETRANSMIT {}{}", kind.name(), in_state(state))
        }
        EventKind::RetransmitFailed {
            state, kind, errno, ..
        } => write!(
            buf,
            "RETRANSMIT-FAILED {}{}: {}",
            kind.name(),
            in_state(state),
            errno_name(errno).unwrap_or("?")
        ),
        EventKind::SynAckRetransmit { .. } => write!(buf, "RETRANSMIT synack in NEW_SYN_RECV"),
        EventKind::Reset {
            direction,
            state,
            reason,
        } => {
            let _ = write!(buf, "RESET {}{}", direction.name(), in_state(state));
            match reason {
                Some(code) => match ctx.reason_name(code) {
                    Some(n) => write!(buf, " ({n})"),
                    None => write!(buf, " (reason {code})"),
                },
                None => Ok(()),
            }
        }
        EventKind::Error { errno, state } => write!(
            buf,
            "ERROR {}{}",
            errno_name(errno).unwrap_or("?"),
            in_state(state)
        ),
        EventKind::TimeWait { state, timer_ms } => match (state, timer_ms) {
            (Some(s), Some(ms)) => write!(buf, "TIMEWAIT-SOCKET {s} timer {ms} ms (sock_diag)"),
            (Some(s), None) => write!(buf, "TIMEWAIT-SOCKET {s} (sock_diag)"),
            (None, _) => write!(buf, "TIMEWAIT-SOCKET none (sock_diag)"),
        },
        EventKind::RequestGone => {
            write!(buf, "REQUEST-GONE half-open handshake expired (sock_diag)")
        }
        EventKind::Existing { state, at_exit, .. } => write!(
            buf,
            "EXISTING {state} ({}, sock_diag)",
            if at_exit { "at exit" } else { "at start" }
        ),
    };
}

impl Sink for TextSink {
    fn interest(&self) -> Interest {
        match self.mode {
            Mode::Events => Interest::EVENTS,
            Mode::Lifecycle => Interest::CONNS,
        }
    }

    fn event(&mut self, ctx: &Context, ev: &Event, prev_ns: Option<u64>) -> io::Result<()> {
        self.header()?;
        let w = self.addr_width;
        let buf = &mut self.out.buf;
        time_of_day(buf, ctx, ev.ts_ns);
        let netns = ev.netns.map_or_else(
            || "-".to_string(),
            |n| super::text_conn::netns_shown(ctx, n),
        );
        let (pid, comm) = match ev.task() {
            Some((pid, _, comm)) => (pid.to_string(), escaped(comm.bytes())),
            None => ("-".to_string(), "-".to_string()),
        };
        let _ = write!(
            buf,
            " {:<18} {:<7} {:<15} {:<10} {:<w$} {:<5} {:<w$} {:<5} ",
            format!("{:#x}", ev.sk),
            pid,
            comm,
            netns,
            ev.laddr.to_string(),
            ev.lport,
            ev.raddr.to_string(),
            ev.rport,
        );
        describe(buf, ctx, ev, prev_ns);
        if let Some(shown) = super::text_conn::cgroup_short(ctx, ev.cgroup) {
            let _ = write!(buf, " [{shown}]");
        }
        buf.push(b'\n');
        self.out.end_line()
    }

    fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) -> io::Result<()> {
        let mut time = Vec::with_capacity(16);
        time_of_day(&mut time, ctx, c.end_ns.unwrap_or(c.last_ns));
        let buf = &mut self.out.buf;
        super::text_conn::render(buf, ctx, c, self.colour, !self.compact, &time);
        if self.compact {
            super::text_conn::rule_names(buf, diagnoses, self.colour);
            buf.push(b'\n');
        } else {
            buf.push(b'\n');
            for d in diagnoses {
                super::text_conn::diagnosis_line(buf, d, self.colour, "    ");
            }
        }
        self.out.end_line()
    }

    fn finding(&mut self, ctx: &Context, f: &NetnsFinding) -> io::Result<()> {
        time_of_day(&mut self.out.buf, ctx, f.ts_ns);
        let shown = super::text_conn::netns_shown(ctx, f.netns);
        let _ = write!(self.out.buf, " netns {shown} ");
        super::text_conn::diagnosis_line(&mut self.out.buf, &f.diagnosis, self.colour, "");
        self.out.end_line()
    }

    // Losses go to stderr (see the reader) so columns stay parseable.

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn reopen(&mut self, _ctx: &Context, _now_ns: u64) -> io::Result<()> {
        self.out.reopen()
    }

    fn finish(&mut self, _ctx: &Context, _now_ns: u64, _stats: &Stats) -> io::Result<()> {
        self.out.close()
    }

    fn out_stats(&self) -> OutStats {
        self.out.stats()
    }
}
