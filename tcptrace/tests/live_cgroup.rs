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
    let server = Peer::start_in(Some(&server_cg), &net.srv, "serve", &net.srv4, port, 10);
    let client = Peer::start_in(Some(&client_cg), &net.cli, "send", &net.srv4, port, 20);
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
