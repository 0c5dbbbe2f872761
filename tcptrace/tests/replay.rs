//! `tcptrace replay`: a recorded real event stream (two namespaces, six scenarios) rebuilds
//! exactly the committed connection records, through the same table as live tracing.
mod harness;

use harness::tcptrace;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/netns_scenarios.jsonl"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tcptrace-core/tests/fixtures/netns_scenarios.conn.jsonl"
);

#[test]
fn replay_rebuilds_the_golden_records() {
    let out = tcptrace(&["replay", FIXTURE, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = std::fs::read_to_string(GOLDEN).expect("golden file");
    let text = String::from_utf8_lossy(&out.stdout);
    // The stream header first (schema version), then exactly the golden records.
    let (head, records) = text.split_once('\n').expect("a header line");
    let head: serde_json::Value = serde_json::from_str(head).unwrap();
    assert_eq!(head["type"], "stream");
    assert_eq!(head["schema"], 1);
    assert_eq!(head["content"], "records");
    assert_eq!(records, golden);
}

#[test]
fn replay_text_is_one_line_per_connection() {
    let out = tcptrace(&["replay", FIXTURE, "--state", "TIME_WAIT"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert!(
            l.contains(" closed after ") && l.contains("→ TIME_WAIT "),
            "{l}"
        );
    }
    let timeouts = tcptrace(&["replay", FIXTURE, "--min-duration", "2s"]);
    let text = String::from_utf8_lossy(&timeouts.stdout);
    // The record, and under it its diagnosis, judged by the recording's own sysctls.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("timeout after 3.1s") && lines[0].contains("ETIMEDOUT"),
        "{text}"
    );
    assert!(
        lines[1].contains("[connect_timeout]")
            && lines[1].contains("tcp_syn_retries=1")
            && lines[1].contains("exactly what the kernel's arithmetic predicts"),
        "{text}"
    );
}

#[test]
fn replay_of_events_reprints_the_stream() {
    let out = tcptrace(&["replay", FIXTURE, "--events", "--format", "json"]);
    assert!(out.status.success());
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let n = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("\"type\":\"lost\"") && !l.contains("\"type\":\"stream\""))
            .count()
    };
    assert_eq!(n(&String::from_utf8_lossy(&out.stdout)), n(&fixture));
}

#[test]
fn bad_replay_input_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("tcptrace-replay-{}", std::process::id()));
    std::fs::write(&dir, "{\"type\":\"state\",\"ts_ns\":1}\nnot json\n").unwrap();
    let out = tcptrace(&["replay", dir.to_str().unwrap()]);
    let _ = std::fs::remove_file(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(":1:"), "{err}");
    let missing = tcptrace(&["replay", "/nonexistent/stream.json"]);
    assert_eq!(missing.status.code(), Some(1));
}
