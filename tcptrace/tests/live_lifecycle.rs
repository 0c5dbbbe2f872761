//! Privileged end-to-end tests of lifecycle mode: whole connection records from real TCP
//! between two network namespaces — orderly closes from either side with the TIME_WAIT timer
//! confirmed by sock_diag, refused, abortive close, IPv6, byte counts of a 1 MB transfer,
//! owners of softirq-driven server records, and a connection that predates tracing.
mod harness;

use std::time::Duration;

use harness::{NetPair, Peer, Tracer, conns, privileged, states};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn role<'a>(recs: &'a [Value], role: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["role"] == role)
        .unwrap_or_else(|| panic!("no {role} record in {recs:#?}"))
}

/// Waits until `n` records touch `port`, stops tracing, returns them.
fn records(tracer: Tracer, port: u16, n: usize) -> Vec<Value> {
    records_and_log(tracer, port, n).0
}

/// [`records`], and tcptrace's stderr.
fn records_and_log(tracer: Tracer, port: u16, n: usize) -> (Vec<Value>, String) {
    let port = u64::from(port);
    let ok = tracer.wait_for(WAIT, |r| conns(r, port).len() >= n);
    let (all, stderr) = tracer.stop();
    let recs = conns(&all, port);
    assert!(
        ok,
        "expected {n} records on port {port}, got {recs:#?}\n{stderr}"
    );
    (recs, stderr)
}

/// An orderly close the client starts; `tracepoints`: the `--tracepoints` mode and the
/// attachment of the state-change hook it must give.
fn orderly_client_close(ipv6: bool, port: u16, tracepoints: (&str, &str)) {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let (srv, cli) = if ipv6 {
        (&net.srv6, &net.cli6)
    } else {
        (&net.srv4, &net.cli4)
    };
    let tracer = Tracer::lifecycle(&["--tracepoints", tracepoints.0]);
    let server = Peer::start(&net.srv, "serve", srv, port, 777);
    let client = Peer::start(&net.cli, "send", srv, port, 4321);
    let (cpid, spid) = (client.pid(), server.pid());
    assert_eq!(client.finish(), "777");
    assert_eq!(server.finish(), "4321");
    let (recs, log) = records_and_log(tracer, port, 2);
    let attached = format!("inet_sock_set_state/{} ", tracepoints.1);
    assert!(log.contains(&attached), "{attached}: {log}");

    let c = role(&recs, "client");
    assert_eq!(c["family"], if ipv6 { "ipv6" } else { "ipv4" });
    assert_eq!(c["laddr"], cli.as_str());
    assert_eq!(c["raddr"], srv.as_str());
    assert_eq!(c["netns"], NetPair::inode(&net.cli));
    assert_eq!(
        (c["pid"].as_u64(), c["comm"].as_str()),
        (Some(cpid.into()), Some("python3"))
    );
    assert_eq!(
        states(c),
        ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"]
    );
    assert_eq!(c["end"], "closed");
    assert_eq!(c["time_wait_state"], "TIME_WAIT");
    let tw = c["time_wait_ms"].as_u64().expect("TIME_WAIT timer");
    assert!((50_000..=60_000).contains(&tw), "TIME_WAIT timer {tw} ms");
    assert_eq!(
        (c["bytes_sent"].as_u64(), c["bytes_received"].as_u64()),
        (Some(4321), Some(777))
    );
    assert_eq!(c["closer"]["pid"].as_u64(), Some(cpid.into()));
    // veth MTU 1500: MSS 1460 (IPv4) or 1440 (IPv6); Linux offers SACK, timestamps, wscale.
    assert_eq!(c["options"]["mss"], if ipv6 { 1440 } else { 1460 });
    assert_eq!(c["options"]["sack"], true);
    assert_eq!(c["options"]["timestamps"], true);
    assert!(c["options"]["snd_wscale"].as_u64().is_some());
    assert!(c["start"].is_string() && c["duration_ms"].as_f64().is_some());
    for s in c["states"].as_array().unwrap() {
        assert!(s["ms"].as_f64().is_some(), "every state timed: {c}");
    }
    assert_eq!(c["notes"], serde_json::json!([]));

    let s = role(&recs, "server");
    assert_eq!(s["netns"], NetPair::inode(&net.srv));
    assert_eq!(
        s["pid"].as_u64(),
        Some(spid.into()),
        "owner is the listening process"
    );
    assert_eq!(
        states(s),
        ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"]
    );
    assert_eq!(s["end"], "closed");
    assert_eq!(s["time_wait_state"], Value::Null);
    assert_eq!(
        (s["bytes_sent"].as_u64(), s["bytes_received"].as_u64()),
        (Some(777), Some(4321))
    );
    assert_eq!(s["closer"]["pid"].as_u64(), Some(spid.into()));
}

#[test]
fn client_active_close_ipv4() {
    orderly_client_close(false, 9601, ("auto", "tp_btf+nested"));
}

#[test]
fn client_active_close_ipv6() {
    orderly_client_close(true, 9602, ("auto", "tp_btf+nested"));
}

/// The same records from the programs that read sockets with `bpf_probe_read_kernel` (the
/// fallback where a kernel refuses plain loads) and from classic tracepoints.
#[test]
fn client_active_close_ipv4_btf_probe() {
    orderly_client_close(false, 9608, ("btf-probe", "tp_btf(probe)+nested"));
}

#[test]
fn client_active_close_ipv6_btf_probe() {
    orderly_client_close(true, 9609, ("btf-probe", "tp_btf(probe)+nested"));
}

#[test]
fn client_active_close_ipv4_classic() {
    orderly_client_close(false, 9610, ("classic", "tracepoint"));
}

#[test]
fn server_active_close() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let tracer = Tracer::lifecycle(&[]);
    let server = Peer::start(&net.srv, "serve-first", &net.srv4, 9603, 1000);
    let client = Peer::start(&net.cli, "recv", &net.srv4, 9603, 0);
    assert_eq!(client.finish(), "1000");
    server.finish();
    let recs = records(tracer, 9603, 2);
    let s = role(&recs, "server");
    assert_eq!(
        states(s),
        ["SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"]
    );
    assert_eq!(s["end"], "closed");
    assert_eq!(s["time_wait_state"], "TIME_WAIT");
    let c = role(&recs, "client");
    assert_eq!(
        states(c),
        ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK"]
    );
    assert_eq!(c["end"], "closed");
    assert_eq!(c["bytes_received"].as_u64(), Some(1000));
}

#[test]
fn refused_connect() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let tracer = Tracer::lifecycle(&[]);
    let client = Peer::start(&net.cli, "refused", &net.srv4, 9604, 0);
    let pid = client.pid();
    let _ = client.finish();
    let recs = records(tracer, 9604, 1);
    assert_eq!(recs.len(), 1, "only the client has a connection: {recs:#?}");
    let c = &recs[0];
    assert_eq!(c["role"], "client");
    assert_eq!(c["pid"].as_u64(), Some(pid.into()));
    assert_eq!(states(c), ["SYN_SENT"]);
    assert_eq!(c["end"], "refused");
    assert_eq!(c["error"], "ECONNREFUSED");
    assert_eq!(c["resets"]["received"], 1);
}

#[test]
fn abortive_close_with_linger_zero() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let tracer = Tracer::lifecycle(&[]);
    let server = Peer::start(&net.srv, "serve", &net.srv4, 9605, 0);
    let client = Peer::start(&net.cli, "abort", &net.srv4, 9605, 0);
    let cpid = client.pid();
    let mut client = client;
    assert!(client.guard.wait_timeout(WAIT), "abort client did not exit");
    drop(server);
    let recs = records(tracer, 9605, 2);
    let c = role(&recs, "client");
    assert_eq!(c["end"], "reset_sent");
    assert_eq!(c["resets"]["sent"], 1);
    assert_eq!(c["closer"]["pid"].as_u64(), Some(cpid.into()));
    assert_eq!(states(c), ["SYN_SENT", "ESTABLISHED"]);
    let s = role(&recs, "server");
    assert_eq!(s["end"], "reset_received");
    assert_eq!(s["resets"]["received"], 1);
    assert_eq!(s["error"], "ECONNRESET");
}

#[test]
fn megabyte_transfer_byte_counts() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let tracer = Tracer::lifecycle(&[]);
    let server = Peer::start(&net.srv, "serve", &net.srv4, 9606, 12_345);
    let client = Peer::start(&net.cli, "send", &net.srv4, 9606, 1_000_000);
    let (cpid, spid) = (client.pid(), server.pid());
    assert_eq!(client.finish(), "12345");
    assert_eq!(server.finish(), "1000000");
    let recs = records(tracer, 9606, 2);
    let c = role(&recs, "client");
    assert_eq!(c["bytes_sent"].as_u64(), Some(1_000_000));
    assert_eq!(c["bytes_received"].as_u64(), Some(12_345));
    assert!(c["srtt_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let s = role(&recs, "server");
    assert_eq!(s["bytes_received"].as_u64(), Some(1_000_000));
    assert_eq!(s["bytes_sent"].as_u64(), Some(12_345));
    // The server's transitions run in softirq (often on the client's CPU time); the owner is
    // still the process that listens.
    assert_eq!(s["pid"].as_u64(), Some(spid.into()));
    assert_ne!(s["pid"].as_u64(), Some(cpid.into()));
}

#[test]
fn connection_opened_before_tracing_is_open_at_exit() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let server = Peer::start(&net.srv, "hold-server", &net.srv4, 9607, 0);
    let client = Peer::start(&net.cli, "hold", &net.srv4, 9607, 0);
    std::thread::sleep(Duration::from_millis(300));
    let tracer = Tracer::lifecycle(&["--duration", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    let (all, stderr) = tracer.stop();
    let recs = conns(&all, 9607);
    assert_eq!(recs.len(), 2, "{recs:#?}\n{stderr}");
    for r in &recs {
        assert_eq!(r["end"], "open");
        assert_eq!(r["start"], Value::Null);
        assert_eq!(states(r), ["ESTABLISHED"]);
        assert!(
            r["notes"]
                .as_array()
                .unwrap()
                .contains(&"preexisting".into())
        );
    }
    let c = role(&recs, "client");
    assert_eq!(
        c["pid"].as_u64(),
        Some(client.pid().into()),
        "owner from /proc"
    );
    let s = role(&recs, "server");
    assert_eq!(s["pid"].as_u64(), Some(server.pid().into()));
    drop((client, server));
}
