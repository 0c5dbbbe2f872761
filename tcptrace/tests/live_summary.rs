//! `--summary` on real traffic between two namespaces (two orderly exchanges, a refused
//! connect, a connect timing out against a DROP rule): the tables count what happened, and
//! `replay` of the event stream recorded in the same run prints the same rows.
mod harness;

use std::{process::Stdio, time::Duration};

use harness::{NetPair, Peer, Tracer, privileged, replay_events};
use serde_json::Value;

/// A summary row without the time its table was printed at (a live run's last table ends
/// when it stops, a replay's at the recording's last event).
fn row(v: &Value) -> Value {
    let mut r = v.clone();
    let m = r.as_object_mut().unwrap();
    m.remove("ts_ns");
    m.remove("time");
    r
}

/// The rows of tables that counted something.
fn rows(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "summary" && v["conns"] != 0)
        .map(row)
        .collect()
}

#[test]
fn live_summary_counts_the_traffic_and_replays_the_same() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let (ok, closed, dropped) = (20711u16, 20712u16, 20713u16);
    let d = dropped.to_string();
    NetPair::exec(
        &net.srv,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &d, "-j", "DROP",
        ],
    );
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "1");
    let ports = format!("{ok},{closed},{dropped}");
    let tracer = Tracer::start(&["--summary", "2s", "-D", &ports]);
    for _ in 0..2 {
        let server = Peer::start(&net.srv, "serve", &net.srv4, ok, 100);
        let client = Peer::start(&net.cli, "send", &net.srv4, ok, 1000);
        client.finish();
        server.finish();
    }
    Peer::start(&net.cli, "refused", &net.srv4, closed, 0).finish();
    let mut timeout = NetPair::spawn(&net.cli, &["nc", "-w", "30", &net.srv4, &d], Stdio::null());
    assert!(timeout.wait_timeout(Duration::from_secs(20)), "no timeout");
    // The records' trailing facts (timewait sockets) and an interval table.
    std::thread::sleep(Duration::from_secs(4));
    let (live, _) = tracer.stop();

    let live_rows = rows(&live);
    let run: Vec<&Value> = live_rows.iter().filter(|r| r["period"] == "run").collect();
    let all = run
        .iter()
        .find(|r| r["by"] == "all")
        .expect("the run's row");
    assert_eq!(all["conns"], 4, "{all}");
    assert_eq!(all["failed"], 2, "{all}");
    assert_eq!(all["ends"]["closed"], 2, "{all}");
    assert_eq!(all["ends"]["refused"], 1, "{all}");
    assert_eq!(all["ends"]["timeout"], 1, "{all}");
    assert_eq!(all["connect_ms"]["n"], 2, "{all}");
    let dest = |port: u16| {
        run.iter()
            .find(|r| r["by"] == "destination" && r["key"] == format!("{}:{port}", net.srv4))
            .unwrap_or_else(|| panic!("no row for port {port}: {run:?}"))
    };
    assert_eq!(dest(ok)["ends"]["closed"], 2);
    assert_eq!(dest(ok)["role"], "client");
    assert_eq!(dest(closed)["ends"]["refused"], 1);
    let t = dest(dropped);
    assert_eq!(t["ends"]["timeout"], 1);
    // tcp_syn_retries=1: the SYN and one retransmit 1 s later, given up 2 s after that.
    let ms = t["duration_ms"]["p50"].as_f64().unwrap();
    // Every retransmit was the timed-out connect's SYN.
    assert!(t["retransmits"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(all["retransmits"], t["retransmits"], "{all}");
    assert!((2900.0..3300.0).contains(&ms), "{t}");
    let procs: Vec<&Value> = run
        .iter()
        .copied()
        .filter(|r| r["by"] == "process")
        .collect();
    assert!(
        procs.iter().any(|r| r["key"] == "python3") && procs.iter().any(|r| r["key"] == "nc"),
        "{procs:?}"
    );
    // Interval tables were printed while tracing, and add up to the run.
    let intervals: u64 = live_rows
        .iter()
        .filter(|r| r["period"] == "interval" && r["by"] == "all")
        .map(|r| r["conns"].as_u64().unwrap())
        .sum();
    assert_eq!(intervals, 4);

    // The recording replayed: the same rows, interval by interval.
    let replayed = replay_events(&live, &["--format", "json", "--summary", "2s"]);
    let replayed: Vec<Value> = String::from_utf8_lossy(&replayed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows(&replayed), live_rows);
}
