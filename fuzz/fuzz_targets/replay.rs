//! Fuzzes what `tcptrace replay` does with a recording, in the pure core: the stream reader
//! (JSON lines or a binary recording), the decoder, the connection table, every diagnosis rule
//! with the recording's own sysctls, the summary of the records (`--summary`) and the writers
//! of what comes out. Any panic, or memory beyond libFuzzer's limit, is a bug.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tcptrace_core::{
    clock::WallClock,
    context::Context,
    diagnose::{self, Inputs, Severity, netns::NetnsWatch},
    lifecycle::{ConnTable, TableConfig},
    summary::{By, Summary},
    sysctl::Sysctls,
    wire::{
        self, Cold, Line, SummaryLine,
        reader::{Item, Reader},
        summary::{Period, Span},
    },
};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else {
        return;
    };
    let mut ctx = Context::default();
    let mut table = ConnTable::new(TableConfig {
        max_conns: 64,
        ..TableConfig::default()
    });
    let mut sysctls: HashMap<u32, Sysctls> = HashMap::new();
    let fallback = Sysctls::defaults(Some(250));
    let mut watches: HashMap<u32, NetnsWatch> = HashMap::new();
    let mut findings = Vec::new();
    let mut done = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    let mut events = Vec::new();
    let mut summary = Summary::default();
    while let Ok(Some(item)) = reader.next_item(true) {
        match item {
            Item::Record(ev) => events.push(ev),
            Item::Context(c) => {
                ctx.set_clock(WallClock {
                    offset_ns: i128::from(c.clock_offset_ns),
                });
                for (code, name) in &c.reset_reasons {
                    ctx.learn_reason(*code, name);
                    table.learn_reason(*code, name);
                }
            }
            Item::Parsed(p) => {
                if let Some(off) = p.clock_offset_ns {
                    ctx.set_clock(WallClock { offset_ns: off });
                }
                match p.line {
                    Line::Event { event, reason } => {
                        if let Some((code, name)) = reason {
                            ctx.learn_reason(code, &name);
                            table.learn_reason(code, &name);
                        }
                        events.push(event);
                    }
                    Line::Cold(Cold::Sysctl(s)) => {
                        sysctls.insert(s.netns, s.sysctls());
                    }
                    Line::Cold(Cold::Interfaces(i)) => ctx.learn_mtus(i.netns, &i.mtus()),
                    Line::Cold(Cold::Netns(n)) => {
                        ctx.learn_netns_name(n.netns, &n.name);
                    }
                    Line::Cold(Cold::NetnsSample(s)) => {
                        let s = s.sample();
                        let sys = sysctls.get(&s.netns).unwrap_or(&fallback);
                        watches
                            .entry(s.netns)
                            .or_default()
                            .check(&s, sys, &mut findings);
                        for f in findings.drain(..) {
                            wire::diagnosis::write_finding(&mut out, &ctx, &f);
                        }
                    }
                    _ => {}
                }
            }
        }
        for ev in events.drain(..) {
            if ev.ts_ns > last {
                table.advance(ev.ts_ns, &mut done);
                last = ev.ts_ns;
            }
            table.process(&ev, &mut done);
            wire::event::write(&mut out, &ctx, &ev, None);
        }
        judge(&mut done, &ctx, &sysctls, &fallback, &mut summary, &mut out);
        out.clear();
    }
    table.finish_all(last, &mut done);
    judge(&mut done, &ctx, &sysctls, &fallback, &mut summary, &mut out);
    let span = Span {
        start_ns: 0,
        end_ns: last,
        period: Period::Run,
    };
    let mut line = |by, key, row| {
        let l = SummaryLine::new(&ctx, span, by, key, row);
        wire::write_cold(&mut out, &Cold::Summary(l));
    };
    line(By::All, None, &summary.all);
    for by in By::GROUPED {
        let g = summary.grouping(by);
        for (key, row) in g.rows() {
            line(by, Some(key), row);
        }
        if let Some(row) = g.other() {
            line(by, None, row);
        }
    }
});

fn judge(
    done: &mut Vec<tcptrace_core::lifecycle::Conn>,
    ctx: &Context,
    sysctls: &HashMap<u32, Sysctls>,
    fallback: &Sysctls,
    summary: &mut Summary,
    out: &mut Vec<u8>,
) {
    let mut diags = Vec::new();
    for c in done.drain(..) {
        let netns = c.netns.unwrap_or(0);
        let inp = Inputs {
            sys: sysctls.get(&netns).unwrap_or(fallback),
            reset_reason: c.cold().reset_reason.and_then(|r| ctx.reason_name(r)),
            mtu: ctx.mtu(netns, c.laddr),
        };
        diags.clear();
        diagnose::diagnose(&c, &inp, Severity::Info, &mut diags);
        summary.add(ctx, &c);
        wire::conn::write(out, ctx, &c, &diags);
    }
}
