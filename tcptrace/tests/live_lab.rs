//! The privileged suite of the article's experiments: each `tcptrace lab SCENARIO` runs real
//! TCP between two throwaway namespaces with scaled-down sysctls, and its JSON records must
//! carry the exact diagnoses, with the governing sysctls at the values the lab set and numbers
//! that agree with the kernel's arithmetic.
mod harness;

use harness::{privileged, tcptrace};
use serde_json::Value;
use tcptrace_core::{budget, sysctl};

/// Runs a scenario; returns its JSON lines. The lab itself fails if an expected diagnosis is
/// missing or disagrees, so a zero exit is asserted first.
fn lab(name: &str) -> Vec<Value> {
    let out = tcptrace(&["lab", name, "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab {name} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The diagnosis `rule` of a connection record with `role`.
fn diag<'a>(recs: &'a [Value], role: &str, rule: &str) -> &'a Value {
    recs.iter()
        .filter(|r| r["type"] == "conn" && r["role"] == role)
        .flat_map(|r| r["diagnosis"].as_array().into_iter().flatten())
        .find(|d| d["rule"] == rule)
        .unwrap_or_else(|| panic!("no {role} {rule} diagnosis in {recs:#?}"))
}

fn finding<'a>(recs: &'a [Value], rule: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["type"] == "diagnosis" && r["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} finding in {recs:#?}"))
}

#[test]
fn handshake_options_and_mss() {
    if !privileged() {
        return;
    }
    let recs = lab("handshake");
    for role in ["client", "server"] {
        let d = diag(&recs, role, "handshake");
        assert_eq!(d["sysctl"]["net.ipv4.tcp_sack"], "1");
        assert_eq!(d["sysctl"]["net.ipv4.tcp_timestamps"], "1");
        assert_eq!(d["sysctl"]["net.ipv4.tcp_window_scaling"], "1");
        assert_eq!(d["observed"]["peer_mss"], 1460);
        assert_eq!(d["expected"]["mtu"], 1500);
        assert_eq!(d["agrees"], true);
    }
}

#[test]
fn syn_sent_timeout_follows_the_time_budget() {
    if !privileged() {
        return;
    }
    let recs = lab("syn-sent");
    let d = diag(&recs, "client", "connect_timeout");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_syn_retries"], "2");
    // The budget is 7 s either way. Where the kernel has tcp_syn_linear_timeouts (default 4
    // in a new namespace), 2 retries yet 5 retransmits, the first 4 of them 1 s apart;
    // without it (6.1), 2 retransmits at 1 s and 3 s, and the knob is not mentioned.
    let knob = sysctl::SYN_LINEAR_TIMEOUTS;
    let linear = harness::kernel_has_sysctl(knob);
    let plan = budget::syn_sent(budget::SynSent {
        syn_retries: 2,
        linear_timeouts: if linear { 4 } else { 0 },
        rto_max_ms: budget::RTO_MAX_MS,
        user_timeout_ms: None,
    });
    let message = d["message"].as_str().unwrap();
    if linear {
        assert_eq!(d["sysctl"][knob], "4");
        assert_eq!(plan.retransmit_at_ms, [1000, 2000, 3000, 4000, 5000]);
    } else {
        assert!(d["sysctl"].get(knob).is_none(), "{d}");
        assert!(!message.contains("linear"), "{message}");
        assert_eq!(plan.retransmit_at_ms, [1000, 3000]);
        assert!(message.contains("1 s and 3 s"), "{message}");
    }
    assert_eq!(d["observed"]["syn_retransmits"], plan.retransmits());
    assert_eq!(
        d["expected"]["retransmit_at_ms"],
        serde_json::json!(plan.retransmit_at_ms)
    );
    assert_eq!(d["expected"]["gave_up_after_ms"], 7000);
    assert_eq!(plan.give_up_ms, 7000);
    assert_eq!(d["agrees"], true);
}

#[test]
fn half_open_synack_retries() {
    if !privileged() {
        return;
    }
    let recs = lab("syn-recv");
    let d = diag(&recs, "server", "half_open");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_synack_retries"], "2");
    assert_eq!(d["observed"]["synack_retransmits"], 2);
    assert_eq!(d["observed"]["request_dropped"], true);
    assert_eq!(d["agrees"], true);
}

#[test]
fn accept_queue_overflow() {
    if !privileged() {
        return;
    }
    let recs = lab("backlog");
    let f = finding(&recs, "listen_overflow");
    assert!(
        f["observed"]["ListenOverflows"].as_u64().unwrap() > 0,
        "{f}"
    );
    assert_eq!(f["observed"]["accept_queue"], 2);
    assert_eq!(f["expected"]["accept_queue_max"], 1);
    assert!(f["sysctl"]["net.core.somaxconn"].is_string());
    assert!(f["sysctl"]["net.ipv4.tcp_syncookies"].is_string());
}

#[test]
fn orderly_close_time_wait() {
    if !privileged() {
        return;
    }
    let recs = lab("close");
    let d = diag(&recs, "client", "time_wait");
    assert_eq!(d["expected"]["held_ms"], 60000);
    assert_eq!(d["agrees"], true);
    assert!(d["sysctl"]["net.ipv4.tcp_tw_reuse"].is_string());
}

#[test]
fn time_wait_exhausts_the_port_range() {
    if !privileged() {
        return;
    }
    let recs = lab("time-wait");
    let d = diag(&recs, "client", "local_port_exhausted");
    assert_eq!(d["sysctl"]["net.ipv4.ip_local_port_range"], "40000 40049");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_tw_reuse"], "0");
    assert_eq!(d["expected"]["ports_per_destination"], 50);
    let sev: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "diagnosis" && r["rule"] == "time_wait_pressure")
        .map(|r| &r["severity"])
        .collect();
    assert!(
        sev.contains(&&Value::from("warning")),
        "warned first: {sev:?}"
    );
    assert!(sev.contains(&&Value::from("error")), "{sev:?}");
}

#[test]
fn time_wait_bucket_overflow() {
    if !privileged() {
        return;
    }
    let recs = lab("time-wait-buckets");
    let f = finding(&recs, "time_wait_overflow");
    assert_eq!(f["sysctl"]["net.ipv4.tcp_max_tw_buckets"], "20");
    assert!(
        f["observed"]["TCPTimeWaitOverflow"].as_u64().unwrap() > 0,
        "{f}"
    );
    // The connections that found no bucket say so on their own records.
    assert!(
        recs.iter().any(|r| r["role"] == "client"
            && r["notes"]
                .as_array()
                .is_some_and(|n| n.contains(&"no_time_wait".into()))),
        "no client record noted no_time_wait"
    );
}

#[test]
fn fin_wait1_orphan_retries() {
    if !privileged() {
        return;
    }
    let recs = lab("fin-wait1");
    let d = diag(&recs, "client", "orphan_fin_timeout");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_orphan_retries"], "2");
    assert_eq!(d["observed"]["state"], "FIN_WAIT1");
    assert_eq!(d["expected"]["budget_ms"], 1400);
    assert_eq!(d["agrees"], true);
}

#[test]
fn fin_wait2_timeout_and_last_ack_retries() {
    if !privileged() {
        return;
    }
    let recs = lab("fin-wait2");
    let c = diag(&recs, "client", "fin_wait2_timeout");
    assert_eq!(c["sysctl"]["net.ipv4.tcp_fin_timeout"], "3");
    assert_eq!(c["expected"]["held_ms"], 3000);
    assert_eq!(c["agrees"], true);
    let s = diag(&recs, "server", "orphan_fin_timeout");
    assert_eq!(s["observed"]["state"], "LAST_ACK");
    assert_eq!(s["sysctl"]["net.ipv4.tcp_orphan_retries"], "2");
    assert_eq!(s["agrees"], true);
}

#[test]
fn keepalive_kill_by_sysctls() {
    if !privileged() {
        return;
    }
    let recs = lab("keepalive");
    let d = diag(&recs, "client", "keepalive_timeout");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_keepalive_time"], "2");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_keepalive_intvl"], "1");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_keepalive_probes"], "2");
    assert_eq!(d["expected"]["idle_ms"], 4000);
    assert!(d.get("overrides").is_none(), "{d}");
    assert_eq!(d["agrees"], true);
}

#[test]
fn keepalive_kill_by_socket_options() {
    if !privileged() {
        return;
    }
    let recs = lab("keepalive-override");
    let d = diag(&recs, "client", "keepalive_timeout");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_keepalive_time"], "7200");
    assert_eq!(d["overrides"]["TCP_KEEPIDLE"], "1 s");
    assert_eq!(d["overrides"]["TCP_KEEPINTVL"], "1 s");
    assert_eq!(d["overrides"]["TCP_KEEPCNT"], "2");
    assert_eq!(d["expected"]["idle_ms"], 3000);
    assert_eq!(d["agrees"], true);
    assert!(d["message"].as_str().unwrap().contains("overrides"));
}

#[test]
fn refused_reset_and_data_timeout() {
    if !privileged() {
        return;
    }
    let recs = lab("refused");
    diag(&recs, "client", "refused");
    let recs = lab("reset");
    assert_eq!(
        diag(&recs, "client", "reset")["observed"]["direction"],
        "sent"
    );
    assert_eq!(
        diag(&recs, "server", "reset")["observed"]["direction"],
        "received"
    );
    let recs = lab("data-timeout");
    let d = diag(&recs, "client", "data_timeout");
    assert_eq!(d["sysctl"]["net.ipv4.tcp_retries2"], "3");
    assert_eq!(d["expected"]["budget_ms"], 3000);
    assert_eq!(d["agrees"], true);
}

#[test]
fn ipv6_handshake_mss() {
    if !privileged() {
        return;
    }
    let recs = lab("ipv6");
    let d = diag(&recs, "client", "handshake");
    assert_eq!(d["observed"]["peer_mss"], 1440);
    assert_eq!(d["agrees"], true);
}
