//! Rules on recorded streams: the real events of `tests/fixtures/*.jsonl` go through the
//! connection table, and each finished record is diagnosed with the sysctls the recording's
//! namespaces had (from the stream's `sysctl` lines where it has them).
use std::collections::HashMap;

use super::*;
use crate::{
    lifecycle::{ConnTable, TableConfig},
    sysctl::{self as sc, Sysctls},
    wire::{Cold, Line, parse_line},
};

const NETNS_SCENARIOS: &str = include_str!("../../tests/fixtures/netns_scenarios.jsonl");

/// Records of a stream and the sysctls it carried per namespace.
fn replay(text: &str) -> (Vec<Conn>, HashMap<u32, Sysctls>) {
    let mut t = ConnTable::new(TableConfig::default());
    let mut out = Vec::new();
    let mut sys = HashMap::new();
    let mut last = 0;
    for l in text.lines() {
        match parse_line(l, false).expect("fixture line").line {
            Line::Event { event: e, .. } => {
                t.advance(e.ts_ns, &mut out);
                t.process(&e, &mut out);
                last = e.ts_ns;
            }
            Line::Cold(Cold::Sysctl(s)) => {
                sys.insert(s.netns, s.sysctls());
            }
            _ => {}
        }
    }
    t.finish_all(last, &mut out);
    (out, sys)
}

fn diagnosed(c: &Conn, sys: &Sysctls, reason: Option<&str>) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let inp = Inputs {
        sys,
        reset_reason: reason,
        mtu: Some(1500),
    };
    diagnose(c, &inp, Severity::Info, &mut out);
    out
}

fn by_rport(conns: &[Conn], port: u16) -> &Conn {
    conns
        .iter()
        .find(|c| c.rport == port && c.role == crate::lifecycle::Role::Client)
        .unwrap_or_else(|| panic!("no client record to port {port}"))
}

#[test]
fn syn_timeout_with_syn_retries_1_agrees_with_the_kernel() {
    let (conns, _) = replay(NETNS_SCENARIOS);
    // The recording set tcp_syn_retries=1 in the client namespace (kernel 6.18 defaults else).
    let sys = Sysctls::from_read(
        [
            (sc::SYN_RETRIES, "1"),
            (sc::SYN_LINEAR_TIMEOUTS, "4"),
            (sc::RTO_MAX_MS, "120000"),
        ],
        Some(250),
    );
    let d = diagnosed(by_rport(&conns, 9706), &sys, None);
    let d = d
        .iter()
        .find(|d| d.rule == "connect_timeout")
        .expect("connect_timeout");
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.sysctl[0], (sc::SYN_RETRIES, "1".to_string()));
    assert!(
        d.observed.contains(&("syn_retransmits", 2u32.into())),
        "{d:?}"
    );
    assert!(
        d.expected.contains(&("gave_up_after_ms", 3000u64.into())),
        "{d:?}"
    );
    assert_eq!(d.agrees, Some(true), "{}", d.message);
    // The same record judged against the 6.18 default of 6 does not agree.
    let default = Sysctls::from_read(
        [(sc::SYN_RETRIES, "6"), (sc::SYN_LINEAR_TIMEOUTS, "4")],
        None,
    );
    let d = diagnosed(by_rport(&conns, 9706), &default, None);
    assert_eq!(
        d.iter()
            .find(|d| d.rule == "connect_timeout")
            .unwrap()
            .agrees,
        Some(false)
    );
}

#[test]
fn refused_and_abortive_close() {
    let (conns, _) = replay(NETNS_SCENARIOS);
    let sys = Sysctls::defaults(Some(250));
    let d = diagnosed(by_rport(&conns, 9703), &sys, None);
    assert_eq!(d.iter().map(|d| d.rule).collect::<Vec<_>>(), ["refused"]);
    assert!(d[0].assumed_defaults);
    // SO_LINGER 0: the client reset with TCP_ABORT_ON_CLOSE; the server received it.
    let client = by_rport(&conns, 9704);
    let d = diagnosed(client, &sys, Some("TCP_ABORT_ON_CLOSE"));
    let reset = d.iter().find(|d| d.rule == "reset").expect("reset");
    assert!(reset.message.contains("SO_LINGER 0"), "{}", reset.message);
    let server = conns
        .iter()
        .find(|c| c.lport == 9704 && c.role == crate::lifecycle::Role::Server)
        .unwrap();
    let d = diagnosed(server, &sys, None);
    assert!(
        d.iter()
            .any(|d| d.rule == "reset" && d.message.contains("peer aborted"))
    );
}

#[test]
fn orderly_close_explains_time_wait_and_options_only_at_info() {
    let (conns, _) = replay(NETNS_SCENARIOS);
    let sys = Sysctls::from_read(
        [
            (sc::SACK, "1"),
            (sc::TIMESTAMPS, "1"),
            (sc::WINDOW_SCALING, "1"),
            (sc::TW_REUSE, "2"),
        ],
        Some(250),
    );
    let c = by_rport(&conns, 9701);
    let rules: Vec<&str> = diagnosed(c, &sys, None).iter().map(|d| d.rule).collect();
    assert!(rules.contains(&"handshake"), "{rules:?}");
    let mut warn = Vec::new();
    diagnose(
        c,
        &Inputs {
            sys: &sys,
            reset_reason: None,
            mtu: None,
        },
        Severity::Warning,
        &mut warn,
    );
    assert!(warn.is_empty(), "{warn:?}");
    let hs = diagnosed(c, &sys, None)
        .into_iter()
        .find(|d| d.rule == "handshake")
        .unwrap();
    assert!(hs.message.contains("SACK on"), "{}", hs.message);
    assert!(hs.message.contains("MSS 1460"), "{}", hs.message);
    assert_eq!(hs.agrees, Some(true));
}

/// Streams recorded with `tcptrace lab NAME --events --format json`: real events plus the
/// `sysctl` lines of both namespaces.
const LAB_FIN_WAIT2: &str = include_str!("../../tests/fixtures/lab_fin-wait2.jsonl");
const LAB_KEEPALIVE_OVERRIDE: &str =
    include_str!("../../tests/fixtures/lab_keepalive-override.jsonl");
const LAB_DATA_TIMEOUT: &str = include_str!("../../tests/fixtures/lab_data-timeout.jsonl");

/// Every diagnosis of every record of a recorded lab run, judged with its own sysctls.
fn lab_diagnoses(text: &str) -> Vec<(crate::lifecycle::Role, Diagnosis)> {
    let (conns, sys) = replay(text);
    let mut out = Vec::new();
    for c in &conns {
        // Only the lab's two namespaces carry sysctl lines; anything else traced then is not ours.
        let Some(s) = c.netns.and_then(|ns| sys.get(&ns)) else {
            continue;
        };
        for d in diagnosed(c, s, None) {
            out.push((c.role, d));
        }
    }
    out
}

fn rule(
    all: &[(crate::lifecycle::Role, Diagnosis)],
    role: crate::lifecycle::Role,
    rule: &str,
) -> Diagnosis {
    all.iter()
        .find(|(r, d)| *r == role && d.rule == rule)
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("no {rule}: {all:#?}"))
}

#[test]
fn recorded_fin_wait2_and_last_ack() {
    use crate::lifecycle::Role;
    let all = lab_diagnoses(LAB_FIN_WAIT2);
    let c = rule(&all, Role::Client, "fin_wait2_timeout");
    assert_eq!(c.sysctl, vec![(sc::FIN_TIMEOUT, "3".to_string())]);
    assert_eq!(c.agrees, Some(true), "{}", c.message);
    let s = rule(&all, Role::Server, "orphan_fin_timeout");
    assert_eq!(s.sysctl[0], (sc::ORPHAN_RETRIES, "2".to_string()));
    assert!(s.observed.contains(&("state", "LAST_ACK".into())));
    assert_eq!(s.agrees, Some(true), "{}", s.message);
    // Judged as if tcp_orphan_retries were the default 0 (→ 8), the same record disagrees.
    let (conns, _) = replay(LAB_FIN_WAIT2);
    let server = conns.iter().find(|c| c.role == Role::Server).unwrap();
    let d = diagnosed(
        server,
        &Sysctls::from_read([(sc::ORPHAN_RETRIES, "0")], Some(250)),
        None,
    );
    let d = d.iter().find(|d| d.rule == "orphan_fin_timeout").unwrap();
    assert_eq!(d.agrees, Some(false));
    assert!(d.expected.contains(&("retries", 8u32.into())));
}

#[test]
fn recorded_keepalive_with_socket_overrides() {
    use crate::lifecycle::Role;
    let all = lab_diagnoses(LAB_KEEPALIVE_OVERRIDE);
    let d = rule(&all, Role::Client, "keepalive_timeout");
    assert_eq!(
        d.overrides,
        vec![
            ("TCP_KEEPIDLE", "1 s".to_string()),
            ("TCP_KEEPINTVL", "1 s".to_string()),
            ("TCP_KEEPCNT", "2".to_string())
        ]
    );
    assert!(d.sysctl.contains(&(sc::KEEPALIVE_TIME, "7200".to_string())));
    assert!(d.expected.contains(&("idle_ms", 3000u64.into())));
    assert_eq!(d.agrees, Some(true), "{}", d.message);
    // Without HZ the jiffies overrides cannot be read: the sysctls then fail to explain it.
    let (conns, _) = replay(LAB_KEEPALIVE_OVERRIDE);
    let client = conns
        .iter()
        .find(|c| c.role == Role::Client && c.end.is_some())
        .unwrap();
    let d = diagnosed(client, &Sysctls::defaults(None), None);
    assert_eq!(
        d.iter()
            .find(|d| d.rule == "keepalive_timeout")
            .unwrap()
            .agrees,
        Some(false)
    );
}

#[test]
fn recorded_data_timeout() {
    use crate::lifecycle::Role;
    let all = lab_diagnoses(LAB_DATA_TIMEOUT);
    let d = rule(&all, Role::Client, "data_timeout");
    assert_eq!(d.sysctl[0], (sc::RETRIES2, "3".to_string()));
    assert!(d.expected.contains(&("budget_ms", 3000u64.into())));
    assert_eq!(d.agrees, Some(true), "{}", d.message);
}

#[test]
fn every_finding_comes_from_its_registered_rule_at_its_severity() {
    let mut seen = std::collections::BTreeSet::new();
    for text in [
        NETNS_SCENARIOS,
        LAB_FIN_WAIT2,
        LAB_KEEPALIVE_OVERRIDE,
        LAB_DATA_TIMEOUT,
    ] {
        let (conns, sys) = replay(text);
        for c in &conns {
            let s = sys
                .get(&c.netns.unwrap_or(0))
                .cloned()
                .unwrap_or_else(|| Sysctls::defaults(None));
            for d in diagnosed(c, &s, None) {
                let r = rules::RULES
                    .iter()
                    .find(|r| r.id == d.rule)
                    .unwrap_or_else(|| panic!("{} is not in the registry", d.rule));
                assert_eq!(r.severity, d.severity, "{}", d.rule);
                seen.insert(d.rule);
            }
        }
    }
    // The recordings exercise most rules; each of these fired at least once.
    for id in [
        "connect_timeout",
        "refused",
        "reset",
        "handshake",
        "time_wait",
    ] {
        assert!(seen.contains(id), "{id} never fired: {seen:?}");
    }
    let mut ids: Vec<&str> = rules::RULES.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rules::RULES.len(), "rule ids are unique");
}

#[test]
fn syn_timeout_on_6_1_without_linear_timeouts() {
    // `tcptrace lab syn-sent` recorded in Debian's 6.1 (cargo xtask vm-test): no
    // tcp_syn_linear_timeouts there, so tcp_syn_retries=2 means 2 SYN retransmits, at 1 s and
    // 3 s, and ETIMEDOUT at ≈7 s, as in the article (5.15).
    let (conns, sys) = replay(include_str!(
        "../../tests/fixtures/kernels/6.1/lab_syn-sent.jsonl"
    ));
    let c = conns
        .iter()
        .find(|c| c.rport == 9527 && c.role == crate::lifecycle::Role::Client)
        .expect("client record");
    let ns = sys.get(&c.netns.expect("netns")).expect("recorded sysctls");
    assert_eq!(ns.raw(sc::SYN_LINEAR_TIMEOUTS), None);
    let d = diagnosed(c, ns, None);
    let d = d
        .iter()
        .find(|d| d.rule == "connect_timeout")
        .expect("connect_timeout");
    assert_eq!(d.sysctl, [(sc::SYN_RETRIES, "2".to_string())]);
    assert!(
        d.observed.contains(&("syn_retransmits", 2u32.into())),
        "{d:?}"
    );
    assert!(
        d.expected
            .contains(&("retransmit_at_ms", vec![1000u64, 3000].into())),
        "{d:?}"
    );
    assert!(d.expected.contains(&("gave_up_after_ms", 7000u64.into())));
    assert_eq!(d.agrees, Some(true), "{}", d.message);
    assert!(d.message.contains("1 s and 3 s"), "{}", d.message);
    assert!(!d.message.contains("linear"), "{}", d.message);
}
