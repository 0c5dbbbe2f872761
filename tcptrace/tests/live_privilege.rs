//! Privileged test of least privilege: once attached, the tracer holds exactly
//! `CAP_DAC_READ_SEARCH`, `CAP_SYS_PTRACE` and `CAP_SYS_ADMIN` in every thread (the output
//! thread none), the rest gone from every set including the bounding set — and what those
//! three are kept for still works: sysctls read inside another namespace, sock_diag there
//! (TIME_WAIT confirmation, the seed of sockets that predate tracing) and the owner of such a
//! socket found in /proc although another user runs it.
mod harness;

use std::time::Duration;

use harness::{NetPair, Peer, Tracer, on_port, privileged};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const KEPT: u64 = (1 << 2) | (1 << 19) | (1 << 21);
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_BPF: u64 = 1 << 39;

/// `(thread name, field, value)` of each capability set of every thread of `pid`.
fn capability_sets(pid: u32) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_string();
        for l in status.lines() {
            if let Some((k, v)) = l.split_once(':')
                && k.starts_with("Cap")
            {
                out.push((
                    name.clone(),
                    k.to_string(),
                    u64::from_str_radix(v.trim(), 16).unwrap(),
                ));
            }
        }
    }
    out
}

#[test]
fn capabilities_dropped_and_tracing_still_works() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    NetPair::sysctl(&net.cli, "net.ipv4.tcp_syn_retries", "3");
    // A connection older than the trace, owned by another user.
    // (Debian's python3: root's PATH may lead to a per-user installation nobody can read.)
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        "PATH=/usr/bin:/bin",
    ];
    let held_port = 9831;
    let holder_srv = Peer::start(&net.srv, "hold-server", &net.srv4, held_port, 0);
    let holder = Peer::start_as(None, &nobody, &net.cli, "hold", &net.srv4, held_port, 0);
    let tracer = Tracer::start(&["-4"]);

    let sets = capability_sets(tracer.pid());
    assert!(sets.len() >= 10, "{sets:?}");
    for (thread, set, mask) in &sets {
        let want = if thread == "tcptrace-out" || set == "CapInh" || set == "CapAmb" {
            0
        } else {
            KEPT
        };
        assert_eq!(*mask, want, "{thread} {set} {mask:#x}: {sets:?}");
        assert_eq!(mask & (CAP_NET_ADMIN | CAP_BPF), 0, "{thread} {set}");
    }

    let port = 9832;
    let server = Peer::start(&net.srv, "serve", &net.srv4, port, 10);
    let client = Peer::start(&net.cli, "send", &net.srv4, port, 20);
    assert_eq!(client.finish(), "10");
    assert_eq!(server.finish(), "20");
    let cli_ns = NetPair::inode(&net.cli);
    let ok = tracer.wait_for(WAIT, |e| {
        on_port(e, port.into())
            .iter()
            .any(|e| e["type"] == "timewait")
    });
    drop(holder);
    drop(holder_srv);
    let (events, stderr) = tracer.stop();
    assert!(ok, "no sock_diag timewait fact: {stderr}");

    // sock_diag inside the client's namespace confirmed the TIME_WAIT socket.
    let tw: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "timewait" && e["rport"] == port)
        .collect();
    assert_eq!(tw[0]["state"], "TIME_WAIT", "{tw:?}");
    assert_eq!(tw[0]["netns"], cli_ns);
    // Its sysctls were read from inside it (setns) after the drop.
    let sys = events
        .iter()
        .find(|e| e["type"] == "sysctl" && e["netns"] == cli_ns)
        .unwrap_or_else(|| panic!("no sysctl line for the client namespace: {stderr}"));
    assert_eq!(sys["source"], "read");
    assert_eq!(sys["values"]["net.ipv4.tcp_syn_retries"], "3");
    // The seed found the older connection and its owner, another user's process.
    let seeded = events
        .iter()
        .find(|e| e["type"] == "existing" && e["rport"] == held_port && e["at_exit"] == false)
        .unwrap_or_else(|| panic!("older connection not seeded: {stderr}"));
    assert_eq!(seeded["comm"], "python3", "{seeded}");
    assert_ne!(seeded["pid"], 0, "{seeded}");
}
