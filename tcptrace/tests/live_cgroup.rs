//! Privileged tests of container/service attribution: connections made by processes moved into
//! throwaway cgroups carry those cgroups, taken from the socket itself (an accepted socket
//! carries its listener's even though its transitions run in whatever task softirq
//! interrupted, here usually the client).
mod harness;

use std::time::Duration;

use harness::{Cgroup, NetPair, Peer, Tracer, on_port, privileged};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn sockets_of(events: &[Value], role_port: impl Fn(&Value) -> bool) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "state" && role_port(e))
        .cloned()
        .collect()
}

#[test]
fn events_carry_the_sockets_cgroup() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let (client_cg, server_cg) = (Cgroup::new("client"), Cgroup::new("server"));
    let port = 9811;
    let tracer = Tracer::start(&["-4"]);
    let server = Peer::start_as(
        Some(&server_cg),
        &[],
        &net.srv,
        "serve",
        &net.srv4,
        port,
        10,
    );
    let client = Peer::start_as(Some(&client_cg), &[], &net.cli, "send", &net.srv4, port, 20);
    let server_pid = u64::from(server.pid());
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
    let ok = tracer.wait_for(WAIT, |e| {
        on_port(e, port.into())
            .iter()
            .filter(|e| e["type"] == "state")
            .count()
            >= 8
    });
    let (events, stderr) = tracer.stop();
    let events = on_port(&events, port.into());
    assert!(ok, "too few events: {events:#?}\n{stderr}");
    let client_side = sockets_of(&events, |e| e["rport"] == port);
    let server_side = sockets_of(&events, |e| e["lport"] == port);
    assert!(
        !client_side.is_empty() && !server_side.is_empty(),
        "{events:#?}"
    );
    for e in &client_side {
        assert_eq!(e["cgroup_id"], client_cg.id, "client socket: {e}");
    }
    // Listener and accepted socket alike: the server's cgroup, whoever ran the softirq.
    for e in &server_side {
        assert_eq!(e["cgroup_id"], server_cg.id, "server socket: {e}");
    }
    // What makes the socket the right source: the handshake's server transitions ran in
    // another task's context (the client's, whose send processed them in softirq).
    assert!(
        server_side.iter().any(|e| e["pid"] != server_pid),
        "every server event ran in the server: {server_side:#?}"
    );
}

fn record<'a>(recs: &'a [Value], role: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["role"] == role)
        .unwrap_or_else(|| panic!("no {role} record in {recs:#?}"))
}

/// One connection from a client in `client_cg` to a server in `server_cg`, traced with
/// `args` in lifecycle JSON until `expect` records are in; returns the records on `port`.
fn traced_connection(
    args: &[&str],
    port: u16,
    client_cg: &Cgroup,
    server_cg: &Cgroup,
    expect: usize,
) -> Vec<Value> {
    let net = NetPair::new();
    let tracer = Tracer::lifecycle(args);
    let server = Peer::start_as(Some(server_cg), &[], &net.srv, "serve", &net.srv4, port, 10);
    let client = Peer::start_as(Some(client_cg), &[], &net.cli, "send", &net.srv4, port, 20);
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
    tracer.wait_for(WAIT, |r| harness::conns(r, port.into()).len() >= expect);
    // A filtered run sees one side: the other would have arrived with it.
    std::thread::sleep(Duration::from_millis(300));
    let (all, _) = tracer.stop();
    harness::conns(&all, port.into())
}

#[test]
fn records_name_the_cgroup_and_replay_keeps_it() {
    if !privileged() {
        return;
    }
    let (client_cg, server_cg) = (Cgroup::new("rec-client"), Cgroup::new("rec-server"));
    let port = 9812;
    let recs = traced_connection(&["-4"], port, &client_cg, &server_cg, 2);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for (role, cg) in [("client", &client_cg), ("server", &server_cg)] {
        let c = &record(&recs, role)["cgroup"];
        assert_eq!(c["id"], cg.id, "{role}: {c}");
        assert_eq!(c["path"], cg.path.as_str(), "{role}: {c}");
        assert!(c["unit"].is_null() && c["container"].is_null(), "{c}");
    }

    // An --events recording names the cgroup once in a `cgroup` line; replay rebuilds the
    // same attribution from it.
    let net = NetPair::new();
    let port = 9813;
    let tracer = Tracer::start(&["-4"]);
    let server = Peer::start_as(
        Some(&server_cg),
        &[],
        &net.srv,
        "serve",
        &net.srv4,
        port,
        10,
    );
    let client = Peer::start_as(Some(&client_cg), &[], &net.cli, "send", &net.srv4, port, 20);
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
    tracer.wait_for(WAIT, |e| {
        on_port(e, port.into())
            .iter()
            .filter(|e| e["type"] == "state" && e["new"] == "CLOSE")
            .count()
            >= 2
    });
    let (events, _) = tracer.stop();
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "cgroup" && e["id"] == client_cg.id)
        .collect();
    assert_eq!(lines.len(), 1, "one cgroup line per id: {lines:#?}");
    assert_eq!(lines[0]["path"], client_cg.path.as_str());
    let replayed = harness::json_lines(&harness::replay_events(&events, &["--format", "json"]));
    let text_out = harness::replay_events(&events, &[]);
    let replayed = harness::conns(&replayed, port.into());
    for (role, cg) in [("client", &client_cg), ("server", &server_cg)] {
        let c = &record(&replayed, role)["cgroup"];
        assert_eq!(
            (c["id"].as_u64(), c["path"].as_str()),
            (Some(cg.id), Some(cg.path.as_str()))
        );
    }
    // Text names it compactly after the namespace.
    let text = String::from_utf8_lossy(&text_out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(" client ") && l.contains(&format!(":{port}")))
        .unwrap_or_else(|| panic!("no client line in {text}"));
    assert!(line.contains(&format!(" in {} ", client_cg.path)), "{line}");
}

#[test]
fn cgroup_filter_keeps_that_subtree_only() {
    if !privileged() {
        return;
    }
    let parent = Cgroup::new("filter-parent");
    let child = parent.child("worker");
    let other = Cgroup::new("filter-other");
    let port = 9814;
    // By the path below the mount; the client runs in a cgroup below it.
    let recs = traced_connection(&["-4", "--cgroup", &parent.path], port, &child, &other, 1);
    assert_eq!(recs.len(), 1, "only the client's side: {recs:#?}");
    assert_eq!(recs[0]["role"], "client");
    assert_eq!(recs[0]["cgroup"]["id"], child.id);
    // By the full directory path, selecting the server's side.
    let full = other.dir.to_str().unwrap().to_string();
    let recs = traced_connection(&["-4", "--cgroup", &full], port + 1, &child, &other, 1);
    assert_eq!(recs.len(), 1, "only the server's side: {recs:#?}");
    assert_eq!(recs[0]["role"], "server");
    assert_eq!(recs[0]["cgroup"]["path"], other.path.as_str());
}

#[test]
fn bad_cgroup_filter_is_one_line() {
    let out = harness::tcptrace(&["--cgroup", "/no/such/cgroup-here", "--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tcptrace: --cgroup"), "{err}");
}

#[test]
fn systemd_run_scope_is_attributed_to_its_unit() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/run/systemd/system").exists() {
        // Not a failure under CI either: the host has no systemd to ask for a scope.
        eprintln!(
            "skipping: systemd is not running here (no /run/systemd/system), so no systemd-run scope"
        );
        return;
    }
    let unit = format!("tcptrace-test-{}.scope", std::process::id());
    let net = NetPair::new();
    let port = 9816;
    let tracer = Tracer::lifecycle(&["-4"]);
    let server = Peer::start(&net.srv, "serve", &net.srv4, port, 10);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/peer.py");
    let out = std::process::Command::new("systemd-run")
        .args([
            "--scope", "--quiet", "--unit", &unit, "ip", "netns", "exec", &net.cli,
        ])
        .args([
            "python3",
            script,
            "send",
            &net.srv4,
            &port.to_string(),
            "20",
        ])
        .output()
        .expect("systemd-run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.finish(), "20");
    tracer.wait_for(WAIT, |r| harness::conns(r, port.into()).len() >= 2);
    let (all, _) = tracer.stop();
    let recs = harness::conns(&all, port.into());
    let c = &record(&recs, "client")["cgroup"];
    assert_eq!(c["unit"], unit.as_str(), "{c}");
}

#[test]
fn without_file_handles_paths_come_from_a_scan() {
    if !privileged() {
        return;
    }
    let (client_cg, server_cg) = (Cgroup::new("scan-client"), Cgroup::new("scan-server"));
    let net = NetPair::new();
    let port = 9817;
    // open_by_handle_at needs CAP_DAC_READ_SEARCH: without it the mount is scanned instead.
    let drop = [
        "setpriv",
        "--inh-caps=-dac_read_search",
        "--bounding-set=-dac_read_search",
    ];
    let tracer = Tracer::lifecycle_via(&drop, &["-4"]);
    let server = Peer::start_as(
        Some(&server_cg),
        &[],
        &net.srv,
        "serve",
        &net.srv4,
        port,
        10,
    );
    let client = Peer::start_as(Some(&client_cg), &[], &net.cli, "send", &net.srv4, port, 20);
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
    tracer.wait_for(WAIT, |r| harness::conns(r, port.into()).len() >= 2);
    let (all, stderr) = tracer.stop();
    assert!(stderr.contains("file handles refused"), "{stderr}");
    let recs = harness::conns(&all, port.into());
    for (role, cg) in [("client", &client_cg), ("server", &server_cg)] {
        let c = &record(&recs, role)["cgroup"];
        assert_eq!(
            (c["id"].as_u64(), c["path"].as_str()),
            (Some(cg.id), Some(cg.path.as_str())),
            "{role}"
        );
    }
}
