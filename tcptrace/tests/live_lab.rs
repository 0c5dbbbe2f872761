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
    // Measured, not noticed on a tick: it began with the first SYN-ACK (one initial timeout
    // before the first retransmit) and the request was found gone when its timer ran out
    // (1 + 2 + 4 s, each timer a granule late at most, looked up every 0.1 s from then).
    let rec = recs
        .iter()
        .find(|r| r["type"] == "conn" && r["role"] == "server")
        .unwrap();
    assert!(rec["start"].is_string(), "{rec}");
    let took = rec["duration_ms"].as_f64().expect("a duration");
    assert!((7000.0..7600.0).contains(&took), "{rec}");
    assert_eq!(rec["states"][0]["state"], "SYN_RECV");
    assert!(rec["states"][0]["ms"].as_f64().is_some(), "{rec}");
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
    // Every client closes first and is handed to a timewait socket in FIN_WAIT2 until the
    // server's FIN (sent when it gets to that connection, up to 100 ms later) turns it into
    // TIME_WAIT: orderly closes, none of them a FIN_WAIT2 timeout.
    let fin2: Vec<&Value> = recs
        .iter()
        .flat_map(|r| r["diagnosis"].as_array().into_iter().flatten())
        .filter(|d| d["rule"] == "fin_wait2_timeout")
        .collect();
    assert!(fin2.is_empty(), "false FIN_WAIT2 findings: {fin2:#?}");
    let tw = recs
        .iter()
        .filter(|r| r["role"] == "client" && r["time_wait_state"] == "TIME_WAIT")
        .count();
    assert!(tw >= 40, "{tw} clients confirmed in TIME_WAIT");
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

/// A loopback connection churn in this process (the host's namespace) until dropped: the busy
/// host the lab must ignore. Returns the number of connections made.
struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Churn {
    fn start() -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut threads = Vec::new();
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => n += 1,
                    Err(_) => std::thread::sleep(std::time::Duration::from_micros(200)),
                }
            }
            n
        }));
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if std::net::TcpStream::connect(addr).is_ok() {
                    n += 1;
                }
            }
            n
        }));
        Self { stop, threads }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

/// The namespace inodes the lab announces on stderr ("server netns N …, client netns M …").
fn lab_namespaces(stderr: &str) -> (u64, u64) {
    let after = |key: &str| -> u64 {
        let at = stderr
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in {stderr}"));
        stderr[at + key.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no inode after {key:?}: {stderr}"))
    };
    (after("server netns "), after("client netns "))
}

#[test]
fn a_lab_beside_a_busy_loopback_sees_only_itself() {
    if !privileged() {
        return;
    }
    // Events mode: every event the kernel let through is printed, so a foreign one would show.
    let churn = Churn::start();
    let out = tcptrace(&["lab", "close", "--events", "--format", "json"]);
    let fin = tcptrace(&["lab", "fin-wait2", "--format", "json"]);
    let made = churn.stop();
    assert!(made > 200, "the churn made only {made} connections");
    // Events of the close (4 transitions a side at least), records of the FIN_WAIT2 run.
    for (name, out, least) in [("close", &out, 8), ("fin-wait2", &fin, 2)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "lab {name} under churn failed:\n{stderr}"
        );
        // The filter keeps the churn's records out of the ring: none may be lost to a full
        // buffer. Runs the kernel skips because the churn's own run was interrupted on that CPU
        // happen before any filter can look, so they may still be reported (with their cause).
        assert!(
            stderr.contains(" 0 lost") || stderr.contains("(lost: 0 ring buffer full, "),
            "lab {name} lost events to a full ring buffer:\n{stderr}"
        );
        let (srv, cli) = lab_namespaces(&stderr);
        let lines = harness::json_lines(out);
        let mut ours = 0;
        for l in &lines {
            if let Some(ns) = l["netns"].as_u64() {
                assert!(ns == srv || ns == cli, "lab {name}: foreign event {l}");
                ours += 1;
            }
            for a in ["laddr", "raddr"] {
                assert!(
                    l[a].as_str().is_none_or(|a| !a.starts_with("127.")),
                    "lab {name}: loopback event {l}"
                );
            }
        }
        assert!(
            ours >= least,
            "lab {name}: too few lines of its own: {lines:?}"
        );
    }
}

#[test]
fn the_lab_leaves_no_socket_behind() {
    if !privileged() {
        return;
    }
    // The server closes while its peer drops everything: an orphan in FIN_WAIT1 that would
    // retransmit for ~100 s (tcp_orphan_retries 0 → 8) in a deleted namespace.
    let out = tcptrace(&["lab", "user-timeout", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // This test is about the leftover socket; the scenario's diagnoses are
    // `user_timeout_ends_the_connection_when_it_runs_out`'s. Under emulation (a vm-test guest
    // under TCG) a timer can fire later than the diagnosis' slack for real hardware allows,
    // and the lab then fails on the diagnosis (measured once on 6.1): only that may fail there.
    let judged_only = harness::patience() > 1
        && stderr.contains("expected diagnoses not produced or not agreeing: data_timeout\"");
    assert!(out.status.success() || judged_only, "{stderr}");
    assert!(
        stderr.contains("closed 1 leftover sockets before deleting the namespaces"),
        "{stderr}"
    );
}

#[test]
fn user_timeout_ends_the_connection_when_it_runs_out() {
    if !privileged() {
        return;
    }
    let recs = lab("user-timeout");
    let d = diag(&recs, "client", "data_timeout");
    assert_eq!(d["overrides"]["TCP_USER_TIMEOUT"], "3000 ms");
    assert_eq!(d["expected"]["gave_up_after_first_rto_ms"], 3000);
    // Measured against tcpdump: the end comes 3.0 s after the first RTO retransmission, not
    // after the next doubled RTO (≈6.4 s).
    let took = d["observed"]["gave_up_after_first_rto_ms"]
        .as_u64()
        .unwrap();
    assert!((3000..3100).contains(&took), "{d}");
    assert_eq!(d["agrees"], true, "{d}");
    let recs = lab("keepalive-user-timeout");
    let d = diag(&recs, "client", "keepalive_timeout");
    assert_eq!(d["overrides"]["TCP_USER_TIMEOUT"], "2500 ms");
    // The first keepalive tick at least 2.5 s after the last packet, not 1 + 10 × 1 s.
    assert_eq!(d["expected"]["idle_ms"], 3000);
    assert_eq!(d["agrees"], true, "{d}");
}

#[test]
fn a_connect_timeout_reports_one_error_and_no_rtt() {
    if !privileged() {
        return;
    }
    let out = tcptrace(&["lab", "syn-sent", "--events", "--format", "json"]);
    assert!(out.status.success());
    let errors: Vec<Value> = harness::json_lines(&out)
        .into_iter()
        .filter(|l| l["type"] == "error")
        .collect();
    // tcp_disconnect() reports a second "error" with errno 0 after connect() read ETIMEDOUT.
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["errno"], "ETIMEDOUT");
    let recs = lab("refused");
    let c = recs
        .iter()
        .find(|r| r["type"] == "conn" && r["role"] == "client")
        .unwrap();
    assert_eq!(c["srtt_ms"], Value::Null, "no RTT sample: {c}");
}
