//! Privileged tests of namespace selection: several `-N` at once (by name and by path), the
//! kernel keeping every other namespace out, and namespace names in the output, recorded so
//! `replay` shows the same names.
mod harness;

use std::time::Duration;

use harness::{NetPair, Peer, Tracer, privileged, replay_events};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// One orderly exchange on `port` between the pair's namespaces.
fn exchange(net: &NetPair, port: u16) {
    let server = Peer::start(&net.srv, "serve", &net.srv4, port, 10);
    let client = Peer::start(&net.cli, "send", &net.srv4, port, 20);
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
}

#[test]
fn several_namespaces_by_name_and_path_and_no_others() {
    if !privileged() {
        return;
    }
    let (a, b) = (NetPair::new(), NetPair::new());
    // A's client by name, A's server by path: B must not appear at all.
    let sel = format!("{},/run/netns/{}", a.cli, a.srv);
    let tracer = Tracer::start(&["-N", &sel]);
    exchange(&b, 9611);
    exchange(&a, 9612);
    let ok = tracer.wait_for(WAIT, |e| {
        e.iter()
            .filter(|e| e["type"] == "state" && e["new"] == "CLOSE")
            .count()
            >= 2
    });
    let (events, stderr) = tracer.stop();
    assert!(ok, "{stderr}");
    let (ia, sa) = (NetPair::inode(&a.cli), NetPair::inode(&a.srv));
    let names: Vec<&Value> = events.iter().filter(|e| e["type"] == "netns").collect();
    assert_eq!(names.len(), 2, "one name line per namespace: {names:#?}");
    for n in &names {
        let want = if n["netns"] == ia { &a.cli } else { &a.srv };
        assert_eq!(n["name"], want.as_str());
    }
    for e in events.iter().filter(|e| e["netns"].is_u64()) {
        let ns = e["netns"].as_u64().unwrap();
        assert!(ns == ia || ns == sa, "another namespace got through: {e}");
    }
    assert!(
        !events
            .iter()
            .any(|e| e["lport"] == 9611 || e["rport"] == 9611),
        "B's traffic was traced"
    );
    // Replayed, the records carry the names the live run recorded.
    let out = replay_events(&events, &["--format", "json"]);
    let recs: Vec<Value> = harness::json_lines(&out)
        .into_iter()
        .filter(|r| r["type"] == "conn")
        .collect();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        let want = if r["netns"] == ia { &a.cli } else { &a.srv };
        assert_eq!(r["netns_name"], want.as_str(), "{r}");
    }
    let text = replay_events(&events, &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("netns {} ", a.cli)), "{text}");
}

/// The pair's veth end in `ns`.
fn veth(ns: &str) -> String {
    let out = NetPair::exec(ns, &["ip", "-o", "link", "show", "type", "veth"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let name = text.split(':').nth(1).expect("a veth").trim();
    name.split('@').next().unwrap().to_string()
}

/// The `handshake` diagnosis of the client record on `port`.
fn handshake(recs: &[Value], port: u64) -> Value {
    recs.iter()
        .filter(|r| r["type"] == "conn" && r["role"] == "client" && r["rport"] == port)
        .flat_map(|r| r["diagnosis"].as_array().cloned().unwrap_or_default())
        .find(|d| d["rule"] == "handshake")
        .unwrap_or_else(|| panic!("no handshake on {port}: {recs:#?}"))
}

#[test]
fn announced_mss_matches_the_kernel_for_loopback_and_odd_mtus() {
    if !privileged() {
        return;
    }
    let (a, b) = (NetPair::new(), NetPair::new());
    for (net, mtu) in [(&a, "1400"), (&b, "9000")] {
        for ns in [&net.srv, &net.cli] {
            NetPair::exec(ns, &["ip", "link", "set", "dev", &veth(ns), "mtu", mtu]);
        }
    }
    let sel = format!("{},{},{},{}", a.srv, a.cli, b.srv, b.cli);
    let tracer = Tracer::lifecycle(&["-N", &sel, "--diagnose", "info"]);
    // (namespace of both ends, server address, port, MSS the kernel announces, MTU)
    let cases = [
        (&a.cli, "127.0.0.1", 9621, 65_495, 65_536),
        (&a.cli, "::1", 9622, 65_476, 65_536),
        (&a.srv, a.srv4.as_str(), 9623, 1360, 1400),
        (&a.srv, a.srv6.as_str(), 9624, 1340, 1400),
        (&b.srv, b.srv4.as_str(), 9625, 8960, 9000),
        (&b.srv, b.srv6.as_str(), 9626, 8940, 9000),
    ];
    for (ns, addr, port, _, _) in cases {
        // Loopback cases talk within one namespace; veth cases from the pair's client side.
        let client_ns = if addr.starts_with("127.") || addr == "::1" {
            ns
        } else if ns == &a.srv {
            &a.cli
        } else {
            &b.cli
        };
        let server = Peer::start(ns, "serve", addr, port, 10);
        let client = Peer::start(client_ns, "send", addr, port, 20);
        assert_eq!(client.finish(), "10");
        assert_eq!(server.finish(), "20");
    }
    let ok = tracer.wait_for(WAIT, |r| {
        r.iter()
            .filter(|r| r["type"] == "conn" && r["role"] == "client")
            .count()
            >= cases.len()
    });
    let (recs, stderr) = tracer.stop();
    assert!(ok, "{stderr}");
    for (_, _, port, mss, mtu) in cases {
        let d = handshake(&recs, port.into());
        assert_eq!(d["observed"]["peer_mss"], mss, "{d}");
        assert_eq!(d["expected"]["mss"], mss, "{d}");
        assert_eq!(d["expected"]["mtu"], mtu, "{d}");
        assert_eq!(d["agrees"], true, "{d}");
        assert!(!d["message"].as_str().unwrap().contains("less than"), "{d}");
    }
}
