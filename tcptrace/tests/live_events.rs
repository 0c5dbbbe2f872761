//! Privileged end-to-end tests: the real eBPF programs on real TCP between two network
//! namespaces — handshake and close (IPv4, IPv6, BTF and classic tracepoints), SYN retransmits
//! to a timeout, connection refused, and a data retransmit.
mod harness;

use std::{process::Stdio, time::Duration};

use harness::{NetPair, Tracer, on_port, pair, privileged, transitions};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    events.iter().find(|e| pred(e))
}

fn handshake_and_close(ipv6: bool, tracepoints: &str, port: u16) {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let tracer = Tracer::start(&["--tracepoints", tracepoints]);
    let (srv_addr, cli_addr) = if ipv6 {
        (net.srv6.clone(), net.cli6.clone())
    } else {
        (net.srv4.clone(), net.cli4.clone())
    };
    let p = port.to_string();
    let fam = if ipv6 { "-6" } else { "-4" };
    let mut server = NetPair::spawn(&net.srv, &["nc", fam, "-l", &p], Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    let mut client = NetPair::spawn(&net.cli, &["nc", "-N", &srv_addr, &p], Stdio::piped());
    {
        use std::io::Write as _;
        let mut stdin = client.0.stdin.take().expect("client stdin");
        stdin.write_all(b"hi\n").expect("write to nc");
    }
    assert!(client.wait_timeout(WAIT), "client did not finish");
    assert!(server.wait_timeout(WAIT), "server did not finish");
    let port = u64::from(port);
    assert!(tracer.wait_for(WAIT, |ev| {
        on_port(ev, port)
            .iter()
            .filter(|e| e["new"] == "CLOSE")
            .count()
            >= 3
    }));
    let (events, _) = tracer.stop();
    let events = on_port(&events, port);

    let connect = find(&events, |e| e["old"] == "CLOSE" && e["new"] == "SYN_SENT")
        .expect("client CLOSE -> SYN_SENT");
    let csk = connect["sk"].as_str().unwrap().to_string();
    assert_eq!(connect["pid"], client.pid(), "pid of the connecting nc");
    assert_eq!(connect["comm"], "nc");
    assert_eq!(connect["family"], if ipv6 { "ipv6" } else { "ipv4" });
    assert_eq!(connect["raddr"], srv_addr.as_str());
    assert_eq!(connect["rport"], port);
    let cli_ns = NetPair::inode(&net.cli);
    let srv_ns = NetPair::inode(&net.srv);
    assert_eq!(connect["netns"], cli_ns);
    let client_path = transitions(&events, &csk);
    assert_eq!(client_path[0], pair("CLOSE", "SYN_SENT"));
    assert_eq!(client_path[1], pair("SYN_SENT", "ESTABLISHED"));
    assert_eq!(client_path[2], pair("ESTABLISHED", "FIN_WAIT1"));
    assert!(
        client_path[3] == pair("FIN_WAIT1", "FIN_WAIT2")
            || client_path[3] == pair("FIN_WAIT1", "CLOSING"),
        "{client_path:?}"
    );
    assert_eq!(client_path.last().unwrap().1, "CLOSE");
    for e in events.iter().filter(|e| e["sk"] == csk.as_str()) {
        assert_eq!(e["netns"], cli_ns);
        assert_eq!(e["raddr"], srv_addr.as_str());
        assert_eq!(e["laddr"], cli_addr.as_str());
    }
    let est = find(&events, |e| {
        e["sk"] == csk.as_str() && e["new"] == "ESTABLISHED"
    })
    .unwrap();
    let lport = est["lport"].as_u64().unwrap();
    assert_ne!(lport, 0);
    assert!(est["prev_ms"].as_f64().is_some_and(|ms| ms >= 0.0));

    let child = find(&events, |e| {
        e["new"] == "ESTABLISHED" && e["lport"] == port && e["rport"] == lport
    })
    .expect("server child ESTABLISHED");
    let ssk = child["sk"].as_str().unwrap().to_string();
    let server_path = transitions(&events, &ssk);
    assert_eq!(
        server_path,
        vec![
            pair("LISTEN", "SYN_RECV"),
            pair("SYN_RECV", "ESTABLISHED"),
            pair("ESTABLISHED", "CLOSE_WAIT"),
            pair("CLOSE_WAIT", "LAST_ACK"),
            pair("LAST_ACK", "CLOSE"),
        ]
    );
    for e in events.iter().filter(|e| e["sk"] == ssk.as_str()) {
        assert_eq!(e["netns"], srv_ns);
        assert_eq!(e["lport"], port);
        if harness::listener_addresses(e) {
            // The listener's (`nc -l` binds the unspecified address).
            assert!(e["laddr"] == "0.0.0.0" || e["laddr"] == "::", "{e}");
            continue;
        }
        assert_eq!(e["laddr"], srv_addr.as_str());
        assert_eq!(e["raddr"], cli_addr.as_str());
        assert_eq!(e["rport"], lport);
    }
    for e in &events {
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(e["ts_ns"].as_u64().is_some_and(|t| t > 0));
    }
}

#[test]
fn handshake_and_close_ipv4() {
    handshake_and_close(false, "auto", 20101);
}

#[test]
fn handshake_and_close_ipv6() {
    handshake_and_close(true, "auto", 20102);
}

#[test]
fn handshake_and_close_ipv4_btf_tracepoints() {
    handshake_and_close(false, "btf", 20103);
}

#[test]
fn handshake_and_close_ipv6_btf_probe_tracepoints() {
    handshake_and_close(true, "btf-probe", 20106);
}

#[test]
fn handshake_and_close_ipv4_classic_tracepoints() {
    handshake_and_close(false, "classic", 20104);
}

#[test]
fn handshake_and_close_ipv6_classic_tracepoints() {
    handshake_and_close(true, "classic", 20105);
}

fn syn_retransmits_until_timeout(tracepoints: &str, port: u16) {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let p = port.to_string();
    NetPair::exec(
        &net.srv,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP",
        ],
    );
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "2");
    let tracer = Tracer::start(&["--tracepoints", tracepoints, "-D", &p]);
    let mut client = NetPair::spawn(&net.cli, &["nc", "-w", "30", &net.srv4, &p], Stdio::null());
    assert!(
        client.wait_timeout(Duration::from_secs(25)),
        "connect did not time out"
    );
    let port = u64::from(port);
    assert!(tracer.wait_for(WAIT, |ev| ev.iter().any(|e| e["new"] == "CLOSE")));
    let (events, _) = tracer.stop();
    let events = on_port(&events, port);
    let syn_sent = find(&events, |e| e["new"] == "SYN_SENT").expect("SYN_SENT");
    let sk = syn_sent["sk"].as_str().unwrap();
    let retrans: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "retransmit" && e["sk"] == sk)
        .collect();
    assert!(retrans.len() >= 2, "SYN retransmits: {retrans:?}");
    for r in &retrans {
        assert_eq!(r["kind"], "syn");
        assert_eq!(r["state"], "SYN_SENT");
        assert_eq!(r["netns"], NetPair::inode(&net.cli));
    }
    assert_eq!(
        transitions(&events, sk),
        vec![pair("CLOSE", "SYN_SENT"), pair("SYN_SENT", "CLOSE")]
    );
    // Classic `inet_sk_error_report` has no socket address: match it by its 4-tuple.
    let lport =
        find(&events, |e| e["sk"] == sk && e["lport"] != 0).expect("bound")["lport"].clone();
    let err = find(&events, |e| e["type"] == "error" && e["lport"] == lport).expect("error record");
    assert_eq!(err["errno"], "ETIMEDOUT");
    assert_eq!(err["rport"], port);
    if tracepoints != "classic" {
        assert_eq!(err["sk"], sk);
        // tcp_done_with_error() closes the socket before reporting the error.
        assert_eq!(err["state"], "CLOSE");
    }
}

#[test]
fn syn_retransmits_until_timeout_btf() {
    syn_retransmits_until_timeout("auto", 20201);
}

#[test]
fn syn_retransmits_until_timeout_classic() {
    syn_retransmits_until_timeout("classic", 20202);
}

#[test]
fn connection_refused_is_a_reset() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20301u16;
    let p = port.to_string();
    let tracer = Tracer::start(&[]);
    let mut client = NetPair::spawn(&net.cli, &["nc", "-w", "5", &net.srv4, &p], Stdio::null());
    assert!(client.wait_timeout(WAIT));
    let port = u64::from(port);
    assert!(tracer.wait_for(WAIT, |ev| {
        on_port(ev, port).iter().any(|e| e["type"] == "error")
    }));
    let (events, _) = tracer.stop();
    let events = on_port(&events, port);
    let got = find(&events, |e| {
        e["type"] == "reset" && e["direction"] == "received"
    })
    .expect("reset received");
    assert_eq!(got["state"], "SYN_SENT");
    assert_eq!(got["netns"], NetPair::inode(&net.cli));
    let sk = got["sk"].as_str().unwrap();
    assert_eq!(
        transitions(&events, sk),
        vec![pair("CLOSE", "SYN_SENT"), pair("SYN_SENT", "CLOSE")]
    );
    let err = find(&events, |e| e["type"] == "error" && e["sk"] == sk).expect("error");
    assert_eq!(err["errno"], "ECONNREFUSED");
    let sent = find(&events, |e| {
        e["type"] == "reset" && e["direction"] == "sent"
    });
    let quirks = harness::kernel_quirks();
    if !quirks.resets_without_socket {
        // Before 6.9 the server's RST (no socket for the SYN) fires no tracepoint.
        assert!(sent.is_none(), "{sent:?}");
        return;
    }
    let sent = sent.expect("reset sent by the server namespace");
    assert_eq!(sent["netns"], NetPair::inode(&net.srv));
    assert_eq!(sent["laddr"], net.srv4.as_str());
    assert_eq!(sent["lport"], port);
    assert_eq!(sent["raddr"], net.cli4.as_str());
    if quirks.reset_reasons {
        assert_eq!(sent["reason"], "NO_SOCKET");
    } else {
        assert_eq!(sent["reason"], Value::Null);
    }
}

#[test]
fn data_retransmit_in_established() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let port = 20401u16;
    let p = port.to_string();
    let tracer = Tracer::start(&["-D", &p]);
    // stdin stays open (piped, held by the guard) so the server never sends its FIN.
    let _server = NetPair::spawn(&net.srv, &["nc", "-l", &p], Stdio::piped());
    std::thread::sleep(Duration::from_millis(300));
    // Connect, add the drop rule, then send (nc runs directly, so killing it ends the socket).
    let mut client = NetPair::spawn(&net.cli, &["nc", &net.srv4, &p], Stdio::piped());
    let cli_ns = NetPair::inode(&net.cli);
    let mine = |e: &Value| e["netns"] == cli_ns;
    assert!(tracer.wait_for(WAIT, |ev| {
        ev.iter().any(|e| mine(e) && e["new"] == "ESTABLISHED")
    }));
    NetPair::exec(
        &net.srv,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP",
        ],
    );
    {
        use std::io::Write as _;
        let stdin = client.0.stdin.as_mut().expect("client stdin");
        stdin.write_all(b"data\n").expect("write to nc");
        stdin.flush().unwrap();
    }
    assert!(
        tracer.wait_for(WAIT, |ev| ev
            .iter()
            .any(|e| mine(e) && e["type"] == "retransmit")),
        "no data retransmit"
    );
    let (events, _) = tracer.stop();
    let all: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "retransmit")
        .collect();
    let r = find(&events, |e| {
        e["type"] == "retransmit" && e["kind"] == "data"
    })
    .unwrap_or_else(|| panic!("no data retransmit among {all:?}"));
    assert_eq!(r["state"], "ESTABLISHED", "{all:?}");
    assert_eq!(r["rport"], u64::from(port));
    assert_eq!(r["netns"], NetPair::inode(&net.cli));
}

#[test]
fn ring_buffer_overflow_is_counted_and_reported() {
    if !privileged() {
        return;
    }
    use std::io::Read as _;
    let net = NetPair::new();
    // A tiny ring buffer and a consumer that is stopped (SIGSTOP) while the load runs: records
    // must be lost, and every loss must be reported.
    let (mut child, mut err) = harness::spawn_attached(&[
        "--events",
        "--format",
        "json",
        "--ring-buffer",
        "4K",
        "-D",
        "20701",
    ]);
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
    };
    signal("-STOP");
    let script = format!("for i in $(seq 400); do nc -z {} 20701; done", net.srv4);
    let mut load = NetPair::spawn(&net.cli, &["sh", "-c", &script], Stdio::null());
    let finished = load.wait_timeout(Duration::from_secs(60));
    signal("-CONT");
    assert!(finished, "load did not finish");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    std::thread::sleep(Duration::from_millis(1500));
    signal("-INT");
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    // Ring-buffer records only: namespace facts and findings (`sysctl`, `netns_sample`,
    // `diagnosis`) come from userspace and are not subject to the kernel filter.
    let seen = events
        .iter()
        .filter(|e| {
            ["state", "retransmit", "retransmit_failed", "reset", "error"]
                .contains(&e["type"].as_str().unwrap())
        })
        .count() as u64;
    assert!(lost > 0, "nothing lost with a 4K ring; saw {seen} events");
    assert!(stderr.contains("lost"), "{stderr}");
    // Each refused connect yields exactly 4 client-side records matching `-D` (CLOSE->SYN_SENT,
    // reset received, SYN_SENT->CLOSE, error); every one is either delivered or counted.
    assert_eq!(seen + lost, 1600, "seen {seen} + lost {lost}");
    assert!(
        stderr.contains(&format!("{lost} lost")),
        "summary must agree with the lost records: {stderr}"
    );
}

/// Runs a stopped tracer (tiny ring) through a burst of refused connects; returns its stderr.
fn overflow_stderr(net: &NetPair, port: u16, extra: &[&str]) -> String {
    use std::io::Read as _;
    let port_s = port.to_string();
    let mut args = vec!["--events", "--ring-buffer", "4K", "-D", &port_s];
    args.extend_from_slice(extra);
    let (mut child, mut err) = harness::spawn_attached(&args);
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
    };
    signal("-STOP");
    let script = format!("for i in $(seq 100); do nc -z {} {port}; done", net.srv4);
    let mut load = NetPair::spawn(&net.cli, &["sh", "-c", &script], Stdio::null());
    let finished = load.wait_timeout(Duration::from_secs(60));
    signal("-CONT");
    assert!(finished, "load did not finish");
    std::thread::sleep(Duration::from_millis(1000));
    signal("-INT");
    let mut out = child.stdout.take().unwrap();
    let mut sink = Vec::new();
    let _ = out.read_to_end(&mut sink);
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    stderr
}

#[test]
fn ebpf_debug_messages_are_opt_in() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    // With --log-level debug the state-change program says, through aya-log, which records
    // the full ring buffer cost it; without, the same drops are only counted.
    let debug = overflow_stderr(&net, 20702, &["--log-level", "debug"]);
    assert!(
        debug.contains("tcptrace: ebpf: debug: inet_sock_set_state")
            && debug.contains("ring buffer full, record dropped (counted)"),
        "{debug}"
    );
    let quiet = overflow_stderr(&net, 20703, &[]);
    assert!(quiet.contains("lost"), "{quiet}");
    assert!(!quiet.contains("ebpf:"), "{quiet}");
}
