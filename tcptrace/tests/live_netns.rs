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
