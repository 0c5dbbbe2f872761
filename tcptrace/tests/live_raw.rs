//! Privileged test of binary recordings: real traffic recorded with `--events --format raw`
//! replays into the same connection records as its JSON re-print does, and shows the exchange.
mod harness;

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use harness::{NetPair, Peer, conns, privileged, states, tcptrace};
use serde_json::Value;

/// The parts of a record both replays must agree on (wall-clock strings may differ by the
/// microsecond the JSON clock offset is rounded to).
fn essentials(recs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .filter(|r| r["type"] == "conn")
        .map(|r| {
            format!(
                "{} {}:{} {}:{} {} {:?} {} {} {}",
                r["role"],
                r["laddr"],
                r["lport"],
                r["raddr"],
                r["rport"],
                r["end"],
                states(r),
                r["bytes_sent"],
                r["bytes_received"],
                r["duration_ms"]
            )
        })
        .collect();
    v.sort();
    v
}

fn records(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn raw_recording_replays_like_its_json() {
    if !privileged() {
        return;
    }
    let net = NetPair::new();
    let dir = std::env::temp_dir().join(format!("tcptrace-raw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("rec.raw");
    let ns = NetPair::inode(&net.cli).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .args(["--events", "--format", "raw", "-N", &ns])
        .stdout(File::create(&raw).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("tcptrace: attached"), "{line}");

    let port = 9731;
    let server = Peer::start(&net.srv, "serve", &net.srv4, port, 5000);
    let client = Peer::start(&net.cli, "send", &net.srv4, port, 3000);
    assert_eq!(client.finish(), "5000");
    assert_eq!(server.finish(), "3000");
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let bytes = std::fs::read(&raw).unwrap();
    assert!(bytes.starts_with(b"tcptrace-raw\0\0\0\x02"));
    let path = raw.to_str().unwrap();
    let direct = records(&tcptrace(&["replay", path, "--format", "json"]));
    let events = tcptrace(&["replay", path, "--events", "--format", "json"]);
    assert!(events.status.success());
    let json = dir.join("rec.jsonl");
    std::fs::write(&json, &events.stdout).unwrap();
    let via_json = records(&tcptrace(&[
        "replay",
        json.to_str().unwrap(),
        "--format",
        "json",
    ]));

    let mine = conns(&direct, u64::from(port));
    assert_eq!(mine.len(), 1, "the client side only (-N): {mine:#?}");
    let c = &mine[0];
    assert_eq!(c["role"], "client");
    assert_eq!(
        (c["bytes_sent"].as_u64(), c["bytes_received"].as_u64()),
        (Some(3000), Some(5000))
    );
    assert_eq!(states(c)[..2], ["SYN_SENT", "ESTABLISHED"]);
    assert!(!essentials(&direct).is_empty());
    assert_eq!(essentials(&direct), essentials(&via_json));
    std::fs::remove_dir_all(&dir).unwrap();
}
