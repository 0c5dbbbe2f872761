//! The summary of the recorded scenarios (`tests/fixtures/netns_scenarios.jsonl`: orderly
//! closes, a refusal, an abort, IPv6, a connect timeout between two namespaces), and the
//! cap on groups.
use super::*;
use crate::{
    event::Event,
    lifecycle::{ConnTable, TableConfig},
    wire::{Line, parse_line},
};

const FIXTURE: &str = include_str!("../../tests/fixtures/netns_scenarios.jsonl");

fn records() -> Vec<Conn> {
    let events: Vec<Event> = FIXTURE
        .lines()
        .filter_map(|l| match parse_line(l, false).expect("fixture line").line {
            Line::Event { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    let mut t = ConnTable::new(TableConfig::default());
    let mut out = Vec::new();
    for e in &events {
        t.advance(e.ts_ns, &mut out);
        t.process(e, &mut out);
    }
    t.finish_all(events.last().unwrap().ts_ns, &mut out);
    out
}

fn ends(r: &Row) -> Vec<(&'static str, u64)> {
    r.ends().map(|(e, n)| (e.name(), n)).collect()
}

#[test]
fn the_recorded_scenarios_summed_up() {
    let ctx = Context::default();
    let mut s = Summary::default();
    for c in records() {
        s.add(&ctx, &c);
    }
    assert_eq!(s.all.conns, 10);
    assert_eq!(
        ends(&s.all),
        [
            ("closed", 6),
            ("reset_sent", 1),
            ("reset_received", 1),
            ("refused", 1),
            ("timeout", 1)
        ]
    );
    assert_eq!(s.all.failed(), 4);
    assert_eq!(s.all.retransmits, 2, "the timed-out connect's two SYNs");
    // Connect times: the four clients that got through (not the refused or timed-out ones).
    assert_eq!(s.all.connect.count(), 4);
    assert_eq!(s.all.duration.count(), 10);
    let p99 = s.all.duration.quantile(0.99).unwrap() as f64;
    assert!((p99 - 3.1e9).abs() < 0.05e9, "the 3.1 s timeout: {p99}");

    let dest = s.grouping(By::Destination);
    let rows = dest.rows();
    // Five client destinations (ports 9701-9706, IPv6 9705 in brackets) and the servers' ports.
    let names: Vec<(Option<&str>, &str)> = rows
        .iter()
        .map(|(k, _)| (k.role, k.name.as_deref().unwrap()))
        .collect();
    assert!(
        names.contains(&(Some("client"), "10.77.0.1:9706")),
        "{names:?}"
    );
    assert!(
        names.contains(&(Some("client"), "[fd00:77::1]:9705")),
        "{names:?}"
    );
    assert!(names.contains(&(Some("server"), ":9701")), "{names:?}");
    assert_eq!(rows.len(), 10);
    let timeout = rows
        .iter()
        .find(|(k, _)| k.name.as_deref() == Some("10.77.0.1:9706"))
        .unwrap()
        .1;
    assert_eq!(ends(timeout), [("timeout", 1)]);
    assert_eq!(timeout.connect.count(), 0);
    assert!(dest.other().is_none());

    let procs = s.grouping(By::Process).rows();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].0.name.as_deref(), Some("python3"));
    assert_eq!(procs[0].1.conns, 10);
    // The recording has no cgroup ids: one group of unknown cgroup.
    let units = s.grouping(By::Unit).rows();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].0.name, None);
}

#[test]
fn groups_beyond_the_cap_add_up_in_other() {
    let ctx = Context::default();
    let mut s = Summary::default();
    let base = records().into_iter().next().unwrap();
    for port in 0..(MAX_GROUPS as u16 + 10) {
        for _ in 0..2 {
            let mut c = base.clone();
            c.rport = 1000 + port;
            s.add(&ctx, &c);
        }
    }
    let dest = s.grouping(By::Destination);
    assert_eq!(dest.rows().len(), MAX_GROUPS);
    let other = dest.other().expect("an other row");
    assert_eq!(other.conns, 20, "ten groups of two");
    let kept: u64 = dest.rows().iter().map(|(_, r)| r.conns).sum();
    assert_eq!(kept + other.conns, s.all.conns, "nothing lost");
}
