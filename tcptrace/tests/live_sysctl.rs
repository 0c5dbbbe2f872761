//! Privileged test that a diagnosis cites the sysctl in force when the connection ended, as a
//! user following the article would try it: tcptrace has seen (and read) a namespace; a few
//! seconds later `tcp_syn_retries` is lowered there, well before the periodic re-read; a
//! connect() then times out under the new value. Its record must cite the new value, and the
//! `--events` recording must carry the re-read so `replay` diagnoses it the same way.
mod harness;

use std::{thread::sleep, time::Duration};

use harness::{NetPair, Tracer, conns, privileged};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A connect() from `ns` to `addr:port` that the kernel gives up on (the port drops SYNs).
fn timed_out_connect(ns: &str, addr: &str, port: u16) {
    let script = format!(
        "import socket,errno\ns=socket.socket()\ntry:\n    s.connect(('{addr}',{port}))\nexcept OSError as e:\n    assert e.errno==errno.ETIMEDOUT, e\nelse:\n    raise SystemExit('connected')"
    );
    NetPair::exec(ns, &["python3", "-c", &script]);
}

fn drop_syns(net: &NetPair, port: u16) {
    let p = port.to_string();
    NetPair::exec(
        &net.srv,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP",
        ],
    );
}

/// `tcp_syn_retries` as the connect_timeout diagnosis of `rec` cites it.
fn cited(rec: &Value) -> String {
    rec["diagnosis"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["rule"] == "connect_timeout"))
        .and_then(|d| d["sysctl"]["net.ipv4.tcp_syn_retries"].as_str())
        .unwrap_or_else(|| panic!("no connect_timeout diagnosis: {rec:#}"))
        .to_string()
}

#[test]
fn diagnosis_cites_a_sysctl_changed_after_the_namespace_was_read() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 9841;
    drop_syns(&net, port);
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "6");
    // Only the client's namespace (filtered in the kernel): other traffic on the host, such
    // as another test's loopback churn, cannot crowd this one's events out.
    let only_cli = format!("/run/netns/{}", net.cli);
    let lifecycle = Tracer::lifecycle(&["-4", "-N", &only_cli]);
    let events = Tracer::start(&["-4", "-N", &only_cli]);
    // First sight of the client namespace: its sysctls are read (syn_retries 6).
    NetPair::exec(
        &net.cli,
        &[
            "python3",
            "-c",
            &format!(
                "import socket\ntry: socket.create_connection(('{}',{}),timeout=5)\nexcept OSError: pass",
                net.srv4,
                port + 1
            ),
        ],
    );
    // Both tracers read the namespace at first sight; under load that read can lag, so the
    // change waits until the recording shows it (the lifecycle tracer read at the same time).
    let cli_ns = NetPair::inode(&net.cli);
    let first_read = |ev: &[Value]| {
        ev.iter()
            .any(|e| e["type"] == "sysctl" && e["netns"] == cli_ns)
    };
    assert!(events.wait_for(WAIT, first_read), "no sysctl reading");
    sleep(Duration::from_millis(500));
    // Lowered well within the 5 s periodic refresh; this connect gives up after ~3 s.
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "1");
    timed_out_connect(&net.cli, &net.srv4, port);

    let ok = lifecycle.wait_for(WAIT, |r| !conns(r, port.into()).is_empty());
    let (recs, stderr) = lifecycle.stop();
    assert!(ok, "no record: {stderr}");
    let rec = &conns(&recs, port.into())[0];
    assert_eq!(rec["end"], "timeout", "{rec:#}");
    assert_eq!(cited(rec), "1", "{rec:#}");
    let d = rec["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == "connect_timeout")
        .unwrap();
    assert_eq!(d["agrees"], true, "{d:#}");

    // The recording holds both readings, in order; replay cites the new one too.
    let (stream, _) = events.stop();
    let readings: Vec<&str> = stream
        .iter()
        .filter(|e| e["type"] == "sysctl" && e["netns"] == cli_ns)
        .filter_map(|e| e["values"]["net.ipv4.tcp_syn_retries"].as_str())
        .collect();
    assert_eq!(readings.first(), Some(&"6"), "{readings:?}");
    assert_eq!(readings.last(), Some(&"1"), "{readings:?}");
    let replayed = harness::json_lines(&harness::replay_events(&stream, &["--format", "json"]));
    let rec = &conns(&replayed, port.into())[0];
    assert_eq!(cited(rec), "1", "{rec:#}");
}
