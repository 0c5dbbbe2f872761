//! Every line kind written and read back: what the writer puts on the wire is what the reader
//! takes off it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::{
    clock::WallClock,
    context::Context,
    diagnose::{
        Diagnosis, Severity, Value,
        netns::{Listener, NetnsFinding, NetnsSample},
    },
    event::{Comm, EventKind, Family, ResetDirection},
    lifecycle::{ConnTable, TableConfig},
    snapshot::{Field, SockSnapshot},
    sysctl::Sysctls,
    tcp::{SegmentKind, TcpState},
};

fn ctx() -> Context {
    let mut c = Context::default();
    c.set_clock(WallClock {
        offset_ns: 1_795_478_400_000_000_000,
    });
    c.learn_reason(1, "NO_SOCKET");
    c
}

fn ev(kind: EventKind, v6: bool) -> Event {
    let (family, laddr, raddr) = if v6 {
        (
            Family::Inet6,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        )
    } else {
        (
            Family::Inet,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        )
    };
    Event {
        ts_ns: 1_000_123_000,
        sk: 0xffff_8880_0000_1000,
        netns: Some(4026531840),
        // IPv6 events here stand for the ones without a cgroup (request, timewait sockets).
        cgroup: (!v6).then_some(0x1_0000_2a3b),
        pid: 7,
        tid: 8,
        comm: Comm::new("n\"c\n\x1b"),
        family,
        laddr,
        lport: 40000,
        raddr,
        rport: 9527,
        kind,
    }
}

fn snapshot() -> SockSnapshot {
    let mut s = SockSnapshot::default();
    s.set(Field::BytesAcked, 4322);
    s.set(Field::SrttUs, 52);
    s.set(Field::Timestamps, 1);
    s.set(Field::Linger2Jiffies, (-1i64) as u64);
    s
}

fn every_event_kind() -> Vec<Event> {
    let kinds = [
        EventKind::State {
            old: TcpState::SYN_SENT,
            new: TcpState::ESTABLISHED,
            sock: Some(snapshot()),
        },
        EventKind::State {
            old: TcpState::CLOSE,
            new: TcpState::SYN_SENT,
            sock: None,
        },
        EventKind::Retransmit {
            state: Some(TcpState::FIN_WAIT1),
            kind: SegmentKind::Fin,
            from_flags: true,
        },
        EventKind::Retransmit {
            state: None,
            kind: SegmentKind::Data,
            from_flags: false,
        },
        EventKind::RetransmitFailed {
            state: Some(TcpState::ESTABLISHED),
            kind: SegmentKind::Data,
            from_flags: true,
            errno: 105,
        },
        EventKind::SynAckRetransmit { listener: 0x10 },
        EventKind::Reset {
            direction: ResetDirection::Sent,
            state: None,
            reason: Some(1),
        },
        EventKind::Reset {
            direction: ResetDirection::Received,
            state: Some(TcpState::SYN_SENT),
            reason: None,
        },
        EventKind::Error {
            errno: 110,
            state: Some(TcpState::CLOSE),
        },
        EventKind::TimeWait {
            state: Some(TcpState::TIME_WAIT),
            timer_ms: Some(59_999),
        },
        EventKind::TimeWait {
            state: None,
            timer_ms: None,
        },
        EventKind::RequestGone,
        EventKind::Existing {
            state: TcpState::ESTABLISHED,
            at_exit: true,
            sock: Some(snapshot()),
        },
    ];
    let mut out = Vec::new();
    for (i, k) in kinds.into_iter().enumerate() {
        out.push(ev(k, i % 2 == 1));
    }
    out
}

fn line(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut b = Vec::new();
    f(&mut b);
    String::from_utf8(b).expect("UTF-8")
}

#[test]
fn every_event_kind_round_trips() {
    let ctx = ctx();
    for e in every_event_kind() {
        let text = line(|b| event::write(b, &ctx, &e, Some(1_500_000)));
        let parsed = parse_line(&text, true).unwrap_or_else(|err| panic!("{err}: {text}"));
        let Line::Event { event, reason } = parsed.line else {
            panic!("not an event: {text}");
        };
        // The comm is cut at the kernel's 15 bytes, as it was.
        assert_eq!(event, e, "{text}");
        assert_eq!(parsed.clock_offset_ns, Some(ctx.clock().offset_ns));
        if let EventKind::Reset {
            reason: Some(code), ..
        } = e.kind
        {
            assert_eq!(reason, Some((code, "NO_SOCKET".to_string())));
        }
    }
}

fn diagnosis() -> Diagnosis {
    Diagnosis {
        rule: "connect_timeout",
        severity: Severity::Error,
        sysctl: vec![("net.ipv4.tcp_syn_retries", "2".to_string())],
        overrides: vec![("TCP_SYNCNT", "3".to_string())],
        observed: vec![("syn_retransmits", Value::Int(5))],
        expected: vec![
            ("retransmit_at_ms", Value::Ints(vec![1000, 2000])),
            ("exact", Value::Bool(true)),
            ("why", Value::Text("a \"quote\"".into())),
        ],
        agrees: Some(true),
        assumed_defaults: true,
        message: "timed out\n".into(),
    }
}

fn same_diagnosis(read: &DiagnosisLine, d: &Diagnosis) {
    assert_eq!(read.rule, d.rule);
    assert_eq!(read.severity, d.severity.name());
    assert_eq!(read.sysctl["net.ipv4.tcp_syn_retries"], "2");
    assert_eq!(read.overrides["TCP_SYNCNT"], "3");
    assert_eq!(read.observed["syn_retransmits"], 5);
    assert_eq!(
        read.expected["retransmit_at_ms"],
        serde_json::json!([1000, 2000])
    );
    assert_eq!(read.expected["exact"], true);
    assert_eq!(read.expected["why"], "a \"quote\"");
    assert_eq!(read.agrees, d.agrees);
    assert_eq!(read.assumed_defaults, d.assumed_defaults);
    assert_eq!(read.message, d.message);
}

#[test]
fn connection_records_round_trip() {
    let ctx = ctx();
    let fixture = include_str!("../../tests/fixtures/netns_scenarios.jsonl");
    let mut table = ConnTable::new(TableConfig::default());
    let mut done = Vec::new();
    let mut last = 0;
    for l in fixture.lines() {
        if let Line::Event { event, .. } = parse_line(l, false).unwrap().line {
            table.process(&event, &mut done);
            last = event.ts_ns;
        }
    }
    table.finish_all(last, &mut done);
    assert!(done.len() >= 10);
    let d = diagnosis();
    let mut ctx = ctx;
    let container = "4c01db0b339c4a6f0e8e7f1f2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4";
    ctx.learn_cgroup(7, &format!("/system.slice/docker-{container}.scope"));
    // One record in a known cgroup, one in a cgroup never named, the rest without one.
    done[0].cgroup = std::num::NonZeroU64::new(7);
    done[1].cgroup = std::num::NonZeroU64::new(8);
    for c in &done {
        let text = line(|b| conn::write(b, &ctx, c, std::slice::from_ref(&d)));
        assert_eq!(parse_line(&text, false).unwrap().line, Line::Other);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "conn");
        let r: ConnLine = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(r.ts_ns, c.end_ns.unwrap_or(c.last_ns));
        assert_eq!(r.id, c.id);
        assert_eq!(r.netns, c.netns);
        assert_eq!(r.cgroup.as_ref().map(|g| g.id), c.cgroup.map(|id| id.get()));
        if let Some(g) = &r.cgroup {
            let info = ctx.cgroup(g.id);
            assert_eq!(g.path.as_deref(), info.map(|i| i.path.as_str()));
            assert_eq!(g.unit, info.and_then(|i| i.unit.clone()));
            assert_eq!(
                g.container
                    .as_ref()
                    .map(|c| (c.runtime.as_str(), c.id.as_str())),
                info.and_then(|i| i.container.as_ref())
                    .map(|c| (c.runtime.name(), c.id.as_str()))
            );
        }
        assert_eq!(r.pid, c.owner.map(|o| o.pid));
        assert_eq!(r.comm, c.owner.map(|o| o.comm.to_string_lossy()));
        assert_eq!(
            (r.laddr, r.lport, r.raddr, r.rport),
            (c.laddr, c.lport, c.raddr, c.rport)
        );
        assert_eq!(r.role, c.role.name());
        assert_eq!(r.end, c.end.map_or("open", |e| e.name()));
        let states: Vec<&str> = c.spans().map(|(s, _)| s.name()).collect();
        let read: Vec<&str> = r.states.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(read, states);
        assert_eq!(r.retransmits.total, c.cold().retransmits.total);
        assert_eq!(r.resets.sent, u32::from(c.cold().resets_sent));
        assert_eq!(r.bytes_sent, c.bytes_sent());
        assert_eq!(r.bytes_received, c.bytes_received());
        assert_eq!(
            r.time_wait_state.as_deref(),
            c.cold().time_wait.map(|(s, _)| s.name())
        );
        assert_eq!(r.options.mss, c.options.mss.map(u32::from));
        let notes: Vec<&str> = c.note_names().collect();
        assert_eq!(r.notes, notes);
        assert_eq!(r.diagnosis.len(), 1);
        same_diagnosis(&r.diagnosis[0], &d);
        if let (Some(ms), Some(ns)) = (r.duration_ms, c.duration_ns()) {
            assert!((ms - ns as f64 / 1e6).abs() < 0.001);
        }
    }
}

#[test]
fn findings_round_trip() {
    let ctx = ctx();
    let f = NetnsFinding {
        ts_ns: 5_000_000_000,
        netns: 4026532246,
        diagnosis: diagnosis(),
    };
    let text = line(|b| diagnosis::write_finding(b, &ctx, &f));
    assert_eq!(parse_line(&text, false).unwrap().line, Line::Other);
    let r: FindingLine = serde_json::from_str(&text).unwrap();
    assert_eq!((r.ts_ns, r.netns), (f.ts_ns, f.netns));
    same_diagnosis(&r.diagnosis, &f.diagnosis);
}

fn round_trip(cold: Cold) {
    let text = line(|b| write_cold(b, &cold));
    let parsed = parse_line(&text, false).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(parsed.line, Line::Cold(cold), "{text}");
}

#[test]
fn cold_lines_round_trip() {
    let ctx = ctx();
    let sys = Sysctls::from_read(
        [
            ("net.ipv4.tcp_syn_retries", "2"),
            ("net.ipv4.ip_local_port_range", "40000\t40049"),
        ],
        Some(250),
    );
    let line = SysctlLine::new(&ctx, 7, 42, &sys);
    assert_eq!(line.sysctls(), sys);
    round_trip(Cold::Sysctl(line));
    let mut defaults = Sysctls::defaults(None);
    defaults.source = crate::sysctl::Source::Defaults;
    assert_eq!(SysctlLine::new(&ctx, 7, 42, &defaults).sysctls(), defaults);

    let mtus = vec![
        (IpAddr::V4(Ipv4Addr::LOCALHOST), 65536),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 65536),
    ];
    let ifs = InterfacesLine::new(&ctx, 7, 42, &mtus);
    assert_eq!(ifs.mtus(), mtus);
    round_trip(Cold::Interfaces(ifs));

    let sample = NetnsSample {
        netns: 42,
        ts_ns: 9,
        tcpext: vec![("ListenDrops".into(), 3), ("ListenOverflows".into(), 2)],
        time_wait_total: 50,
        time_wait_by_dest: vec![(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9527, 50)],
        listeners: vec![Listener {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 9527,
            queued: 2,
            backlog: 1,
        }],
    };
    let s = SampleLine::new(&ctx, &sample);
    assert_eq!(s.sample(), sample);
    round_trip(Cold::NetnsSample(s));

    let mut named = ctx;
    let pod = "0f1c2d3e_4567_89ab_cdef_0123456789ab";
    let id = "4c01db0b339c4a6f0e8e7f1f2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4";
    named.learn_cgroup(
        9,
        &format!("/kubepods.slice/kubepods-pod{pod}.slice/cri-containerd-{id}.scope"),
    );
    named.learn_cgroup(10, "/tt\u{1b}[2J\n\"quoted\"");
    assert!(
        CgroupLine::new(&named, 1, 11).is_none(),
        "an unknown id has no line"
    );
    for cg in [9, 10] {
        let l = CgroupLine::new(&named, 1, cg).expect("known");
        assert_eq!(l.path, named.cgroup(cg).unwrap().path);
        round_trip(Cold::Cgroup(l));
    }
    let k = CgroupLine::new(&named, 1, 9).unwrap();
    let c = k.container.expect("container");
    assert_eq!(
        (c.runtime.as_str(), c.pod_uid.as_deref()),
        ("containerd", Some("0f1c2d3e-4567-89ab-cdef-0123456789ab"))
    );
    assert!(named.learn_netns_name(42, "tcptrace-lab-7-srv"));
    assert!(!named.learn_netns_name(42, "tcptrace-lab-7-srv"));
    assert!(
        NetnsLine::new(&named, 1, 43).is_none(),
        "an unnamed one has no line"
    );
    let n = NetnsLine::new(&named, 1, 42).expect("named");
    assert_eq!(n.name, "tcptrace-lab-7-srv");
    round_trip(Cold::Netns(n));
    let ctx = named;

    round_trip(Cold::Stream(StreamHeader::new(&ctx, 1, Content::Events)));
    round_trip(Cold::Lost(LostLine::new(&ctx, 1, 12, LostCause::Recursion)));
    round_trip(Cold::SysctlReport(SysctlReport::new(42, &sys)));
    summary_rows_round_trip(&ctx);
    round_trip(Cold::Log(LogLine {
        time: "2026-11-24T00:00:00.000000Z".into(),
        level: stream::Level::Warning,
        message: "netns 4026532246 unreadable".into(),
    }));
}

/// Every kind of summary row: the whole period, a group with percentiles, one without any
/// completed handshake, and the row of groups beyond the cap.
fn summary_rows_round_trip(ctx: &Context) {
    use crate::{
        lifecycle::{End, Role},
        summary::{By, Key, Row},
        wire::summary::{Period, Span},
    };
    let span = Span {
        start_ns: 1_000_000_000,
        end_ns: 11_000_000_000,
        period: Period::Interval,
    };
    let mut row = Row {
        conns: 3,
        ..Row::default()
    };
    row.ends[End::ALL.iter().position(|e| *e == End::Timeout).unwrap()] = 1;
    row.ends[0] = 2;
    row.retransmits = 5;
    for ns in [100_000, 120_000] {
        row.connect.record(ns);
    }
    for ns in [280_000, 530_000, 3_100_000_000] {
        row.duration.record(ns);
    }
    let key = Key {
        role: Some(Role::Client.name()),
        name: Some("[fd00:77::1]:9705".into()),
    };
    let l = SummaryLine::new(ctx, span, By::Destination, Some(&key), &row);
    assert_eq!(l.failed, 1);
    assert_eq!(l.ends, vec![("closed".into(), 2), ("timeout".into(), 1)]);
    assert_eq!(l.duration_ms.as_ref().unwrap().p99, 3100.0);
    assert!(!l.other);
    round_trip(Cold::Summary(l));
    let all = SummaryLine::new(ctx, span, By::All, None, &row);
    assert_eq!((all.key.as_deref(), all.other), (None, false));
    round_trip(Cold::Summary(all));
    let mut empty = Row {
        conns: 1,
        ..Row::default()
    };
    empty.ends[End::ALL.iter().position(|e| *e == End::Open).unwrap()] = 1;
    let other = SummaryLine::new(
        ctx,
        Span {
            period: Period::Run,
            ..span
        },
        By::Process,
        None,
        &empty,
    );
    assert!(other.other && other.connect_ms.is_none() && other.duration_ms.is_none());
    round_trip(Cold::Summary(other));
}

#[test]
fn older_and_newer_streams() {
    // A loss line from before causes were recorded: a full ring buffer.
    let old = r#"{"type":"lost","ts_ns":5,"time":"2026-11-24T00:00:00.000000Z","count":3}"#;
    assert_eq!(
        parse_line(old, false).unwrap().line,
        Line::Cold(Cold::Lost(LostLine {
            ts_ns: 5,
            time: "2026-11-24T00:00:00.000000Z".into(),
            count: 3,
            cause: LostCause::RingFull,
        }))
    );
    let newer = r#"{"type":"stream","ts_ns":1,"time":"t","schema":99,"tool":"tcptrace","version":"9","content":"events"}"#;
    assert_eq!(parse_line(newer, false), Err(WireError::Schema(99)));
    // A kind from a newer tcptrace, with members of shapes this one does not expect.
    let unknown = r#"{"type":"forecast","ts_ns":"soon","state":{"a":1}}"#;
    assert_eq!(parse_line(unknown, false).unwrap().line, Line::Other);
    // A known kind with a bad member is an error.
    assert!(parse_line(r#"{"type":"state","ts_ns":"x"}"#, false).is_err());
    assert!(parse_line("not json", false).is_err());
}

#[test]
fn raw_context_round_trips() {
    let ctx = ctx();
    let snap = crate::snapshot::SnapLayout::default();
    let rc = raw::RawContext::of(&ctx, &snap);
    let text = line(|b| rc.write(b));
    assert_eq!(raw::RawContext::parse(&text).unwrap(), rc);
    assert_eq!(rc.reset_reasons, vec![(1, "NO_SOCKET".to_string())]);
    assert_eq!(raw::is_recording(raw::MAGIC), Ok(true));
    // Version 1 had 96-byte records without the cgroup id; 3 is from the future.
    assert!(raw::is_recording(b"tcptrace-raw\0\0\0\x01").is_err());
    assert!(raw::is_recording(b"tcptrace-raw\0\0\0\x03").is_err());
    assert_eq!(raw::is_recording(b"{\"type\":\"state\"}"), Ok(false));
}
