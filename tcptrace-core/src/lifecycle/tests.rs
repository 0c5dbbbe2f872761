//! The table on a recorded stream (`tests/fixtures/netns_scenarios.jsonl`: real events of
//! six scenarios between two namespaces, recorded with `tcptrace --events --format json`), and
//! on deliberately damaged copies of it: reused socket addresses, a lost event, a tiny table.
use std::collections::HashMap;

use super::*;
use crate::{
    event::{Event, EventKind},
    tcp::TcpState,
    wire::{Line, parse_line},
};

const FIXTURE: &str = include_str!("../../tests/fixtures/netns_scenarios.jsonl");

fn events() -> Vec<Event> {
    events_of(FIXTURE)
}

fn run(evs: &[Event], cfg: TableConfig) -> (Vec<Conn>, TableStats) {
    let mut t = ConnTable::new(cfg);
    let mut out = Vec::new();
    for e in evs {
        t.advance(e.ts_ns, &mut out);
        t.process(e, &mut out);
    }
    let end = evs.last().map_or(0, |e| e.ts_ns);
    t.finish_all(end, &mut out);
    (out, t.stats)
}

/// What a record says, in one comparable line (no addresses, times or ids).
fn summary(c: &Conn) -> String {
    let states: Vec<&str> = c.spans().map(|(s, _)| s.name()).collect();
    format!(
        "{} {} {} tw={:?} tx={:?} rx={:?} rst={}/{} err={:?} rtx={} notes={:?}",
        port(c),
        c.role.name(),
        states.join(">"),
        c.cold().time_wait.map(|(s, _)| s.name()),
        c.bytes_sent(),
        c.bytes_received(),
        c.cold().resets_sent,
        c.cold().resets_received,
        c.cold().error,
        c.cold().retransmits.total,
        c.note_names().collect::<Vec<_>>(),
    )
}

fn summaries(conns: &[Conn]) -> Vec<String> {
    let mut v: Vec<String> = conns.iter().map(summary).collect();
    v.sort();
    v
}

fn port(c: &Conn) -> u16 {
    if c.role == Role::Server {
        c.lport
    } else {
        c.rport
    }
}

#[test]
fn recorded_scenarios_give_whole_records() {
    let (conns, stats) = run(&events(), TableConfig::default());
    assert_eq!(stats.evicted, 0);
    let by = |p: u16, r: Role| {
        conns
            .iter()
            .find(|c| port(c) == p && c.role == r)
            .unwrap_or_else(|| panic!("no {r:?} record on {p}"))
    };
    let c = by(9701, Role::Client);
    assert_eq!(c.end, Some(End::Closed));
    assert_eq!(c.cold().time_wait.map(|t| t.0), Some(TcpState::TIME_WAIT));
    assert_eq!(
        (c.bytes_sent(), c.bytes_received()),
        (Some(4321), Some(777))
    );
    assert!(c.owner.is_some_and(|o| o.comm.bytes() == b"python3"));
    let s = by(9701, Role::Server);
    assert_eq!(s.end, Some(End::Closed));
    assert_eq!(s.owner.map(|o| o.pid), s.cold().closer.map(|o| o.pid));
    assert_eq!(
        by(9702, Role::Server).cold().time_wait.map(|t| t.0),
        Some(TcpState::TIME_WAIT)
    );
    assert_eq!(by(9703, Role::Client).end, Some(End::Refused));
    assert_eq!(by(9704, Role::Client).end, Some(End::ResetSent));
    assert_eq!(by(9704, Role::Server).end, Some(End::ResetReceived));
    assert_eq!(by(9705, Role::Client).bytes_sent(), Some(200_000));
    let t = by(9706, Role::Client);
    assert_eq!(t.end, Some(End::Timeout));
    assert_eq!(
        t.cold().retransmits.by_state[TcpState::SYN_SENT.0 as usize],
        2
    );
    assert!(
        conns.iter().all(|c| c.notes == 0),
        "{:#?}",
        summaries(&conns)
    );
}

#[test]
fn reused_socket_addresses_never_share_a_lifecycle() {
    let evs = events();
    let (before, _) = run(&evs, TableConfig::default());
    // The kernel reuses freed sockets; push that to the extreme: every connection socket of a
    // namespace gets the same address (listeners keep theirs, they overlap with children).
    let listeners: Vec<u64> = evs
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::State {
                    new: TcpState::LISTEN,
                    ..
                }
            )
        })
        .map(|e| e.sk)
        .collect();
    let mut one_per_ns: HashMap<Option<u32>, u64> = HashMap::new();
    let reused: Vec<Event> = evs
        .iter()
        .map(|e| {
            let mut e = *e;
            if e.sk != 0 && !listeners.contains(&e.sk) {
                e.sk = *one_per_ns.entry(e.netns).or_insert(e.sk);
            }
            e
        })
        .collect();
    let (after, stats) = run(&reused, TableConfig::default());
    assert_eq!(summaries(&before), summaries(&after));
    assert_eq!(stats.missed, 0);
}

#[test]
fn a_lost_event_is_admitted_and_contained() {
    let evs = events();
    let (before, _) = run(&evs, TableConfig::default());
    let victim = evs
        .iter()
        .position(|e| {
            e.rport == 9701
                && matches!(
                    e.kind,
                    EventKind::State {
                        old: TcpState::FIN_WAIT1,
                        ..
                    }
                )
        })
        .expect("client FIN_WAIT1 transition");
    let mut damaged = evs.clone();
    damaged.remove(victim);
    let (after, stats) = run(&damaged, TableConfig::default());
    assert_eq!(stats.missed, 1);
    let hurt: Vec<&Conn> = after.iter().filter(|c| c.notes != 0).collect();
    assert_eq!(hurt.len(), 1);
    let c = hurt[0];
    assert!(c.has_note(note::MISSED_EVENTS));
    assert_eq!(c.end, Some(End::Closed));
    // The state whose entry we missed is still listed, with an unknown duration before it.
    let spans: Vec<(TcpState, bool)> = c.spans().map(|(s, ns)| (s, ns.is_some())).collect();
    assert!(spans.contains(&(TcpState::FIN_WAIT1, false)), "{spans:?}");
    // Everything else is untouched.
    let rest = |v: &[Conn]| -> Vec<String> {
        summaries(v)
            .into_iter()
            .filter(|s| !s.starts_with("9701 client"))
            .collect()
    };
    let (rest_before, rest_after) = (rest(&before), rest(&after));
    assert_eq!(rest_before, rest_after);
}

#[test]
fn a_loss_notes_the_connections_open_then_and_no_others() {
    let evs = events();
    // Lost while both ends of 9704 (the SO_LINGER 0 abort) sit in ESTABLISHED for 300 ms.
    let at = evs
        .iter()
        .position(|e| {
            e.lport == 9704
                && matches!(
                    e.kind,
                    EventKind::State {
                        new: TcpState::ESTABLISHED,
                        ..
                    }
                )
        })
        .expect("9704 server ESTABLISHED");
    let mut t = ConnTable::new(TableConfig::default());
    let mut out = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        t.advance(e.ts_ns, &mut out);
        t.process(e, &mut out);
        if i == at {
            t.lost();
            // A second report while it is still open counts it once.
            t.lost();
        }
    }
    t.finish_all(evs.last().unwrap().ts_ns, &mut out);
    let (full, _) = run(&evs, TableConfig::default());
    assert_eq!(out.len(), full.len());
    let noted: Vec<String> = out
        .iter()
        .filter(|c| c.has_note(note::LOST_EVENTS))
        .map(|c| format!("{} {}", port(c), c.role.name()))
        .collect();
    // Both ends of 9704 were open; the connections before it had closed, later ones had not
    // begun. Nothing else about the records changes.
    assert_eq!(noted, ["9704 client", "9704 server"]);
    assert_eq!(t.stats.open_at_loss, 2);
    let without = |v: &[Conn]| -> Vec<String> {
        summaries(v)
            .into_iter()
            .map(|s| {
                s.replace(", \"lost_events\"", "")
                    .replace("\"lost_events\"", "")
            })
            .collect()
    };
    assert_eq!(without(&out), without(&full));
}

#[test]
fn eviction_bounds_the_table_and_loses_nothing_silently() {
    let evs = events();
    let (full, _) = run(&evs, TableConfig::default());
    let (small, stats) = run(
        &evs,
        TableConfig {
            max_conns: 1,
            ..TableConfig::default()
        },
    );
    assert!(stats.evicted > 0);
    let evicted = small.iter().filter(|c| c.has_note(note::EVICTED)).count() as u64;
    assert_eq!(evicted, stats.evicted, "every eviction is a record");
    assert!(small.len() >= full.len());
    assert!(
        small
            .iter()
            .filter(|c| c.has_note(note::EVICTED))
            .all(|c| c.end == Some(End::Open))
    );
}

#[test]
fn closed_connections_wait_for_trailing_facts_only_briefly() {
    let evs = events();
    let mut t = ConnTable::new(TableConfig::default());
    let mut out = Vec::new();
    for e in &evs {
        t.process(e, &mut out);
    }
    assert!(out.is_empty(), "nothing is emitted before its grace period");
    let last = evs.last().unwrap().ts_ns;
    t.advance(last + 10_000_000, &mut out);
    assert_eq!(
        out.len(),
        10,
        "all closed connections out 10 ms after the last event"
    );
}

#[test]
fn abort_closer_without_reset_reasons() {
    // 6.1 gives RSTs no reason: the SO_LINGER 0 client of 9704 (recorded on 6.18, its
    // reason removed) still names its closer, from the RST sent after its CLOSE.
    let mut evs = events();
    for e in &mut evs {
        if let EventKind::Reset { reason, .. } = &mut e.kind
            && e.rport == 9704
        {
            *reason = None;
        }
    }
    let client = |evs: &[Event]| {
        let (conns, _) = run(evs, TableConfig::default());
        conns
            .into_iter()
            .find(|c| c.rport == 9704 && c.role == Role::Client)
            .expect("9704 client")
    };
    let c = client(&evs);
    assert_eq!(c.end, Some(End::ResetSent));
    assert_eq!(c.cold().closer.map(|o| o.pid), Some(7376));
    // With a reason that is not an abort reason, the fallback stays out of it.
    assert_eq!(client(&events()).cold().closer, None);
    // A reset sent before the socket closed (a timer's) does not name a closer.
    for e in &mut evs {
        if let EventKind::Reset { state, .. } = &mut e.kind
            && e.rport == 9704
        {
            *state = Some(TcpState::ESTABLISHED);
        }
    }
    assert_eq!(client(&evs).cold().closer, None);
}

#[test]
fn an_error_report_without_an_error_is_not_the_error() {
    // As 6.1 reports a failed connect(): ETIMEDOUT, then (from tcp_disconnect, after
    // connect() read the error) the same socket with errno 0. Here the empty report comes
    // first: the record keeps the real error.
    let mut evs = events();
    let i = evs
        .iter()
        .position(|e| matches!(e.kind, EventKind::Error { .. }) && e.rport == 9706)
        .expect("9706 error");
    let mut empty = evs[i];
    empty.kind = EventKind::Error {
        errno: 0,
        state: Some(TcpState::CLOSE),
    };
    evs.insert(i, empty);
    let (conns, _) = run(&evs, TableConfig::default());
    let c = conns
        .iter()
        .find(|c| c.rport == 9706 && c.role == Role::Client)
        .expect("9706 client");
    assert_eq!(c.cold().error, Some(110));
    assert_eq!(c.end, Some(End::Timeout));
}

/// The lab's recordings beside the scenarios: timeouts, FIN_WAIT2, keepalive overrides.
const LAB_FIXTURES: [&str; 3] = [
    include_str!("../../tests/fixtures/lab_data-timeout.jsonl"),
    include_str!("../../tests/fixtures/lab_fin-wait2.jsonl"),
    include_str!("../../tests/fixtures/lab_keepalive-override.jsonl"),
];

fn events_of(fixture: &str) -> Vec<Event> {
    fixture
        .lines()
        .filter_map(|l| match parse_line(l, false).expect("fixture line").line {
            Line::Event { event: e, .. } => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn records_need_the_task_only_where_the_plan_carries_it() {
    let plan = table::task_plan();
    for fixture in [FIXTURE].iter().chain(&LAB_FIXTURES) {
        let evs = events_of(fixture);
        // What the programs write with the plan: no task elsewhere (sock_diag facts carry
        // the owners /proc gave, as they do live).
        let stripped: Vec<Event> = evs
            .iter()
            .map(|e| {
                let carried = match e.kind {
                    EventKind::State { old, new, .. } => plan.state(old.0, new.0),
                    EventKind::TimeWait { .. }
                    | EventKind::RequestGone
                    | EventKind::Existing { .. } => true,
                    _ => plan.others != 0,
                };
                let mut e = *e;
                if !carried {
                    e.pid = 0;
                    e.tid = 0;
                    e.comm = Default::default();
                }
                e
            })
            .collect();
        assert!(stripped.iter().zip(&evs).any(|(s, e)| s != e));
        let (full, _) = run(&evs, TableConfig::default());
        let (lean, _) = run(&stripped, TableConfig::default());
        assert!(!full.is_empty());
        assert_eq!(lean, full);
    }
}
