//! Whether the hand-written JSON writers of the hot line kinds pay: the recorded fixture's
//! events and connection records written by `tcptrace_core::wire` and by a serde-based writer
//! of the same members (what the cold line kinds use), on one core, side by side.
use std::{borrow::Cow, fmt::Write as _, hint::black_box, net::IpAddr, time::Instant};

use serde::Serialize;
use tcptrace_core::{
    context::Context,
    event::{Event, EventKind},
    lifecycle::{Conn, ConnTable, TableConfig},
    wire::{self, Line, parse_line},
};

const FIXTURE: &str = include_str!("../../../tcptrace-core/tests/fixtures/netns_scenarios.jsonl");
/// Passes over the fixture per measurement (its ~60 events and 10 records each).
const PASSES: usize = 20_000;

#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    ts_ns: u64,
    time: String,
    sk: String,
    netns: Option<u32>,
    pid: u32,
    tid: u32,
    comm: Cow<'a, str>,
    family: &'static str,
    laddr: IpAddr,
    lport: u16,
    raddr: IpAddr,
    rport: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sock: Option<Vec<(&'static str, u64)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

fn time(ctx: &Context, ts: u64) -> String {
    let mut b = Vec::with_capacity(27);
    ctx.write_time(&mut b, ts);
    String::from_utf8(b).unwrap_or_default()
}

fn serde_event(buf: &mut Vec<u8>, ctx: &Context, ev: &Event, prev: Option<u64>) {
    let (old, new, sock, state, kind) = match &ev.kind {
        EventKind::State { old, new, sock } => (
            Some(old.name()),
            Some(new.name()),
            sock.map(|s| s.iter().map(|(f, v)| (f.name(), v)).collect()),
            None,
            None,
        ),
        EventKind::Retransmit { state, kind, .. } => {
            (None, None, None, state.map(|s| s.name()), Some(kind.name()))
        }
        _ => (None, None, None, None, None),
    };
    let line = EventLine {
        ty: ev.kind.type_name(),
        ts_ns: ev.ts_ns,
        time: time(ctx, ev.ts_ns),
        sk: format!("{:#x}", ev.sk),
        netns: ev.netns,
        pid: ev.pid,
        tid: ev.tid,
        comm: String::from_utf8_lossy(ev.comm.bytes()),
        family: ev.family.name(),
        laddr: ev.laddr,
        lport: ev.lport,
        raddr: ev.raddr,
        rport: ev.rport,
        old,
        new,
        prev_ms: prev.map(|ns| ns as f64 / 1e6),
        sock,
        state,
        kind,
    };
    let _ = serde_json::to_writer(&mut *buf, &line);
}

#[derive(Serialize)]
struct Span {
    state: &'static str,
    ms: Option<f64>,
}

#[derive(Serialize)]
struct ConnLine<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    ts_ns: u64,
    time: String,
    sk: String,
    netns: Option<u32>,
    pid: Option<u32>,
    comm: Option<Cow<'a, str>>,
    family: &'static str,
    laddr: IpAddr,
    lport: u16,
    raddr: IpAddr,
    rport: u16,
    id: u64,
    role: &'static str,
    start: Option<String>,
    duration_ms: Option<f64>,
    states: Vec<Span>,
    retransmits: u32,
    bytes_sent: Option<u64>,
    bytes_received: Option<u64>,
    srtt_ms: Option<f64>,
    end: &'static str,
    time_wait_state: Option<&'static str>,
    time_wait_ms: Option<u32>,
    notes: Vec<&'static str>,
}

fn serde_conn(buf: &mut Vec<u8>, ctx: &Context, c: &Conn) {
    let end_ns = c.end_ns.unwrap_or(c.last_ns);
    let line = ConnLine {
        ty: "conn",
        ts_ns: end_ns,
        time: time(ctx, end_ns),
        sk: format!("{:#x}", c.sk),
        netns: c.netns,
        pid: c.owner.map(|o| o.pid),
        comm: c
            .owner
            .as_ref()
            .map(|o| String::from_utf8_lossy(o.comm.bytes())),
        family: c.family.name(),
        laddr: c.laddr,
        lport: c.lport,
        raddr: c.raddr,
        rport: c.rport,
        id: c.id,
        role: c.role.name(),
        start: c.start_ns.map(|ns| time(ctx, ns)),
        duration_ms: c.duration_ns().map(|ns| ns as f64 / 1e6),
        states: c
            .spans()
            .map(|(s, ns)| Span {
                state: s.name(),
                ms: ns.map(|ns| ns as f64 / 1e6),
            })
            .collect(),
        retransmits: c.cold().retransmits.total,
        bytes_sent: c.bytes_sent(),
        bytes_received: c.bytes_received(),
        srtt_ms: c.srtt_us().map(|us| us as f64 / 1e3),
        end: c.end.map_or("open", |e| e.name()),
        time_wait_state: c.cold().time_wait.map(|(s, _)| s.name()),
        time_wait_ms: c.cold().time_wait.and_then(|(_, t)| t),
        notes: c.note_names().collect(),
    };
    let _ = serde_json::to_writer(&mut *buf, &line);
}

/// ns per line and output MB/s of `write` over `items`, `PASSES` times.
fn time_writer<T>(items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) -> (f64, f64) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bytes = 0usize;
    let start = Instant::now();
    for _ in 0..PASSES {
        for it in items {
            write(&mut buf, it);
            buf.push(b'\n');
            if buf.len() > (1 << 19) {
                bytes += buf.len();
                black_box(&buf);
                buf.clear();
            }
        }
    }
    bytes += buf.len();
    let secs = start.elapsed().as_secs_f64();
    let lines = (PASSES * items.len()) as f64;
    (secs * 1e9 / lines, bytes as f64 / 1e6 / secs)
}

/// The Markdown section.
pub fn writers() -> String {
    let mut ctx = Context::default();
    let mut events = Vec::new();
    for l in FIXTURE.lines() {
        if let Ok(p) = parse_line(l, true) {
            if let Some(off) = p.clock_offset_ns {
                ctx.set_clock(tcptrace_core::clock::WallClock { offset_ns: off });
            }
            if let Line::Event { event, reason } = p.line {
                if let Some((code, name)) = reason {
                    ctx.learn_reason(code, &name);
                }
                events.push(event);
            }
        }
    }
    let mut table = ConnTable::new(TableConfig::default());
    let mut conns = Vec::new();
    for e in &events {
        table.process(e, &mut conns);
    }
    table.finish_all(events.last().map_or(0, |e| e.ts_ns), &mut conns);
    let prev = Some(1_234_567u64);
    let rows = [
        (
            "event lines",
            time_writer(&events, |b, e| wire::event::write(b, &ctx, e, prev)),
            time_writer(&events, |b, e| serde_event(b, &ctx, e, prev)),
        ),
        (
            "connection records",
            time_writer(&conns, |b, c| wire::conn::write(b, &ctx, c, &[])),
            time_writer(&conns, |b, c| serde_conn(b, &ctx, c)),
        ),
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### JSON writers: hand-written (tcptrace-core `wire`) against serde_json derive, one core\n"
    );
    let _ = writeln!(
        md,
        "| lines | hand-written ns/line | serde ns/line | serde costs | hand-written MB/s | serde MB/s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (what, (fast_ns, fast_mb), (serde_ns, serde_mb)) in rows {
        let _ = writeln!(
            md,
            "| {what} | {fast_ns:.0} | {serde_ns:.0} | {:.1}× | {fast_mb:.0} | {serde_mb:.0} |",
            serde_ns / fast_ns
        );
    }
    let _ = writeln!(
        md,
        "\nThe serde writer writes a subset of the members (no diagnoses, fewer counters), so its \
         real cost would be higher still.\n"
    );
    md
}
